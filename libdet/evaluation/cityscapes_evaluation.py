"""Cityscapes instance-level and pixel-level evaluation with the official ``cityscapesscripts``.

The scripts are an optional extra (``pip install 'libdet[cityscapes]'``) imported when evaluating.
Predictions are written in the official formats to a temporary folder (shared by all ranks of a
single-machine job) and evaluated against the ``*_gtFine_*`` files under the dataset's ``gt_dir``.
"""

from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from libdet.data.catalog import MetadataCatalog
from libdet.utils import comm

from .evaluator import DatasetEvaluator

__all__ = ["CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator"]

logger = logging.getLogger(__name__)


def _import_cityscapes(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            "Cityscapes evaluation needs 'cityscapesscripts': pip install 'libdet[cityscapes]' "
            "(or pip install cityscapesscripts)."
        ) from e


@contextlib.contextmanager
def _numpy_in1d_alias():
    """Provide ``np.in1d`` while the scripts run: cityscapesscripts 2.3.0 uses it and NumPy 2.4 removed it."""
    added = not hasattr(np, "in1d")
    if added:
        np.in1d = lambda ar1, ar2, assume_unique=False, invert=False: np.isin(  # type: ignore[attr-defined]
            ar1, ar2, assume_unique=assume_unique, invert=invert
        ).ravel()
    try:
        yield
    finally:
        if added:
            del np.in1d


def _write_json_numpy_aware(data: Any, filename: str) -> None:
    """``writeDict2JSON`` of the scripts, able to write NumPy 2 scalars (which have no ``__dict__``)."""
    import json

    def default(o: Any) -> Any:
        return o.item() if isinstance(o, np.generic) else o.__dict__

    with open(filename, "w") as f:
        f.write(json.dumps(data, default=default, sort_keys=True, indent=4))


class _CityscapesEvaluator(DatasetEvaluator):
    """Shared temp-folder handling of the two Cityscapes evaluators."""

    def __init__(self, dataset_name: str):
        """
        Args:
            dataset_name: registered dataset whose metadata has ``gt_dir`` (the ``gtFine/<split>``
                folder) and ``thing_classes`` / ``stuff_classes`` (Cityscapes label names).
        """
        self._dataset_name = dataset_name
        self._temp_dir: str | None = None
        self._working_dir: tempfile.TemporaryDirectory | None = None

    @property
    def _metadata(self) -> Any:
        meta = MetadataCatalog.get(self._dataset_name)
        if meta.get("gt_dir") is None:
            raise ValueError(f"{type(self).__name__}: dataset {self._dataset_name!r} has no 'gt_dir' metadata.")
        return meta

    def reset(self) -> None:
        _import_cityscapes("cityscapesscripts.helpers.labels")  # fail early, before inference
        self._working_dir = tempfile.TemporaryDirectory(prefix="cityscapes_eval_")
        # Every rank writes into rank 0's folder (single-machine jobs share the file system).
        self._temp_dir = comm.all_gather(self._working_dir.name)[0]
        if self._temp_dir != self._working_dir.name:
            self._working_dir.cleanup()
            self._working_dir = None
        logger.info(f"Writing cityscapes results to temporary directory {self._temp_dir} ...")

    def _require_reset(self) -> str:
        if self._temp_dir is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() before process().")
        return self._temp_dir

    def _cleanup(self) -> None:
        if self._working_dir is not None:
            self._working_dir.cleanup()
            self._working_dir = None
        self._temp_dir = None

    @staticmethod
    def _basename(input: dict) -> str:
        return os.path.splitext(os.path.basename(input["file_name"]))[0]

    def _quiet_eval(self, func: Any, *args: Any) -> Any:
        # The scripts print progress, write "matches.json" into the working directory and call
        # sys.exit() on bad input; turn the latter into an exception that carries their message.
        out = io.StringIO()
        try:
            with contextlib.chdir(self._temp_dir), contextlib.redirect_stdout(out), _numpy_in1d_alias():
                return func(*args)
        except SystemExit as e:
            raise RuntimeError(
                f"{type(self).__name__}: cityscapesscripts failed: {out.getvalue().strip()[-2000:]}"
            ) from e


