"""Experiment-tracking writers: send the scalars of the :class:`~libdet.utils.events.EventStorage` to Weights &
Biases (:class:`WandbWriter`) or MLflow (:class:`MLflowWriter`), beside the terminal printer, ``metrics.json``
and TensorBoard.

Both packages are optional (``pip install 'libdet[wandb]'`` / ``'libdet[mlflow]'``) and imported when a writer
is built. In a lazy config, ``train.writers`` lists them by name or as lazy calls (see
``configs/common/train.py``); :func:`build_tracking_writer` turns one entry into a writer.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from libdet.utils.events import EventWriter, get_event_storage

__all__ = ["MLflowWriter", "WandbWriter", "build_tracking_writer"]


def _import_optional(package: str, writer: str) -> Any:
    try:
        return __import__(package)
    except ImportError as e:
        raise ImportError(
            f"{writer} needs the `{package}` package, which is not installed: pip install 'libdet[{package}]' "
            f"(or: pip install {package})."
        ) from e


class _ScalarsByIteration(EventWriter):
    """Collects, per iteration, the scalars not yet written (smoothed as ``metrics.json`` smooths them)."""

    def __init__(self, window_size: int):
        self._window_size = int(window_size)
        self._last_write = -1

    def _new_scalars(self) -> dict[int, dict[str, float]]:
        storage = get_event_storage()
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in storage.latest_with_smoothing_hint(self._window_size).items():
            if it > self._last_write:
                by_iter[it][name] = value
        if by_iter:
            self._last_write = max(by_iter)
        return dict(sorted(by_iter.items()))


class WandbWriter(_ScalarsByIteration):
    """Log scalars to a Weights & Biases run (``wandb.init(...)`` when built, ``run.finish()`` on close).

    Images and histograms are left to TensorBoard. Authentication and offline mode follow wandb's own
    settings (``wandb login``, ``WANDB_MODE=offline``).

    Args:
        project: the W&B project (default: wandb's default project).
        name: the run's display name.
        dir: where wandb keeps its local files (e.g. ``train.output_dir``).
        config: a dict logged as the run's configuration.
        window_size: window of the median of smoothed scalars.
        init_kwargs: more arguments of ``wandb.init``.
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        name: str | None = None,
        dir: str | None = None,
        config: dict[str, Any] | None = None,
        window_size: int = 20,
        **init_kwargs: Any,
    ):
        super().__init__(window_size)
        wandb = _import_optional("wandb", "WandbWriter")
        self._run = wandb.init(project=project, name=name, dir=dir, config=config, **init_kwargs)

    def write(self) -> None:
        for it, scalars in self._new_scalars().items():
            self._run.log(scalars, step=it)

    def close(self) -> None:
        self._run.finish()


# MLflow accepts metric names of letters, digits and `_-. /`; other characters (e.g. in class names) become "_".
_MLFLOW_BAD_CHARS = re.compile(r"[^0-9A-Za-z_\-. /]")


class MLflowWriter(_ScalarsByIteration):
    """Log scalars as metrics of an MLflow run (started when built, ended on close).

    Args:
        tracking_uri: where runs are stored, e.g. ``"file:./output/mlruns"`` or a server URL (default: MLflow's
            own default, ``$MLFLOW_TRACKING_URI`` or ``./mlruns``).
        experiment_name: the experiment the run belongs to (created when missing; default: MLflow's default).
        run_name: the run's name.
        params: a flat dict logged as the run's parameters.
        window_size: window of the median of smoothed scalars.
    """

    def __init__(
        self,
        *,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        params: dict[str, Any] | None = None,
        window_size: int = 20,
    ):
        super().__init__(window_size)
        mlflow = _import_optional("mlflow", "MLflowWriter")
        self._mlflow = mlflow
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        if experiment_name:
            mlflow.set_experiment(experiment_name)
        self._run = mlflow.start_run(run_name=run_name)
        if params:
            mlflow.log_params(dict(params))

    def write(self) -> None:
        for it, scalars in self._new_scalars().items():
            metrics = {_MLFLOW_BAD_CHARS.sub("_", k): v for k, v in scalars.items()}
            self._mlflow.log_metrics(metrics, step=it, run_id=self._run.info.run_id)

    def close(self) -> None:
        self._mlflow.end_run()


_BY_NAME = {"wandb": WandbWriter, "mlflow": MLflowWriter}


def build_tracking_writer(spec: Any, *, output_dir: str, window_size: int = 20) -> EventWriter:
    """One entry of ``train.writers`` as a writer.

    Args:
        spec: ``"wandb"`` (a :class:`WandbWriter` keeping its files in ``output_dir``), ``"mlflow"`` (an
            :class:`MLflowWriter` with MLflow's default tracking URI: ``$MLFLOW_TRACKING_URI`` or MLflow's own
            default), or an already built :class:`EventWriter` (e.g. from ``L(MLflowWriter)(tracking_uri=...)``).
        output_dir: the run's output directory.
        window_size: window of the median of smoothed scalars (for writers built from a name).

    Raises:
        ValueError: an unknown name or an object that is not an :class:`EventWriter`.
        ImportError: the writer's package is not installed (the message names the extra).
    """
    if isinstance(spec, EventWriter):
        return spec
    if isinstance(spec, str):
        if spec == "wandb":
            return WandbWriter(dir=output_dir, window_size=window_size)
        if spec == "mlflow":
            return MLflowWriter(window_size=window_size)
    raise ValueError(
        f"train.writers: {spec!r} is not a writer; expected one of {sorted(_BY_NAME)} or a lazy call of an "
        "EventWriter, e.g. L(WandbWriter)(project='my-project') (from libdet.utils.tracking_writers)."
    )
