import json
import logging
import os

import pytest
import torch

from libdet.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
    has_event_storage,
)


def test_get_event_storage_outside_context():
    assert not has_event_storage()
    with pytest.raises(RuntimeError, match="outside an EventStorage context"):
        get_event_storage()


def test_storage_stack_and_scalars():
    with EventStorage(5) as outer:
        assert get_event_storage() is outer and outer.iter == 5
        with EventStorage() as inner:
            assert get_event_storage() is inner
        assert get_event_storage() is outer
        outer.put_scalar("a", torch.tensor(2.0))
        outer.put_scalars(b=1, c=3.5, smoothing_hint=False)
        outer.iter = 6
        outer.put_scalar("a", 4.0)
        outer.step()
        assert outer.iter == outer.iteration == 7
        assert outer.history("a").values() == [(2.0, 5), (4.0, 6)]
        assert outer.latest() == {"a": (4.0, 6), "b": (1.0, 5), "c": (3.5, 5)}
        assert outer.latest_with_smoothing_hint(2)["a"] == (3.0, 6)  # median of the window
        assert outer.smoothing_hints() == {"a": True, "b": False, "c": False}
        with pytest.raises(ValueError, match="smoothing_hint"):
            outer.put_scalar("b", 2.0, smoothing_hint=True)
        with pytest.raises(KeyError, match="no history"):
            outer.history("zzz")
        with pytest.raises(ValueError, match="one element"):
            outer.put_scalar("v", torch.ones(2))
    assert not has_event_storage()


def test_name_scope_and_cur_iter():
    with EventStorage() as s:
        with s.name_scope("val"):
            s.put_scalar("loss", 1.0, cur_iter=9)
            with s.name_scope("sub"):
                s.put_scalar("x", 2.0)
        s.put_scalar("loss", 3.0)
        assert s.latest()["val/loss"] == (1.0, 9)
        assert s.latest()["val/sub/x"] == (2.0, 0)
        assert s.latest()["loss"] == (3.0, 0)


def test_images_and_histograms():
    with EventStorage() as s:
        s.put_image("img", torch.rand(3, 4, 4))
        assert len(s.vis_data) == 1
        s.clear_images()
        assert s.vis_data == []
        with pytest.raises(ValueError, match="C, H, W"):
            s.put_image("bad", torch.rand(4, 4))
        s.put_histogram("h", torch.tensor([0.0, 1.0, 1.0, 2.0]), bins=2)
        h = s.histograms[0]
        assert h["num"] == 4 and h["bucket_counts"] == [1.0, 3.0] and h["max"] == 2.0
        s.clear_histograms()
        assert s.histograms == []


def test_json_writer(tmp_path):
    path = str(tmp_path / "metrics.json")
    with EventStorage() as s:
        w = JSONWriter(path, window_size=2)
        s.put_scalar("loss", 1.0)
        s.put_scalar("lr", 0.1, smoothing_hint=False)
        s.iter = 1
        s.put_scalar("loss", 3.0)
        w.write()
        w.write()  # nothing new: no duplicate lines
        s.iter = 2
        s.put_scalar("loss", 5.0)
        w.write()
        w.close()
    # a resumed run appends to the same file
    with EventStorage(3) as s:
        w = JSONWriter(path)
        s.put_scalar("loss", 7.0)
        w.write()
        w.close()
    lines = [json.loads(line) for line in open(path)]
    assert lines == [
        {"iteration": 0, "lr": 0.1},
        {"iteration": 1, "loss": 2.0},
        {"iteration": 2, "loss": 4.0},
        {"iteration": 3, "loss": 7.0},
    ]


def test_tensorboard_writer(tmp_path):
    pytest.importorskip("tensorboard")
    with EventStorage() as s:
        w = TensorboardXWriter(str(tmp_path))
        s.put_scalar("loss", 1.0)
        s.put_image("img", torch.rand(3, 8, 8))
        s.put_histogram("h", torch.randn(10))
        w.write()
        assert s.vis_data == [] and s.histograms == []
        w.close()
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("events.out.tfevents")
    assert os.path.getsize(tmp_path / files[0]) > 0


def test_common_metric_printer(caplog):
    printer = CommonMetricPrinter(max_iter=100, window_size=20)
    with EventStorage() as s, caplog.at_level(logging.INFO, logger="libdet.utils.events"):
        for it in range(10):
            s.iter = it
            s.put_scalars(total_loss=1.0, loss_cls=0.25, data_time=0.01, time=0.5, accuracy=0.9)
            s.put_scalar("lr", 0.02, smoothing_hint=False)
        printer.write()
    line = caplog.records[-1].getMessage()
    # ETA = median iteration time * remaining iterations = 0.5 s * 90
    assert "eta: 0:00:45" in line
    assert "iter: 9" in line
    assert "total_loss: 1" in line and "loss_cls: 0.25" in line
    assert "accuracy: 0.9" in line
    assert "time: 0.5000" in line and "data_time: 0.0100" in line and "lr: 0.02" in line
    assert s.latest()["eta_seconds"][0] == pytest.approx(45.0)


def test_common_metric_printer_eta_without_timer(caplog):
    printer = CommonMetricPrinter(max_iter=10)
    with EventStorage() as s, caplog.at_level(logging.INFO, logger="libdet.utils.events"):
        s.put_scalar("total_loss", 1.0)
        printer.write()
        s.iter = 2
        printer.write()
    assert "eta:" not in caplog.records[0].getMessage()
    assert "eta: 0:00:00" in caplog.records[1].getMessage()
