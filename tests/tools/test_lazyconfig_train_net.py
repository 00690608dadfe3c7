"""tools/lazyconfig_train_net.py: a few-iteration run of the shapes quickstart config (shrunk by overrides), eval-only
from the saved checkpoint, exact resume, and the errors for a missing config file / bad override / bad device."""

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from libdet.config import ConfigKeyError
from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.data.datasets import register_coco_instances
from libdet.data.datasets.shapes import SHAPES_CLASSES, generate_shapes_dataset
from libdet.engine import default_argument_parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "lazyconfig_train_net.py")
CONFIG = os.path.join(ROOT, "configs", "shapes", "mask_rcnn_cpu.py")
RESIZE, FLIP = "libdet.data.transforms.ResizeShortestEdge", "libdet.data.transforms.RandomFlip"
TRAIN_NAME, VAL_NAME = "_tool_test_shapes_train", "_tool_test_shapes_val"


def _load_tool():
    spec = importlib.util.spec_from_file_location("_tool_lazyconfig_train_net", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    """Two tiny shapes splits (64-96 px images) registered under test-only names."""
    root = str(tmp_path_factory.mktemp("shapes"))
    meta = {"thing_classes": list(SHAPES_CLASSES)}
    for name, split, n, seed in ((TRAIN_NAME, "train", 6, 0), (VAL_NAME, "val", 3, 1)):
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


def _opts(output_dir, max_iter, seed=0, **extra):
    opts = {
        "train.output_dir": output_dir,
        "train.max_iter": max_iter,
        "train.device": "cpu",
        "train.seed": seed,
        "train.log_period": 1,
        "train.smoothing_window": 1,
        "train.checkpointer.period": 3,
        "train.eval_period": 0,
        "train.amp.enabled": False,  # the quickstart config turns bf16 on where the CPU has it; tests stay fp32
        "dataloader.train.dataset.names": TRAIN_NAME,
        "dataloader.test.dataset.names": VAL_NAME,
        "dataloader.train.num_workers": 0,
        "dataloader.test.num_workers": 0,
        "dataloader.train.total_batch_size": 2,
        # lists are replaced whole: images of 64-80 px
        "dataloader.train.mapper.augmentations": f"[{{_target_:{RESIZE},short_edge_length:[64,80],max_size:128,"
        f"sample_style:choice}},{{_target_:{FLIP}}}]",
        "dataloader.test.mapper.augmentations": f"[{{_target_:{RESIZE},short_edge_length:64,max_size:128}}]",
        "model.roi_heads.num_classes": 3,
        "model.backbone.out_channels": 16,
        "model.roi_heads.box_head.fc_dims": "[32,32]",
        "model.roi_heads.mask_head.conv_dims": "[8]",
        "model.proposal_generator.post_nms_topk": "[64,32]",
        "model.roi_heads.batch_size_per_image": 32,
    }
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


def _args(output_dir, max_iter, *flags, **extra):
    argv = ["--config-file", CONFIG, *flags, *_opts(output_dir, max_iter, **extra)]
    return default_argument_parser().parse_args(argv)


def _losses(metrics_file):
    out = {}
    with open(metrics_file) as f:
        for line in f:
            row = json.loads(line)
            if "total_loss" in row:
                out[row["iteration"]] = {k: v for k, v in row.items() if k.startswith("loss_") or k == "total_loss"}
    return out


@pytest.fixture(scope="module")
def run_a(tiny_shapes, tmp_path_factory):
    """Run A: 6 uninterrupted iterations, checkpoints after iterations 2 and 5 (final)."""
    out = str(tmp_path_factory.mktemp("run_a"))
    last = tool.main(_args(out, 6))
    return out, last


def test_train_writes_checkpoints_metrics_and_config(run_a):
    out, last = run_a
    for name in ("model_0000002.pth", "model_final.pth", "last_checkpoint", "metrics.json", "config.yaml"):
        assert os.path.isfile(os.path.join(out, name)), name
    losses = _losses(os.path.join(out, "metrics.json"))
    assert sorted(losses) == list(range(6))
    assert all(np.isfinite(v) for row in losses.values() for v in row.values())
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses[0])
    assert last["total_loss"] == losses[5]["total_loss"]
    assert "bbox/AP" in last and "segm/AP" in last  # evaluated once after training
    with open(os.path.join(out, "eval_results.json")) as f:  # the final evaluation, also saved
        assert json.load(f)["bbox"]["AP"] == pytest.approx(last["bbox/AP"], nan_ok=True)
    ckpt = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert ckpt["iteration"] == 5 and ckpt["trainer"]["iteration"] == 5 and "optimizer" in ckpt


