"""Inference on many images with a built model: :class:`BatchPredictor` decodes and resizes images on a thread
pool while the model runs on batches, and post-processes (rescaling, mask pasting) on the same pool.

Each image's result is the one :class:`~libdet.engine.predictor.DefaultPredictor` gives for it, in input order;
images that cannot be read give a per-image error instead of stopping the others.
"""

from __future__ import annotations

import io
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from libdet.data.detection_utils import convert_PIL_to_numpy
from libdet.data.errors import ImageReadError

from .predictor import DefaultPredictor

__all__ = ["BatchPredictionError", "BatchPredictor", "PredictionResult"]

# What one image may be given as: a path, the bytes of an encoded file, or a decoded (H, W, 3) BGR array.
ImageSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray


@dataclass(frozen=True)
class PredictionResult:
    """The result of one input image of :meth:`BatchPredictor.predict`.

    Attributes:
        index: position of the image in the inputs.
        source: the image's path, or ``"<bytes #i>"`` / ``"<array #i>"`` for in-memory images.
        outputs: the model's output for the image (e.g. ``{"instances": Instances}`` at the image's own size),
            exactly what ``DefaultPredictor(image)`` returns; ``None`` if the image failed.
        error: why the image failed (e.g. :class:`~libdet.data.errors.ImageReadError` naming the file), or
            ``None``.
    """

    index: int
    source: str
    outputs: dict[str, Any] | None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def instances(self) -> Any:
        """``outputs["instances"]``, or ``None`` for a failed image or a model without instance outputs."""
        return None if self.outputs is None else self.outputs.get("instances")


class BatchPredictionError(RuntimeError):
    """Some images failed (``errors="raise"``). ``failures`` lists their results (with ``error``);
    ``results`` holds every image's result, in input order, when the whole input was processed."""

    def __init__(self, failures: list[PredictionResult], results: list[PredictionResult] | None = None):
        self.failures = failures
        self.results = results
        lines = "\n".join(f"  [{r.index}] {r.source}: {type(r.error).__name__}: {r.error}" for r in failures)
        super().__init__(
            f"BatchPredictor: {len(failures)} image(s) failed (pass errors='return' to get them as results):\n{lines}"
        )


@dataclass
class _Loaded:
    """One image after pre-processing: the model input dict, or the error that stopped it."""

    index: int
    source: str
    inputs: dict[str, Any] | None
    error: BaseException | None = None


