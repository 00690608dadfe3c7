"""detectron2's YAML config layer: CfgNode semantics (``_BASE_`` chains, overrides, freeze, dump, safe loading),
errors that name the key and the file, detectron2's default values, VERSION upgrades, ``configurable`` and
``global_cfg``."""

from __future__ import annotations

import textwrap

import pytest

from libdet.config import (
    CfgNode,
    configurable,
    downgrade_config,
    get_cfg,
    global_cfg,
    set_global_cfg,
    upgrade_config,
)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_defaults_hold_detectron2_values():
    cfg = get_cfg()
    assert cfg.VERSION == 2
    expected = {
        "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
        "MODEL.DEVICE": "cuda",
        "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
        "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
        "MODEL.BACKBONE.NAME": "build_resnet_backbone",
        "MODEL.BACKBONE.FREEZE_AT": 2,
        "MODEL.ANCHOR_GENERATOR.SIZES": [[32, 64, 128, 256, 512]],
        "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 12000,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
        "MODEL.RPN.IOU_THRESHOLDS": [0.3, 0.7],
        "MODEL.ROI_HEADS.NAME": "Res5ROIHeads",
        "MODEL.ROI_HEADS.NUM_CLASSES": 80,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
        "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0),
        "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 14,
        "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES": 50,
        "MODEL.ROI_BOX_CASCADE_HEAD.IOUS": (0.5, 0.6, 0.7),
        "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS": (512,) * 8,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 54,
        "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": 4096,
        "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.1,
        "MODEL.RESNETS.STRIDE_IN_1X1": True,
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
        "INPUT.MIN_SIZE_TRAIN": (800,),
        "INPUT.CROP.SIZE": [0.9, 0.9],
        "DATALOADER.REPEAT_SQRT": True,
        "SOLVER.BASE_LR": 0.001,
        "SOLVER.STEPS": (30000,),
        "SOLVER.WARMUP_FACTOR": 1.0 / 1000,
        "SOLVER.WEIGHT_DECAY_BIAS": None,
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "value",
        "SOLVER.NUM_DECAYS": 3,
        "TEST.AUG.MIN_SIZES": (400, 500, 600, 700, 800, 900, 1000, 1100, 1200),
        "TEST.DETECTIONS_PER_IMAGE": 100,
        "OUTPUT_DIR": "./output",
        "FLOAT32_PRECISION": "",
        "GLOBAL.HACK": 1.0,
    }
    for key, value in expected.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    # every section of detectron2's defaults
    assert set(cfg) == {
        "VERSION", "MODEL", "INPUT", "DATASETS", "DATALOADER", "SOLVER", "TEST", "OUTPUT_DIR", "SEED",
        "CUDNN_BENCHMARK", "FLOAT32_PRECISION", "VIS_PERIOD", "GLOBAL",
    }  # fmt: skip
    assert get_cfg() is not get_cfg()  # a fresh copy each time


def test_base_chain_relative_and_list(tmp_path):
    _write(tmp_path / "Base-A.yaml", "MODEL:\n  MASK_ON: True\n  RESNETS:\n    DEPTH: 101\nSOLVER:\n  BASE_LR: 0.5\n")
    _write(tmp_path / "Base-B.yaml", "SOLVER:\n  BASE_LR: 0.25\n  MAX_ITER: 7\n")
    _write(tmp_path / "mid" / "mid.yaml", '_BASE_: ["../Base-A.yaml", "../Base-B.yaml"]\nSOLVER:\n  MAX_ITER: 9\n')
    leaf = _write(tmp_path / "mid" / "sub" / "leaf.yaml", '_BASE_: "../mid.yaml"\nMODEL:\n  RESNETS:\n    DEPTH: 50\n')
    cfg = get_cfg()
    cfg.merge_from_file(leaf)
    assert cfg.MODEL.MASK_ON is True
    assert cfg.MODEL.RESNETS.DEPTH == 50  # the leaf wins over its base
    assert cfg.SOLVER.BASE_LR == 0.25  # the later base wins
    assert cfg.SOLVER.MAX_ITER == 9
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80  # untouched defaults stay


def test_unknown_key_error_names_key_and_file(tmp_path):
    path = _write(tmp_path / "bad.yaml", "MODEL:\n  ROI_HEADS:\n    NUM_CLASSE: 3\n")
    with pytest.raises(KeyError) as e:
        get_cfg().merge_from_file(path)
    msg = str(e.value)
    assert "MODEL.ROI_HEADS.NUM_CLASSE" in msg and "bad.yaml" in msg and "MODEL.ROI_HEADS.NUM_CLASSES" in msg


def test_unknown_key_in_a_base_names_the_leaf(tmp_path):
    _write(tmp_path / "base.yaml", "SOLVER:\n  LR: 0.1\n")
    leaf = _write(tmp_path / "leaf.yaml", '_BASE_: "base.yaml"\n')
    with pytest.raises(KeyError, match=r"SOLVER\.LR.*"):
        get_cfg().merge_from_file(leaf)


