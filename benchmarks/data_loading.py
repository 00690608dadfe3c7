"""Training data loader throughput: mapped images per second of libdet's ``DatasetMapper`` against a
detectron2-style mapper, with 0, 1 and 2 workers, in one process with alternating runs.

Usage::

    python benchmarks/data_loading.py                    # shapes_train, shortest edge 800 (detectron2's default)
    python benchmarks/data_loading.py --min-size 256     # the CPU quickstart's training size
    python benchmarks/data_loading.py --quick            # a few batches, a few seconds
    python benchmarks/data_loading.py --profile          # cProfile of libdet's mapper in this process
    python benchmarks/data_loading.py --dataset coco_2017_train --workers 0,1,2,4

Both mappers run in the same loader (``build_detection_train_loader``: same sampler, workers, batching), so the
difference is the mapper. libdet's is ``DatasetMapper`` with polygon masks and ``ResizeShortestEdge((min_size,),
max 1333)`` + horizontal ``RandomFlip``.

The baseline, :class:`Detectron2StyleMapper`, is a RE-IMPLEMENTATION written for this benchmark, not detectron2's
code: detectron2 is not on PyPI (``pip download detectron2`` finds nothing; the ``detectron2-cdo`` repackaging of
v0.5 is rejected by pip for its direct-URL dependency) and its repository cannot be reached from here. It follows
detectron2's documented ``DatasetMapper`` pipeline step by step: deep copy of the dict; ``read_image`` (PIL open,
EXIF transpose, convert to RGB, ``np.asarray``, channel flip for BGR); the augmentations as detectron2 applies them
(``get_transform`` arguments looked up with ``inspect.signature`` on every call; ``ResizeShortestEdge`` ->
``ResizeTransform`` through ``PIL.Image.resize``; ``RandomFlip`` -> fvcore's ``HFlipTransform``; fvcore's
``TransformList`` for boxes and polygons); ``torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))``;
``transform_instance_annotations`` per annotation; ``annotations_to_instances`` (boxes clipped to the image) with ``PolygonMasks``;
``filter_empty_instances`` (boxes and masks). It uses libdet's ``Boxes``/``PolygonMasks``/``Instances`` (the
detectron2-compatible structures), so structure costs are the same on both sides. With the same seeds it draws
the same random numbers in the same order, and the benchmark checks that both mappers give the same tensors.

The first batches (worker start-up) are excluded from the timing; ratio = libdet images/s / baseline images/s
for the same worker count (median of the rounds).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import inspect
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fvcore.transforms.transform import HFlipTransform, NoOpTransform, Transform, TransformList  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

import libdet.data.transforms as T  # noqa: E402
from libdet.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts  # noqa: E402
from libdet.structures import Boxes, BoxMode, Instances, PolygonMasks  # noqa: E402
from libdet.utils.env import cpu_model_name  # noqa: E402

# ---- The detectron2-style baseline (a re-implementation; see the module docstring) ----


class _D2ResizeTransform(Transform):
    """detectron2's ``ResizeTransform`` for uint8 images: PIL ``resize`` to ``(new_w, new_h)``."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        assert img.shape[:2] == (self.h, self.w)
        return np.asarray(Image.fromarray(img).resize((self.new_w, self.new_h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords


class _D2ResizeShortestEdge:
    """Shorter side to a size chosen from ``short_edge_length``, longer side at most ``max_size``."""

    def __init__(self, short_edge_length: tuple[int, ...], max_size: int):
        self.short_edge_length, self.max_size = short_edge_length, max_size

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        size = np.random.choice(self.short_edge_length)
        scale = size * 1.0 / min(h, w)
        newh, neww = (size, scale * w) if h < w else (scale * h, size)
        if max(newh, neww) > self.max_size:
            scale = self.max_size * 1.0 / max(newh, neww)
            newh, neww = newh * scale, neww * scale
        return _D2ResizeTransform(h, w, int(newh + 0.5), int(neww + 0.5))


class _D2RandomFlip:
    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        return HFlipTransform(w) if np.random.uniform(0.0, 1.0) < self.prob else NoOpTransform()


def _d2_apply_augmentations(augs: list, image: np.ndarray) -> tuple[np.ndarray, TransformList]:
    """``AugInput(image)`` through ``AugmentationList(augs)``: arguments by signature, as detectron2 looks them up."""
    tfms = []
    for aug in augs:
        names = [name for name in inspect.signature(aug.get_transform).parameters]
        tfm = aug.get_transform(*[{"image": image}[n] for n in names])
        image = tfm.apply_image(image)
        tfms.append(tfm)
    return image, TransformList(tfms)


def _d2_read_image(file_name: str, format: str) -> np.ndarray:
    with open(file_name, "rb") as f:
        image = Image.open(f)
        image = ImageOps.exif_transpose(image)
        image = image.convert("RGB")
    array = np.asarray(image)
    return array[:, :, ::-1] if format == "BGR" else array


def _d2_transform_instance_annotations(anno: dict, transforms: TransformList, image_size: tuple) -> dict:
    bbox = BoxMode.convert(anno["bbox"], anno["bbox_mode"], BoxMode.XYXY_ABS)
    bbox = transforms.apply_box(np.array([bbox]))[0].clip(min=0)
    anno["bbox"] = np.minimum(bbox, list(image_size + image_size)[::-1])
    anno["bbox_mode"] = BoxMode.XYXY_ABS
    polygons = [np.asarray(p).reshape(-1, 2) for p in anno["segmentation"]]
    anno["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
    return anno


def _d2_annotations_to_instances(annos: list, image_size: tuple) -> Instances:
    boxes = (
        np.stack([BoxMode.convert(obj["bbox"], obj["bbox_mode"], BoxMode.XYXY_ABS) for obj in annos])
        if len(annos)
        else np.zeros((0, 4))
    )
    target = Instances(image_size)
    target.gt_boxes = Boxes(boxes)
    target.gt_boxes.clip(image_size)
    target.gt_classes = torch.tensor([int(obj["category_id"]) for obj in annos], dtype=torch.int64)
    target.gt_masks = PolygonMasks([obj["segmentation"] for obj in annos])
    return target


def _d2_filter_empty_instances(instances: Instances) -> Instances:
    keep = instances.gt_boxes.nonempty(threshold=1e-5) & instances.gt_masks.nonempty()
    return instances[keep]


class Detectron2StyleMapper:
    """Re-implementation of detectron2's training ``DatasetMapper`` (BGR, polygon masks, no keypoints)."""

    def __init__(self, min_size: int, max_size: int = 1333):
        self.augmentations = [_D2ResizeShortestEdge((min_size,), max_size), _D2RandomFlip(0.5)]

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = _d2_read_image(dataset_dict["file_name"], format="BGR")
        if (dataset_dict["width"], dataset_dict["height"]) != (image.shape[1], image.shape[0]):
            raise ValueError(f"mismatched size for {dataset_dict['file_name']}")
        image, transforms = _d2_apply_augmentations(self.augmentations, image)
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        for anno in dataset_dict["annotations"]:
            anno.pop("keypoints", None)
        annos = [
            _d2_transform_instance_annotations(obj, transforms, image_shape)
            for obj in dataset_dict.pop("annotations")
            if obj.get("iscrowd", 0) == 0
        ]
        dataset_dict["instances"] = _d2_filter_empty_instances(_d2_annotations_to_instances(annos, image_shape))
        return dataset_dict


# ---- Measurement ----


def libdet_mapper(min_size: int) -> DatasetMapper:
    return DatasetMapper(
        is_train=True,
        augmentations=[
            T.ResizeShortestEdge((min_size,), max_size=1333, sample_style="choice"),
            T.RandomFlip(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=True,
    )


def measure(mapper, dicts: list, num_workers: int, batch_size: int, num_batches: int, warmup: int) -> float:
    """Mapped images per second over ``num_batches`` batches after ``warmup`` batches."""
    loader = build_detection_train_loader(
        dicts, mapper=mapper, total_batch_size=batch_size, num_workers=num_workers, seed=0
    )
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    return num_batches * batch_size / elapsed


def check_same_outputs(dicts: list, min_size: int, count: int = 8) -> bool:
    """Both mappers, from the same NumPy seed, give identical images, boxes, classes and polygons."""
    ours, theirs = libdet_mapper(min_size), Detectron2StyleMapper(min_size)
    for i, d in enumerate(dicts[:count]):
        np.random.seed(i)
        a = ours(d)
        np.random.seed(i)
        b = theirs(d)
        ia, ib = a["instances"], b["instances"]
        same = (
            torch.equal(a["image"], b["image"])
            and torch.equal(ia.gt_classes, ib.gt_classes)
            and torch.allclose(ia.gt_boxes.tensor, ib.gt_boxes.tensor)
            and all(
                np.allclose(pa, pb)
                for polys_a, polys_b in zip(ia.gt_masks.polygons, ib.gt_masks.polygons)
                for pa, pb in zip(polys_a, polys_b)
            )
        )
        if not same:
            print(f"outputs differ on {d['file_name']}")
            return False
    return True


def mapper_cpu_ms(dicts: list, min_size: int, count: int, rounds: int) -> dict[str, float]:
    """CPU milliseconds per image (``time.process_time``, which other processes' load barely affects) of each
    mapper called in this process on the same ``count`` images; medians over alternating rounds."""
    mappers = {"libdet": libdet_mapper(min_size), "d2-style": Detectron2StyleMapper(min_size)}
    times: dict[str, list[float]] = {name: [] for name in mappers}
    for _ in range(rounds):
        for name, mapper in mappers.items():
            np.random.seed(0)
            start = time.process_time()
            for d in dicts[:count]:
                mapper(d)
            times[name].append((time.process_time() - start) / count * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def profile(dicts: list, min_size: int, count: int = 200) -> None:
    mapper = libdet_mapper(min_size)
    np.random.seed(0)
    profiler = cProfile.Profile()
    profiler.enable()
    for d in dicts[:count]:
        mapper(d)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes_train", help="registered dataset name")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are printed")
    parser.add_argument("--min-size", type=int, default=800, help="training shortest edge")
    parser.add_argument("--quick", action="store_true", help="few batches, one round (smoke run)")
    parser.add_argument("--profile", action="store_true", help="cProfile libdet's mapper in-process and exit")
    parser.add_argument("--mapper-only", action="store_true", help="only the in-process CPU time per image")
    args = parser.parse_args()
    num_batches, warmup, rounds = (5, 2, 1) if args.quick else (args.num_batches, 3, args.rounds)

    dicts = get_detection_dataset_dicts(args.dataset)
    if args.profile:
        profile(dicts, args.min_size)
        return
    torch.set_num_threads(1)  # what a loader worker uses; the main process would be training
    print(f"CPU: {cpu_model_name()}; torch {torch.__version__}")
    print(
        f"dataset {args.dataset}: {len(dicts)} images; batch size {args.batch_size}; {num_batches} timed "
        f"batches after {warmup} warm-up; shortest edge {args.min_size}; {rounds} round(s)"
    )
    print(f"same outputs as the detectron2-style mapper: {check_same_outputs(dicts, args.min_size)}")
    cpu = mapper_cpu_ms(dicts, args.min_size, count=4 * num_batches, rounds=max(rounds, 3))
    print(
        f"in-process CPU ms/image: libdet {cpu['libdet']:.1f}, d2-style {cpu['d2-style']:.1f} "
        f"(ratio {cpu['libdet'] / cpu['d2-style']:.2f})"
    )
    if args.mapper_only:
        return
    workers = [int(x) for x in args.workers.split(",")]
    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for w in workers:
            for name, mapper in (
                ("libdet", libdet_mapper(args.min_size)),
                ("d2-style", Detectron2StyleMapper(args.min_size)),
            ):
                ips = measure(mapper, dicts, w, args.batch_size, num_batches, warmup)
                runs.setdefault((name, w), []).append(ips)
    print(f"{'workers':>8} {'libdet img/s':>13} {'d2-style img/s':>15} {'ratio':>7}")
    for w in workers:
        ours, theirs = statistics.median(runs[("libdet", w)]), statistics.median(runs[("d2-style", w)])
        print(f"{w:>8} {ours:>13.1f} {theirs:>15.1f} {ours / theirs:>7.2f}")


if __name__ == "__main__":
    main()
