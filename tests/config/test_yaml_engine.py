"""detectron2's YAML workflow end to end: the model card's quick start (``DefaultPredictor(cfg)`` + ``Visualizer``),
``DefaultTrainer`` on the shapes dataset, and ``tools/train_net.py`` / ``tools/plain_train_net.py`` (training,
evaluation, exact resume)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets import register_coco_instances
from libdet.data.datasets.shapes import SHAPES_CLASSES, generate_shapes_dataset
from libdet.engine import default_argument_parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NAME, VAL_NAME = "_yaml_test_shapes_train", "_yaml_test_shapes_val"

# A narrow R18-FPN Mask R-CNN for 128 px images, as YAML overrides of a model-zoo config.
TINY_MODEL = [
    "MODEL.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "MODEL.PIXEL_STD", "[57.375, 57.120, 58.395]",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.NORM", "BN",
    "MODEL.BACKBONE.FREEZE_AT", "0",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.NUM_CLASSES", "3",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_MASK_HEAD.NUM_CONV", "1",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "160",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "160",
    "DATALOADER.NUM_WORKERS", "0",
    "SEED", "0",
]  # fmt: skip
ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_model_card_quick_start(tmp_path):
    """The model card's snippet, with detectron2 -> libdet and local weights (a random-init model saved here)."""
    from libdet import model_zoo
    from libdet.checkpoint import DetectionCheckpointer
    from libdet.config import get_cfg
    from libdet.data import MetadataCatalog
    from libdet.engine import DefaultPredictor
    from libdet.modeling import build_model
    from libdet.utils.visualizer import Visualizer

    torch.manual_seed(0)
    base = get_cfg()
    base.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    DetectionCheckpointer(build_model(base), str(tmp_path)).save("model_random")
    weights = str(tmp_path / "model_random.pth")
    im = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)  # BGR, as cv2.imread gives

    # --- the snippet
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.5  # set threshold for this model
    cfg.MODEL.WEIGHTS = weights
    predictor = DefaultPredictor(cfg)
    outputs = predictor(im)
    v = Visualizer(im[:, :, ::-1], MetadataCatalog.get(cfg.DATASETS.TRAIN[0]), scale=1.2)
    out = v.draw_instance_predictions(outputs["instances"].to("cpu"))
    # ---

    assert out.get_image().shape == (115, 153, 3)
    instances = outputs["instances"]
    assert instances.image_size == (96, 128)
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(instances.get_fields())
    assert bool((instances.scores >= 0.5).all())
    # the predictor runs the saved weights with the config's settings
    saved = torch.load(weights, weights_only=True)["model"]
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert predictor.model.roi_heads.box_predictor.test_score_thresh == 0.5
    assert predictor.input_format == "BGR" and predictor.metadata.name == "coco_2017_val"


@pytest.mark.slow
def test_default_trainer_trains_on_shapes(tmp_path):
    from libdet import model_zoo
    from libdet.config import get_cfg
    from libdet.engine import DefaultTrainer
    from libdet.evaluation import COCOEvaluator

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIG))
    cfg.merge_from_list(TINY_MODEL)
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN", "('shapes_train',)",
            "DATASETS.TEST", "()",
            "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.BASE_LR", "0.005",
            "SOLVER.MAX_ITER", "10",
            "SOLVER.STEPS", "(8,)",
            "SOLVER.WARMUP_ITERS", "2",
            "SOLVER.CHECKPOINT_PERIOD", "5",
            "OUTPUT_DIR", str(tmp_path),
        ]
    )  # fmt: skip

    built = []

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name):
            return COCOEvaluator(dataset_name, output_dir=cfg.OUTPUT_DIR)

        @classmethod
        def build_train_loader(cls, cfg):
            built.append("train_loader")  # an overridden classmethod is used
            return super().build_train_loader(cfg)

    trainer = Trainer(cfg)
    assert built == ["train_loader"]
    assert trainer.model.backbone.bottom_up.res2[0].conv1.weight.shape == (64, 64, 3, 3)  # the R18 override
    trainer.resume_or_load(resume=False)
    trainer.train()

    rows = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    last = rows[-1]
    assert last["iteration"] == 9
    assert all(np.isfinite(last[k]) for k in ("total_loss", "loss_cls", "loss_mask", "loss_rpn_cls"))
    assert last["lr"] == pytest.approx(0.005 * 0.1)  # after the step at iteration 8
    assert (tmp_path / "model_final.pth").is_file()

    # a new trainer resumes after the last checkpoint
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = 10
    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 10


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    """Two tiny shapes splits (64-96 px) registered under test-only names."""
    root = str(tmp_path_factory.mktemp("shapes"))
    meta = {"thing_classes": list(SHAPES_CLASSES)}
    for name, split, n, seed in ((TRAIN_NAME, "train", 6, 0), (VAL_NAME, "val", 2, 1)):
        paths = generate_shapes_dataset(
            root, split, num_images=n, seed=seed, image_sizes=((64, 64), (64, 96)), max_objects=3
        )
        if name in DatasetCatalog.keys():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, meta, paths["json_file"], paths["image_root"])
    yield root
    for name in (TRAIN_NAME, VAL_NAME):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _args(config_file, output_dir, *extra, resume=False, eval_only=False):
    argv = ["--config-file", config_file]
    argv += ["--resume"] if resume else []
    argv += ["--eval-only"] if eval_only else []
    argv += TINY_MODEL + [
        "DATASETS.TRAIN", f"('{TRAIN_NAME}',)",
        "DATASETS.TEST", f"('{VAL_NAME}',)",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.BASE_LR", "0.005",
        "SOLVER.MAX_ITER", "6",
        "SOLVER.STEPS", "(4,)",
        "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.CHECKPOINT_PERIOD", "3",
        "OUTPUT_DIR", str(output_dir),
        *extra,
    ]  # fmt: skip
    return default_argument_parser().parse_args(argv)


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow
def test_train_net_trains_evaluates_and_resumes_exactly(tiny_shapes, tmp_path):
    from libdet import model_zoo

    tool = _load_tool("train_net")
    config = model_zoo.get_config_file(ZOO_CONFIG)
    full, part = tmp_path / "full", tmp_path / "part"

    tool.main(_args(config, full))
    assert (full / "config.yaml").is_file() and (full / "model_final.pth").is_file()
    results = tool.main(_args(config, full, "MODEL.WEIGHTS", str(full / "model_final.pth"), eval_only=True))
    assert set(results) == {"bbox", "segm"} and np.isfinite(results["bbox"]["AP"])

    # interrupted after the checkpoint at iteration 2, then resumed: the same final weights
    tool.main(_args(config, part))
    shutil.copy(full / "model_0000002.pth", part / "model_0000002.pth")
    (part / "last_checkpoint").write_text("model_0000002.pth")
    os.remove(part / "model_final.pth")
    tool.main(_args(config, part, resume=True))
    final, resumed = _weights(full / "model_final.pth"), _weights(part / "model_final.pth")
    assert final.keys() == resumed.keys()
    for key in final:
        torch.testing.assert_close(resumed[key], final[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_plain_train_net_trains_and_evaluates(tiny_shapes, tmp_path):
    from libdet import model_zoo

    tool = _load_tool("plain_train_net")
    results = tool.main(_args(model_zoo.get_config_file(ZOO_CONFIG), tmp_path, "SOLVER.MAX_ITER", "4"))
    assert {"bbox", "segm"} <= set(results)
    assert (tmp_path / "model_final.pth").is_file() and (tmp_path / "metrics.json").is_file()
