import logging
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from libdet.checkpoint import DetectionCheckpointer, ForbiddenGlobalError
from libdet.checkpoint import detection_checkpoint as dc


class _TinyNet(nn.Module):
    def __init__(self, out_channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels, 3)
        self.bn = nn.BatchNorm2d(out_channels)
        self.head = nn.Linear(out_channels, 2)


@pytest.fixture
def log_records():
    records = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("libdet.checkpoint")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _messages(records):
    return "\n".join(r.getMessage() for r in records)


def _trained_pair(seed: int = 0):
    torch.manual_seed(seed)
    model = _TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model.head(model.bn(model.conv(torch.rand(2, 3, 8, 8))).mean((2, 3))).sum()
    loss.backward()
    opt.step()
    return model, opt


def _fresh_pair(seed: int = 7):
    torch.manual_seed(seed)
    model = _TinyNet()
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_save_load_round_trip_with_optimizer_and_extra(tmp_path):
    model, opt = _trained_pair(0)
    ckpt = DetectionCheckpointer(model, str(tmp_path), optimizer=opt)
    ckpt.save("model_0000009", iteration=9, trainer={"lr": np.float32(0.5), "hist": np.arange(3)})
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    # our file is readable by a weights-only torch.load
    raw = torch.load(tmp_path / "model_0000009.pth", weights_only=True)
    assert raw["iteration"] == 9 and raw["trainer"]["lr"] == 0.5
    assert torch.equal(raw["trainer"]["hist"], torch.arange(3))

    model2, opt2 = _trained_pair(1)
    assert not torch.equal(model2.conv.weight, model.conv.weight)
    extra = DetectionCheckpointer(model2, str(tmp_path), optimizer=opt2).load(str(tmp_path / "model_0000009.pth"))
    for (k, v), v2 in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(v, v2), k
    m1 = opt.state_dict()["state"][0]["momentum_buffer"]
    m2 = opt2.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(m1, m2)
    assert extra["iteration"] == 9 and "optimizer" not in extra and "model" not in extra


def test_save_refuses_non_weights_data_naming_the_key(tmp_path):
    model, _ = _trained_pair()
    ckpt = DetectionCheckpointer(model, str(tmp_path))
    with pytest.raises(TypeError, match=r"trainer\.callback"):
        ckpt.save("bad", trainer={"callback": object()})
    assert not os.listdir(tmp_path)


def test_save_skipped_when_not_saving_to_disk(tmp_path):
    model, _ = _trained_pair()
    DetectionCheckpointer(model, str(tmp_path), save_to_disk=False).save("m")
    assert not os.listdir(tmp_path)


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _trained_pair(0)
    ckpt = DetectionCheckpointer(model, str(tmp_path), optimizer=opt)
    ckpt.save("model_good", iteration=1)
    good_bytes = (tmp_path / "model_good.pth").read_bytes()
    good_weight = model.conv.weight.detach().clone()

    real_save = torch.save

    def half_save(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(dc.torch, "save", half_save)
    with torch.no_grad():
        model.conv.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="simulated"):
        ckpt.save("model_good", iteration=2)  # overwrite attempt
    with pytest.raises(RuntimeError, match="simulated"):
        ckpt.save("model_new", iteration=2)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_good.pth"]  # no temp file left
    assert (tmp_path / "model_good.pth").read_bytes() == good_bytes
    assert (tmp_path / "last_checkpoint").read_text() == "model_good.pth"
    fresh, fresh_opt = _trained_pair(3)
    extra = DetectionCheckpointer(fresh, str(tmp_path), optimizer=fresh_opt).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    assert torch.equal(fresh.conv.weight, good_weight)


def test_pth_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"model": {}, "obj": _TinyNet}, path)
    with pytest.raises(ValueError, match="weights_only"):
        DetectionCheckpointer(_TinyNet()).load(str(path))


def test_bare_state_dict_pth_loads(tmp_path):
    src, _ = _trained_pair(0)
    torch.save(src.state_dict(), tmp_path / "bare.pth")
    dst, _ = _trained_pair(1)
    DetectionCheckpointer(dst).load(str(tmp_path / "bare.pth"))
    assert torch.equal(dst.head.weight, src.head.weight)


def _d2_pickle(path, state, **extra):
    with open(path, "wb") as f:
        pickle.dump({"model": state, **extra}, f, protocol=2)


