#!/usr/bin/env python
"""Draw the ground truth of a config's training data, to check annotations and augmentations by eye.

Usage (close to detectron2's ``tools/visualize_data.py``)::

    python tools/visualize_data.py --config-file cfg.py --source annotation --output-dir vis/ --num-images 20
    python tools/visualize_data.py --config-file cfg.py --source dataloader --output-dir vis/ --num-images 20

* ``--source annotation``: the raw dataset dicts of ``dataloader.train.dataset.names`` (boxes, masks,
  keypoints, semantic / panoptic maps) drawn on the original images with ``Visualizer.draw_dataset_dict``;
  all images unless ``--num-images``.
* ``--source dataloader``: the batches of ``dataloader.train`` as the model sees them, after the train-time
  augmentations: each sample's ``instances`` (``gt_boxes``, ``gt_masks``, ``gt_keypoints``) and ``sem_seg`` drawn
  on its augmented image. The training loader is infinite and shuffled: ``--num-images`` samples are drawn
  (default: as many as the dataset has images; an image drawn again gets a ``_<k>`` suffix).

Class names and colours come from the metadata of the first training dataset. Files are named
``<image_id>.png`` in ``--output-dir`` and written atomically. :func:`main` returns the written paths.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

logger = logging.getLogger("libdet.tools.visualize_data")

__all__ = ["draw_mapped_sample", "get_parser", "iter_annotation_images", "iter_dataloader_images", "main", "setup_cfg"]


def get_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Draw the ground truth of a config's training data.")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the lazy config file")
    parser.add_argument(
        "--source",
        choices=["annotation", "dataloader"],
        required=True,
        help="raw dataset annotations, or the augmented samples of the training loader",
    )
    parser.add_argument("--output-dir", required=True, help="folder the images are written to")
    parser.add_argument("--num-images", type=int, default=None, help="draw at most this many images")
    parser.add_argument("--scale", type=float, default=1.0, help="output size relative to the image")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides 'path.key=value'")
    return parser


def setup_cfg(args: argparse.Namespace) -> Any:
    """Load ``args.config_file``, apply ``args.opts``; check ``dataloader.train.dataset.names`` exists.

    Raises:
        FileNotFoundError: the config file does not exist.
        ValueError: the config has no ``dataloader.train`` with ``dataset.names``.
    """
    from omegaconf import OmegaConf

    from libdet.config import LazyConfig

    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"visualize_data: config file {args.config_file!r} does not exist.")
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, list(args.opts or []))
    if OmegaConf.select(cfg, "dataloader.train") is None:
        raise ValueError(f"visualize_data: config {args.config_file!r} has no 'dataloader.train'.")
    if OmegaConf.select(cfg, "dataloader.train.dataset.names") is None:
        raise ValueError(
            f"visualize_data: config {args.config_file!r} has no 'dataloader.train.dataset.names' "
            "(the registered datasets to draw)."
        )
    return cfg


def _dataset_names(cfg: Any) -> list[str]:
    names = cfg.dataloader.train.dataset.names
    return [names] if isinstance(names, str) else [str(n) for n in names]


def _check_registered(names: Sequence[str]) -> None:
    from libdet.data import DatasetCatalog

    registered = DatasetCatalog.list()
    missing = [n for n in names if n not in registered]
    if missing:
        raise ValueError(
            f"visualize_data: dataloader.train.dataset.names {missing} are not registered in "
            f"DatasetCatalog; registered: {sorted(registered)}."
        )


def iter_annotation_images(names: Sequence[str], metadata: Any, scale: float = 1.0) -> Iterator[tuple]:
    """Yield ``(image_id, VisImage)`` for each raw dataset dict of the datasets ``names``, in order."""
    from libdet.data import DatasetCatalog
    from libdet.data.detection_utils import read_image
    from libdet.utils.visualizer import Visualizer

    for name in names:
        for i, dic in enumerate(DatasetCatalog.get(name)):
            if "file_name" not in dic:
                raise ValueError(
                    f"visualize_data: dataset {name!r} dict {i} (image_id={dic.get('image_id')!r}) has no 'file_name'."
                )
            image = read_image(dic["file_name"], format="RGB")
            yield dic.get("image_id", i), Visualizer(image, metadata, scale=scale).draw_dataset_dict(dic)


def draw_mapped_sample(sample: dict[str, Any], image_format: str, metadata: Any, scale: float = 1.0) -> Any:
    """Draw one mapped training sample: its ``(C, H, W)`` ``image`` (in ``image_format``), its ``instances``
    (``gt_boxes``, ``gt_classes``, ``gt_masks``, ``gt_keypoints``) and its ``sem_seg``. Returns the
    :class:`VisImage` (``(H, W)`` times ``scale``)."""
    from libdet.data.detection_utils import convert_image_to_rgb
    from libdet.utils.visualizer import Visualizer

    image = sample["image"].permute(1, 2, 0).cpu().numpy()
    vis = Visualizer(convert_image_to_rgb(image, image_format), metadata, scale=scale)
    out = vis.get_output()
    if "sem_seg" in sample:
        out = vis.draw_sem_seg(sample["sem_seg"], area_threshold=0, alpha=0.5)
    instances = sample.get("instances")
    if instances is not None and len(instances) > 0:
        classes = instances.gt_classes.tolist() if instances.has("gt_classes") else None
        names = metadata.get("thing_classes") if metadata is not None else None
        labels = None
        if classes is not None:
            labels = [str(names[c]) if names is not None and 0 <= c < len(names) else str(c) for c in classes]
        out = vis.overlay_instances(
            boxes=instances.gt_boxes if instances.has("gt_boxes") else None,
            masks=instances.gt_masks if instances.has("gt_masks") else None,
            keypoints=instances.gt_keypoints if instances.has("gt_keypoints") else None,
            labels=labels,
        )
    return out


def iter_dataloader_images(cfg: Any, metadata: Any, scale: float = 1.0) -> Iterator[tuple]:
    """Yield ``(image_id, VisImage)`` for each sample of the (infinite) training loader ``dataloader.train``."""
    from omegaconf import OmegaConf

    from libdet.config import instantiate

    image_format = OmegaConf.select(cfg, "dataloader.train.mapper.image_format", default=None) or "BGR"
    loader = instantiate(cfg.dataloader.train)
    for batch in loader:
        for sample in batch:
            if not isinstance(sample, dict) or "image" not in sample:
                raise ValueError(
                    "visualize_data: dataloader.train must yield lists of dicts with an 'image' "
                    f"(a DatasetMapper's output); got {type(sample).__name__}."
                )
            yield sample.get("image_id", "sample"), draw_mapped_sample(sample, image_format, metadata, scale)


def _save_all(images: Iterable[tuple], output_dir: str, limit: int | None) -> list[str]:
    from tqdm import tqdm

    os.makedirs(output_dir, exist_ok=True)
    counts: dict[str, int] = {}
    written = []
    try:
        for image_id, vis in tqdm(itertools.islice(images, limit), total=limit, desc="visualize_data", disable=None):
            stem = str(image_id)
            k = counts.get(stem, 0)
            counts[stem] = k + 1
            path = os.path.join(output_dir, f"{stem}.png" if k == 0 else f"{stem}_{k}.png")
            vis.save(path)
            written.append(path)
    finally:
        close = getattr(images, "close", None)
        if close is not None:
            close()  # stops the (infinite) training loader and its workers
    logger.info(f"visualize_data: wrote {len(written)} images to {output_dir}")
    return written


def main(args: argparse.Namespace) -> list[str]:
    """Draw the data as ``args`` say (see :func:`get_parser`); returns the written paths."""
    from libdet.data import MetadataCatalog

    if args.num_images is not None and args.num_images < 1:
        raise ValueError(f"visualize_data: --num-images must be >= 1, got {args.num_images}.")
    if args.scale <= 0:
        raise ValueError(f"visualize_data: --scale must be positive, got {args.scale}.")
    cfg = setup_cfg(args)
    names = _dataset_names(cfg)
    _check_registered(names)
    metadata = MetadataCatalog.get(names[0])
    if args.source == "annotation":
        return _save_all(iter_annotation_images(names, metadata, args.scale), args.output_dir, args.num_images)
    limit = args.num_images
    if limit is None:
        from libdet.data import DatasetCatalog

        limit = sum(len(DatasetCatalog.get(n)) for n in names)
    return _save_all(iter_dataloader_images(cfg, metadata, args.scale), args.output_dir, limit)


def invoke_main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    from libdet.utils.logger import setup_logger

    setup_logger(name="libdet")
    main(get_parser().parse_args(argv))


if __name__ == "__main__":
    invoke_main(sys.argv[1:])
