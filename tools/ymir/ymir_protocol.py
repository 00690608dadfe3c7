"""The YMIR executor contract: what the platform mounts in ``/in``, and the files it reads back from ``/out``.

The published SDK (``ymir-exc`` 1.1 on PyPI) predates most of this contract (return codes, the error state, the
model-stage result format, ``protocol_version``), so the executor carries its own implementation of the same
file formats:

* ``env.yaml`` (:func:`load_env`; path from ``$DEFAULT_ENV_FILE_PATH``, else ``/in/env.yaml``);
* ``monitor.txt``: one line ``task_id<TAB>unix_time<TAB>percent<TAB>state<TAB>return_code``, overwritten
  (:class:`Monitor`);
* ``models/result.yaml``: the flat pre-1.2 format (``model``, ``map``) or the stage format (``model_stages``,
  ``best_stage_name``, ``map``) when ``protocol_version >= 1.0.0`` or ``$YMIR_VERSION >= 1.2.0``
  (:func:`write_model_stage`);
* ``result.tsv`` (mining, :func:`write_mining_result`) and ``infer-result.json`` (:func:`write_infer_result`).

Every file is written atomically, so the platform never reads a half-written one.
"""

from __future__ import annotations

import enum
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import yaml

from libdet.utils.file_io import atomic_write

__all__ = [
    "Env",
    "Monitor",
    "ReturnCode",
    "State",
    "YmirError",
    "load_env",
    "load_executor_config",
    "uses_stage_format",
    "write_infer_result",
    "write_mining_result",
    "write_model_stage",
]

DEFAULT_ENV_FILE = "/in/env.yaml"
MAX_MODEL_STAGES = 11  # the 10 latest stages and the best one


class ReturnCode(enum.IntEnum):
    """The SDK's executor return codes, written to the monitor with the error state."""

    OK = 0
    CONFIG = 300001
    DATASET = 300002
    IMAGE = 300003
    MODEL = 300004
    NO_GPU = 300102
    OUT_OF_MEMORY = 300103
    NAN_LOSS = 300201
    CONTAINER = 160004  # any other failure


class State(enum.IntEnum):
    RUNNING = 2
    ERROR = 4


class YmirError(Exception):
    """A failure the platform should see: written to the monitor as :attr:`State.ERROR` with ``return_code``."""

    def __init__(self, return_code: ReturnCode, message: str) -> None:
        super().__init__(message)
        self.return_code = ReturnCode(return_code)


@dataclass(frozen=True)
class EnvInput:
    root_dir: str = "/in"
    assets_dir: str = "assets"
    annotations_dir: str = "annotations"
    models_dir: str = "models"
    training_index_file: str = ""
    val_index_file: str = ""
    candidate_index_file: str = ""
    config_file: str = "config.yaml"


@dataclass(frozen=True)
class EnvOutput:
    root_dir: str = "/out"
    models_dir: str = "models"
    tensorboard_dir: str = "tensorboard"
    training_result_file: str = "models/result.yaml"
    mining_result_file: str = "result.tsv"
    infer_result_file: str = "infer-result.json"
    monitor_file: str = "monitor.txt"


@dataclass(frozen=True)
class Env:
    """``env.yaml``: which tasks to run and where everything is. Paths are absolute (relative ones in the file
    are taken relative to their ``root_dir``); an empty index-file path means "not given"."""

    task_id: str
    protocol_version: str | None
    run_training: bool
    run_mining: bool
    run_infer: bool
    input: EnvInput
    output: EnvOutput
    path: str


def _section(raw: Any, cls: type, where: str, env_path: str) -> Any:
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise YmirError(ReturnCode.CONFIG, f"{env_path}: '{where}' must be a mapping, got {type(raw).__name__}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise YmirError(
            ReturnCode.CONFIG, f"{env_path}: unknown key(s) {unknown} in '{where}'; known: {sorted(known)}."
        )
    values = {}
    for f in fields(cls):
        value = raw.get(f.name, f.default)
        value = "" if value is None else value
        if not isinstance(value, str):
            raise YmirError(ReturnCode.CONFIG, f"{env_path}: '{where}.{f.name}' must be a path string, got {value!r}.")
        values[f.name] = value
    root = values["root_dir"]
    for name, value in values.items():
        if name != "root_dir" and value and not os.path.isabs(value):
            values[name] = os.path.join(root, value)
    return cls(**values)


