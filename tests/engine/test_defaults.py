import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from libdet.config import LazyConfig
from libdet.engine.defaults import (
    BatchPredictor,
    DefaultPredictor,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
)
from libdet.modeling.postprocessing import detector_postprocess
from libdet.structures import Boxes, Instances


@pytest.fixture(autouse=True)
def _restore_loggers():
    """default_setup configures the 'libdet' and 'fvcore' loggers; undo it so other tests see the defaults."""
    import logging

    saved = {}
    for name in ("libdet", "fvcore"):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level


def test_argument_parser_defaults_and_overrides():
    parser = default_argument_parser()
    args = parser.parse_args(
        ["--config-file", "c.py", "--resume", "--num-gpus", "2", "train.max_iter=10", "optimizer.lr=0.5"]
    )
    assert args.config_file == "c.py" and args.resume and not args.eval_only
    assert args.num_gpus == 2 and args.num_machines == 1 and args.machine_rank == 0
    assert args.dist_url == "auto"
    assert args.opts == ["train.max_iter=10", "optimizer.lr=0.5"]
    cfg = OmegaConf.create({"train": {"max_iter": 1}, "optimizer": {"lr": 0.1}})
    LazyConfig.apply_overrides(cfg, args.opts)
    assert cfg.train.max_iter == 10 and cfg.optimizer.lr == 0.5
    assert parser.parse_args([]).opts == []


def _cfg(output_dir, seed):
    return OmegaConf.create(
        {
            "model": {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 3},
            "train": {"output_dir": str(output_dir), "seed": seed, "max_iter": 5, "cudnn_benchmark": True},
        }
    )


def test_default_setup_writes_config_log_and_seeds(tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(out, seed=7)
    config_file = tmp_path / "my_config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg))
    args = default_argument_parser().parse_args(["--config-file", str(config_file), "train.max_iter=5"])
    old_benchmark = torch.backends.cudnn.benchmark
    try:
        default_setup(cfg, args)
        drawn = (torch.rand(3), np.random.rand(3))
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
    torch.manual_seed(7)
    np.random.seed(7)
    assert torch.equal(drawn[0], torch.rand(3))
    assert np.array_equal(drawn[1], np.random.rand(3))

    saved = LazyConfig.load(str(out / "config.yaml"))
    assert OmegaConf.to_container(saved) == OmegaConf.to_container(cfg)
    log = (out / "log.txt").read_text()
    assert "Command line arguments" in log and "my_config.yaml" in log and "Seeded all RNGs with 7" in log
    assert "Environment info" in log


def test_default_setup_random_seed_is_logged(tmp_path):
    out = tmp_path / "run2"
    args = default_argument_parser().parse_args(["--eval-only"])
    default_setup(_cfg(out, seed=-1), args)
    assert "generated random seed" in (out / "log.txt").read_text()


def test_default_setup_missing_config_file_names_it(tmp_path):
    args = default_argument_parser().parse_args(["--config-file", str(tmp_path / "absent.py")])
    with pytest.raises(FileNotFoundError, match="absent.py"):
        default_setup(_cfg(tmp_path / "run3", seed=1), args)


def test_default_writers(tmp_path):
    from libdet.utils.events import CommonMetricPrinter, EventStorage, JSONWriter, TensorboardXWriter

    writers = default_writers(str(tmp_path / "out"), max_iter=10)
    assert [type(w) for w in writers] == [CommonMetricPrinter, JSONWriter, TensorboardXWriter]
    with EventStorage(0) as storage:
        storage.put_scalar("loss", 1.5)
        for w in writers:
            w.write()
    for w in writers:
        w.close()
    lines = (tmp_path / "out" / "metrics.json").read_text().splitlines()
    assert json.loads(lines[0])["loss"] == 1.5


class _FakeDetector(nn.Module):
    """Predicts one box covering the whole network input, and records the input it got.

    ``mean_c0`` holds the mean of input channel 0, so channel order is visible in the output.
    """

    def __init__(self):
        super().__init__()
        self.calls = []
        self.register_buffer("dummy", torch.zeros(1))

    def forward(self, batched_inputs):
        self.calls.append(batched_inputs)
        outputs = []
        for x in batched_inputs:
            img = x["image"]
            h, w = img.shape[1:]
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, float(w), float(h)]]))
            inst.scores = torch.tensor([0.9])
            inst.mean_c0 = img[0].float().mean().reshape(1)
            outputs.append({"instances": detector_postprocess(inst, x["height"], x["width"])})
        return outputs


