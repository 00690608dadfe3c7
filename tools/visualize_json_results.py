#!/usr/bin/env python
"""Draw COCO-format detection results (``coco_instances_results.json``, as written by :class:`COCOEvaluator`)
next to the ground truth of a registered dataset.

Usage (close to detectron2's ``tools/visualize_json_results.py``)::

    python tools/visualize_json_results.py --input output/inference/coco_instances_results.json \\
        --dataset shapes_val --output vis/ --conf-threshold 0.5 --num-images 20

For each image of the dataset (its first ``--num-images``), writes ``<output>/<image_id>.png``: the predictions
with a score >= ``--conf-threshold`` on the left, the ground truth on the right, side by side (``H x 2W``).
Results are a JSON list of ``{"image_id", "category_id", "score", "bbox": [x, y, w, h]}`` and/or
``"segmentation"`` (a COCO RLE ``{"size": [H, W], "counts": ...}`` or polygons); box-only results draw boxes,
results whose entries all have a segmentation draw masks too. ``category_id`` is the dataset's category id,
mapped to the class index with the metadata's ``thing_dataset_id_to_contiguous_id`` (LVIS-style datasets
without that mapping use ``category_id - 1``; others take it as the index itself).

The whole file is checked before anything is drawn; an error names the file, the entry index and what is
wrong (missing keys, unknown ``image_id`` / ``category_id``, malformed box or mask). :func:`main` returns the
written paths.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger("libdet.tools.visualize_json_results")

__all__ = ["create_instances", "get_parser", "load_results", "main", "validate_results"]

_REQUIRED = ("image_id", "category_id", "score")


def get_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Draw COCO-format results next to the ground truth.")
    parser.add_argument("--input", required=True, help="the JSON results file (coco_instances_results.json)")
    parser.add_argument("--dataset", required=True, help="the registered dataset the results are for")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--conf-threshold", type=float, default=0.5, help="smallest score of drawn predictions")
    parser.add_argument("--num-images", type=int, default=None, help="draw only the first N images")
    return parser


def load_results(path: str) -> list[dict[str, Any]]:
    """Read a results file: a JSON list of dicts.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not JSON, or not a list of objects (naming the file and the entry).
    """
    from libdet.utils.file_io import PathManager

    if not PathManager.isfile(path):
        raise FileNotFoundError(f"visualize_json_results: results file {path!r} does not exist.")
    with PathManager.open(path, "r") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}).") from None
    if not isinstance(results, list):
        raise ValueError(f"{path}: expected a JSON list of result entries, got a {type(results).__name__}.")
    for i, entry in enumerate(results):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {i} is a {type(entry).__name__}, expected an object.")
    return results


def _category_mapper(metadata: Any, dataset: str) -> Callable[[int], int | None]:
    """Dataset category id -> contiguous class index (None when the id is unknown)."""
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    num_classes = len(metadata.get("thing_classes") or []) or None
    if id_map:
        id_map = {int(k): int(v) for k, v in id_map.items()}
        return id_map.get
    offset = 1 if "lvis" in dataset.lower() else 0

    def mapper(category_id: int) -> int | None:
        c = category_id - offset
        if c < 0 or (num_classes is not None and c >= num_classes):
            return None
        return c

    return mapper


def validate_results(
    results: Sequence[dict[str, Any]],
    dataset_dicts: Sequence[dict[str, Any]],
    map_category: Callable[[int], int | None],
    path: str,
    dataset: str,
) -> dict[Any, list[dict[str, Any]]]:
    """Check every entry and group them by image.

    Returns:
        ``{image_id: [entry, ...]}`` where each entry gains ``"_class"`` (contiguous class index),
        ``"_box"`` (XYXY) and, when it has a segmentation, ``"_mask"`` (a :class:`GenericMask`).

    Raises:
        ValueError: naming ``path``, the entry index and the problem.
    """
    from libdet.structures import BoxMode
    from libdet.utils.visualizer import GenericMask

    sizes = {d["image_id"]: (int(d["height"]), int(d["width"])) for d in dataset_dicts}
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for i, entry in enumerate(results):
        where = f"{path}: entry {i}"
        missing = [k for k in _REQUIRED if k not in entry]
        if "bbox" not in entry and "segmentation" not in entry:
            missing.append("bbox or segmentation")
        if missing:
            raise ValueError(f"{where} lacks the keys {missing} (has {sorted(entry)}).")
        image_id = entry["image_id"]
        if image_id not in sizes:
            raise ValueError(f"{where}: image_id {image_id!r} is not an image of dataset {dataset!r}.")
        score = entry["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"{where}: score must be a finite number, got {score!r}.")
        category_id = entry["category_id"]
        cls = (
            map_category(int(category_id))
            if isinstance(category_id, int) and not isinstance(category_id, bool)
            else None
        )
        if cls is None:
            raise ValueError(f"{where}: category_id {category_id!r} is not a category of dataset {dataset!r}.")
        height, width = sizes[image_id]
        item = dict(entry, _class=cls)
        if "segmentation" in entry:
            try:
                item["_mask"] = GenericMask(entry["segmentation"], height, width)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{where}: bad segmentation for image_id {image_id!r}: {e}") from None
        if "bbox" in entry:
            box = entry["bbox"]
            if (
                not isinstance(box, (list, tuple))
                or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            ):
                raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {box!r}.")
            item["_box"] = BoxMode.convert(list(box), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        else:
            item["_box"] = list(item["_mask"].bbox())
        by_image[image_id].append(item)
    return by_image


def create_instances(entries: Sequence[dict[str, Any]], image_size: tuple, conf_threshold: float) -> Any:
    """:class:`Instances` (``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks`` when every kept entry
    has a mask) of the validated ``entries`` of one image with a score >= ``conf_threshold``."""
    import torch

    from libdet.structures import Boxes, Instances

    kept = [e for e in entries if e["score"] >= conf_threshold]
    ret = Instances(image_size)
    ret.pred_boxes = Boxes(torch.tensor([e["_box"] for e in kept], dtype=torch.float32).reshape(-1, 4))
    ret.scores = torch.tensor([float(e["score"]) for e in kept], dtype=torch.float32)
    ret.pred_classes = torch.tensor([e["_class"] for e in kept], dtype=torch.int64)
    if kept and all("_mask" in e for e in kept):
        ret.pred_masks = [e["_mask"] for e in kept]
    return ret


def main(args: argparse.Namespace) -> list[str]:
    """Draw the results as ``args`` say (see :func:`get_parser`); returns the written paths."""
    from PIL import Image
    from tqdm import tqdm

    from libdet.data import DatasetCatalog, MetadataCatalog
    from libdet.data.detection_utils import read_image
    from libdet.utils.file_io import atomic_write
    from libdet.utils.visualizer import Visualizer

    if args.num_images is not None and args.num_images < 1:
        raise ValueError(f"visualize_json_results: --num-images must be >= 1, got {args.num_images}.")
    results = load_results(args.input)
    if args.dataset not in DatasetCatalog.list():
        raise ValueError(
            f"visualize_json_results: --dataset {args.dataset!r} is not registered in DatasetCatalog; "
            f"registered: {sorted(DatasetCatalog.list())}."
        )
    dicts = DatasetCatalog.get(args.dataset)  # loading first fills the metadata's category id map
    for i, d in enumerate(dicts):
        missing = [k for k in ("image_id", "file_name", "height", "width") if k not in d]
        if missing:
            raise ValueError(f"visualize_json_results: dataset {args.dataset!r} dict {i} lacks {missing}.")
    metadata = MetadataCatalog.get(args.dataset)
    by_image = validate_results(results, dicts, _category_mapper(metadata, args.dataset), args.input, args.dataset)
    if args.num_images is not None:
        dicts = dicts[: args.num_images]
    os.makedirs(args.output, exist_ok=True)
    written = []
    for dic in tqdm(dicts, desc="visualize_json_results", disable=None):
        image = read_image(dic["file_name"], format="RGB")
        predictions = create_instances(by_image.get(dic["image_id"], []), image.shape[:2], args.conf_threshold)
        vis_pred = Visualizer(image, metadata).draw_instance_predictions(predictions).get_image()
        vis_gt = Visualizer(image, metadata).draw_dataset_dict(dic).get_image()
        path = os.path.join(args.output, f"{dic['image_id']}.png")
        with atomic_write(path, "wb") as f:
            Image.fromarray(np.concatenate((vis_pred, vis_gt), axis=1)).save(f, format="PNG")
        written.append(path)
    logger.info(f"visualize_json_results: wrote {len(written)} images to {args.output}")
    return written


def invoke_main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    from libdet.utils.logger import setup_logger

    setup_logger(name="libdet")
    main(get_parser().parse_args(argv))


if __name__ == "__main__":
    invoke_main(sys.argv[1:])