def load_env(path: str | None = None) -> Env:
    """Read ``env.yaml`` from ``path``, else ``$DEFAULT_ENV_FILE_PATH``, else ``/in/env.yaml``."""
    path = path or os.environ.get("DEFAULT_ENV_FILE_PATH") or DEFAULT_ENV_FILE
    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except OSError as e:
        raise YmirError(ReturnCode.CONFIG, f"Cannot read the YMIR env file {path}: {e.strerror}.") from e
    except yaml.YAMLError as e:
        raise YmirError(ReturnCode.CONFIG, f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, Mapping):
        raise YmirError(ReturnCode.CONFIG, f"{path}: expected a mapping at the top level.")
    flags = {}
    for key in ("run_training", "run_mining", "run_infer"):
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise YmirError(ReturnCode.CONFIG, f"{path}: '{key}' must be true or false, got {value!r}.")
        flags[key] = value
    version = raw.get("protocol_version")
    return Env(
        task_id=str(raw.get("task_id", "default-task")),
        protocol_version=None if version is None else str(version),
        input=_section(raw.get("input"), EnvInput, "input", path),
        output=_section(raw.get("output"), EnvOutput, "output", path),
        path=path,
        **flags,
    )


def load_executor_config(env: Env) -> dict[str, Any]:
    """``/in/config.yaml``: hyper-parameters and ``class_names`` (a non-empty list of distinct strings)."""
    path = env.input.config_file
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except OSError as e:
        raise YmirError(ReturnCode.CONFIG, f"Cannot read the executor config {path}: {e.strerror}.") from e
    except yaml.YAMLError as e:
        raise YmirError(ReturnCode.CONFIG, f"{path} is not valid YAML: {e}") from e
    if not isinstance(config, dict):
        raise YmirError(ReturnCode.CONFIG, f"{path}: expected a mapping at the top level.")
    names = config.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise YmirError(ReturnCode.CONFIG, f"{path}: 'class_names' must be a non-empty list of names, got {names!r}.")
    if len(set(names)) != len(names):
        raise YmirError(ReturnCode.CONFIG, f"{path}: 'class_names' has duplicates: {names}.")
    return config


def _version(text: str) -> tuple[int, ...]:
    """``"1.2.0"`` -> ``(1, 2, 0)``; a suffix such as ``"1.3.0-rc1"`` is ignored."""
    parts = re.findall(r"\d+", text.split("-")[0].split("+")[0])
    return tuple(int(p) for p in parts[:3]) or (0,)


def uses_stage_format(env: Env) -> bool:
    """Model stages in ``result.yaml``: for ``protocol_version >= 1.0.0``, or ``$YMIR_VERSION >= 1.2.0`` (the
    platform before protocol versions existed)."""
    if env.protocol_version is not None and _version(env.protocol_version) >= (1, 0, 0):
        return True
    return _version(os.environ.get("YMIR_VERSION", "1.1.0")) >= (1, 2, 0)


class Monitor:
    """Writes the progress line the platform polls.

    Progress is given per task as a fraction in [0, 1]; when mining and infer run in one container, mining fills
    the first half of the bar and infer the second (the SDK's "tmi" order).
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        self._shared = env.run_mining and env.run_infer

    def _write(self, percent: float, state: State, code: ReturnCode) -> None:
        os.makedirs(os.path.dirname(self.env.output.monitor_file) or ".", exist_ok=True)
        line = f"{self.env.task_id}\t{time.time():.6f}\t{percent:.2f}\t{int(state)}\t{int(code)}\n"
        with atomic_write(self.env.output.monitor_file, "w") as f:
            f.write(line)

    def progress(self, task: str, fraction: float) -> float:
        """Report ``fraction`` in [0, 1] of ``task`` (``"training"``, ``"mining"`` or ``"infer"``); returns the
        overall percent written."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self._shared and task in ("mining", "infer"):
            fraction = 0.5 * fraction + (0.5 if task == "infer" else 0.0)
        self._write(fraction, State.RUNNING, ReturnCode.OK)
        return fraction

    def error(self, code: ReturnCode, percent: float = 0.0) -> None:
        self._write(percent, State.ERROR, code)

    def last_percent(self) -> float:
        try:
            with open(self.env.output.monitor_file) as f:
                return float(f.read().split("\t")[2])
        except (OSError, IndexError, ValueError):
            return 0.0


