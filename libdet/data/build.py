"""Dataset dicts from the catalog, and the training / inference data loaders.

Resumable training loader
-------------------------
:func:`build_detection_train_loader` returns a :class:`TrainDataLoader`. A run resumed from its
``state_dict()`` sees exactly the batches (same images, same order, same augmentation randomness) that an
uninterrupted run would have seen after the same number of batches, whatever ``num_workers`` is:

1. **Indices and batches are formed in the main process.** A resumable sampler (:class:`TrainingSampler` et
   al.) yields this rank's share of a global index stream that is a pure function of its seed. The loader
   groups indices into batches itself (by aspect ratio, from each dataset dict's ``width``/``height``, when
   ``aspect_ratio_grouping``) and hands the batches to a map-style ``torch.utils.data.DataLoader`` as its
   ``batch_sampler``. Workers only map samples, so the batch stream does not depend on ``num_workers``.
2. **Each sample carries its own seed**, ``derive_seed(loader_seed, global_position)`` where the global
   position is ``rank + world_size * (number of indices this rank drew before it)``. :class:`MapDataset`
   seeds ``random``, ``numpy.random`` and ``torch`` with it right before calling the mapper (and draws retry
   indices after mapper failures from an RNG seeded by it), so augmentations are reproducible per sample.
3. **The state counts batches delivered to the consumer**, not batches prefetched by workers. After forming
   each batch the loader records a snapshot (sampler state, indices drawn, indices waiting in the
   aspect-ratio buckets); when the consumer receives batch ``n`` the loader's state becomes snapshot ``n``.
   ``load_state_dict`` restores it, and the next ``iter()`` continues right after the last consumed batch
   (every ``iter()`` continues from the current state, so breaking out of a loop and iterating again also
   resumes).

A sampler without ``state_dict``/``load_state_dict`` is resumed by re-drawing and discarding the indices it
had produced. The resume must use the same world size and per-rank batch size (checked).
"""

from __future__ import annotations

import collections
import copy
import functools
import itertools
import logging
import pickle
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data as torchdata
from tabulate import tabulate
from termcolor import colored

from libdet.config.yaml_translate import test_loader_from_yaml, train_loader_from_yaml, yaml_config_entry
from libdet.structures import BoxMode
from libdet.utils import comm
from libdet.utils.file_io import PathManager
from libdet.utils.logger import log_first_n

from .catalog import DatasetCatalog, MetadataCatalog
from .common import DatasetFromList, MapDataset, SeededIndex, derive_seed
from .detection_utils import check_metadata_consistency
from .errors import AnnotationError
from .samplers import InferenceSampler, TrainingSampler
from .validation import describe_annotation

__all__ = [
    "TrainDataLoader",
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "filter_images_with_few_keypoints",
    "filter_images_with_only_crowd_annotations",
    "get_detection_dataset_dicts",
    "load_proposals_into_dataset",
    "print_instances_class_histogram",
    "trivial_batch_collator",
    "worker_init_reset_seed",
]

logger = logging.getLogger(__name__)