def test_eval_only_from_checkpoint(run_a, tmp_path):
    out, _ = run_a
    final = os.path.join(out, "model_final.pth")
    args = _args(str(tmp_path), 6, "--eval-only", **{"train.init_checkpoint": final})
    results = tool.main(args)
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(results["bbox"])
    assert "segm" in results
    with open(tmp_path / "eval_results.json") as f:
        assert json.load(f)["bbox"].keys() == results["bbox"].keys()


def test_exact_resume(run_a, tmp_path):
    """Run B starts from run A's checkpoint after iteration 2 (as if killed then) with --resume, under another
    seed and scrambled global RNGs: its iterations 3..5 must equal A's exactly, and so must the final weights."""
    out_a, _ = run_a
    out_b = str(tmp_path / "run_b")
    os.makedirs(out_b)
    shutil.copy(os.path.join(out_a, "model_0000002.pth"), out_b)
    with open(os.path.join(out_b, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth")
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    tool.main(_args(out_b, 6, "--resume", seed=7))

    losses_a = _losses(os.path.join(out_a, "metrics.json"))
    losses_b = _losses(os.path.join(out_b, "metrics.json"))
    assert sorted(losses_b) == [3, 4, 5]
    for it in (3, 4, 5):
        assert losses_b[it] == losses_a[it], f"iteration {it}: {losses_b[it]} != {losses_a[it]}"
    final_a = torch.load(os.path.join(out_a, "model_final.pth"), weights_only=True)["model"]
    final_b = torch.load(os.path.join(out_b, "model_final.pth"), weights_only=True)["model"]
    for k, v in final_a.items():
        assert torch.equal(v, final_b[k]), k


def test_resume_without_checkpoint_starts_from_scratch(tiny_shapes, tmp_path):
    last = tool.main(_args(str(tmp_path), 1, "--resume"))
    assert _losses(str(tmp_path / "metrics.json")).keys() == {0}
    assert np.isfinite(last["total_loss"])


def test_bad_override_names_the_key(tmp_path):
    args = default_argument_parser().parse_args(["--config-file", CONFIG, "train.max_itr=3"])
    with pytest.raises(ConfigKeyError, match="max_itr"):
        tool.main(args)


def test_cli_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.py")
    proc = subprocess.run(
        [sys.executable, TOOL, "--config-file", missing], capture_output=True, text=True, timeout=120, cwd=str(tmp_path)
    )
    assert proc.returncode != 0
    assert "nope.py" in proc.stderr and "does not exist" in proc.stderr


def test_grad_transforms_and_accumulation_from_the_config(tiny_shapes, tmp_path):
    """``train.grad_transforms`` and ``train.grad_accumulation_steps`` compose the trainer's step."""
    clip = "[{_target_:libdet.engine.ClipGradNormPerGroup,max_norm:1.0}]"
    last = tool.main(_args(str(tmp_path), 2, **{"train.grad_transforms": clip, "train.grad_accumulation_steps": 2}))
    assert any(k.startswith("grad_norm/group") for k in last) and np.isfinite(last["total_loss"])
    ckpt = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert ckpt["trainer"]["data_loader"]["batches_consumed"] == 4  # 2 iterations x 2 batches


def test_retired_clip_grad_norm_names_its_replacement(tiny_shapes, tmp_path):
    cfg = tool.LazyConfig.load(CONFIG)
    cfg.train.clip_grad_norm = 1.0
    with pytest.raises(ValueError, match="train.grad_transforms"):
        tool.build_optimizer_step(cfg, torch.device("cpu"))