def stage_progress(stage: str, fraction: float) -> float:
    """A task's progress from its phase: preprocess 0-0.1, the task itself 0.1-0.9, postprocess 0.9-1."""
    start, end = {"preprocess": (0.0, 0.1), "task": (0.1, 0.9), "postprocess": (0.9, 1.0)}[stage]
    return start + (end - start) * min(max(fraction, 0.0), 1.0)


def write_model_stage(env: Env, stage_name: str, files: list[str], metrics: Mapping[str, float]) -> None:
    """Record a model stage (weights + config under ``output.models_dir``) in ``result.yaml``.

    Args:
        stage_name: an identifier (letters, digits, underscores; not starting with a digit).
        files: file names relative to ``output.models_dir``.
        metrics: ``mAP`` (the top metric, in [0, 1]) and any others (``mAR``, ``tp``, ``fp``, ``fn``, ``maskAP``).
    """
    if not stage_name.isidentifier():
        raise ValueError(f"YMIR stage names must be identifiers, got {stage_name!r}.")
    if "mAP" not in metrics:
        raise ValueError(f"Stage {stage_name!r}: metrics need 'mAP', got {sorted(metrics)}.")
    missing = [f for f in files if not os.path.isfile(os.path.join(env.output.models_dir, f))]
    if missing:
        raise ValueError(f"Stage {stage_name!r}: {missing} are not files in {env.output.models_dir}.")
    path = env.output.training_result_file
    result: dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path) as f:
            result = yaml.safe_load(f) or {}
    metrics = {k: float(v) for k, v in metrics.items()}
    if uses_stage_format(env):
        stages = dict(result.get("model_stages") or {})
        stages[stage_name] = {"stage_name": stage_name, "files": list(files), "timestamp": int(time.time()), **metrics}
        # Ties on mAP go to the later stage, as the platform's own writer does.
        best = max(stages.values(), key=lambda s: (s["mAP"], s["timestamp"]))["stage_name"]
        by_age = sorted(stages, key=lambda name: stages[name]["timestamp"])
        while len(stages) > MAX_MODEL_STAGES:
            oldest = next(name for name in by_age if name != best and name != stage_name and name in stages)
            del stages[oldest]
        result = {"model_stages": stages, "best_stage_name": best, "map": stages[best]["mAP"]}
    else:
        result = {"model": list(files), "map": metrics["mAP"], **{k: v for k, v in metrics.items() if k != "mAP"}}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_write(path, "w") as f:
        yaml.safe_dump(result, f, sort_keys=False)


def write_mining_result(env: Env, scores: Iterable[tuple[str, float]]) -> None:
    """``result.tsv``: ``asset<TAB>score`` lines, most informative first."""
    ranked = sorted(scores, key=lambda item: -item[1])
    with atomic_write(env.output.mining_result_file, "w") as f:
        f.writelines(f"{asset}\t{score:.6f}\n" for asset, score in ranked)


def write_infer_result(env: Env, detections: Mapping[str, list[dict[str, Any]]]) -> None:
    """``infer-result.json``: ``{"detection": {asset basename: {"boxes": [...]}}}`` (``"annotations"`` before
    protocol 1.0.0); each box is ``{"class_name", "score", "box": {"x", "y", "w", "h"}}``."""
    key = "boxes" if env.protocol_version is not None and _version(env.protocol_version) >= (1, 0, 0) else "annotations"
    result = {"detection": {os.path.basename(asset): {key: boxes} for asset, boxes in detections.items()}}
    with atomic_write(env.output.infer_result_file, "w") as f:
        json.dump(result, f)
