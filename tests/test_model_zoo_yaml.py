"""detectron2's model-zoo names: every YAML config ships, merges, and builds a model whose state-dict keys and shapes
equal those of libdet's lazy config of the same architecture (detectron2's keys for the reference families); each
translates to a data-loader config; checkpoint URLs follow detectron2's published table. The all-configs builds are
``slow`` (a second each); the reference families run by default.

Models are built on the ``meta`` device: the modules and their parameter shapes are real, no memory is filled.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from libdet import model_zoo
from libdet.config import CfgNode, LazyConfig, get_cfg, instantiate
from libdet.config.yaml_translate import translate_config
from libdet.model_zoo import detectron2_zoo

REPO = Path(__file__).resolve().parents[1]
YAML_ROOT = detectron2_zoo.yaml_config_root()
YAML_CONFIGS = sorted(
    str(p.relative_to(YAML_ROOT)) for p in YAML_ROOT.rglob("*.yaml") if not p.name.startswith("Base-")
)
D2_KEYS = REPO / "tests" / "modeling" / "d2_keys"

# detectron2's YAML model zoo (configs/**/*.yaml, without the Base-* files)
DETECTRON2_YAML_NAMES = [
    *(f"COCO-Detection/faster_rcnn_R_50_{a}_{s}.yaml" for a in ("C4", "DC5", "FPN") for s in ("1x", "3x")),
    *(f"COCO-Detection/faster_rcnn_R_101_{a}_3x.yaml" for a in ("C4", "DC5", "FPN")),
    "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml",
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
    "COCO-Detection/retinanet_R_101_FPN_3x.yaml",
    "COCO-Detection/rpn_R_50_C4_1x.yaml",
    "COCO-Detection/rpn_R_50_FPN_1x.yaml",
    "COCO-Detection/fast_rcnn_R_50_FPN_1x.yaml",
    *(f"COCO-InstanceSegmentation/mask_rcnn_R_50_{a}_{s}.yaml" for a in ("C4", "DC5", "FPN") for s in ("1x", "3x")),
    *(f"COCO-InstanceSegmentation/mask_rcnn_R_101_{a}_3x.yaml" for a in ("C4", "DC5", "FPN")),
    "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x_giou.yaml",
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml",
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml",
    "COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x.yaml",
    "COCO-Keypoints/keypoint_rcnn_X_101_32x8d_FPN_3x.yaml",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml",
    "COCO-PanopticSegmentation/panoptic_fpn_R_101_3x.yaml",
    *(f"LVISv0.5-InstanceSegmentation/mask_rcnn_{b}_FPN_1x.yaml" for b in ("R_50", "R_101", "X_101_32x8d")),
    *(f"LVISv1-InstanceSegmentation/mask_rcnn_{b}_FPN_1x.yaml" for b in ("R_50", "R_101", "X_101_32x8d")),
    "Cityscapes/mask_rcnn_R_50_FPN.yaml",
    "PascalVOC-Detection/faster_rcnn_R_50_C4.yaml",
    "PascalVOC-Detection/faster_rcnn_R_50_FPN.yaml",
    "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml",
    "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
    "Misc/cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.yaml",
    "Misc/mask_rcnn_R_50_FPN_1x_cls_agnostic.yaml",
    "Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml",
    "Misc/mask_rcnn_R_50_FPN_3x_dconv_c3-c5.yaml",
    "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml",
    "Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml",
    "Misc/panoptic_fpn_R_101_dconv_cascade_gn_3x.yaml",
    "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml",
    "Misc/scratch_mask_rcnn_R_50_FPN_9x_gn.yaml",
    "Misc/scratch_mask_rcnn_R_50_FPN_9x_syncbn.yaml",
    "Misc/semantic_R_50_FPN_1x.yaml",
    "Detectron1-Comparisons/faster_rcnn_R_50_FPN_noaug_1x.yaml",
    "Detectron1-Comparisons/mask_rcnn_R_50_FPN_noaug_1x.yaml",
    "Detectron1-Comparisons/keypoint_rcnn_R_50_FPN_1x.yaml",
]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _load(rel: str) -> CfgNode:
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(rel))
    return cfg


def _keys(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _d2_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (D2_KEYS / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())))
    return rows


def _lazy(name: str):
    return LazyConfig.load(str(REPO / "configs" / "common" / "models" / f"{name}.py")).model


def _build(node) -> torch.nn.Module:
    with torch.device("meta"):
        return instantiate(node)


def test_ships_every_detectron2_yaml_config():
    assert sorted(DETECTRON2_YAML_NAMES) == YAML_CONFIGS
    for rel in DETECTRON2_YAML_NAMES:
        path = Path(model_zoo.get_config_file(rel))
        assert path.is_file() and path.is_relative_to(YAML_ROOT)
    with pytest.raises(FileNotFoundError, match="mask_rcnn_R_50_FPN_3x.yaml"):
        model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3X.yaml")


def test_checkpoint_urls_follow_detectron2s_table():
    assert model_zoo.get_checkpoint_url("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml") == (
        "https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/"
        "model_final_f10217.pkl"
    )
    assert model_zoo.get_checkpoint_url("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py").endswith(
        "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ/42047764/model_final_bb69de.pkl"
    )
    for name, suffix in detectron2_zoo.CHECKPOINTS.items():
        assert suffix.count("/") == 1 and suffix.endswith(".pkl")
        if not name.startswith("new_baselines/"):
            url = model_zoo.get_checkpoint_url(name + ".yaml")
            assert url == f"https://dl.fbaipublicfiles.com/detectron2/{name}/{suffix}"
            assert name + ".yaml" in DETECTRON2_YAML_NAMES
    # detectron2 publishes no weights for these
    with pytest.raises(RuntimeError, match="semantic_R_50_FPN_1x"):
        model_zoo.get_checkpoint_url("Misc/semantic_R_50_FPN_1x.yaml")


def test_get_config_of_a_yaml_name():
    cfg = model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_3x.yaml", trained=True)
    assert isinstance(cfg, CfgNode)
    assert cfg.MODEL.META_ARCHITECTURE == "RetinaNet" and cfg.SOLVER.MAX_ITER == 270000
    assert cfg.MODEL.WEIGHTS == model_zoo.get_checkpoint_url("COCO-Detection/retinanet_R_50_FPN_3x.yaml")
    untrained = model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_3x.yaml")
    assert untrained.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    # detectron2's lazy-config names lead to libdet's configs of the same model
    lazy = model_zoo.get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
    assert "model" in lazy and lazy.model.roi_heads.num_classes == 80


@pytest.mark.parametrize(
    "rel, reference",
    [
        ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "mask_rcnn_fpn"),
        ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml", "mask_rcnn_c4"),
        ("COCO-Detection/retinanet_R_50_FPN_1x.yaml", "retinanet"),
        ("COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml", "keypoint_rcnn_fpn"),
        ("COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml", "panoptic_fpn"),
        ("Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml", "cascade_rcnn"),
    ],
)
def test_reference_families_have_detectron2_state_dicts(rel, reference):
    model = _build(translate_config(_load(rel)).model)
    assert _keys(model) == _d2_keys(reference)  # keys, shapes and order: detectron2 checkpoints load as they are


# the lazy config of the same architecture, edited from configs/common/models by hand


def _backbone_edits(cfg: CfgNode, resnet, fpn) -> None:
    r = cfg.MODEL.RESNETS
    stages = resnet.stages
    stages.update(depth=r.DEPTH, stride_in_1x1=r.STRIDE_IN_1X1, norm=r.NORM)
    if r.NUM_GROUPS > 1:
        stages.update(num_groups=r.NUM_GROUPS, width_per_group=r.WIDTH_PER_GROUP)
    resnet.stem.norm = r.NORM
    resnet.freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    if fpn is not None:
        fpn.norm = cfg.MODEL.FPN.NORM


def _box_branch_edits(cfg: CfgNode, roi_heads, cascade: bool) -> None:
    box = cfg.MODEL.ROI_BOX_HEAD
    heads = roi_heads.box_heads if cascade else [roi_heads.box_head]
    predictors = roi_heads.box_predictors if cascade else [roi_heads.box_predictor]
    for head, predictor in zip(heads, predictors):
        head.update(conv_dims=[box.CONV_DIM] * box.NUM_CONV, fc_dims=[box.FC_DIM] * box.NUM_FC, conv_norm=box.NORM)
        predictor.input_shape.channels = box.FC_DIM
        predictor.cls_agnostic_bbox_reg = box.CLS_AGNOSTIC_BBOX_REG
    if "mask_head" in roi_heads:
        mask = cfg.MODEL.ROI_MASK_HEAD
        if not cfg.MODEL.MASK_ON:
            roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
        else:
            roi_heads.mask_head.update(conv_dims=[mask.CONV_DIM] * (mask.NUM_CONV + 1), conv_norm=mask.NORM)
            if mask.CLS_AGNOSTIC_MASK:
                roi_heads.mask_head.num_classes = 1
    roi_heads.num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES


def _deform_keys(cfg: CfgNode, model_keys: list) -> list:
    """The offset convs that DEFORM_ON_PER_STAGE adds in front of each deformable block's conv2."""
    r = cfg.MODEL.RESNETS
    out = []
    for key, shape in model_keys:
        parts = key.split(".")
        stage = next((p for p in parts if p in ("res2", "res3", "res4", "res5")), None)
        if stage and r.DEFORM_ON_PER_STAGE[int(stage[-1]) - 2] and key.endswith(".conv2.weight"):
            prefix = key[: -len("conv2.weight")]
            channels = (27 if r.DEFORM_MODULATED else 18) * r.DEFORM_NUM_GROUPS
            out += [
                (prefix + "conv2_offset.weight", (channels, shape[0], 3, 3)),
                (prefix + "conv2_offset.bias", (channels,)),
            ]
        out.append((key, shape))
    return out


