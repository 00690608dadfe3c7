"""COCO-style evaluation (box / mask / keypoint AP and proposal AR) with pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from libdet.data.catalog import MetadataCatalog
from libdet.data.datasets import convert_to_coco_json
from libdet.structures import Boxes, BoxMode, Instances, pairwise_iou
from libdet.utils import comm
from libdet.utils.file_io import PathManager, atomic_write
from libdet.utils.logger import create_small_table

from .evaluator import DatasetEvaluator
from .fast_eval_api import COCOeval_opt, native_coco_eval_available

__all__ = ["COCOEvaluator", "instances_to_coco_json"]

logger = logging.getLogger(__name__)

# The metrics each task reports, in pycocotools' summary order; keypoints have no "small" area range.
_METRICS = {
    "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl"],
}
_COCO_NUM_KEYPOINTS = 17


def instances_to_coco_json(instances: Instances, img_id: Any) -> list[dict]:
    """Convert the predictions of one image to COCO's result format.

    Args:
        instances: predictions in original-image coordinates with ``pred_boxes`` (``Boxes``, XYXY,
            ``[N, 4]``), ``scores`` (``[N]``), ``pred_classes`` (``[N]``, contiguous ids) and optionally
            ``pred_masks`` (``[N, H, W]`` bool/uint8 tensor or ``BitMasks``) and ``pred_keypoints``
            (``[N, K, 3]``: x, y, score).
        img_id: the image id the results belong to.

    Returns:
        One dict per instance with ``image_id``, ``category_id`` (still contiguous), ``bbox`` (XYWH,
        absolute), ``score`` and, when present, ``segmentation`` (compressed RLE with ``str`` counts)
        and ``keypoints`` (``3K`` floats; 0.5 is subtracted from x and y because COCO keypoint
        annotations are pixel indices while predictions are continuous coordinates).

    Raises:
        ValueError: if a box or score is NaN/inf (the message names the image id).
    """
    num_instance = len(instances)
    if num_instance == 0:
        return []
    boxes = instances.pred_boxes.tensor if hasattr(instances.pred_boxes, "tensor") else instances.pred_boxes
    boxes = torch.as_tensor(boxes).detach().cpu().to(torch.float64)
    scores = torch.as_tensor(instances.scores).detach().cpu().to(torch.float64)
    if not torch.isfinite(boxes).all():
        bad = int((~torch.isfinite(boxes)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"image_id {img_id}: predicted box {bad} is not finite: {boxes[bad].tolist()}.")
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).nonzero()[0, 0])
        raise ValueError(f"image_id {img_id}: predicted score {bad} is not finite: {float(scores[bad])}.")
    if boxes.shape[-1] == 4:
        boxes = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    boxes_list = boxes.tolist()
    scores_list = scores.tolist()
    classes = torch.as_tensor(instances.pred_classes).cpu().tolist()

    rles = None
    if instances.has("pred_masks"):
        import pycocotools.mask as mask_util

        masks = instances.pred_masks
        masks = masks.tensor if hasattr(masks, "tensor") else masks
        masks = torch.as_tensor(masks).detach().cpu().numpy().astype(np.uint8)  # [N, H, W]
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")

    keypoints = None
    if instances.has("pred_keypoints"):
        kpts = instances.pred_keypoints
        kpts = kpts.tensor if hasattr(kpts, "tensor") else kpts
        keypoints = torch.as_tensor(kpts).detach().cpu().to(torch.float64).clone()  # [N, K, 3]
        keypoints[:, :, :2] -= 0.5

    results = []
    for k in range(num_instance):
        result = {
            "image_id": img_id,
            "category_id": classes[k],
            "bbox": boxes_list[k],
            "score": scores_list[k],
        }
        if rles is not None:
            result["segmentation"] = rles[k]
        if keypoints is not None:
            result["keypoints"] = keypoints[k].flatten().tolist()
        results.append(result)
    return results


def _top_k_instances(instances: Instances, k: int | None) -> Instances:
    """Keep the ``k`` highest-scoring instances (all of them for ``k=None``)."""
    if k is None or len(instances) <= k:
        return instances
    order = torch.argsort(instances.scores, descending=True)[:k]
    return instances[order]


def _rle_string_counts(counts: str) -> list[int]:
    """Decode the run lengths of a compressed COCO RLE string (pycocotools' LEB128-like format)."""
    values: list[int] = []
    pos = 0
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    while pos < len(data):
        x = 0
        shift = 0
        more = True
        while more:
            if pos >= len(data):
                raise ValueError("truncated RLE string")
            c = data[pos] - 48
            if c < 0 or c > 63:
                raise ValueError(f"invalid character {chr(data[pos])!r} in RLE string")
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and (c & 0x10):
                x |= -1 << shift
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    return values


_RLE_STRING_CHARS = re.compile(r"[0-o]*")  # pycocotools' alphabet: 48 + 6-bit groups


def _check_rle(rle: Any, height: int, width: int, img_id: Any, *, check_runs: bool = True) -> None:
    """Raise a ValueError naming ``img_id`` when ``rle`` is not a valid RLE of an ``height x width`` mask.

    The structure, the size and the string's alphabet and termination (what pycocotools needs to read a string
    without running past its end) are always checked. ``check_runs`` also decodes the run lengths and checks
    that they are non-negative and cover the mask: a pure-Python pass of ~65 us per mask, which the caller
    skips when the native evaluator, which checks the runs itself, will read the masks.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"image_id {img_id}: segmentation must be an RLE dict with 'size' and 'counts', got {rle!r}.")
    if list(rle["size"]) != [height, width]:
        raise ValueError(
            f"image_id {img_id}: RLE size {list(rle['size'])} differs from the ground-truth image size "
            f"[{height}, {width}]."
        )
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        text = counts.decode("ascii", errors="replace") if isinstance(counts, bytes) else counts
        if not _RLE_STRING_CHARS.fullmatch(text) or (text and (ord(text[-1]) - 48) & 0x20):
            raise ValueError(f"image_id {img_id}: malformed RLE counts (invalid character or truncated string).")
    if not check_runs:
        return
    try:
        runs = list(counts) if isinstance(counts, list) else _rle_string_counts(counts)
    except (ValueError, TypeError, UnicodeEncodeError) as e:
        raise ValueError(f"image_id {img_id}: malformed RLE counts ({e}).") from e
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        raise ValueError(
            f"image_id {img_id}: malformed RLE: run lengths sum to {sum(runs)} (negative runs: "
            f"{any(r < 0 for r in runs)}), expected height * width = {height * width}."
        )


def _check_results(coco_gt: Any, coco_results: list[dict], task: str, *, check_rle_runs: bool = True) -> None:
    """Validate image ids, finiteness and segmentations of ``coco_results`` against ``coco_gt``
    (``check_rle_runs``: see :func:`_check_rle`)."""
    for result in coco_results:
        img_id = result["image_id"]
        if img_id not in coco_gt.imgs:
            raise ValueError(
                f"Prediction for image_id {img_id!r} but that image is not in the ground truth "
                f"({len(coco_gt.imgs)} images)."
            )
        if result["category_id"] not in coco_gt.cats:
            raise ValueError(
                f"image_id {img_id}: category_id {result['category_id']} is not a category of the ground truth "
                f"(ids {sorted(coco_gt.cats)[:20]}...)."
            )
        values = list(result.get("bbox", [])) + [result["score"]]
        if not np.all(np.isfinite(values)):
            raise ValueError(f"image_id {img_id}: non-finite bbox or score {values}.")
        if task == "segm":
            info = coco_gt.imgs[img_id]
            _check_rle(result.get("segmentation"), info["height"], info["width"], img_id, check_runs=check_rle_runs)
        if task == "keypoints" and not np.all(np.isfinite(result["keypoints"])):
            raise ValueError(f"image_id {img_id}: non-finite keypoints.")


class COCOEvaluator(DatasetEvaluator):
    """AP for boxes, masks and keypoints (and AR for proposals) with the COCO API.

    Predictions are ``Instances`` in original-image coordinates, under ``"instances"`` in each output
    dict (and/or ``"proposals"`` with ``proposal_boxes`` and ``objectness_logits``).
    """

    _cocoeval_class: type | None = None
    """A ``COCOeval`` subclass to use instead of pycocotools' / the native one (see RotatedCOCOEvaluator)."""

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        max_dets_per_image: int | None = None,
        use_fast_impl: bool = True,
        kpt_oks_sigmas: Sequence[float] = (),
        allow_cached_coco: bool = True,
    ):
        """
        Args:
            dataset_name: a dataset registered in ``DatasetCatalog``; its metadata gives ``json_file``
                (COCO format; converted from the dataset dicts with ``convert_to_coco_json`` when absent),
                ``thing_dataset_id_to_contiguous_id`` and ``thing_classes``. Looked up on first use.
            tasks: subset of ``("bbox", "segm", "keypoints")``; inferred from the predictions when None.
            distributed: gather predictions from all ranks; only the main process returns results.
            output_dir: where to write ``instances_predictions.pth`` and ``coco_instances_results.json``.
            max_dets_per_image: detections kept per image and COCO's ``maxDets = [1, 10, max]``
                (default 100).
            use_fast_impl: use the native ``COCOeval_opt`` when it is available.
            kpt_oks_sigmas: per-keypoint OKS sigmas; required unless the dataset has COCO's 17 keypoints.
            allow_cached_coco: reuse a previously converted json of the dataset.
        """
        self._logger = logger
        self._dataset_name = dataset_name
        if tasks is not None:
            tasks = tuple(tasks)
            unknown = sorted(set(tasks) - set(_METRICS))
            if unknown:
                raise ValueError(f"COCOEvaluator: unknown tasks {unknown}; expected a subset of {sorted(_METRICS)}.")
        self._tasks = tasks
        self._distributed = distributed
        self._output_dir = output_dir
        if max_dets_per_image is not None and max_dets_per_image < 1:
            raise ValueError(f"COCOEvaluator: max_dets_per_image must be >= 1, got {max_dets_per_image}.")
        self._max_dets_per_image = max_dets_per_image
        self._use_fast_impl = use_fast_impl
        self._kpt_oks_sigmas = tuple(float(s) for s in kpt_oks_sigmas)
        self._allow_cached_coco = allow_cached_coco
        self._coco_api_cache = None
        self._predictions: list[dict] = []

    @property
    def _metadata(self) -> Any:
        return MetadataCatalog.get(self._dataset_name)

    @property
    def _coco_api(self) -> Any:
        if self._coco_api_cache is None:
            self._coco_api_cache = _load_coco_api(
                self._dataset_name, self._metadata, self._output_dir, self._allow_cached_coco
            )
        return self._coco_api_cache

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Convert each output's ``instances`` to COCO json dicts (and keep ``proposals`` on the CPU)."""
        for input, output in zip(inputs, outputs):
            if "image_id" not in input:
                raise ValueError(f"COCOEvaluator.process: an input has no 'image_id' (keys: {sorted(input)}).")
            prediction: dict[str, Any] = {"image_id": input["image_id"]}
            if "instances" in output:
                instances = _top_k_instances(output["instances"].to("cpu"), self._max_dets_per_image)
                prediction["instances"] = instances_to_coco_json(instances, input["image_id"])
            if "proposals" in output:
                prediction["proposals"] = output["proposals"].to("cpu")
            if len(prediction) > 1:
                self._predictions.append(prediction)

    def evaluate(self, img_ids: Sequence[Any] | None = None) -> dict | None:
        """Compute the metrics.

        Args:
            img_ids: evaluate only these images (default: every image of the ground truth).

        Returns:
            ``{task: {"AP": ..., "AP50": ..., "AP-<class>": ...}}`` in percent on the main process,
            ``{}`` elsewhere.
        """
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions

        if len(predictions) == 0:
            self._logger.warning("[COCOEvaluator] Did not receive valid predictions.")

        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with atomic_write(os.path.join(self._output_dir, "instances_predictions.pth"), "wb") as f:
                torch.save(predictions, f)

        results: dict = OrderedDict()
        if any("proposals" in p for p in predictions):
            results.update(self._eval_box_proposals(predictions))
        if any("instances" in p for p in predictions) or not results:
            results.update(self._eval_predictions(predictions, img_ids=img_ids))
        return copy.deepcopy(results)

    def _tasks_from_predictions(self, predictions: list[dict]) -> tuple[str, ...]:
        tasks = {"bbox"}
        for pred in predictions:
            for result in pred.get("instances", []):
                if "segmentation" in result:
                    tasks.add("segm")
                if "keypoints" in result:
                    tasks.add("keypoints")
        return tuple(sorted(tasks))

    def _eval_predictions(self, predictions: list[dict], img_ids: Sequence[Any] | None = None) -> dict:
        # Copied so that evaluate() can run twice on the same predictions (category ids are remapped).
        coco_results = copy.deepcopy(list(itertools.chain(*[p.get("instances", []) for p in predictions])))
        tasks = self._tasks or self._tasks_from_predictions(predictions)
        coco_api = self._coco_api
        metadata = self._metadata
        class_names = _class_names(metadata, coco_api)
        _map_category_ids(coco_results, metadata, coco_api)

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            with atomic_write(file_path, "w") as f:
                json.dump(coco_results, f)

        results: dict = OrderedDict()
        for task in sorted(tasks, key=list(_METRICS).index):
            required_key = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[task]
            task_results = [r for r in coco_results if required_key in r]
            if len(task_results) == 0:
                self._logger.warning(f"[COCOEvaluator] No predictions for task {task!r}: all its metrics are 0.")
                results[task] = _zero_results(task, class_names)
                continue
            _check_results(coco_api, task_results, task, check_rle_runs=not self._native_eval_reads_masks())
            sigmas = self._keypoint_sigmas(coco_api, task_results) if task == "keypoints" else None
            coco_eval = _evaluate_predictions_on_coco(
                coco_api,
                task_results,
                task,
                kpt_oks_sigmas=sigmas,
                use_fast_impl=self._use_fast_impl,
                img_ids=img_ids,
                max_dets_per_image=self._max_dets_per_image,
                cocoeval_class=self._cocoeval_class,
            )
            results[task] = _derive_coco_results(
                coco_eval, task, class_names, self._logger, max_dets=self._max_dets_per_image
            )
        return results

    def _native_eval_reads_masks(self) -> bool:
        """Whether the native evaluator will run (it validates RLE run lengths itself, naming the image)."""
        if self._cocoeval_class is not None or not self._use_fast_impl:
            return False
        return native_coco_eval_available()

    def _keypoint_sigmas(self, coco_api: Any, coco_results: list[dict]) -> np.ndarray:
        num_pred_kpts = len(coco_results[0]["keypoints"]) // 3
        num_gt_kpts = None
        for cat in coco_api.cats.values():
            if "keypoints" in cat:
                num_gt_kpts = len(cat["keypoints"])
                break
        if num_gt_kpts is None:
            names = self._metadata.get("keypoint_names")
            num_gt_kpts = len(names) if names else num_pred_kpts
        if num_pred_kpts != num_gt_kpts:
            raise ValueError(
                f"COCOEvaluator({self._dataset_name!r}): predictions have {num_pred_kpts} keypoints but the "
                f"dataset has {num_gt_kpts}."
            )
        if self._kpt_oks_sigmas:
            if len(self._kpt_oks_sigmas) != num_gt_kpts:
                raise ValueError(
                    f"COCOEvaluator({self._dataset_name!r}): kpt_oks_sigmas has {len(self._kpt_oks_sigmas)} entries "
                    f"but the dataset has {num_gt_kpts} keypoints."
                )
            return np.array(self._kpt_oks_sigmas)
        if num_gt_kpts == _COCO_NUM_KEYPOINTS:
            from pycocotools.cocoeval import Params

            return np.array(Params(iouType="keypoints").kpt_oks_sigmas)
        raise ValueError(
            f"COCOEvaluator({self._dataset_name!r}): the dataset has {num_gt_kpts} keypoints, not COCO's 17; "
            f"pass kpt_oks_sigmas=(...) with one OKS sigma per keypoint."
        )

    def _eval_box_proposals(self, predictions: list[dict]) -> dict:
        """Average recall of the proposals at 100 and 1000 proposals per image, per area range."""
        if self._output_dir:
            ids, boxes, logits = [], [], []
            for p in predictions:
                if "proposals" in p:
                    ids.append(p["image_id"])
                    boxes.append(p["proposals"].proposal_boxes.tensor.numpy())
                    logits.append(p["proposals"].objectness_logits.numpy())
            data = {"boxes": boxes, "objectness_logits": logits, "ids": ids, "bbox_mode": BoxMode.XYXY_ABS}
            with atomic_write(os.path.join(self._output_dir, "box_proposals.pkl"), "wb") as f:
                import pickle

                pickle.dump(data, f)

        res = {}
        areas = {"all": "", "small": "s", "medium": "m", "large": "l"}
        for limit in (100, 1000):
            for area, suffix in areas.items():
                stats = _evaluate_box_proposals(predictions, self._coco_api, area=area, limit=limit)
                res[f"AR{suffix}@{limit}"] = float(stats["ar"].item() * 100)
        self._logger.info("Proposal metrics: \n" + create_small_table(res))
        return {"box_proposals": res}


