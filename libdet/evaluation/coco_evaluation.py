"""COCO-style evaluation (box / mask / keypoint AP and proposal AR) with pycocotools."""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import itertools
import json
import logging
import os
import pickle
import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
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
from .fast_eval_api import COCOeval_opt, DetectionArrays, detection_arrays_by_type, native_coco_eval_available

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
        masks = instances.pred_masks
        masks = torch.as_tensor(masks.tensor if hasattr(masks, "tensor") else masks).detach().cpu()
        if masks.dim() != 3 or masks.shape[0] != num_instance:
            raise ValueError(
                f"image_id {img_id}: pred_masks must be [N={num_instance}, H, W], got shape {tuple(masks.shape)}."
            )
        rles = _encode_masks(masks)
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")

    keypoints = None
    if instances.has("pred_keypoints"):
        kpts = instances.pred_keypoints
        kpts = kpts.tensor if hasattr(kpts, "tensor") else kpts
        keypoints = torch.as_tensor(kpts).detach().cpu().to(torch.float64).clone()  # [N, K, 3]
        keypoints[:, :, :2] -= 0.5

    keypoints_list = keypoints.flatten(1).tolist() if keypoints is not None else None
    results = []
    for k, (category, box, score) in enumerate(zip(classes, boxes_list, scores_list)):
        result = {"image_id": img_id, "category_id": category, "bbox": box, "score": score}
        if rles is not None:
            result["segmentation"] = rles[k]
        if keypoints_list is not None:
            result["keypoints"] = keypoints_list[k]
        results.append(result)
    return results


def _encode_masks(masks: torch.Tensor) -> list[dict]:
    """Compressed COCO RLEs of ``masks`` ``[N, H, W]`` (bool; other dtypes: nonzero is foreground), equal to
    ``pycocotools.mask.encode``'s (``{"size": [H, W], "counts": bytes}``).

    pycocotools scans every pixel in column-major order, which costs a transposed copy of the whole stack; a
    model's masks are empty outside their object, so only each mask's foreground box is transposed and scanned
    here, the zeros around it added to the runs arithmetically.
    """
    import pycocotools.mask as mask_util

    n, height, width = masks.shape
    if n == 0:
        return []
    if height == 0 or width == 0:
        return mask_util.encode(np.zeros((height, width, n), dtype=np.uint8, order="F"))
    masks = (masks if masks.dtype == torch.bool else masks != 0).contiguous()
    pixels = masks.numpy().view(np.uint8)
    # The foreground's bounding box (an empty mask gets its top-left pixel, a zero, so that it has one run):
    # rows from one reduction over the whole stack, columns from each mask's band of rows only.
    rows = _nonzero_rows(pixels)  # [N, H]
    y0 = rows.argmax(axis=1).astype(np.int64)
    y1 = np.maximum(height - rows[:, ::-1].argmax(axis=1), y0 + 1).astype(np.int64)
    columns = np.stack([pixels[i, a:b].max(axis=0) for i, a, b in zip(range(n), y0.tolist(), y1.tolist())])
    x0 = columns.argmax(axis=1).astype(np.int64)
    x1 = np.maximum(width - columns[:, ::-1].argmax(axis=1), x0 + 1).astype(np.int64)
    box_h = y1 - y0
    # Column-major pixels of each box, one zero standing for the (height - box_h) zeros between two columns
    # (none when the box is full-height: its columns are contiguous), all masks one after another.
    gapped = box_h < height
    pieces = []
    for i, a, b, c, d, gap in zip(range(n), y0.tolist(), y1.tolist(), x0.tolist(), x1.tolist(), gapped.tolist()):
        box = pixels[i, a:b, c:d]
        if gap:
            padded = np.zeros((d - c, b - a + 1), dtype=np.uint8)
            padded[:, :-1] = box.T
            pieces.append(padded.reshape(-1)[:-1])
        else:
            pieces.append(box.T.reshape(-1))
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=n)
    flat = np.concatenate(pieces)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    is_run_start = np.empty(len(flat), dtype=bool)
    is_run_start[0] = True
    np.not_equal(flat[1:], flat[:-1], out=is_run_start[1:])
    is_run_start[starts] = True
    run_starts = np.flatnonzero(is_run_start)
    run_ends = np.append(run_starts[1:], len(flat))
    values = flat[run_starts]
    first_run = np.searchsorted(run_starts, starts)
    last_run = np.append(first_run[1:], len(run_starts)) - 1
    num_runs = last_run - first_run + 1
    owner = np.repeat(np.arange(n), num_runs)
    # Each gap pixel in a run stands for (height - box_h) zeros.
    stride = box_h[owner] + 1
    gaps = (run_ends - starts[owner]) // stride - (run_starts - starts[owner]) // stride
    counts = run_ends - run_starts + gaps * np.where(gapped, height - box_h - 1, 0)[owner]
    # The zeros before the box's first column and after its last one join the first / last run when it is a
    # zero run, else they become a run of their own (a zero-length first run when the first pixel is set, as
    # pycocotools writes it).
    lead = x0 * height + y0
    trail = (height - y1) + (width - x1) * height
    lead_joins = values[first_run] == 0
    trail_joins = values[last_run] == 0
    counts[first_run[lead_joins]] += lead[lead_joins]
    counts[last_run[trail_joins]] += trail[trail_joins]
    new_lead = ~lead_joins
    new_trail = ~trail_joins & (trail > 0)
    counts = np.insert(
        counts,
        np.concatenate([last_run[new_trail] + 1, first_run[new_lead]]),  # at equal positions: trail of the mask before
        np.concatenate([trail[new_trail], lead[new_lead]]),
    )
    per_mask = np.split(counts, np.cumsum(num_runs + new_lead + new_trail)[:-1])
    return mask_util.frPyObjects([{"size": [height, width], "counts": c} for c in per_mask], height, width)