@functools.cache
def _expected_keys_of(model_yaml: str) -> tuple:
    cfg = get_cfg()
    cfg.MODEL.merge_from_other_cfg(CfgNode.load_cfg(model_yaml))
    return tuple(_expected_keys(cfg))


def _expected_keys(cfg: CfgNode) -> list:
    meta = cfg.MODEL.META_ARCHITECTURE
    cascade = cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads"
    if meta == "RetinaNet":
        model = _lazy("retinanet")
        _backbone_edits(cfg, model.backbone.bottom_up, model.backbone)
        keys = _keys(_build(model))
    elif cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads":
        model = _lazy("mask_rcnn_c4")
        _backbone_edits(cfg, model.backbone, None)
        for block in model.roi_heads.res5:
            block.update(stride_in_1x1=cfg.MODEL.RESNETS.STRIDE_IN_1X1)
        model.roi_heads.num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        if not cfg.MODEL.MASK_ON:
            model.roi_heads.mask_head = None
        keys = _keys(_build(model))
    elif "res5" in cfg.MODEL.ROI_HEADS.IN_FEATURES:  # DC5: dilated res5, FPN-style heads on it
        model = _lazy("mask_rcnn_fpn")
        resnet = model.backbone.bottom_up
        resnet.out_features = ["res5"]
        resnet.stages.res5_dilation = 2
        model.backbone = resnet
        _backbone_edits(cfg, model.backbone, None)
        pg = model.proposal_generator
        pg.update(in_features=["res5"], pre_nms_topk=(12000, 6000), post_nms_topk=(2000, 1000))
        pg.head.update(in_channels=2048, num_anchors=15)
        pg.anchor_generator.update(sizes=[[32, 64, 128, 256, 512]], strides=[16])
        rh = model.roi_heads
        rh.update(box_in_features=["res5"], mask_in_features=["res5"])
        for pooler in (rh.box_pooler, rh.mask_pooler):
            pooler.scales = (1.0 / 16,)
        rh.box_head.input_shape.channels = 2048
        rh.mask_head.input_shape.channels = 2048
        _box_branch_edits(cfg, rh, cascade=False)
        keys = _keys(_build(model))
    else:
        if meta in ("PanopticFPN", "SemanticSegmentor"):
            model = _lazy("panoptic_fpn")
        elif cfg.MODEL.KEYPOINT_ON:
            model = _lazy("keypoint_rcnn_fpn")
        else:
            model = _lazy("mask_rcnn_fpn")
        if cascade:
            model.roi_heads = _lazy("cascade_rcnn").roi_heads
        _backbone_edits(cfg, model.backbone.bottom_up, model.backbone)
        _box_branch_edits(cfg, model.roi_heads, cascade)
        keys = _keys(_build(model))
        if meta == "SemanticSegmentor":
            keys = [k for k in keys if not k[0].startswith(("roi_heads.", "proposal_generator."))]
        if meta == "ProposalNetwork":
            keys = [k for k in keys if not k[0].startswith("roi_heads.")]
        if cfg.MODEL.PROPOSAL_GENERATOR.NAME == "PrecomputedProposals":
            keys = [k for k in keys if not k[0].startswith("proposal_generator.")]
    if meta == "ProposalNetwork" and cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads":
        keys = [k for k in keys if not k[0].startswith("roi_heads.")]
    return _deform_keys(cfg, keys)