class _InlineExecutor:
    """``num_workers=0``: run every task at once in the calling thread (same results, easier debugging)."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # re-raised by future.result(), as a pool would
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class BatchPredictor(DefaultPredictor):
    """Run a built model on many images: decoding and resizing (as :class:`DefaultPredictor`) run on a thread
    pool ahead of the model, the model runs on batches of ``batch_size`` images, and post-processing (rescaling
    boxes, pasting masks) of one batch runs on the pool while the model runs on the next.

    Results are those of one ``DefaultPredictor`` call per image, in input order. To keep them so, a batch's
    images go through the model together only when they pad to the same size; padding an image to a larger one
    changes the features (and detections) near its bottom and right borders. Images of a folder resized to one
    shortest edge usually share their padded size; others are forwarded in smaller groups.

    Inputs may be paths (any ``PathManager`` path), the bytes of an encoded image, or ``(H, W, 3)`` numpy arrays
    in BGR order like :class:`DefaultPredictor`'s (flipped for an RGB model). Files are decoded directly into
    the model's ``input_format``, with their EXIF orientation applied (:func:`~libdet.data.detection_utils.
    read_image`).

    Failures: an image that cannot be read or is not an image (missing file, corrupt data, wrong array shape)
    gives a :class:`PredictionResult` with ``error`` set and naming its source; the others are predicted.
    With ``errors="raise"`` (default) the failures are raised together as one :class:`BatchPredictionError`
    once every other image is done; with ``errors="return"`` they are returned among the results, so a caller
    must check ``result.error``. Errors of the model itself are not per-image and propagate at once.

    Args:
        model, min_size_test, max_size_test, input_format, metadata: as :class:`DefaultPredictor` (a YAML
            ``CfgNode`` works too); see :meth:`from_lazy_config` for a lazy config.
        batch_size: images per forward (at most; see above).
        num_workers: threads that decode, resize and post-process; 0 does everything in the calling thread.

    Example::

        predictor = BatchPredictor(model, min_size_test=320, max_size_test=533, batch_size=4, num_workers=2)
        for result in predictor.predict(["a.jpg", "b.jpg"], errors="return"):
            if result.error is not None:
                print(f"{result.source}: {result.error}")
            else:
                print(result.source, len(result.instances))
        for result in predictor.predict_iter(sorted(Path("folder").glob("*.jpg"))):  # streaming, bounded memory
            ...
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        min_size_test: int = 800,
        max_size_test: int = 1333,
        input_format: str = "BGR",
        metadata: Any = None,
        batch_size: int = 4,
        num_workers: int = 2,
    ) -> None:
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{type(self).__name__}: {name} must be an int >= {low}, got {value!r}.")
        # A YAML CfgNode makes DefaultPredictor re-enter __init__ with the translated arguments (and the
        # defaults of batch_size/num_workers), so the caller's values are set after it returns.
        super().__init__(
            model,
            min_size_test=min_size_test,
            max_size_test=max_size_test,
            input_format=input_format,
            metadata=metadata,
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._split_postprocess = _has_separable_postprocess(self.model)

    @classmethod
    def from_lazy_config(
        cls,
        cfg: Any,
        *,
        weights: str | None = None,
        device: str | None = None,
        batch_size: int = 4,
        num_workers: int = 2,
    ) -> BatchPredictor:
        """A predictor for the model of a lazy config: ``cfg.model`` built on ``device`` (default
        ``cfg.train.device``, else "auto") with ``weights`` (default ``cfg.train.init_checkpoint``) loaded; test
        sizes from the ``ResizeShortestEdge`` of ``cfg.dataloader.test.mapper.augmentations``, input format from
        its ``image_format``, metadata of the first ``cfg.dataloader.test.dataset.names``.

        Raises:
            ValueError: naming the config key that is missing (no weights, no test resize).
        """
        from libdet.checkpoint import DetectionCheckpointer
        from libdet.config import instantiate
        from libdet.data import MetadataCatalog
        from libdet.data.transforms import ResizeShortestEdge

        from .device import resolve_device

        train = cfg.get("train") or {}
        weights = train.get("init_checkpoint", "") if weights is None else weights
        if not weights:
            raise ValueError(
                f"{cls.__name__}.from_lazy_config: no weights; pass weights=... or set train.init_checkpoint."
            )
        try:
            mapper = cfg.dataloader.test.mapper
            augmentations = [instantiate(a) for a in mapper.augmentations]
            input_format = mapper.image_format
        except Exception as e:
            raise ValueError(
                f"{cls.__name__}.from_lazy_config: the config needs dataloader.test.mapper.augmentations and "
                f".image_format for the test resize and channel order ({type(e).__name__}: {e})."
            ) from e
        resizes = [a for a in augmentations if isinstance(a, ResizeShortestEdge)]
        if not resizes:
            raise ValueError(
                f"{cls.__name__}.from_lazy_config: dataloader.test.mapper.augmentations has no ResizeShortestEdge "
                f"(got {[type(a).__name__ for a in augmentations]})."
            )
        model = instantiate(cfg.model)
        model.to(resolve_device(device if device is not None else train.get("device"), setting="device"))
        DetectionCheckpointer(model).load(weights)
        names = cfg.dataloader.test.get("dataset", {}).get("names")
        if names is not None and not isinstance(names, str):
            names = names[0] if len(names) else None
        return cls(
            model,
            min_size_test=int(np.max(resizes[0].short_edge_length)),
            max_size_test=int(resizes[0].max_size),
            input_format=input_format,
            metadata=MetadataCatalog.get(names) if names else None,
            batch_size=batch_size,
            num_workers=num_workers,
        )

    def __call__(self, images: Iterable[ImageSource]) -> list[dict[str, Any]]:  # type: ignore[override]
        """Predict on a list of images; returns one output dict per image, in order.

        Raises:
            BatchPredictionError: if any image failed (after the others are predicted).
        """
        return [r.outputs for r in self.predict(images)]  # type: ignore[misc]

    def predict(self, images: Iterable[ImageSource], *, errors: str = "raise") -> list[PredictionResult]:
        """Predict on every image; returns one :class:`PredictionResult` per image, in input order.

        Args:
            images: paths, encoded bytes or ``(H, W, 3)`` BGR arrays (see the class docstring).
            errors: ``"raise"``: if any image failed, raise :class:`BatchPredictionError` (its ``results``
                hold every result) after all images are done. ``"return"``: failures are results with
                ``error`` set and ``outputs=None``.
        """
        _check_errors_arg(errors)
        results = list(self._results(images))
        failures = [r for r in results if r.error is not None]
        if failures and errors == "raise":
            raise BatchPredictionError(failures, results)
        return results

    def predict_iter(self, images: Iterable[ImageSource], *, errors: str = "raise") -> Iterator[PredictionResult]:
        """Like :meth:`predict`, as a generator for large inputs: ``images`` is consumed lazily and only a few
        batches are in memory at a time. Results come in input order.

        With ``errors="raise"`` only successful results are yielded, and the failures are raised together as
        :class:`BatchPredictionError` after the last one (``results`` is ``None``: they were yielded).
        """
        _check_errors_arg(errors)
        failures = []
        for result in self._results(images):
            if result.error is None or errors == "return":
                yield result
            if result.error is not None:
                failures.append(result)
        if failures and errors == "raise":
            raise BatchPredictionError(failures)

    # The pipeline. Decoding runs up to two batches ahead of the model; post-processing of batch k runs while
    # the model works on batch k+1; results leave in input order.

    def _results(self, images: Iterable[ImageSource]) -> Iterator[PredictionResult]:
        if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)):
            raise TypeError(
                f"{type(self).__name__}: expected a list (or iterable) of images, got a single "
                f"{type(images).__name__}; wrap it in a list."
            )
        pool = ThreadPoolExecutor(self.num_workers, "BatchPredictor") if self.num_workers else _InlineExecutor()
        items = enumerate(images)
        loading: deque[Future] = deque()
        pending: deque[list[Future]] = deque()
        lookahead = 2 * self.batch_size + self.num_workers
        try:
            self._fill(loading, items, pool, lookahead)
            while loading:
                batch = [loading.popleft().result() for _ in range(min(self.batch_size, len(loading)))]
                self._fill(loading, items, pool, lookahead)  # the next images decode while the model runs
                pending.append(self._run_batch(batch, pool))
                while len(pending) > 1:
                    yield from (f.result() for f in pending.popleft())
            while pending:
                yield from (f.result() for f in pending.popleft())
        finally:  # also when the caller stops iterating early: drop the queued work
            pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self, loading: deque, items: Iterator, pool: Any, lookahead: int) -> None:
        while len(loading) < lookahead:
            item = next(items, None)
            if item is None:
                return
            loading.append(pool.submit(self._load, *item))

    def _load(self, index: int, image: ImageSource) -> _Loaded:
        """Decode (paths, bytes) and resize one image into the model's input dict; errors are kept, not raised."""
        if isinstance(image, np.ndarray):
            source = f"<array #{index}>"
        elif isinstance(image, (bytes, bytearray, memoryview)):
            source = f"<bytes #{index}>"
        elif isinstance(image, (str, os.PathLike)):
            source = os.fspath(image)
        else:
            source = f"<{type(image).__name__} #{index}>"
        try:
            if isinstance(image, np.ndarray):
                inputs = self._prepare(image, index)  # BGR array -> model format, as DefaultPredictor
            elif isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike)):
                inputs = self._prepare_decoded(_decode(image, source, self.input_format))
            else:
                raise TypeError(
                    f"{type(self).__name__}: image {index} is a {type(image).__name__}; expected a path, the bytes "
                    f"of an image file or an (H, W, 3) numpy array."
                )
        except Exception as e:
            return _Loaded(index, source, None, e)
        return _Loaded(index, source, inputs)

    def _prepare_decoded(self, image: np.ndarray) -> dict[str, Any]:
        """:meth:`DefaultPredictor._prepare` for an image already in the model's channel order."""
        height, width = image.shape[:2]
        image = self.aug.get_transform(image).apply_image(image)
        return {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "height": height,
            "width": width,
        }

    def _run_batch(self, batch: list[_Loaded], pool: Any) -> list[Future]:
        """Forward the batch's readable images, grouped by padded size; one future result per image, in order."""
        futures: dict[int, Future] = {}
        groups: dict[tuple[int, int], list[_Loaded]] = {}
        for item in batch:
            if item.error is not None:
                futures[item.index] = _done(PredictionResult(item.index, item.source, None, item.error))
            else:
                groups.setdefault(self._padded_size(item.inputs["image"]), []).append(item)
        for group in groups.values():
            inputs = [item.inputs for item in group]
            with torch.no_grad():
                if self._split_postprocess:
                    raw = self.model.inference(inputs, do_postprocess=False)
                    for item, instances in zip(group, raw):
                        futures[item.index] = pool.submit(self._postprocess, item, instances)
                    continue
                outputs = self.model(inputs)
            for item, output in zip(group, outputs):
                futures[item.index] = _done(PredictionResult(item.index, item.source, output))
        return [futures[item.index] for item in batch]

    def _postprocess(self, item: _Loaded, instances: Any) -> PredictionResult:
        """What ``GeneralizedRCNN._postprocess`` does for one image: rescale to its size, paste masks."""
        from libdet.modeling.postprocessing import detector_postprocess

        with torch.no_grad():  # grad mode is per thread
            output = {"instances": detector_postprocess(instances, item.inputs["height"], item.inputs["width"])}
        return PredictionResult(item.index, item.source, output)

    def _padded_size(self, image: torch.Tensor) -> tuple[int, int]:
        """The size the model pads ``image`` (``(C, H, W)``) to alone (as ``ImageList.from_tensors``); for a
        model without a libdet backbone, the image's own size."""
        height, width = int(image.shape[-2]), int(image.shape[-1])
        backbone = getattr(self.model, "backbone", None)
        if backbone is None or not hasattr(backbone, "size_divisibility"):
            return height, width
        divisibility = int(backbone.size_divisibility)
        constraints = getattr(backbone, "padding_constraints", None) or {}
        if constraints.get("square_size", 0) > 0:
            height = width = int(constraints["square_size"])
        divisibility = int(constraints.get("size_divisibility", divisibility))
        if divisibility > 1:
            height, width = (math.ceil(s / divisibility) * divisibility for s in (height, width))
        return height, width


def _check_errors_arg(errors: str) -> None:
    if errors not in ("raise", "return"):
        raise ValueError(f"BatchPredictor: errors must be 'raise' or 'return', got {errors!r}.")


def _decode(image: str | os.PathLike | bytes | bytearray | memoryview, source: str, image_format: str) -> np.ndarray:
    """A path or encoded bytes -> ``(H, W, 3)`` uint8 array in ``image_format``, EXIF orientation applied."""
    from libdet.data.detection_utils import read_image

    if isinstance(image, (str, os.PathLike)):
        return read_image(source, format=image_format)
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        pil = Image.open(io.BytesIO(bytes(image)))
        pil.load()
        pil = ImageOps.exif_transpose(pil)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"BatchPredictor: cannot decode image {source}: {type(e).__name__}: {e}") from e
    return convert_PIL_to_numpy(pil, image_format)


def _has_separable_postprocess(model: nn.Module) -> bool:
    """Whether ``model`` is a :class:`GeneralizedRCNN` whose inference and post-processing are the base class's,
    so that ``inference(..., do_postprocess=False)`` + ``detector_postprocess`` equals its forward."""
    from libdet.modeling.meta_arch.rcnn import GeneralizedRCNN

    cls = type(model)
    return (
        isinstance(model, GeneralizedRCNN)
        and cls.forward is GeneralizedRCNN.forward
        and cls.inference is GeneralizedRCNN.inference
        and cls._postprocess is GeneralizedRCNN._postprocess
    )