def _load_coco_api(dataset_name: str, metadata: Any, output_dir: str | None, allow_cached: bool) -> Any:
    """The pycocotools ``COCO`` ground truth of ``dataset_name`` (converting the dataset when needed)."""
    from pycocotools.coco import COCO

    json_file = metadata.get("json_file")
    if json_file is None:
        if output_dir is None:
            raise ValueError(
                f"COCOEvaluator: dataset {dataset_name!r} has no 'json_file' metadata; pass output_dir= so "
                f"that it can be converted to COCO json there."
            )
        logger.info(f"Dataset {dataset_name!r} has no 'json_file': converting it to COCO format.")
        json_file = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
        metadata.set(json_file=json_file)
        convert_to_coco_json(dataset_name, json_file, allow_cached=allow_cached)
    local = PathManager.get_local_path(json_file)
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(local)


def _class_names(metadata: Any, coco_api: Any) -> list[str]:
    names = metadata.get("thing_classes")
    if names is None:
        names = [coco_api.cats[c]["name"] for c in sorted(coco_api.cats)]
    return list(names)


def _map_category_ids(coco_results: list[dict], metadata: Any, coco_api: Any) -> None:
    """Replace contiguous ``category_id``s by dataset ids (in place); unknown ids raise a ValueError."""
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    if id_map is not None:
        reverse = {int(v): int(k) for k, v in id_map.items()}
        num_classes = len(reverse)
        if sorted(reverse) != list(range(num_classes)):
            raise ValueError(
                "Metadata 'thing_dataset_id_to_contiguous_id' must map onto 0..num_classes-1, got values "
                f"{sorted(reverse)}."
            )
    else:
        reverse = {c: c for c in coco_api.cats}
    for result in coco_results:
        category_id = result["category_id"]
        if category_id not in reverse:
            raise ValueError(
                f"image_id {result['image_id']}: predicted category {category_id} is outside the dataset's "
                f"category mapping (known contiguous ids: 0..{len(reverse) - 1})."
            )
        result["category_id"] = reverse[category_id]


