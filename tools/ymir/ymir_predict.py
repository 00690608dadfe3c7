"""Inference and mining tasks of the executor: rebuild the trained model from ``/in/models`` alone and run it.

A model stage written by training holds the weights (``*.pth``) and ``config.yaml`` (the resolved lazy config,
class names included under ``ymir.class_names``), so infer and mining need nothing else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from ymir_dataset import read_index
from ymir_mining import MINING_ALGORITHMS, mine
from ymir_protocol import Env, Monitor, ReturnCode, YmirError, stage_progress, write_infer_result, write_mining_result

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyConfig, instantiate
from libdet.data.detection_utils import read_image
from libdet.engine import BatchPredictor
from libdet.structures import Instances

__all__ = ["load_predictor", "run_infer", "run_mining"]

logger = logging.getLogger("libdet.ymir")


def resolve_device(gpu_id: Any) -> torch.device:
    """``gpu_id`` of the executor config: empty for CPU, else GPU ids ("0" or "0,1"; inference uses the first)."""
    text = "" if gpu_id is None else str(gpu_id).strip()
    if not text:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise YmirError(ReturnCode.NO_GPU, f"gpu_id is {text!r} but no CUDA device is available.")
    return torch.device(f"cuda:{text.split(',')[0].strip()}")


def _model_files(env: Env, config: dict[str, Any], key: str) -> tuple[str, str]:
    """``(weights, config.yaml)`` among the files listed by ``config[key]`` (relative to ``input.models_dir``)."""
    listed = config.get(key) or []
    if isinstance(listed, str):
        listed = [listed]
    paths = [p if os.path.isabs(p) else os.path.join(env.input.models_dir, p) for p in listed]
    weights = [p for p in paths if p.endswith((".pth", ".pkl", ".pt"))]
    configs = [p for p in paths if os.path.basename(p) == "config.yaml"]
    if not configs and os.path.isfile(os.path.join(env.input.models_dir, "config.yaml")):
        configs = [os.path.join(env.input.models_dir, "config.yaml")]
    if not weights or not configs:
        raise YmirError(
            ReturnCode.MODEL,
            f"'{key}' in {env.input.config_file} must list a weights file (.pth) and config.yaml of a model trained "
            f"by this executor; got {listed!r}.",
        )
    missing = [p for p in (weights[0], configs[0]) if not os.path.isfile(p)]
    if missing:
        raise YmirError(ReturnCode.MODEL, f"Model file(s) not found: {missing}.")
    return weights[0], configs[0]


def load_predictor(env: Env, config: dict[str, Any], key: str = "model_params_path") -> BatchPredictor:
    """A :class:`BatchPredictor` for the model of ``config[key]``, checked against ``config["class_names"]``."""
    weights, config_file = _model_files(env, config, key)
    try:
        cfg = LazyConfig.load(config_file)
        model = instantiate(cfg.model)
    except Exception as e:
        raise YmirError(ReturnCode.MODEL, f"Cannot build the model of {config_file}: {e}") from e
    trained_names = list(cfg.get("ymir", {}).get("class_names", []) or [])
    if trained_names and trained_names != list(config["class_names"]):
        raise YmirError(
            ReturnCode.MODEL,
            f"The model in {config_file} was trained on classes {trained_names}, but this task's class_names are "
            f"{config['class_names']}.",
        )
    model.to(resolve_device(config.get("gpu_id")))
    try:
        DetectionCheckpointer(model).load(weights)
    except Exception as e:
        raise YmirError(ReturnCode.MODEL, f"Cannot load the weights {weights}: {e}") from e
    test_aug = cfg.dataloader.test.mapper.augmentations[0]
    return BatchPredictor(
        model,
        min_size_test=int(np.max(test_aug.short_edge_length)),
        max_size_test=int(test_aug.max_size),
        input_format=cfg.dataloader.test.mapper.image_format,
    )


def _read_images(paths: Sequence[str], pool: ThreadPoolExecutor) -> list[np.ndarray]:
    def read(path: str) -> np.ndarray:
        try:
            return read_image(path, format="BGR")
        except Exception as e:
            raise YmirError(ReturnCode.IMAGE, f"Cannot read the image {path}: {e}") from e

    return list(pool.map(read, paths))


def _for_each_batch(
    paths: Sequence[str], batch_size: int, work: Callable[[Sequence[str], list[np.ndarray]], None], report: Callable
) -> None:
    # Decoding overlaps with the model: a prefetch thread has the next batch read (by a pool using every core)
    # while this thread runs the model on the current one.
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as readers, ThreadPoolExecutor(1) as prefetch:
        pending = prefetch.submit(_read_images, batches[0], readers) if batches else None
        for index, batch in enumerate(batches):
            images = pending.result()
            if index + 1 < len(batches):
                pending = prefetch.submit(_read_images, batches[index + 1], readers)
            work(batch, images)
            report((index + 1) / len(batches))


def _boxes_of(instances: Instances, class_names: Sequence[str], threshold: float) -> list[dict[str, Any]]:
    instances = instances.to("cpu")
    keep = instances.scores >= threshold
    boxes = instances.pred_boxes.tensor[keep].tolist()
    out = []
    for (x1, y1, x2, y2), score, cls in zip(boxes, instances.scores[keep].tolist(), instances.pred_classes[keep]):
        cls = int(cls)
        if not 0 <= cls < len(class_names):
            raise YmirError(ReturnCode.MODEL, f"The model predicts class {cls}, beyond the {len(class_names)} classes.")
        box = {"x": round(x1), "y": round(y1), "w": round(x2 - x1), "h": round(y2 - y1)}
        # libdet's class ids are 0-based like the annotation files', so no shift (ymir-detectron2's off-by-one).
        out.append({"class_name": class_names[cls], "score": float(score), "box": box})
    return out


def _predict_fn(predictor: BatchPredictor) -> Callable[[Sequence[np.ndarray]], list[Instances]]:
    return lambda images: [out["instances"] for out in predictor(list(images))]


def run_infer(env: Env, config: dict[str, Any], monitor: Monitor) -> None:
    """Detect on every candidate and write ``infer-result.json``."""
    monitor.progress("infer", 0.0)
    entries = read_index(env.input.candidate_index_file, need_annotations=False)
    predictor = load_predictor(env, config)
    threshold = float(config.get("conf_threshold", 0.2))
    class_names = config["class_names"]
    monitor.progress("infer", stage_progress("preprocess", 1.0))
    results: dict[str, list[dict[str, Any]]] = {}

    def work(paths: Sequence[str], images: list[np.ndarray]) -> None:
        for path, instances in zip(paths, _predict_fn(predictor)(images)):
            results[path] = _boxes_of(instances, class_names, threshold)

    batch_size = int(config.get("batch_size", 4) or 4)
    paths = [e.image for e in entries]
    with torch.no_grad():
        _for_each_batch(paths, batch_size, work, lambda f: monitor.progress("infer", stage_progress("task", f)))
    write_infer_result(env, results)
    logger.info(f"Infer: {sum(len(b) for b in results.values())} boxes on {len(results)} images.")
    monitor.progress("infer", 1.0)


def run_mining(env: Env, config: dict[str, Any], monitor: Monitor) -> None:
    """Score every candidate with ``mining_algorithm`` and write ``result.tsv`` (most informative first)."""
    monitor.progress("mining", 0.0)
    algorithm = str(config.get("mining_algorithm", "cald"))
    if algorithm not in MINING_ALGORITHMS:
        raise YmirError(
            ReturnCode.CONFIG,
            f"{env.input.config_file}: mining_algorithm must be one of {MINING_ALGORITHMS}, got {algorithm!r}.",
        )
    entries = read_index(env.input.candidate_index_file, need_annotations=False)
    predictor = None if algorithm == "random" else load_predictor(env, config)
    threshold = float(config.get("conf_threshold", 0.3))
    monitor.progress("mining", stage_progress("preprocess", 1.0))
    scores: list[tuple[str, float]] = []

    def work(paths: Sequence[str], images: list[np.ndarray]) -> None:
        seed = len(scores)  # a distinct, reproducible seed per batch
        if predictor is None:
            batch_scores = mine("random", None, images, seed=seed)  # type: ignore[arg-type]
        else:
            batch_scores = mine(algorithm, _predict_fn(predictor), images, score_threshold=threshold, seed=seed)
        scores.extend(zip(paths, batch_scores))

    batch_size = int(config.get("batch_size", 4) or 4)
    with torch.no_grad():
        _for_each_batch(
            [e.image for e in entries],
            batch_size,
            work,
            lambda f: monitor.progress("mining", stage_progress("task", f)),
        )
    write_mining_result(env, scores)
    logger.info(f"Mining ({algorithm}): scored {len(scores)} images.")
    monitor.progress("mining", 1.0)