def _nonzero_rows(pixels: np.ndarray) -> np.ndarray:
    """Whether each row of ``pixels`` (uint8 ``[N, H, W]``, C-contiguous) has a nonzero pixel, as uint8 ``[N, H]``.

    numpy, 8 pixels a word where the rows allow it: torch's ``amax`` is a little faster on one thread, but with
    more it splits this small reduction among them and, on each call, the OpenMP workers then spin-wait for
    work (measured at 2 threads on a loaded machine: 0.6 ms of CPU time became ~8 ms; ``process()``
    3.1 -> 10.3 ms of CPU time per image).
    """
    if pixels.shape[2] % 8 == 0:
        return (pixels.view(np.uint64).max(axis=2) != 0).view(np.uint8)
    return pixels.view(bool).any(axis=2).view(np.uint8)


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


def _check_results(
    coco_gt: Any,
    coco_results: list[dict],
    task: str,
    *,
    check_rle_runs: bool = True,
    common: bool = True,
    arrays: dict[str, DetectionArrays | None] | None = None,
) -> None:
    """Validate ``coco_results`` against ``coco_gt``: image ids, categories and finite boxes and scores (unless
    ``common`` is False: already checked), then what ``task`` reads (keypoints, segmentations;
    ``check_rle_runs``: see :func:`_check_rle`). ``arrays``: the results' columns when they have been read
    (``detection_arrays_by_type`` of all of ``coco_results``), so that they are not read again."""
    imgs, cats = coco_gt.imgs, coco_gt.cats
    arrays = arrays or {}
    if common:
        try:  # everything at once; the per-result pass below runs only to name what is wrong
            columns = arrays.get("bbox")  # every result has a box, the ids and scores are read
            if columns is None:
                image_ids = set(map(itemgetter("image_id"), coco_results))
                category_ids = set(map(itemgetter("category_id"), coco_results))
                scores = np.array(list(map(itemgetter("score"), coco_results)), dtype=np.float64)
                boxes = np.array([r["bbox"] for r in coco_results if "bbox" in r], dtype=np.float64)
            else:
                image_ids, category_ids = set(columns.image_ids.tolist()), set(columns.category_ids.tolist())
                scores, boxes = columns.scores, columns.boxes
            valid = image_ids <= imgs.keys() and category_ids <= cats.keys()
            valid = valid and bool(np.isfinite(scores).all()) and bool(np.isfinite(boxes).all())
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            _check_each_result(coco_gt, coco_results, task=None)
    if task == "keypoints":
        try:
            valid = bool(np.isfinite(np.array([r["keypoints"] for r in coco_results], dtype=np.float64)).all())
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            _check_each_result(coco_gt, coco_results, task)
    if task == "segm" and (check_rle_runs or not _rle_strings_look_valid(coco_results, imgs, arrays.get("segm"))):
        for result in coco_results:
            info = imgs[result["image_id"]]
            _check_rle(
                result.get("segmentation"), info["height"], info["width"], result["image_id"], check_runs=check_rle_runs
            )