def test_detectron2_pkl_loads(tmp_path, log_records):
    src, _ = _trained_pair(0)
    state = {k: v.numpy().copy() for k, v in src.state_dict().items()}
    path = tmp_path / "model_final.pkl"
    _d2_pickle(path, state, __author__="Detectron2 Model Zoo")
    dst, _ = _trained_pair(1)
    extra = DetectionCheckpointer(dst).load(str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    assert extra["__author__"] == "Detectron2 Model Zoo"
    assert "missing" not in _messages(log_records).lower()


def test_bare_pkl_matches_names_by_suffix(tmp_path):
    src, _ = _trained_pair(0)
    path = tmp_path / "backbone.pkl"
    with open(path, "wb") as f:  # a bare {name: array} dict, names relative to the backbone
        pickle.dump({k: v.numpy() for k, v in src.state_dict().items()}, f)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = _TinyNet()
            self.new_head = nn.Linear(2, 2)

    dst = Wrapper()
    DetectionCheckpointer(dst).load(str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[k], v), k


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv.weight": Evil()}, "__author__": "x"}, f)
    with pytest.raises(ForbiddenGlobalError, match=r"evil\.pkl.*(posix|os|nt)\.system"):
        DetectionCheckpointer(_TinyNet()).load(str(path))
    assert not marker.exists()


def test_shape_mismatch_is_skipped_with_warning(tmp_path, log_records):
    src = _TinyNet(out_channels=4)
    DetectionCheckpointer(src, str(tmp_path)).save("m")
    dst = _TinyNet(out_channels=4)
    dst.head = nn.Linear(4, 3)
    before = dst.head.weight.clone()
    DetectionCheckpointer(dst).load(str(tmp_path / "m.pth"))
    assert torch.equal(dst.head.weight, before)
    assert torch.equal(dst.conv.weight, src.conv.weight)
    text = _messages(log_records)
    assert "head.weight" in text and "(2, 4)" in text and "(3, 4)" in text


def test_missing_and_unexpected_keys_are_reported(tmp_path, log_records):
    src = _TinyNet()
    src.extra = nn.Linear(2, 2)
    DetectionCheckpointer(src, str(tmp_path)).save("m")
    dst = _TinyNet()
    dst.other = nn.Linear(2, 2)
    DetectionCheckpointer(dst).load(str(tmp_path / "m.pth"))
    text = _messages(log_records)
    assert "other.weight" in text or "other.{bias, weight}" in text
    assert "extra.weight" in text or "extra.{bias, weight}" in text


def test_resume_or_load_both_ways(tmp_path):
    model, opt = _trained_pair(0)
    run_dir = tmp_path / "run"
    DetectionCheckpointer(model, str(run_dir), optimizer=opt).save("model_0000004", iteration=4)
    pretrained, _ = _trained_pair(5)
    DetectionCheckpointer(pretrained, str(tmp_path)).save("pretrained", iteration=100)

    # resume: last_checkpoint wins, optimizer restored
    m, o = _fresh_pair(7)
    extra = DetectionCheckpointer(m, str(run_dir), optimizer=o).resume_or_load(
        str(tmp_path / "pretrained.pth"), resume=True
    )
    assert extra["iteration"] == 4 and torch.equal(m.conv.weight, model.conv.weight)
    assert o.state_dict()["state"], "optimizer state must be restored on resume"

    # no resume: the given path, weights only
    m, o = _fresh_pair(7)
    extra = DetectionCheckpointer(m, str(run_dir), optimizer=o).resume_or_load(
        str(tmp_path / "pretrained.pth"), resume=False
    )
    assert extra["iteration"] == 100 and torch.equal(m.conv.weight, pretrained.conv.weight)
    assert not o.state_dict()["state"], "optimizer state must not be loaded without resume"

    # resume requested but nothing to resume from
    m, o = _fresh_pair(7)
    empty = tmp_path / "empty"
    extra = DetectionCheckpointer(m, str(empty), optimizer=o).resume_or_load(str(tmp_path / "pretrained.pth"))
    assert extra["iteration"] == 100


def test_missing_file_errors(tmp_path):
    ckpt = DetectionCheckpointer(_TinyNet())
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ckpt.load(str(tmp_path / "nope.pth"))
    assert ckpt.load("") == {}


def test_unreachable_url_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match=r"Could not fetch checkpoint 'http://127\.0\.0\.1:9/m\.pth'.*local path"):
        DetectionCheckpointer(_TinyNet()).load("http://127.0.0.1:9/m.pth")


def test_resume_with_dangling_last_checkpoint_loads_path(tmp_path):
    src, _ = _trained_pair(0)
    DetectionCheckpointer(src, str(tmp_path)).save("pretrained", iteration=3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last_checkpoint").write_text("model_gone.pth")
    dst, _ = _fresh_pair()
    extra = DetectionCheckpointer(dst, str(run_dir)).resume_or_load(str(tmp_path / "pretrained.pth"))
    assert extra["iteration"] == 3 and torch.equal(dst.conv.weight, src.conv.weight)
