"""The YAML -> lazy translation behind detectron2's ``build_*(cfg)`` functions: registries find users' classes,
``build_optimizer`` / ``build_lr_scheduler`` follow the SOLVER keys, the data loaders follow DATASETS / INPUT /
DATALOADER, and bad names are reported with their config key."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from libdet.config import configurable, get_cfg
from libdet.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from libdet.data.datasets import register_coco_instances
from libdet.data.datasets.shapes import SHAPES_CLASSES, generate_shapes_dataset
from libdet.layers import ShapeSpec
from libdet.modeling import (
    BACKBONE_REGISTRY,
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    Backbone,
    StandardROIHeads,
    build_backbone,
    build_model,
    build_roi_heads,
)
from libdet.solver import build_lr_scheduler, build_optimizer

TRAIN_NAME, VAL_NAME = "_yaml_translate_shapes_train", "_yaml_translate_shapes_val"


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _tiny_cfg():
    """A narrow R18-FPN Mask R-CNN for 64-128 px images, 3 classes."""
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.MASK_ON", "True",
            "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
            "MODEL.RESNETS.DEPTH", "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
            "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']",
            "MODEL.FPN.OUT_CHANNELS", "16",
            "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]",
            "MODEL.RPN.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']",
            "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
            "MODEL.ROI_HEADS.IN_FEATURES", "['p2', 'p3', 'p4', 'p5']",
            "MODEL.ROI_HEADS.NUM_CLASSES", "3",
            "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC", "1",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "7",
            "MODEL.ROI_MASK_HEAD.NUM_CONV", "1",
            "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
            "INPUT.MIN_SIZE_TRAIN", "(96,)",
            "INPUT.MAX_SIZE_TRAIN", "128",
            "INPUT.MIN_SIZE_TEST", "80",
            "INPUT.MAX_SIZE_TEST", "128",
            "DATALOADER.NUM_WORKERS", "0",
        ]
    )  # fmt: skip
    return cfg


def _image_batch():
    from libdet.structures import BitMasks, Boxes, Instances

    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 48.0]]))
    inst.gt_classes = torch.tensor([1])
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[:, 8:48, 8:40] = True
    inst.gt_masks = BitMasks(mask)
    return [{"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), "instances": inst}]


@pytest.fixture
def registered():
    """Register objects for one test and remove them afterwards (registries are process-wide)."""
    entries = []

    def register(registry, obj):
        registry.register(obj)
        entries.append((registry, obj.__name__))
        return obj

    yield register
    for registry, name in entries:
        registry._obj_map.pop(name)


def test_build_model_matches_its_parts():
    cfg = _tiny_cfg()
    model = build_model(cfg)
    assert model.backbone.output_shape()["p2"].channels == 16
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background
    assert type(build_backbone(cfg)) is type(model.backbone)
    heads = build_roi_heads(cfg, model.backbone.output_shape())
    assert [(k, v.shape) for k, v in heads.state_dict().items()] == [
        (k[len("roi_heads.") :], v.shape) for k, v in model.state_dict().items() if k.startswith("roi_heads.")
    ]
    losses = model(_image_batch())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_registered_subclass_is_built_like_its_base(registered):
    class MyROIHeads(StandardROIHeads):
        def forward(self, *args, **kwargs):
            self.calls = getattr(self, "calls", 0) + 1
            return super().forward(*args, **kwargs)

    registered(ROI_HEADS_REGISTRY, MyROIHeads)
    cfg = _tiny_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "MyROIHeads"
    model = build_model(cfg)
    assert type(model.roi_heads) is MyROIHeads
    model(_image_batch())
    assert model.roi_heads.calls == 1


def test_registered_user_classes_are_built_from_the_config(registered):
    class ToyBackbone(Backbone):
        """Two strided convs: outputs "s8" (stride 8) and "s16"."""

        def __init__(self, channels):
            super().__init__()
            self.conv8 = nn.Conv2d(3, channels, 3, stride=8, padding=1)
            self.conv16 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
            self.channels = channels

        def forward(self, x):
            s8 = self.conv8(x)
            return {"s8": s8, "s16": self.conv16(s8)}

        def output_shape(self):
            return {
                "s8": ShapeSpec(channels=self.channels, stride=8),
                "s16": ShapeSpec(channels=self.channels, stride=16),
            }

    def build_toy_backbone(cfg, input_shape):
        assert input_shape.channels == 3
        return ToyBackbone(cfg.MODEL.FPN.OUT_CHANNELS)

    class ToyBoxHead(nn.Module):
        @configurable
        def __init__(self, *, input_shape, dim):
            super().__init__()
            self.fc = nn.Linear(input_shape.channels * input_shape.height * input_shape.width, dim)
            self.dim = dim

        @classmethod
        def from_config(cls, cfg, input_shape):
            return {"input_shape": input_shape, "dim": cfg.MODEL.ROI_BOX_HEAD.FC_DIM // 2}

        def forward(self, x):
            return torch.relu(self.fc(x.flatten(1)))

        @property
        def output_shape(self):
            return ShapeSpec(channels=self.dim)

    registered(BACKBONE_REGISTRY, build_toy_backbone)
    registered(ROI_BOX_HEAD_REGISTRY, ToyBoxHead)
    cfg = _tiny_cfg()
    cfg.merge_from_list(
        [
            "MODEL.BACKBONE.NAME", "build_toy_backbone",
            "MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64]]",
            "MODEL.RPN.IN_FEATURES", "['s8', 's16']",
            "MODEL.ROI_HEADS.IN_FEATURES", "['s8', 's16']",
            "MODEL.ROI_BOX_HEAD.NAME", "ToyBoxHead",
        ]
    )  # fmt: skip
    model = build_model(cfg)
    assert type(model.backbone) is ToyBackbone and model.backbone.channels == 16
    assert type(model.roi_heads.box_head) is ToyBoxHead and model.roi_heads.box_head.dim == 16
    assert model.roi_heads.box_predictor.cls_score.in_features == 16  # from the head's output_shape
    assert model.roi_heads.box_pooler.level_poolers[1].spatial_scale == 1 / 16
    losses = model(_image_batch())
    assert all(torch.isfinite(v) for v in losses.values())


def test_unknown_registry_name_names_the_key():
    cfg = _tiny_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "NoSuchHeads"
    with pytest.raises(KeyError) as e:
        build_model(cfg)
    assert "MODEL.ROI_HEADS.NAME" in str(e.value) and "NoSuchHeads" in str(e.value)
    assert "StandardROIHeads" in str(e.value)  # lists what is registered
    cfg = _tiny_cfg()
    cfg.MODEL.RPN.IN_FEATURES = ["p9"]
    with pytest.raises(ValueError, match="MODEL.RPN.IN_FEATURES"):
        build_model(cfg)


def test_build_optimizer_follows_solver_keys():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    cfg = get_cfg()
    cfg.merge_from_list(
        ["SOLVER.BASE_LR", "0.1", "SOLVER.MOMENTUM", "0.8", "SOLVER.NESTEROV", "True", "SOLVER.WEIGHT_DECAY", "0.01"]
    )
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(model[1].weight)] == 0.0 and decay[id(model[1].bias)] == 0.0  # WEIGHT_DECAY_NORM
    assert decay[id(model[0].weight)] == 0.01 and decay[id(model[2].bias)] == 0.01
    assert all(g["lr"] == 0.1 and g["momentum"] == 0.8 and g["nesterov"] for g in optimizer.param_groups)


@pytest.mark.parametrize("clip_type", ["value", "norm", "full_model"])
def test_build_optimizer_clips_gradients(clip_type):
    model = nn.Linear(3, 2)
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "SOLVER.BASE_LR", "1.0", "SOLVER.MOMENTUM", "0.0", "SOLVER.WEIGHT_DECAY", "0.0",
            "SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip_type,
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.5",
        ]
    )  # fmt: skip
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD)
    before = [p.detach().clone() for p in model.parameters()]
    grads = [torch.full_like(p, 3.0) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    optimizer.step()
    steps = [b - p.detach() for b, p in zip(before, model.parameters())]  # lr 1: the applied gradient
    if clip_type == "value":
        expected = [torch.full_like(g, 0.5) for g in grads]
    elif clip_type == "norm":
        expected = [g * (0.5 / g.norm()) for g in grads]
    else:
        total = torch.cat([g.flatten() for g in grads]).norm()
        expected = [g * (0.5 / total) for g in grads]
    for step, exp in zip(steps, expected):
        torch.testing.assert_close(step, exp, rtol=1e-5, atol=1e-6)


def test_build_lr_scheduler_multistep_with_warmup():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "SOLVER.BASE_LR", "1.0", "SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(6, 8, 12)", "SOLVER.GAMMA", "0.1",
            "SOLVER.WARMUP_ITERS", "2", "SOLVER.WARMUP_FACTOR", "0.5",
        ]
    )  # fmt: skip
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # linear warmup from 0.5, then x0.1 at 6 and 8 (12 is past MAX_ITER)
    expected = [0.5, 0.75, 1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]
    assert lrs == pytest.approx(expected)


def test_build_lr_scheduler_cosine_ends_at_base_lr_end():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.BASE_LR", "0.2", "SOLVER.BASE_LR_END", "0.02",
            "SOLVER.MAX_ITER", "100", "SOLVER.WARMUP_ITERS", "0",
        ]
    )  # fmt: skip
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[50] == pytest.approx(0.02 + (0.2 - 0.02) * 0.5)
    assert lrs[-1] == pytest.approx(0.02 + 0.18 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 99 / 100)).item()))
    cfg.SOLVER.LR_SCHEDULER_NAME = "Warmup"
    with pytest.raises(ValueError, match="SOLVER.LR_SCHEDULER_NAME"):
        build_lr_scheduler(cfg, optimizer)


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    meta = {"thing_classes": list(SHAPES_CLASSES)}
    for name, split, n, seed in ((TRAIN_NAME, "train", 4, 0), (VAL_NAME, "val", 2, 1)):
        paths = generate_shapes_dataset(root, split, num_images=n, seed=seed, image_sizes=((64, 96),), max_objects=3)
        if name in DatasetCatalog.keys():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, meta, paths["json_file"], paths["image_root"])
    yield root
    for name in (TRAIN_NAME, VAL_NAME):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_data_loaders_from_the_config(tiny_shapes):
    cfg = _tiny_cfg()
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN", f"('{TRAIN_NAME}',)",
            "DATASETS.TEST", f"('{VAL_NAME}',)",
            "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.MAX_SIZE_TRAIN", "160",
        ]
    )  # fmt: skip
    batch = next(iter(build_detection_train_loader(cfg)))
    assert len(batch) == 2
    for d in batch:
        assert min(d["image"].shape[1:]) == 96  # INPUT.MIN_SIZE_TRAIN
        assert d["instances"].has("gt_masks")  # MODEL.MASK_ON
    # a user mapper replaces the default one
    seen = []

    def mapper(d):
        seen.append(d["file_name"])
        return d

    assert next(iter(build_detection_train_loader(cfg, mapper=mapper)))[0]["file_name"] == seen[0]

    test_batches = list(build_detection_test_loader(cfg, VAL_NAME))
    assert len(test_batches) == 2
    assert min(test_batches[0][0]["image"].shape[1:]) == 80  # INPUT.MIN_SIZE_TEST
    assert "instances" not in test_batches[0][0]
    # build_detection_test_loader(cfg, name) and the plain call build the same loader
    with pytest.raises(ValueError, match="one dataset"):
        build_detection_test_loader(cfg, [VAL_NAME, TRAIN_NAME])


def test_train_loader_needs_a_dataset():
    cfg = _tiny_cfg()
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        build_detection_train_loader(cfg)


def test_translated_config_saves_and_reloads_as_a_lazy_config(tmp_path):
    from libdet.config import LazyConfig, instantiate
    from libdet.config.yaml_translate import translate_config

    cfg = _tiny_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", "('coco_2017_train',)", "SOLVER.CLIP_GRADIENTS.ENABLED", "True"])
    lazy = translate_config(cfg)
    saved = LazyConfig.save(lazy, str(tmp_path / "translated.yaml"))
    assert saved.endswith(".yaml")  # plain YAML: runnable with tools/lazyconfig_train_net.py
    again = LazyConfig.load(saved)
    assert again.train.grad_transforms[0].clip_type == "value"
    torch.manual_seed(0)
    a = instantiate(lazy.model)
    torch.manual_seed(0)
    b = instantiate(again.model)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_ported_subclass_with_from_config(registered):
    """detectron2's pattern: a subclass adds an option in from_config on top of its base's arguments."""
    from libdet.config.yaml_model import builtin_from_config

    class HeadsWithOption(StandardROIHeads):
        @configurable
        def __init__(self, *, loss_scale, **kwargs):
            super().__init__(**kwargs)
            self.loss_scale = loss_scale

        @classmethod
        def from_config(cls, cfg, input_shape):
            ret = builtin_from_config(StandardROIHeads, cfg, input_shape)  # detectron2: super().from_config(...)
            ret["loss_scale"] = cfg.MODEL.ROI_HEADS.NUM_CLASSES / 10
            return ret

    registered(ROI_HEADS_REGISTRY, HeadsWithOption)
    cfg = _tiny_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "HeadsWithOption"
    model = build_model(cfg)
    assert type(model.roi_heads) is HeadsWithOption and model.roi_heads.loss_scale == pytest.approx(0.3)
    reference = build_model(_tiny_cfg())
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    losses = model(_image_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(TypeError, match="not a libdet module"):
        builtin_from_config(nn.Linear, cfg)