def _rle_strings_look_valid(coco_results: list[dict], imgs: dict, columns: DetectionArrays | None = None) -> bool:
    """:func:`_check_rle` without ``check_runs`` for all results at once, when every segmentation is an RLE dict
    with ``str`` counts (as :func:`instances_to_coco_json` writes them); False means "check one by one".
    ``columns``: the segm ``DetectionArrays`` of ``coco_results`` when they have been read (strings and sizes)."""
    try:
        if columns is None:
            segmentations = [r.get("segmentation") for r in coco_results]
            if set(map(type, segmentations)) != {dict}:  # type checks through map(): one C loop each
                return False
            counts = list(map(itemgetter("counts"), segmentations))
            if set(map(type, counts)) != {str}:
                return False
            sizes = np.array(list(map(itemgetter("size"), segmentations)), dtype=np.int64).reshape(len(counts), 2)
            image_ids = list(map(itemgetter("image_id"), coco_results))
        else:
            counts, sizes, image_ids = columns.rle_counts, columns.rle_sizes, columns.image_ids.tolist()
        image_sizes = {i: (imgs[i]["height"], imgs[i]["width"]) for i in set(image_ids)}
        expected = np.array(list(map(image_sizes.__getitem__, image_ids)))
    except (KeyError, TypeError, ValueError):
        return False
    if not np.array_equal(sizes, expected.reshape(sizes.shape)):
        return False
    if not _RLE_STRING_CHARS.fullmatch("".join(counts)):
        return False
    last_chars = np.frombuffer("".join(c[-1:] for c in counts).encode("ascii"), dtype=np.uint8)
    return not ((last_chars.astype(np.int64) - 48) & 0x20).any()


def _check_each_result(coco_gt: Any, coco_results: list[dict], task: str | None) -> None:
    """The checks of :func:`_check_results` but segmentations (keypoints for ``task="keypoints"`` only), result by
    result, raising at the first bad one."""
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
        # The native evaluator's flattened ground truth, kept across evaluate() calls of this evaluator.
        self._flat_gt_cache: dict = {}
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
                _torch_save(predictions, f)

        results: dict = OrderedDict()
        if any("proposals" in p for p in predictions):
            results.update(self._eval_box_proposals(predictions))
        if any("instances" in p for p in predictions) or not results:
            with _gc_paused():
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
        tasks = self._tasks or self._tasks_from_predictions(predictions)
        coco_api = self._coco_api
        metadata = self._metadata
        class_names = _class_names(metadata, coco_api)
        # New top-level dicts with dataset category ids; their values (boxes, RLEs) are shared with the
        # predictions and never modified, so evaluate() can run again on the same predictions.
        coco_results = _with_dataset_category_ids(
            itertools.chain.from_iterable(p.get("instances", ()) for p in predictions), metadata, coco_api
        )

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            with atomic_write(file_path, "wb") as f:
                _dump_json(coco_results, f)

        native = self._native_eval_reads_masks()
        check_rle_runs = not native
        # The native evaluator reads bbox / RLE results as arrays: their columns are read once, here, for the
        # checks and the evaluation of every task (those shared by the tasks once for all of them).
        arrays = detection_arrays_by_type(coco_results, tasks, mask_areas=False) if native else {}
        _check_results(coco_api, coco_results, "", check_rle_runs=check_rle_runs, arrays=arrays)  # every task's
        results: dict = OrderedDict()
        for task in sorted(tasks, key=list(_METRICS).index):
            required_key = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[task]
            if arrays.get(task) is not None:  # every result has the key
                task_results = coco_results
            else:
                task_results = [r for r in coco_results if required_key in r]
            if len(task_results) == 0:
                self._logger.warning(f"[COCOEvaluator] No predictions for task {task!r}: all its metrics are 0.")
                results[task] = _zero_results(task, class_names)
                continue
            _check_results(coco_api, task_results, task, check_rle_runs=check_rle_runs, common=False, arrays=arrays)
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
                gt_cache=self._flat_gt_cache,
                arrays=arrays.get(task),
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
                pickle.dump(data, f)

        res = {}
        areas = {"all": "", "small": "s", "medium": "m", "large": "l"}
        for limit in (100, 1000):
            for area, suffix in areas.items():
                stats = _evaluate_box_proposals(predictions, self._coco_api, area=area, limit=limit)
                res[f"AR{suffix}@{limit}"] = float(stats["ar"].item() * 100)
        self._logger.info("Proposal metrics: \n" + create_small_table(res))
        return {"box_proposals": res}


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (restored after): the results are millions of long-lived dicts and
    lists, and each collection the evaluation's allocations trigger would walk all of them again (~30% of the
    CPU time of evaluating 75 k results). Nothing in the evaluation makes reference cycles that need it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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