@pytest.mark.slow  # about a second per config: 61 R50-X152 models
@pytest.mark.parametrize("rel", YAML_CONFIGS)
def test_yaml_builds_the_lazy_configs_model(rel):
    cfg = _load(rel)
    lazy = translate_config(cfg)
    model = _build(lazy.model)
    # configs that differ only in schedule, data or weights share the expected model
    model_section = cfg.MODEL.clone()
    model_section.WEIGHTS = ""
    assert dict(_keys(model)) == dict(_expected_keys_of(model_section.dump())), rel

    # the data: detectron2's datasets, batch size and augmentations of the YAML config
    train = lazy.dataloader.train
    assert list(train.dataset.names) == list(cfg.DATASETS.TRAIN)
    assert train.total_batch_size == cfg.SOLVER.IMS_PER_BATCH
    assert train.mapper.use_instance_mask == cfg.MODEL.MASK_ON and train.mapper.use_keypoint == cfg.MODEL.KEYPOINT_ON
    resize = [a for a in train.mapper.augmentations if a._target_.__name__ == "ResizeShortestEdge"][0]
    assert tuple(resize.short_edge_length) == tuple(cfg.INPUT.MIN_SIZE_TRAIN)
    assert resize.max_size == cfg.INPUT.MAX_SIZE_TRAIN
    assert list(lazy.dataloader.test.dataset.names) == [cfg.DATASETS.TEST[0]]
    if cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
        assert train.sampler.repeat_thresh == cfg.DATALOADER.REPEAT_THRESHOLD
    assert lazy.optimizer.lr == cfg.SOLVER.BASE_LR and lazy.train.max_iter == cfg.SOLVER.MAX_ITER


