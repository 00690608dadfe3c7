"""Experiment-tracking writers (W&B, MLflow): scalars reach the tracker once per iteration, smoothed like
metrics.json; a missing package is an error naming the extra; ``train.writers`` reaches ``build_writers``."""

import sys
import types

import pytest

from libdet.engine.training import build_writers
from libdet.utils.events import EventStorage, JSONWriter
from libdet.utils.tracking_writers import MLflowWriter, WandbWriter, build_tracking_writer


class _FakeWandbRun:
    def __init__(self, **init_kwargs):
        self.init_kwargs = init_kwargs
        self.logged = []
        self.finished = False

    def log(self, data, step):
        self.logged.append((step, dict(data)))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        run = _FakeWandbRun(**kwargs)
        module.runs.append(run)
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def _put(storage, it, **scalars):
    storage.iter = it
    storage.put_scalars(**scalars)


def test_wandb_writer_logs_new_scalars_once(fake_wandb, tmp_path):
    writer = build_tracking_writer("wandb", output_dir=str(tmp_path), window_size=2)
    assert isinstance(writer, WandbWriter)
    run = fake_wandb.runs[0]
    assert run.init_kwargs["dir"] == str(tmp_path)
    with EventStorage() as storage:
        _put(storage, 0, loss=4.0)
        _put(storage, 1, loss=2.0)
        storage.put_scalar("lr", 0.1, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new: nothing logged
        _put(storage, 2, loss=1.0)
        writer.write()
    writer.close()
    # loss is smoothed with the median of the last 2 values (as metrics.json); lr is not smoothed
    assert run.logged == [(1, {"loss": 3.0, "lr": 0.1}), (2, {"loss": 1.5})]
    assert run.finished


def test_writers_name_the_extra_when_the_package_is_missing(monkeypatch, tmp_path):
    # None in sys.modules makes `import` raise ImportError, as for a package that is not installed
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"WandbWriter needs the `wandb` package.*libdet\[wandb\]"):
        build_tracking_writer("wandb", output_dir=str(tmp_path))
    with pytest.raises(ImportError, match=r"MLflowWriter needs the `mlflow` package.*libdet\[mlflow\]"):
        build_writers(str(tmp_path), max_iter=10, tracking=["mlflow"])


def test_unknown_writer_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"train.writers: 'comet' is not a writer.*mlflow.*wandb"):
        build_tracking_writer("comet", output_dir=str(tmp_path))


def test_build_writers_appends_trackers_after_the_defaults(fake_wandb, tmp_path):
    writers = build_writers(str(tmp_path), max_iter=10, tracking=["wandb"])
    assert isinstance(writers[1], JSONWriter) and isinstance(writers[-1], WandbWriter)
    assert len(build_writers(str(tmp_path / "b"), max_iter=10)) == len(writers) - 1  # off unless asked for
    for w in writers:
        w.close()


def test_mlflow_writer_with_a_fake_module(monkeypatch):
    calls = []
    module = types.ModuleType("mlflow")
    module.set_tracking_uri = lambda uri: calls.append(("uri", uri))
    module.set_experiment = lambda name: calls.append(("experiment", name))
    run = types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))
    module.start_run = lambda run_name=None: calls.append(("start", run_name)) or run
    module.log_params = lambda params: calls.append(("params", params))
    module.log_metrics = lambda metrics, step, run_id: calls.append(("metrics", step, run_id, metrics))
    module.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", module)
    writer = MLflowWriter(tracking_uri="file:/x", experiment_name="e", run_name="n", params={"lr": 0.1}, window_size=1)
    with EventStorage() as storage:
        _put(storage, 3, **{"bbox/AP-circle (large)": 50.0})
        writer.write()
    writer.close()
    assert calls == [
        ("uri", "file:/x"),
        ("experiment", "e"),
        ("start", "n"),
        ("params", {"lr": 0.1}),
        # characters MLflow rejects in metric names become "_"
        ("metrics", 3, "r1", {"bbox/AP-circle _large_": 50.0}),
        ("end",),
    ]


def test_mlflow_writer_real_file_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    # MLflow 3 keeps the file store for compatibility behind this switch; its database stores need SQLAlchemy
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = "file:" + str(tmp_path / "mlruns")
    writer = MLflowWriter(tracking_uri=uri, experiment_name="libdet-test", window_size=1)
    run_id = writer._run.info.run_id
    with EventStorage() as storage:
        _put(storage, 0, total_loss=2.0)
        _put(storage, 1, total_loss=1.0)
        writer.write()
    writer.close()
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(run_id, "total_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0)]
    assert client.get_run(run_id).info.status == "FINISHED"
