"""tools/plot_metrics.py: a PNG from metrics.json, sparse keys, resumed runs and clear errors on bad lines."""

import importlib.util
import json
import os
import runpy
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pm = load_tool("plot_metrics")


def write_metrics(path, records, extra_lines=()):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def run_records(n=40):
    recs = []
    for it in range(19, 20 * n, 20):
        recs.append(
            {
                "iteration": it,
                "total_loss": 3.0 / (1 + it / 100),
                "loss_cls": 1.0 / (1 + it / 100),
                "loss_box_reg": 0.5,
                "lr": 0.02 * min(1.0, (it + 1) / 200),
                "data_time": 0.01,
                "eta_seconds": 5,
            }
        )
        if (it + 1) % 200 == 0:
            recs.append({"iteration": it, "bbox/AP": it / 100.0, "bbox/AP50": it / 50.0})
    return recs


def test_writes_png_with_one_panel_per_pattern(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, run_records(), extra_lines=["", "   "])
    out = tmp_path / "curves.png"
    matched = pm.main([str(path), "-o", str(out), "--keys", "total_loss", "loss_*", "lr", "bbox/AP*", "--smooth", "3"])
    assert matched == {
        "total_loss": ["total_loss"],
        "loss_*": ["loss_box_reg", "loss_cls"],
        "lr": ["lr"],
        "bbox/AP*": ["bbox/AP", "bbox/AP50"],
    }
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (800, 1200)
        arr = np.asarray(im.convert("RGB"))
    assert (arr < 200).any(axis=2).mean() > 0.02  # curves, axes and text were drawn


def test_default_output_next_to_metrics_and_directory_input(tmp_path):
    write_metrics(tmp_path / "metrics.json", run_records(10))
    matched = pm.main([str(tmp_path)])
    assert (tmp_path / "metrics.png").is_file()
    assert set(matched) == {"total_loss", "loss_*", "lr", "*/AP"}


def test_lines_without_the_key_are_skipped_and_resume_replaces():
    recs = [
        {"iteration": 0, "total_loss": 5.0},
        {"iteration": 10, "lr": 0.1},  # no total_loss here
        {"iteration": 20, "total_loss": 4.0},
        {"iteration": 30, "total_loss": float("nan")},
        {"iteration": 40, "total_loss": 3.0},
        {"iteration": 20, "total_loss": 3.5},  # resumed from iteration 20
        {"iteration": 30, "total_loss": 3.2},
    ]
    assert pm.series(recs, "total_loss") == ([0, 20, 30], [5.0, 3.5, 3.2])
    assert pm.series(recs, "lr") == ([10], [0.1])
    assert pm.smooth([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert pm.select_keys(recs, ["*loss*", "nothing"]) == {"*loss*": ["total_loss"], "nothing": []}


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, run_records(3), extra_lines=['{"iteration": 100, "total_loss": 1.0', '{"iteration": 120}'])
    with pytest.raises(ValueError, match=r"metrics\.json:4: not valid JSON \(Expecting .* at column 37\)"):
        pm.main([str(path), "-o", str(tmp_path / "x.png")])
    write_metrics(path, [{"iteration": 1}], extra_lines=["[1, 2]"])
    with pytest.raises(ValueError, match=r"metrics\.json:2: expected a JSON object"):
        pm.load_metrics(str(path))


def test_no_matching_key_lists_available(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, run_records(3))
    with pytest.raises(ValueError, match="numeric keys are.*total_loss"):
        pm.main([str(path), "-o", str(tmp_path / "x.png"), "--keys", "segm/*"])
    with pytest.raises(FileNotFoundError):
        pm.load_metrics(str(tmp_path / "missing.json"))


def test_command_line_reports_errors_cleanly(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_metrics(path, [], extra_lines=["not json"])
    monkeypatch.setattr(sys, "argv", ["plot_metrics.py", str(path)])
    with pytest.raises(SystemExit) as exc:  # the message, not a traceback, and exit status 1
        runpy.run_path(os.path.join(ROOT, "tools", "plot_metrics.py"), run_name="__main__")
    assert "metrics.json:1: not valid JSON" in str(exc.value.code)
