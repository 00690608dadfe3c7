"""LVIS evaluation (federated AP with APr / APc / APf) using the ``lvis`` package (extra ``libdet[lvis]``)."""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from libdet.data.catalog import MetadataCatalog
from libdet.utils import comm
from libdet.utils.file_io import PathManager, atomic_write
from libdet.utils.logger import create_small_table

from .coco_evaluation import _check_rle, _top_k_instances, instances_to_coco_json
from .evaluator import DatasetEvaluator

__all__ = ["LVISEvaluator"]

logger = logging.getLogger(__name__)

_LVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]


def _import_lvis() -> Any:
    try:
        import lvis
    except ImportError as e:
        raise ImportError(
            "LVISEvaluator needs the 'lvis' package: pip install 'libdet[lvis]' (or pip install lvis)."
        ) from e
    return lvis


@contextlib.contextmanager
def _numpy_float_alias():
    """Provide ``np.float`` while LVIS runs: lvis 0.5.3 (the latest release) uses the alias NumPy 1.24 removed."""
    added = not hasattr(np, "float")
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float


class LVISEvaluator(DatasetEvaluator):
    """Box / mask AP with LVIS's federated rules (``neg_category_ids``, ``not_exhaustive_category_ids``).

    Reports AP, AP50, AP75, APs/m/l and APr/APc/APf (rare, common, frequent categories), in percent.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        max_dets_per_image: int | None = None,
    ):
        """
        Args:
            dataset_name: registered dataset whose metadata has ``json_file`` (LVIS format) and
                optionally ``thing_dataset_id_to_contiguous_id`` (default: category id = contiguous + 1).
            tasks: subset of ``("bbox", "segm")``; inferred from the predictions when None.
            distributed: gather predictions from all ranks; only the main process returns results.
            output_dir: where to write ``instances_predictions.pth`` and ``lvis_instances_results.json``.
            max_dets_per_image: detections kept per image (LVIS default 300; -1 for no limit).
        """
        if tasks is not None:
            unknown = sorted(set(tasks) - {"bbox", "segm"})
            if unknown:
                raise ValueError(f"LVISEvaluator: unknown tasks {unknown}; expected a subset of ['bbox', 'segm'].")
            tasks = tuple(tasks)
        self._dataset_name = dataset_name
        self._tasks = tasks
        self._distributed = distributed
        self._output_dir = output_dir
        self._max_dets_per_image = 300 if max_dets_per_image is None else max_dets_per_image
        self._lvis_api_cache = None
        self._predictions: list[dict] = []

    @property
    def _metadata(self) -> Any:
        return MetadataCatalog.get(self._dataset_name)

    @property
    def _lvis_api(self) -> Any:
        if self._lvis_api_cache is None:
            lvis = _import_lvis()
            json_file = self._metadata.get("json_file")
            if json_file is None:
                raise ValueError(f"LVISEvaluator: dataset {self._dataset_name!r} has no 'json_file' metadata.")
            self._lvis_api_cache = lvis.LVIS(PathManager.get_local_path(json_file))
        return self._lvis_api_cache

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for input, output in zip(inputs, outputs):
            prediction: dict[str, Any] = {"image_id": input["image_id"]}
            if "instances" in output:
                k = None if self._max_dets_per_image < 0 else self._max_dets_per_image
                instances = _top_k_instances(output["instances"].to("cpu"), k)
                prediction["instances"] = instances_to_coco_json(instances, input["image_id"])
            if len(prediction) > 1:
                self._predictions.append(prediction)

    def evaluate(self) -> dict | None:
        """Returns ``{task: {"AP", ..., "APr", "APc", "APf"}}`` in percent (main process)."""
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if len(predictions) == 0:
            logger.warning("[LVISEvaluator] Did not receive valid predictions.")
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with atomic_write(os.path.join(self._output_dir, "instances_predictions.pth"), "wb") as f:
                torch.save(predictions, f)

        lvis_results = copy.deepcopy(list(itertools.chain(*[p.get("instances", []) for p in predictions])))
        self._map_category_ids(lvis_results)
        if self._output_dir:
            with atomic_write(os.path.join(self._output_dir, "lvis_instances_results.json"), "w") as f:
                json.dump(lvis_results, f)

        tasks = self._tasks
        if tasks is None:
            tasks = ("bbox", "segm") if any("segmentation" in r for r in lvis_results) else ("bbox",)
        results: dict = OrderedDict()
        for task in tasks:
            required = "bbox" if task == "bbox" else "segmentation"
            task_results = [r for r in lvis_results if required in r]
            if not task_results:
                logger.warning(f"[LVISEvaluator] No predictions for task {task!r}: all its metrics are 0.")
                results[task] = {m: 0.0 for m in _LVIS_METRICS}
                continue
            results[task] = self._evaluate_task(task_results, task)
        return results

    def _map_category_ids(self, results: list[dict]) -> None:
        api = self._lvis_api
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        reverse = {v: k for k, v in id_map.items()} if id_map else None
        for r in results:
            img_id, c = r["image_id"], r["category_id"]
            dataset_id = reverse.get(c) if reverse is not None else c + 1
            if dataset_id is None or dataset_id not in api.cats:
                raise ValueError(f"image_id {img_id}: predicted category {c} does not map to an LVIS category.")
            if img_id not in api.imgs:
                raise ValueError(f"Prediction for image_id {img_id!r} but that image is not in the LVIS ground truth.")
            r["category_id"] = dataset_id

    def _evaluate_task(self, lvis_results: list[dict], iou_type: str) -> dict:
        lvis = _import_lvis()
        api = self._lvis_api
        if iou_type == "segm":
            lvis_results = copy.deepcopy(lvis_results)
            for r in lvis_results:
                info = api.imgs[r["image_id"]]
                _check_rle(r["segmentation"], info["height"], info["width"], r["image_id"])
                # Without a box, LVIS uses the mask area for the area ranges, as for the ground truth.
                r.pop("bbox", None)
        results_api = lvis.LVISResults(api, lvis_results, max_dets=self._max_dets_per_image)
        lvis_eval = lvis.LVISEval(api, results_api, iou_type)
        if self._max_dets_per_image >= 0:
            lvis_eval.params.max_dets = self._max_dets_per_image
        with _numpy_float_alias():
            lvis_eval.run()
        stats = lvis_eval.get_results()
        # LVIS reports -1 where a metric has no ground truth (e.g. no rare category): NaN here.
        res = {m: float(stats[m] * 100) if stats[m] >= 0 else float("nan") for m in _LVIS_METRICS}
        logger.info(f"Evaluation results for {iou_type}: \n" + create_small_table(res))
        return res