class _HasTensors(Exception):
    pass


class _TensorFreePickler(pickle.Pickler):
    """A C pickler that refuses tensors and storages (``reducer_override`` is not called for builtin types)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) or torch.is_storage(obj) or isinstance(obj, torch.storage.TypedStorage):
            raise _HasTensors
        return NotImplemented


class _BytesSink:
    """A write-only file that keeps the bytes objects written to it: the C pickler hands over its whole output
    buffer in one ``write`` (no framing below protocol 4), which ``io.BytesIO`` would copy (~40 MB)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data) if not isinstance(data, bytes) else data)
        return len(data)

    def getvalue(self) -> bytes:
        if len(self._parts) != 1:
            self._parts = [b"".join(self._parts)]
        return self._parts[0]


def _torch_save(obj: Any, f: Any) -> None:
    """``torch.save(obj, f)``, the same bytes, ~2x faster for an object without tensors (COCO json results).

    torch.save calls its Python ``persistent_id`` for every object it pickles (1.5 M calls for 75 k results);
    without tensors that hook returns None each time, so the pickle is what the C pickler writes alone, stored
    in the zip records torch.save writes (``tests/evaluation/test_coco_results_encoding.py`` compares the two
    files byte for byte). Objects holding tensors, and torch versions without these internals, go to torch.save.
    """
    from torch import serialization

    data = _BytesSink()
    try:
        _TensorFreePickler(data, protocol=serialization.DEFAULT_PROTOCOL).dump(obj)
        open_writer, alignment = serialization._open_zipfile_writer, serialization._get_storage_alignment
    except (_HasTensors, AttributeError):
        torch.save(obj, f)
        return
    records = {
        "data.pkl": data.getvalue(),
        ".format_version": b"1",
        ".storage_alignment": str(alignment()).encode(),
        "byteorder": sys.byteorder.encode(),
    }
    with open_writer(f) as zip_file:
        for name, value in records.items():
            zip_file.write_record(name, value, len(value))


_JSON_CHUNK = 500  # results encoded at a time by _dump_json


def _dump_json(obj: Any, f: Any) -> None:
    """``json.dump`` with the C encoder (``json.dump`` streams through the pure-Python one) into the binary file
    ``f``; the same text. Bytes because a text file's write of a large str costs ~10x more (measured: 0.30 s
    instead of 0.03 s for 35 MB); the text is ASCII (``ensure_ascii``) and has no newlines to translate.

    A list is encoded ``_JSON_CHUNK`` items at a time (its text is the items' joined by ", " in brackets): the
    encoder's pieces, the str and its bytes then stay small and reuse memory instead of each being a fresh
    35 MB allocation whose pages the kernel must map and zero (~0.05-0.25 s of 0.35-0.6 s for 75 k results).
    """
    if not isinstance(obj, list):
        f.write(json.dumps(obj).encode("ascii"))
        return
    encode = json.JSONEncoder().encode  # what json.dumps(obj) uses
    f.write(b"[")
    for start in range(0, len(obj), _JSON_CHUNK):
        if start:
            f.write(b", ")
        f.write(encode(obj[start : start + _JSON_CHUNK])[1:-1].encode("ascii"))
    f.write(b"]")