class CityscapesInstanceEvaluator(_CityscapesEvaluator):
    """Instance segmentation AP and AP50 (``segm`` task) with the official Cityscapes script.

    Outputs carry ``instances`` with ``pred_masks`` ``[N, H, W]``, ``pred_classes`` (index into
    ``thing_classes``) and ``scores``, at the original resolution.
    """

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        from PIL import Image

        name2label = _import_cityscapes("cityscapesscripts.helpers.labels").name2label
        temp_dir = self._require_reset()
        thing_classes = self._metadata.thing_classes
        for input, output in zip(inputs, outputs):
            basename = self._basename(input)
            pred_txt = os.path.join(temp_dir, basename + "_pred.txt")
            instances = output["instances"].to("cpu")
            with open(pred_txt, "w") as fout:
                for i in range(len(instances)):
                    class_name = thing_classes[int(instances.pred_classes[i])]
                    if class_name not in name2label:
                        raise ValueError(f"CityscapesInstanceEvaluator: {class_name!r} is not a Cityscapes label name.")
                    mask = instances.pred_masks[i].numpy().astype(np.uint8) * 255
                    png_filename = f"{basename}_{i}_{class_name}.png"
                    Image.fromarray(mask).save(os.path.join(temp_dir, png_filename))
                    fout.write(f"{png_filename} {name2label[class_name].id} {float(instances.scores[i])}\n")

    def evaluate(self) -> dict | None:
        """Returns ``{"segm": {"AP", "AP50"}}`` in percent on the main process."""
        comm.synchronize()
        if comm.get_rank() > 0:
            return {}
        cityscapes_eval = _import_cityscapes("cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling")
        temp_dir = self._require_reset()
        args = cityscapes_eval.args
        args.predictionPath = os.path.abspath(temp_dir)
        args.predictionWalk = None
        args.JSONOutput = False
        args.colorized = False
        args.quiet = True
        args.gtInstancesFile = os.path.join(temp_dir, "gtInstances.json")
        gt_dir = self._metadata.gt_dir
        ground_truth = sorted(glob.glob(os.path.join(gt_dir, "*", "*_gtFine_instanceIds.png")))
        if not ground_truth:
            raise ValueError(f"CityscapesInstanceEvaluator: no *_gtFine_instanceIds.png under {gt_dir!r}.")
        try:
            predictions = [self._quiet_eval(cityscapes_eval.getPrediction, gt, args) for gt in ground_truth]
            original_writer = cityscapes_eval.writeDict2JSON
            cityscapes_eval.writeDict2JSON = _write_json_numpy_aware
            try:
                results = self._quiet_eval(cityscapes_eval.evaluateImgLists, predictions, ground_truth, args)
            finally:
                cityscapes_eval.writeDict2JSON = original_writer
            results = results["averages"]
        finally:
            self._cleanup()
        return OrderedDict({"segm": {"AP": results["allAp"] * 100, "AP50": results["allAp50%"] * 100}})


class CityscapesSemSegEvaluator(_CityscapesEvaluator):
    """Pixel-level IoU / iIoU (classes and categories) with the official Cityscapes script.

    Outputs carry ``sem_seg`` ``[C, H, W]`` scores over Cityscapes train ids at original resolution.
    """

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        from PIL import Image

        train_id2label = _import_cityscapes("cityscapesscripts.helpers.labels").trainId2label
        temp_dir = self._require_reset()
        for input, output in zip(inputs, outputs):
            basename = self._basename(input)
            pred_filename = os.path.join(temp_dir, basename + "_pred.png")
            pred_train = output["sem_seg"].argmax(dim=0).to("cpu", torch.int64).numpy()
            pred = np.full(pred_train.shape, 255, dtype=np.uint8)
            for train_id, label in train_id2label.items():
                if label.ignoreInEval:
                    continue
                pred[pred_train == train_id] = label.id
            Image.fromarray(pred).save(pred_filename)

    def evaluate(self) -> dict | None:
        """Returns ``{"sem_seg": {"IoU", "iIoU", "IoU_sup", "iIoU_sup"}}`` in percent on the main process."""
        comm.synchronize()
        if comm.get_rank() > 0:
            return {}
        cityscapes_eval = _import_cityscapes("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
        temp_dir = self._require_reset()
        args = cityscapes_eval.args
        args.predictionPath = os.path.abspath(temp_dir)
        args.predictionWalk = None
        args.JSONOutput = False
        args.colorized = False
        args.quiet = True
        gt_dir = self._metadata.gt_dir
        ground_truth = sorted(glob.glob(os.path.join(gt_dir, "*", "*_gtFine_labelIds.png")))
        if not ground_truth:
            raise ValueError(f"CityscapesSemSegEvaluator: no *_gtFine_labelIds.png under {gt_dir!r}.")
        try:
            predictions = [self._quiet_eval(cityscapes_eval.getPrediction, args, gt) for gt in ground_truth]
            results = self._quiet_eval(cityscapes_eval.evaluateImgLists, predictions, ground_truth, args)
        finally:
            self._cleanup()
        return OrderedDict(
            {
                "sem_seg": {
                    "IoU": 100.0 * results["averageScoreClasses"],
                    "iIoU": 100.0 * results["averageScoreInstClasses"],
                    "IoU_sup": 100.0 * results["averageScoreCategories"],
                    "iIoU_sup": 100.0 * results["averageScoreInstCategories"],
                }
            }
        )