def filter_images_with_only_crowd_annotations(dataset_dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop images that have no annotation with ``iscrowd == 0`` (logs how many were removed)."""
    num_before = len(dataset_dicts)

    def valid(anns: list[dict[str, Any]]) -> bool:
        return any(ann.get("iscrowd", 0) == 0 for ann in anns)

    dataset_dicts = [x for x in dataset_dicts if valid(x.get("annotations", []))]
    logger.info(
        f"Removed {num_before - len(dataset_dicts)} images with no usable annotations. "
        f"{len(dataset_dicts)} images left."
    )
    return dataset_dicts


def filter_images_with_few_keypoints(
    dataset_dicts: list[dict[str, Any]], min_keypoints_per_image: int
) -> list[dict[str, Any]]:
    """Drop images with fewer than ``min_keypoints_per_image`` visible (``v > 0``) keypoints."""
    num_before = len(dataset_dicts)

    def visible_keypoints(dic: dict[str, Any]) -> int:
        return sum(
            int((np.asarray(ann["keypoints"][2::3]) > 0).sum())
            for ann in dic.get("annotations", [])
            if "keypoints" in ann
        )

    dataset_dicts = [x for x in dataset_dicts if visible_keypoints(x) >= min_keypoints_per_image]
    logger.info(
        f"Removed {num_before - len(dataset_dicts)} images with fewer than {min_keypoints_per_image} keypoints."
    )
    return dataset_dicts


def load_proposals_into_dataset(dataset_dicts: list[dict[str, Any]], proposal_file: str) -> list[dict[str, Any]]:
    """Attach precomputed proposals from a pickle (``ids``, ``boxes``, ``objectness_logits``, optional
    ``bbox_mode``) to the dicts as ``proposal_boxes``, ``proposal_objectness_logits``, ``proposal_bbox_mode``.

    Raises:
        ValueError: if an image of the dataset has no proposals in the file.
    """
    logger.info(f"Loading proposals from: {proposal_file}")
    with PathManager.open(proposal_file, "rb") as f:
        proposals = pickle.load(f, encoding="latin1")
    for key in ("ids", "boxes", "objectness_logits"):
        if key not in proposals:
            raise ValueError(f"Proposal file '{proposal_file}' lacks key '{key}' (has {sorted(proposals)}).")
    img_ids = {str(record["image_id"]) for record in dataset_dicts}
    id_to_index = {str(i): k for k, i in enumerate(proposals["ids"]) if str(i) in img_ids}
    bbox_mode = BoxMode(proposals["bbox_mode"]) if "bbox_mode" in proposals else BoxMode.XYXY_ABS
    for record in dataset_dicts:
        key = str(record["image_id"])
        if key not in id_to_index:
            raise ValueError(
                f"Proposal file '{proposal_file}' has no proposals for image_id={record['image_id']} "
                f"('{record.get('file_name', '?')}')."
            )
        i = id_to_index[key]
        record["proposal_boxes"] = proposals["boxes"][i]
        record["proposal_objectness_logits"] = proposals["objectness_logits"][i]
        record["proposal_bbox_mode"] = bbox_mode
    return dataset_dicts


def print_instances_class_histogram(dataset_dicts: list[dict[str, Any]], class_names: Sequence[str]) -> None:
    """Log a table of the number of (non-crowd) instances per class.

    Raises:
        AnnotationError: (a ``ValueError``) if an annotation's ``category_id`` is not a valid index into
            ``class_names``; names the image and the annotation.
    """
    num_classes = len(class_names)
    histogram = np.zeros(num_classes, dtype=np.int64)
    for entry in dataset_dicts:
        annos = [x for x in entry.get("annotations", []) if not x.get("iscrowd", 0)]
        for i, x in enumerate(annos):
            c = x["category_id"]
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes:
                where = describe_annotation(x.get("id"), entry.get("file_name", "?"), index=i)
                raise AnnotationError(
                    f"{where} has category_id={c!r}, outside [0, {num_classes}) of the dataset's {num_classes} classes."
                )
        classes = [int(x["category_id"]) for x in annos]
        histogram += np.bincount(np.asarray(classes, dtype=np.int64), minlength=num_classes)[:num_classes]

    n_cols = min(6, len(class_names) * 2)

    def short_name(x: str) -> str:
        return x[:13] + ".." if len(x) > 13 else x

    data = list(itertools.chain(*[[short_name(class_names[i]), int(v)] for i, v in enumerate(histogram)]))
    total = int(histogram.sum())
    if num_classes > 1:
        data.extend([None] * (n_cols - (len(data) % n_cols)) if len(data) % n_cols else [])
        data.extend(["total", total])
    rows = itertools.zip_longest(*[data[i::n_cols] for i in range(n_cols)])
    table = tabulate(
        rows, headers=["category", "#instances"] * (n_cols // 2), tablefmt="pipe", numalign="left", stralign="center"
    )
    log_first_n(
        logging.INFO,
        f"Distribution of instances among all {num_classes} categories:\n" + colored(table, "cyan"),
        key="message",
        name=__name__,
    )


def get_detection_dataset_dicts(
    names: str | Sequence[str],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Sequence[str] | None = None,
    check_consistency: bool = True,
) -> list[dict[str, Any]] | torchdata.Dataset:
    """Load and concatenate the registered datasets ``names``.

    Args:
        names: dataset name(s) registered in :data:`DatasetCatalog`.
        filter_empty: drop images without non-crowd annotations (only when the dicts have ``annotations``).
        min_keypoints: drop images with fewer visible keypoints.
        proposal_files: one proposal pickle per dataset, see :func:`load_proposals_into_dataset`.
        check_consistency: check the datasets share ``thing_classes`` and log the class histogram.

    Returns:
        The list of dataset dicts (or the registered ``torch`` Dataset(s), concatenated, for datasets
        registered as such).

    Raises:
        ValueError: if no name is given or a dataset is empty (naming it).
    """
    if isinstance(names, str):
        names = [names]
    if len(names) == 0:
        raise ValueError("get_detection_dataset_dicts: no dataset names given.")
    available = DatasetCatalog.keys()
    missing = [n for n in names if n not in available]
    if missing:
        raise KeyError(
            f"get_detection_dataset_dicts: datasets {missing} are not registered; registered: {sorted(available)}."
        )
    dataset_dicts = [DatasetCatalog.get(name) for name in names]
    if isinstance(dataset_dicts[0], torchdata.Dataset):
        return torchdata.ConcatDataset(dataset_dicts) if len(dataset_dicts) > 1 else dataset_dicts[0]
    for name, dicts in zip(names, dataset_dicts):
        if not len(dicts):
            raise ValueError(f"Dataset '{name}' is empty!")
    if proposal_files is not None:
        if len(names) != len(proposal_files):
            raise ValueError(
                f"get_detection_dataset_dicts: {len(names)} datasets but {len(proposal_files)} proposal files."
            )
        dataset_dicts = [load_proposals_into_dataset(d, f) for d, f in zip(dataset_dicts, proposal_files)]
    all_dicts = list(itertools.chain.from_iterable(dataset_dicts))
    has_instances = "annotations" in all_dicts[0]
    if filter_empty and has_instances:
        all_dicts = filter_images_with_only_crowd_annotations(all_dicts)
    if min_keypoints > 0 and has_instances:
        all_dicts = filter_images_with_few_keypoints(all_dicts, min_keypoints)
    if check_consistency and has_instances:
        class_names = MetadataCatalog.get(names[0]).get("thing_classes")
        if class_names is not None:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(all_dicts, class_names)
    if len(all_dicts) == 0:
        raise ValueError(f"No images left in datasets {list(names)} after filtering.")
    return all_dicts


def trivial_batch_collator(batch: list[Any]) -> list[Any]:
    """Keep a batch as the list of samples."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Seed a data-loader worker's RNGs from torch's per-worker seed (for loaders that do not seed
    per sample)."""
    initial_seed = torch.initial_seed() % 2**31
    random.seed(initial_seed + worker_id)
    np.random.seed(initial_seed + worker_id)
    torch.manual_seed(initial_seed + worker_id)


def _seeded_worker_init(seed: int, worker_id: int) -> None:
    s = derive_seed(seed, 3, worker_id)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _identity(x: Any) -> Any:
    return x


def _group_id(d: Any, index: int) -> int:
    try:
        w, h = d["width"], d["height"]
    except (KeyError, TypeError) as e:
        where = f"'{d.get('file_name')}'" if isinstance(d, dict) and "file_name" in d else f"index {index}"
        raise ValueError(
            f"aspect_ratio_grouping needs 'width' and 'height' in every dataset dict; {where} lacks "
            "them. Add them to the dataset or pass aspect_ratio_grouping=False."
        ) from e
    return 0 if w > h else 1


def _group_ids_from_dataset(dataset: Any) -> np.ndarray:
    """Aspect-ratio group (0: ``w > h``, 1: otherwise) of each item of an (unmapped) dataset."""
    while isinstance(dataset, MapDataset):
        dataset = dataset.dataset
    return np.asarray([_group_id(dataset[i], i) for i in range(len(dataset))], dtype=np.int64)


class _BatchStream:
    """The ``batch_sampler`` of a :class:`TrainDataLoader`: batches of :class:`SeededIndex` from a sampler,
    recording a resumable snapshot after each batch (see the module docstring)."""

    def __init__(self, loader: TrainDataLoader, state: dict[str, Any]):
        self._loader = loader
        self._state = copy.deepcopy(state)
        self.snapshots: collections.deque[dict[str, Any]] = collections.deque()

    def _sampler_iter(self) -> Iterator[int]:
        sampler, state = self._loader.sampler, self._state
        if self._loader._sampler_resumable:
            if state["sampler"] is not None:
                sampler.load_state_dict(state["sampler"])
            return iter(sampler)
        return itertools.islice(iter(sampler), state["samples_drawn"], None)

    def __iter__(self) -> Iterator[list[SeededIndex]]:
        loader, state = self._loader, self._state
        rank, world = comm.get_rank(), comm.get_world_size()
        seed = state["seed"]
        buckets = [list(map(tuple, b)) for b in state["pending"]]
        drawn = state["samples_drawn"]
        batches = state["batches_consumed"]
        for idx in self._sampler_iter():
            bucket = buckets[int(loader.group_ids[idx])] if loader.group_ids is not None else buckets[0]
            bucket.append((int(idx), drawn))
            drawn += 1
            if len(bucket) < loader.batch_size:
                continue
            batch = [SeededIndex(i, derive_seed(seed, p * world + rank)) for i, p in bucket]
            bucket.clear()
            batches += 1
            self.snapshots.append(
                {
                    **state,
                    "batches_consumed": batches,
                    "samples_drawn": drawn,
                    "sampler": loader.sampler.state_dict() if loader._sampler_resumable else None,
                    "pending": [list(b) for b in buckets],
                }
            )
            yield batch

    def __len__(self) -> int:
        raise TypeError("The training batch stream has no length.")


class TrainDataLoader:
    """A resumable training data loader (see the module docstring for the guarantees).

    Iterating yields batches (lists of mapped samples, or ``collate_fn`` of them). ``state_dict()`` describes
    the position after the last batch delivered to the consumer; ``load_state_dict`` makes the next
    ``iter()`` continue from there. Use one iterator at a time.

    Args:
        dataset: map-style dataset of samples; a :class:`MapDataset` applies the mapper.
        sampler: index sampler, ideally resumable (``state_dict``/``load_state_dict``).
        batch_size: batch size of this process.
        group_ids: per-index group ids for grouped batching (e.g. aspect ratio), or None.
        num_workers: data-loader worker processes.
        collate_fn: batch collation (default: keep the list).
        seed: base seed of the per-sample seeds.
        pin_memory, prefetch_factor, timeout: passed to ``torch.utils.data.DataLoader``.
    """

    def __init__(
        self,
        dataset: torchdata.Dataset,
        *,
        sampler: Any,
        batch_size: int,
        group_ids: Sequence[int] | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        seed: int,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        timeout: float = 0,
    ):
        if batch_size <= 0:
            raise ValueError(f"TrainDataLoader: batch_size must be positive, got {batch_size}.")
        if isinstance(dataset, torchdata.IterableDataset):
            raise TypeError(
                "TrainDataLoader: `dataset` must be map-style (indexable); an IterableDataset cannot be "
                "resumed. Iterate it with torch.utils.data.DataLoader directly."
            )
        if not isinstance(dataset, MapDataset):
            dataset = MapDataset(dataset, _identity)
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.group_ids = None if group_ids is None else np.asarray(group_ids, dtype=np.int64)
        if self.group_ids is not None and len(self.group_ids) != len(dataset):
            raise ValueError(f"TrainDataLoader: {len(self.group_ids)} group ids for a dataset of {len(dataset)}.")
        self.num_workers = num_workers
        self.collate_fn = trivial_batch_collator if collate_fn is None else collate_fn
        self._sampler_resumable = hasattr(sampler, "state_dict") and hasattr(sampler, "load_state_dict")
        self._dl_kwargs = {"pin_memory": pin_memory, "timeout": timeout}
        if num_workers > 0 and prefetch_factor is not None:
            self._dl_kwargs["prefetch_factor"] = prefetch_factor
        num_groups = 1 if self.group_ids is None else int(self.group_ids.max(initial=0)) + 1
        self._state: dict[str, Any] = {
            "seed": int(seed),
            "batches_consumed": 0,
            "samples_drawn": 0,
            "sampler": sampler.state_dict() if self._sampler_resumable else None,
            "pending": [[] for _ in range(num_groups)],
            "batch_size": batch_size,
            "world_size": comm.get_world_size(),
            "rank": comm.get_rank(),
            "grouped": self.group_ids is not None,
        }

    @property
    def seed(self) -> int:
        return self._state["seed"]

    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "batches_consumed", "samples_drawn", "sampler", "pending", ...}`` after the last batch
        delivered by this loader's iterator (a deep copy; safe to save with ``torch.save``/pickle)."""
        return copy.deepcopy(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue, at the next ``iter()``, right after the last batch consumed when ``state`` was saved.

        Raises:
            ValueError: if the state was saved with a different world size, per-rank batch size or grouping.
        """
        for key in ("world_size", "batch_size", "grouped"):
            if key in state and state[key] != self._state[key]:
                raise ValueError(
                    f"TrainDataLoader.load_state_dict: the state has {key}={state[key]!r} but this "
                    f"loader has {key}={self._state[key]!r}; an exact resume needs them equal."
                )
        if len(state["pending"]) != len(self._state["pending"]):
            raise ValueError(
                "TrainDataLoader.load_state_dict: the state's aspect-ratio buckets do not match this loader's grouping."
            )
        self._state = {**self._state, **copy.deepcopy(state), "rank": self._state["rank"]}

    def __iter__(self) -> Iterator[Any]:
        stream = _BatchStream(self, self._state)
        worker_init = functools.partial(_seeded_worker_init, self._state["seed"]) if self.num_workers else None
        loader = torchdata.DataLoader(
            self.dataset,
            batch_sampler=stream,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            worker_init_fn=worker_init,
            **self._dl_kwargs,
        )
        it = iter(loader)
        try:
            for batch in it:
                self._state = stream.snapshots.popleft()
                yield batch
        finally:
            del it


def build_batch_data_loader(
    dataset: Any,
    sampler: Any,
    total_batch_size: int,
    *,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    seed: int | None = None,
    group_ids: Sequence[int] | None = None,
    **kwargs: Any,
) -> TrainDataLoader:
    """A resumable :class:`TrainDataLoader` over a map-style (mapped) dataset with per-rank batches.

    Args:
        dataset: map-style dataset (e.g. a :class:`MapDataset`).
        sampler: index sampler producing this rank's indices.
        total_batch_size: batch size summed over all ranks; must be divisible by the world size.
        aspect_ratio_grouping: batch landscape and portrait images separately (needs ``width``/``height`` in
            the unmapped items, or ``group_ids``).
        num_workers, collate_fn: see :class:`TrainDataLoader`.
        seed: base seed of per-sample augmentation seeds (``None``: ``comm.shared_random_seed()``).
        group_ids: precomputed group id per index (overrides the aspect-ratio computation).
        kwargs: ``pin_memory``, ``prefetch_factor``, ``timeout``.
    """
    world_size = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ValueError(
            f"total_batch_size ({total_batch_size}) must be a positive multiple of the number of "
            f"processes ({world_size})."
        )
    batch_size = total_batch_size // world_size
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if aspect_ratio_grouping and group_ids is None:
        group_ids = _group_ids_from_dataset(dataset)
    if not aspect_ratio_grouping:
        group_ids = None
    if seed is None:
        seed = comm.shared_random_seed()
    return TrainDataLoader(
        dataset,
        sampler=sampler,
        batch_size=batch_size,
        group_ids=group_ids,
        num_workers=num_workers,
        collate_fn=collate_fn,
        seed=seed,
        **kwargs,
    )


@yaml_config_entry(train_loader_from_yaml)  # detectron2's build_detection_train_loader(cfg, mapper=None)
def build_detection_train_loader(
    dataset: list[dict[str, Any]] | torchdata.Dataset,
    *,
    mapper: Callable[[Any], Any] | None = None,
    sampler: Any = None,
    total_batch_size: int,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    seed: int | None = None,
    serialize: bool = True,
    max_failed_fraction: float = 0.01,
    **kwargs: Any,
) -> TrainDataLoader:
    """The resumable, infinite training loader (see the module docstring).

    Args:
        dataset: list of dataset dicts (e.g. from :func:`get_detection_dataset_dicts`) or a map-style
            dataset.
        mapper: applied to each item (e.g. a :class:`DatasetMapper`); ``None``: items are used as they are.
        sampler: index sampler; default ``TrainingSampler(len(dataset), seed=seed)``.
        total_batch_size: batch size over all ranks (split evenly; must be divisible by the world size).
        aspect_ratio_grouping: batch landscape and portrait images separately.
        num_workers: data-loader worker processes (the batches do not depend on it).
        collate_fn: default keeps each batch as a list of dicts.
        seed: base seed for the default sampler and the per-sample seeds (``None``: a seed shared by ranks).
        serialize: store a list dataset pickled in one buffer (:class:`DatasetFromList`).
        max_failed_fraction: fraction of the samples that may fail with bad data (a ``DataError``: unreadable
            image, malformed annotation) before loading stops with a summary; see :class:`MapDataset`.
        kwargs: ``pin_memory``, ``prefetch_factor``, ``timeout``.

    Returns:
        A :class:`TrainDataLoader` with ``state_dict()`` / ``load_state_dict()``.
    """
    if isinstance(dataset, torchdata.IterableDataset):
        raise TypeError(
            "build_detection_train_loader: `dataset` must be a list or a map-style dataset; "
            "IterableDatasets cannot be resumed exactly."
        )
    group_ids = None
    if isinstance(dataset, list):
        if len(dataset) == 0:
            raise ValueError("build_detection_train_loader: the dataset is empty.")
        if aspect_ratio_grouping:
            group_ids = np.asarray([_group_id(d, i) for i, d in enumerate(dataset)], dtype=np.int64)
        dataset = DatasetFromList(dataset, copy=False, serialize=serialize)
    if seed is None:
        seed = comm.shared_random_seed()
    if sampler is None:
        sampler = TrainingSampler(len(dataset), seed=seed)
    dataset = MapDataset(dataset, mapper if mapper is not None else _identity, max_failed_fraction=max_failed_fraction)
    return build_batch_data_loader(
        dataset,
        sampler,
        total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        collate_fn=collate_fn,
        seed=seed,
        group_ids=group_ids,
        **kwargs,
    )


@yaml_config_entry(test_loader_from_yaml)  # detectron2's build_detection_test_loader(cfg, dataset_name)
def build_detection_test_loader(
    dataset: list[dict[str, Any]] | torchdata.Dataset,
    *,
    mapper: Callable[[Any], Any] | None = None,
    sampler: Any = None,
    batch_size: int = 1,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
) -> torchdata.DataLoader:
    """A finite loader over this rank's shard of ``dataset`` (each image exactly once across ranks).

    Args:
        dataset: list of dataset dicts or a map-style dataset.
        mapper: applied to each item (e.g. ``DatasetMapper(is_train=False, ...)``); ``None``: identity.
        sampler: default :class:`InferenceSampler`.
        batch_size: images per batch on this rank.
        num_workers: data-loader workers.
        collate_fn: default keeps each batch as a list.

    Raises:
        RuntimeError: (when iterated) an image failed with bad data (a ``DataError``, e.g. an unreadable file);
            names the file. Unlike training, inference never replaces an image by another.
    """
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset, copy=False)
    if mapper is not None:
        # Evaluating another image in place of a bad one would silently skew the metrics: the first sample that
        # fails with bad data stops inference, naming its file.
        dataset = MapDataset(dataset, mapper, max_failed_fraction=0.0)
    if isinstance(dataset, torchdata.IterableDataset):
        if sampler is not None:
            raise ValueError("build_detection_test_loader: a sampler cannot be used with an IterableDataset.")
        return torchdata.DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
        )
    if sampler is None:
        sampler = InferenceSampler(len(dataset))
    return torchdata.DataLoader(
        dataset,
        batch_sampler=torchdata.BatchSampler(sampler, batch_size, drop_last=False),
        num_workers=num_workers,
        collate_fn=trivial_batch_collator if collate_fn is None else collate_fn,
    )