def _zero_results(task: str, class_names: Sequence[str]) -> dict:
    results: dict = {metric: 0.0 for metric in _METRICS[task]}
    results.update({f"AP-{name}": 0.0 for name in class_names})
    return results


def _evaluate_predictions_on_coco(
    coco_gt: Any,
    coco_results: list[dict],
    iou_type: str,
    *,
    kpt_oks_sigmas: np.ndarray | None = None,
    use_fast_impl: bool = True,
    img_ids: Sequence[Any] | None = None,
    max_dets_per_image: int | None = None,
    cocoeval_class: type | None = None,
) -> Any:
    """Run COCOeval ``evaluate()`` and ``accumulate()`` on non-empty ``coco_results``; returns the COCOeval."""
    from pycocotools.cocoeval import COCOeval

    if iou_type == "segm":
        # With a "bbox" in the results, loadRes would use the box area for the small/medium/large
        # ranges; without it the mask area is used, as for the ground truth.
        coco_results = copy.deepcopy(coco_results)
        for result in coco_results:
            result.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(coco_results)
    if cocoeval_class is not None:
        coco_eval = cocoeval_class(coco_gt, coco_dt, iou_type)
    elif use_fast_impl:
        if native_coco_eval_available():
            coco_eval = COCOeval_opt(coco_gt, coco_dt, iou_type)
        else:
            coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    else:
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)

    if iou_type != "keypoints":
        max_dets = 100 if max_dets_per_image is None else int(max_dets_per_image)
        coco_eval.params.maxDets = [1, 10, max_dets]
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    if iou_type == "keypoints" and kpt_oks_sigmas is not None:
        coco_eval.params.kpt_oks_sigmas = np.asarray(kpt_oks_sigmas, dtype=np.float64)

    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _mean_precision(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else float("nan")


def _derive_coco_results(
    coco_eval: Any, iou_type: str, class_names: Sequence[str], log: logging.Logger, max_dets: int | None = None
) -> dict:
    """AP metrics (percent) and per-category AP from an accumulated COCOeval.

    Reads ``coco_eval.eval["precision"]`` ``[T, R, K, A, M]`` (IoU thresholds, recall points,
    categories, area ranges, maxDets) at ``maxDets == max_dets`` (default: the largest); no gt for a
    range gives NaN.
    """
    params = coco_eval.params
    max_dets_list = list(params.maxDets)  # pycocotools sorts maxDets in evaluate()
    m = max_dets_list.index(max_dets) if max_dets in max_dets_list else int(np.argmax(max_dets_list))
    precision = coco_eval.eval["precision"][..., m : m + 1]
    iou_thrs = np.asarray(params.iouThrs)
    area_index = {label: i for i, label in enumerate(params.areaRngLbl)}

    def at_iou(thr: float) -> np.ndarray:
        t = np.where(np.isclose(iou_thrs, thr))[0]
        return precision[t][:, :, :, area_index["all"], -1]

    results: dict = OrderedDict()
    for metric in _METRICS[iou_type]:
        if metric == "AP":
            value = _mean_precision(precision[:, :, :, area_index["all"], -1])
        elif metric in ("AP50", "AP75"):
            value = _mean_precision(at_iou(int(metric[2:]) / 100))
        else:
            area = {"s": "small", "m": "medium", "l": "large"}[metric[-1]]
            value = _mean_precision(precision[:, :, :, area_index[area], -1])
        results[metric] = value * 100
    log.info(f"Evaluation results for {iou_type}: \n" + create_small_table(results))
    if not np.isfinite(list(results.values())).all():
        log.info("Some metrics cannot be computed and are shown as NaN.")

    cat_ids = list(params.catIds)
    if len(class_names) != len(cat_ids):
        raise ValueError(
            f"{len(class_names)} class names ('thing_classes') but the ground truth has {len(cat_ids)} categories."
        )
    per_category = []
    for k, name in enumerate(class_names):
        ap = _mean_precision(precision[:, :, k, area_index["all"], -1])
        per_category.append((f"{name}", ap * 100))
    num_cols = min(6, len(per_category) * 2)
    flat = list(itertools.chain(*per_category))
    rows = itertools.zip_longest(*[flat[i::num_cols] for i in range(num_cols)])
    table = tabulate(
        rows, tablefmt="pipe", floatfmt=".3f", headers=["category", "AP"] * (num_cols // 2), numalign="left"
    )
    log.info(f"Per-category {iou_type} AP: \n" + table)
    results.update({f"AP-{name}": ap for name, ap in per_category})
    return results


def _evaluate_box_proposals(
    predictions: list[dict], coco_api: Any, thresholds: np.ndarray | None = None, area: str = "all", limit=None
) -> dict:
    """Recall of the proposals (top ``limit`` by objectness) at IoU ``thresholds`` (default .5:.95:.05).

    Every non-crowd gt box in ``area`` is matched greedily to at most one proposal, best overlap first.
    """
    area_ranges = {
        "all": (0, 1e10),
        "small": (0, 32**2),
        "medium": (32**2, 96**2),
        "large": (96**2, 1e10),
    }
    if area not in area_ranges:
        raise ValueError(f"Unknown area range {area!r}; expected one of {sorted(area_ranges)}.")
    lo, hi = area_ranges[area]
    gt_overlaps = []
    num_pos = 0
    for prediction in predictions:
        if "proposals" not in prediction:
            continue
        proposals = prediction["proposals"]
        order = proposals.objectness_logits.sort(descending=True)[1]
        boxes = proposals.proposal_boxes[order]
        anns = coco_api.imgToAnns.get(prediction["image_id"], [])
        gt = [
            BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
            for a in anns
            if a.get("iscrowd", 0) == 0 and lo <= a["area"] <= hi
        ]
        gt_boxes = Boxes(torch.as_tensor(gt, dtype=torch.float32).reshape(-1, 4))
        num_pos += len(gt_boxes)
        if len(gt_boxes) == 0 or len(boxes) == 0:
            continue
        if limit is not None:
            boxes = boxes[:limit]
        overlaps = pairwise_iou(boxes, gt_boxes).clone()  # [P, G]
        best = torch.zeros(len(gt_boxes))
        for j in range(min(len(boxes), len(gt_boxes))):
            per_gt, prop_idx = overlaps.max(dim=0)  # best proposal of each gt
            gt_ovr, gt_idx = per_gt.max(dim=0)
            best[j] = gt_ovr
            overlaps[prop_idx[gt_idx], :] = -1
            overlaps[:, gt_idx] = -1
        gt_overlaps.append(best)
    overlaps_all = torch.cat(gt_overlaps) if gt_overlaps else torch.zeros(0)
    overlaps_all, _ = torch.sort(overlaps_all)
    if thresholds is None:
        thresholds = np.arange(0.5, 0.95 + 1e-5, 0.05)
    thresholds_t = torch.as_tensor(thresholds, dtype=torch.float32)
    recalls = torch.zeros_like(thresholds_t)
    for i, t in enumerate(thresholds_t):
        recalls[i] = (overlaps_all >= t).float().sum() / max(num_pos, 1)
    return {"ar": recalls.mean(), "recalls": recalls, "thresholds": thresholds_t, "num_pos": num_pos}