def test_type_mismatch_names_file_and_key(tmp_path):
    path = _write(tmp_path / "typed.yaml", "SOLVER:\n  MAX_ITER: 'many'\n")
    with pytest.raises(ValueError) as e:
        get_cfg().merge_from_file(path)
    assert "typed.yaml" in str(e.value) and "SOLVER.MAX_ITER" in str(e.value)


def test_missing_file_and_missing_base(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        get_cfg().merge_from_file(str(tmp_path / "nope.yaml"))
    leaf = _write(tmp_path / "leaf.yaml", '_BASE_: "gone.yaml"\n')
    with pytest.raises(FileNotFoundError) as e:
        get_cfg().merge_from_file(leaf)
    assert "leaf.yaml" in str(e.value) and "gone.yaml" in str(e.value)


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "ran"
    path = _write(
        tmp_path / "evil.yaml",
        f"SOLVER:\n  BASE_LR: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    with pytest.raises(ValueError, match="evil.yaml"):
        get_cfg().merge_from_file(path)
    assert not marker.exists()
    not_mapping = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        get_cfg().merge_from_file(not_mapping)
    empty = _write(tmp_path / "empty.yaml", "")
    cfg = get_cfg()
    cfg.merge_from_file(empty)  # an empty file changes nothing
    assert cfg == get_cfg()


def test_merge_from_list_decodes_literals_and_names_unknown_keys():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.STEPS", "(10, 20)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.7", "OUTPUT_DIR", "/x"])
    assert cfg.SOLVER.STEPS == (10, 20) and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.7 and cfg.OUTPUT_DIR == "/x"
    with pytest.raises(KeyError, match="SOLVER.STEP'"):
        cfg.merge_from_list(["SOLVER.STEP", "(1,)"])
    with pytest.raises(ValueError, match="odd"):
        cfg.merge_from_list(["SOLVER.STEPS"])


def test_freeze_dump_and_reload_round_trip(tmp_path):
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    cfg.freeze()
    with pytest.raises(AttributeError):
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(dumped))
    # (yacs dumps tuples as lists; nested ones come back as lists, so compare the dumps)
    assert again.dump() == cfg.dump() and again.MODEL.ROI_HEADS.NUM_CLASSES == 5
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = 3
    assert cfg.SOLVER.MAX_ITER == 3


def test_version_1_config_is_upgraded(tmp_path):
    path = _write(
        tmp_path / "old.yaml",
        """
        VERSION: 1
        MODEL:
          WEIGHT: "model.pkl"
          RPN:
            ANCHOR_SIZES: [[16, 32]]
          ROI_HEADS:
            SCORE_THRESH: 0.3
        TEST:
          DETECTIONS_PER_IMG: 50
        """,
    )
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.VERSION == 2
    assert cfg.MODEL.WEIGHTS == "model.pkl"
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[16, 32]]
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.3
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 50
    assert "WEIGHT" not in cfg.MODEL and "ANCHOR_SIZES" not in cfg.MODEL.RPN


def test_downgrade_then_upgrade_restores_the_config():
    cfg = get_cfg()
    cfg.MODEL.WEIGHTS = "w.pth"
    cfg.TEST.AUG.FLIP = False
    old = downgrade_config(cfg, to_version=1)
    assert old.VERSION == 1 and old.MODEL.WEIGHT == "w.pth" and old.TEST.AUG_FLIP is False
    assert old.MODEL.RPN.ANCHOR_SIZES == [[32, 64, 128, 256, 512]]
    assert upgrade_config(old) == cfg


def test_configurable_class_and_function():
    class Head:
        @configurable
        def __init__(self, *, num_classes, dim=8, extra=None):
            self.num_classes, self.dim, self.extra = num_classes, dim, extra

        @classmethod
        def from_config(cls, cfg, dim=16):
            return {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES, "dim": dim}

    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4
    head = Head(cfg, dim=32, extra="x")  # `extra` is not a from_config argument: passed through
    assert (head.num_classes, head.dim, head.extra) == (4, 32, "x")
    assert Head(cfg=cfg).dim == 16
    plain = Head(num_classes=2)
    assert (plain.num_classes, plain.dim) == (2, 8)

    @configurable(from_config=lambda cfg, scale=1: {"lr": cfg.SOLVER.BASE_LR * scale})
    def make(lr, momentum=0.9):
        return lr, momentum

    assert make(cfg, scale=10, momentum=0.5) == (pytest.approx(0.01), 0.5)
    assert make(0.1) == (0.1, 0.9)

    with pytest.raises(TypeError, match="__init__"):
        configurable(lambda: None)


def test_global_cfg():
    cfg = get_cfg()
    cfg.GLOBAL.HACK = 2.5
    set_global_cfg(cfg)
    try:
        assert global_cfg.GLOBAL.HACK == 2.5
        cfg.GLOBAL.HACK = 3.0  # a copy was stored
        assert global_cfg.GLOBAL.HACK == 2.5
    finally:
        set_global_cfg(CfgNode())
    assert len(global_cfg) == 0


def test_file_without_version_and_with_old_keys_is_upgraded(tmp_path):
    path = _write(tmp_path / "noversion.yaml", "MODEL:\n  WEIGHT: 'a.pkl'\n")
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.WEIGHTS == "a.pkl" and cfg.VERSION == 2