def _bgr_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    img[: h // 2] += rng.integers(0, 5, size=(h // 2, w, 3), dtype=np.uint8)
    return img


@pytest.mark.parametrize("input_format, first_channel", [("BGR", 10), ("RGB", 30)])
def test_default_predictor_resizes_converts_and_rescales(input_format, first_channel):
    model = _FakeDetector().train()
    pred = DefaultPredictor(model, min_size_test=32, max_size_test=40, input_format=input_format)
    assert not model.training
    out = pred(_bgr_image(20, 30))
    (x,) = model.calls[-1]
    assert x["height"] == 20 and x["width"] == 30
    assert x["image"].dtype == torch.uint8
    assert tuple(x["image"].shape) == (3, 27, 40)  # 32 * 30/20 = 48 > 40, so scaled to the longer-side cap
    assert (x["image"][:, 15:] == torch.tensor([first_channel, 20, 40 - first_channel]).view(3, 1, 1)).all()
    inst = out["instances"]
    assert inst.image_size == (20, 30)
    assert torch.allclose(inst.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 30.0, 20.0]]))


def test_default_predictor_rejects_bad_image():
    pred = DefaultPredictor(_FakeDetector(), min_size_test=32)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        pred(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="input_format"):
        DefaultPredictor(_FakeDetector(), input_format="YUV")


def test_batch_predictor_matches_single_predictor():
    images = [_bgr_image(20, 30, 0), _bgr_image(40, 24, 1), _bgr_image(32, 32, 2)]
    model = _FakeDetector()
    single = DefaultPredictor(model, min_size_test=32, max_size_test=64, input_format="RGB")
    batch = BatchPredictor(model, min_size_test=32, max_size_test=64, input_format="RGB")
    expected = [single(img) for img in images]
    model.calls.clear()
    got = batch(images)
    # a model without a libdet backbone: one forward per distinct input size (padding would change results)
    assert sorted(len(c) for c in model.calls) == [1, 1, 1]
    assert len(got) == 3
    for e, g in zip(expected, got):
        e, g = e["instances"], g["instances"]
        assert e.image_size == g.image_size
        assert torch.equal(e.pred_boxes.tensor, g.pred_boxes.tensor)
        assert torch.equal(e.mean_c0, g.mean_c0)
    assert batch([]) == []
    with pytest.raises(TypeError, match="list"):
        batch(images[0])


def test_create_ddp_model_single_process_returns_model():
    model = nn.Linear(2, 2)
    assert create_ddp_model(model, fp16_compression=True) is model


def test_predictors_and_checkpointer_with_a_real_tiny_rcnn(tmp_path):
    from libdet.checkpoint import DetectionCheckpointer
    from libdet.config import instantiate
    from tests.modeling._tiny_models import tiny_mask_rcnn_fpn

    torch.manual_seed(0)
    model = instantiate(tiny_mask_rcnn_fpn(mask=False))
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    torch.manual_seed(1)
    loaded = instantiate(tiny_mask_rcnn_fpn(mask=False))
    DetectionCheckpointer(loaded).load(str(tmp_path / "model_final.pth"))
    for (k, v), v2 in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(v, v2), k

    images = [_bgr_image(48, 64, 0), _bgr_image(48, 64, 1)]
    single = DefaultPredictor(loaded, min_size_test=64, max_size_test=96)
    batch = BatchPredictor(loaded, min_size_test=64, max_size_test=96)
    expected = [single(img)["instances"] for img in images]
    got = [out["instances"] for out in batch(images)]
    for e, g in zip(expected, got):
        assert e.image_size == g.image_size == (48, 64)
        assert len(e) == len(g) > 0
        assert torch.allclose(e.pred_boxes.tensor, g.pred_boxes.tensor, atol=1e-3)
        if len(e):
            assert e.pred_boxes.tensor[:, 2].max() <= 64 and e.pred_boxes.tensor[:, 3].max() <= 48


def test_resolve_device_names_the_setting():
    from libdet.engine import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(ValueError, match="train.device='not-a-device' is not a device"):
        resolve_device("not-a-device")
    with pytest.raises(ValueError, match="--device='tpu:x' is not a device"):
        resolve_device("tpu:x", setting="--device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