LAZY_ROOT = detectron2_zoo.lazy_config_root()
LAZY_CONFIGS = sorted(str(p.relative_to(LAZY_ROOT)) for p in LAZY_ROOT.rglob("*.py"))


def test_ships_detectron2s_new_baselines():
    names = {name + ".py" for name in detectron2_zoo.CHECKPOINTS if name.startswith("new_baselines/")}
    assert names <= set(LAZY_CONFIGS)  # every published LSJ baseline has its config
    assert len(names) == 12


@pytest.mark.slow
@pytest.mark.parametrize("rel", LAZY_CONFIGS)
def test_detectron2_lazy_configs_build(rel):
    cfg = model_zoo.get_config(rel, trained=rel.startswith("new_baselines/"))
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg)
    model = _build(cfg.model)
    keys = dict(_keys(model))
    if rel.startswith("new_baselines/"):
        assert cfg.train.init_checkpoint == model_zoo.get_checkpoint_url(rel)
        epochs = int(rel.split("_")[-2].removesuffix("ep"))
        assert cfg.train.max_iter == 184375 * epochs // 100 and cfg.dataloader.train.total_batch_size == 64
        assert cfg.lr_multiplier.scheduler.num_updates == cfg.train.max_iter
        # SyncBN everywhere: running statistics in the FPN, NaiveSyncBatchNorm in the 4conv1fc box head
        assert "backbone.fpn_lateral2.norm.running_mean" in keys
        assert keys["roi_heads.box_head.conv4.norm.weight"] == (256,)
        assert keys["roi_heads.box_head.fc1.weight"] == (1024, 256 * 7 * 7)
        # the 2-conv RPN head (detectron2's keys)
        assert keys["proposal_generator.rpn_head.conv.conv1.weight"] == (256, 256, 3, 3)
    if "regnet" in rel:
        assert type(model.backbone.bottom_up).__name__ == "RegNet"
        assert list(cfg.model.pixel_std) == pytest.approx([57.375, 57.120, 58.395])
    if "R_101" in rel:
        assert "backbone.bottom_up.res4.22.conv3.weight" in keys


def test_every_weights_path_of_the_yaml_configs_resolves_to_a_url():
    """MODEL.WEIGHTS of each config (detectron2://, catalog:// or a URL) names a downloadable file."""
    from libdet.utils.file_io import PathManager

    for rel in YAML_CONFIGS:
        weights = _load(rel).MODEL.WEIGHTS
        if not weights:
            continue  # trained from scratch
        handler = PathManager._PathManager__get_path_handler(weights)  # iopath picks the handler by prefix
        url = handler._url(weights) if hasattr(handler, "_url") else weights
        assert url.startswith("https://dl.fbaipublicfiles.com/detectron") and url.endswith(".pkl"), (rel, url)
    from libdet.utils.file_io import ModelCatalogHandler

    assert ModelCatalogHandler()._url("catalog://ImageNetPretrained/FAIR/X-152-32x8d-IN5k") == (
        "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/25093814/X-152-32x8d-IN5k.pkl"
    )
    with pytest.raises(ValueError, match="not in the model catalog"):
        ModelCatalogHandler()._url("catalog://ImageNetPretrained/FAIR/R-9000")
