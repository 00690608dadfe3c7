"""libdet.model_zoo: config lookup (source checkout and packaged copy), trained-checkpoint URLs, building models
and the errors for unknown configs, configs without weights and failed downloads."""

import os
import shutil

import pytest
import torch

from libdet import model_zoo
from libdet.model_zoo import model_zoo as mz

REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def test_get_config_file_finds_repo_configs():
    path = model_zoo.get_config_file("COCO/mask_rcnn_r50.py")
    assert os.path.samefile(path, os.path.join(REPO_CONFIGS, "COCO", "mask_rcnn_r50.py"))
    assert os.path.samefile(model_zoo.get_config_file("configs/COCO/mask_rcnn_r50.py"), path)


def test_every_url_config_exists_and_urls_are_detectron2_checkpoints():
    for rel in mz._CHECKPOINTS:
        assert os.path.isfile(model_zoo.get_config_file(rel)), rel
        url = model_zoo.get_checkpoint_url(rel)
        assert url.startswith("https://dl.fbaipublicfiles.com/detectron2/") and url.endswith(".pkl")
    assert model_zoo.get_checkpoint_url("COCO/mask_rcnn_r50.py") == (
        "https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/137260431/"
        "model_final_a54504.pkl"
    )


def test_missing_config_lists_close_names():
    with pytest.raises(FileNotFoundError, match="mask_rcnn_r50.py") as e:
        model_zoo.get_config_file("COCO/mask_rcnn_r5.py")
    assert "Closest" in str(e.value) and "COCO/mask_rcnn_r50.py" in str(e.value)


def test_packaged_configs_take_precedence(tmp_path, monkeypatch):
    """An installed (non-editable) package has its configs copied to libdet/model_zoo/configs by setup.py."""
    packaged = tmp_path / "configs"
    shutil.copytree(REPO_CONFIGS, packaged, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(mz, "_config_roots", lambda: [packaged, tmp_path / "missing"])
    path = model_zoo.get_config_file("shapes/mask_rcnn_cpu.py")
    assert path == str(packaged / "shapes" / "mask_rcnn_cpu.py")
    cfg = model_zoo.get_config("shapes/mask_rcnn_cpu.py")  # relative imports resolve inside the copy
    assert cfg.model.roi_heads.num_classes == 3


def test_get_config_trained_sets_init_checkpoint():
    cfg = model_zoo.get_config("COCO/retinanet_r50.py")
    assert cfg.train.init_checkpoint == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    cfg = model_zoo.get_config("COCO/retinanet_r50.py", trained=True)
    assert cfg.train.init_checkpoint == model_zoo.get_checkpoint_url("COCO/retinanet_r50.py")
    assert "190397773" in cfg.train.init_checkpoint


def test_no_checkpoint_for_config_without_weights():
    with pytest.raises(RuntimeError, match="no trained checkpoint.*shapes/mask_rcnn_cpu.py"):
        model_zoo.get_config("shapes/mask_rcnn_cpu.py", trained=True)
    with pytest.raises(RuntimeError, match="no trained checkpoint"):
        model_zoo.get("shapes/mask_rcnn_cpu.py", trained=True, device="cpu")


def test_get_builds_untrained_model():
    model = model_zoo.get("shapes/mask_rcnn_cpu.py", device="cpu")
    assert isinstance(model, torch.nn.Module)
    assert model.roi_heads.num_classes == 3
    assert next(model.parameters()).device.type == "cpu"


def test_get_trained_reports_download_failure(monkeypatch):
    from libdet.utils import file_io

    def offline(self, path, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(file_io.HTTPURLHandler, "_get_local_path", offline)
    with pytest.raises(RuntimeError) as e:
        model_zoo.get("COCO/faster_rcnn_r50.py", trained=True, device="cpu")
    msg = str(e.value)
    assert "COCO/faster_rcnn_r50.py" in msg and model_zoo.get_checkpoint_url("COCO/faster_rcnn_r50.py") in msg
    assert "network is unreachable" in msg