def _with_dataset_category_ids(results: Iterable[dict], metadata: Any, coco_api: Any) -> list[dict]:
    """Shallow copies of ``results`` with contiguous ``category_id``s replaced by dataset ids; unknown ids raise
    a ValueError."""
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
    mapped = []
    for result in results:
        category_id = reverse.get(result["category_id"])
        if category_id is None:
            raise ValueError(
                f"image_id {result['image_id']}: predicted category {result['category_id']} is outside the "
                f"dataset's category mapping (known contiguous ids: 0..{len(reverse) - 1})."
            )
        mapped.append({**result, "category_id": category_id})
    return mapped


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
    gt_cache: dict | None = None,
    arrays: DetectionArrays | None = None,
) -> Any:
    """Run COCOeval ``evaluate()`` and ``accumulate()`` on non-empty ``coco_results``; returns the COCOeval.

    With the native evaluator, bbox and segm results (boxes, compressed RLE strings) go to it as arrays
    (``arrays`` when the caller has read them), without a ``COCO`` object of results; ``gt_cache`` keeps its
    flattened ground truth between calls.
    """
    from pycocotools.cocoeval import COCOeval

    native = cocoeval_class is None and use_fast_impl and iou_type != "keypoints" and native_coco_eval_available()
    if not native:
        arrays = None
    elif arrays is None:
        arrays = detection_arrays_by_type(coco_results, (iou_type,), mask_areas=False)[iou_type]
    if arrays is not None:
        coco_eval = COCOeval_opt(coco_gt, None, iou_type, detections=arrays, gt_cache=gt_cache)
        return _run_cocoeval(coco_eval, iou_type, kpt_oks_sigmas, img_ids, max_dets_per_image)

    # loadRes adds keys to the result dicts (and pycocotools' COCOeval replaces "segmentation"), so it gets new
    # top-level dicts; the values are shared, nothing modifies them.
    if iou_type == "segm":
        # With a "bbox" in the results, loadRes would use the box area for the small/medium/large
        # ranges; without it the mask area is used, as for the ground truth.
        coco_results = [result.copy() for result in coco_results]
        for result in coco_results:
            result.pop("bbox", None)
    else:
        coco_results = [result.copy() for result in coco_results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = _load_results(coco_gt, coco_results)
    if cocoeval_class is not None:
        coco_eval = cocoeval_class(coco_gt, coco_dt, iou_type)
    elif use_fast_impl:
        if native_coco_eval_available():
            coco_eval = COCOeval_opt(coco_gt, coco_dt, iou_type, gt_cache=gt_cache)
        else:
            coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    else:
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    return _run_cocoeval(coco_eval, iou_type, kpt_oks_sigmas, img_ids, max_dets_per_image)


def _run_cocoeval(
    coco_eval: Any,
    iou_type: str,
    kpt_oks_sigmas: np.ndarray | None,
    img_ids: Sequence[Any] | None,
    max_dets_per_image: int | None,
) -> Any:
    """Set ``coco_eval``'s parameters as COCOEvaluator evaluates, then ``evaluate()`` and ``accumulate()``."""
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


def _load_results(coco_gt: Any, coco_results: list[dict]) -> Any:
    """``coco_gt.loadRes(coco_results)``, the same ``COCO`` object; masks without boxes are measured in one call.

    pycocotools' ``loadRes`` calls ``maskUtils.area`` and ``maskUtils.toBbox`` once per result, the largest cost of
    loading many mask results; other kinds of results go to ``loadRes`` itself.
    """
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    if not coco_results or "segmentation" not in coco_results[0] or "bbox" in coco_results[0]:
        return coco_gt.loadRes(coco_results)
    if any("caption" in r or "bbox" in r for r in coco_results):  # loadRes decides on the first result only
        return coco_gt.loadRes(coco_results)
    img_ids = {r["image_id"] for r in coco_results}
    if not img_ids <= set(coco_gt.getImgIds()):
        raise AssertionError("Results do not correspond to current coco set")  # loadRes' assertion
    segmentations = [r["segmentation"] for r in coco_results]
    # uint32, as loadRes stores them; pycocotools' area() overflows (a uint8 shape array) past 255 masks a call.
    areas = np.concatenate(
        [mask_util.area(segmentations[i : i + 255]) for i in range(0, len(segmentations), 255)]
    ).astype(np.uint32, copy=False)
    boxes = mask_util.toBbox(segmentations)  # float64 [N, 4]
    for i, result in enumerate(coco_results):
        result["area"] = areas[i]
        result["bbox"] = boxes[i]
        result["id"] = i + 1
        result["iscrowd"] = 0
    res = COCO()
    res.dataset["info"] = copy.deepcopy(coco_gt.dataset.get("info", {}))
    res.dataset["images"] = list(coco_gt.dataset["images"])
    res.dataset["categories"] = copy.deepcopy(coco_gt.dataset["categories"])
    res.dataset["annotations"] = coco_results
    res.createIndex()
    return res


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
