#!/usr/bin/env python
"""Run a trained model on images, a folder, a glob, a registered dataset or a video, and draw its predictions.

Usage (close to detectron2's ``demo/demo.py``; config overrides ``key=value`` come as in the trainer)::

    python tools/demo.py --config-file cfg.py --input a.jpg b.jpg --output out/ train.init_checkpoint=model.pth
    python tools/demo.py --config-file cfg.py --input "photos/*.jpg" --output out/ train.init_checkpoint=...
    python tools/demo.py --config-file cfg.py --input photos/ --output out/ --confidence-threshold 0.7 ...
    python tools/demo.py --config-file cfg.py --dataset shapes_val --num-images 8 --output out/ ...
    python tools/demo.py --config-file cfg.py --video-input clip.mp4 --output out/ ...   # needs OpenCV

What it does:

* builds ``cfg.model`` and loads ``train.init_checkpoint`` with :class:`DetectionCheckpointer` (required: a
  randomly initialised model draws nothing meaningful);
* prepares each image exactly as evaluation does: the image is read in ``dataloader.test.mapper.image_format``
  (default ``BGR``) and passed through all of ``dataloader.test.mapper.augmentations`` (the test-time resize,
  e.g. ``ResizeShortestEdge(256, max_size=352)`` for the shapes quickstart); without them, detectron2's test
  default ``ResizeShortestEdge(800, max_size=1333)`` is used. Predictions come back at the original size;
* class names and colours come from the metadata of ``--dataset`` or else of ``dataloader.test.dataset.names``;
* draws instances with a score >= ``--confidence-threshold`` (the model's own test score threshold still applies
  first), semantic segmentation and panoptic segmentation, whichever the model outputs;
* writes one annotated image per input, atomically: ``--output`` is a folder (created; images keep their file
  name, ``--dataset`` images are named ``<image_id>.png``) or, for a single input image, a file name;
* a video is drawn with :class:`VideoVisualizer` (colours follow objects) and written as ``<stem>.mp4`` in the
  ``--output`` folder, or to ``--output`` when it ends in ``.mp4``/``.avi``/``.mkv``. OpenCV (``cv2``) is needed
  for video and is not a libdet dependency: ``pip install opencv-python``.

The logic lives in importable functions; :func:`main` returns the written paths.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("libdet.tools.demo")

__all__ = [
    "DemoPredictor",
    "build_predictor",
    "draw_predictions",
    "expand_inputs",
    "get_metadata",
    "get_parser",
    "main",
    "setup_cfg",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv")
_GLOB_CHARS = "*?["


def get_parser() -> argparse.ArgumentParser:
    """The demo's command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="libdet demo: draw a model's predictions on images or a video.")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the lazy config file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders of images or glob patterns ('dir/*.jpg')")
    source.add_argument("--video-input", help="a video file (needs OpenCV)")
    source.add_argument("--dataset", help="a registered dataset name (e.g. shapes_val): draw its first images")
    parser.add_argument("--output", required=True, help="output folder, or the output file for a single image / video")
    parser.add_argument("--num-images", type=int, default=None, help="draw at most this many images")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="smallest score of drawn instances")
    parser.add_argument("--device", default="auto", help="'auto' (GPU when available), 'cpu', 'cuda', 'cuda:N'")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides 'path.key=value'")
    return parser


def _looks_like_override(item: str) -> bool:
    return "=" in item and not os.path.exists(item) and not any(c in item for c in _GLOB_CHARS)


def _split_overrides(args: argparse.Namespace) -> None:
    """``--input a.jpg key=value``: argparse gives the override to ``--input``; move it to ``opts``."""
    if args.input:
        overrides = [x for x in args.input if _looks_like_override(x)]
        args.input = [x for x in args.input if x not in overrides]
        args.opts = overrides + list(args.opts or [])
        if not args.input:
            raise ValueError(f"demo: --input got only config overrides {overrides}, no image.")


def setup_cfg(args: argparse.Namespace) -> Any:
    """Load ``args.config_file`` and apply the ``key=value`` overrides in ``args.opts``.

    Raises:
        FileNotFoundError: the config file does not exist.
        ValueError: the config has no ``model``.
    """
    from libdet.config import LazyConfig

    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"demo: config file {args.config_file!r} does not exist.")
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, list(args.opts or []))
    if "model" not in cfg:
        raise ValueError(f"demo: config {args.config_file!r} has no 'model' key; keys are {sorted(cfg.keys())}.")
    return cfg


def _select(cfg: Any, key: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


class DemoPredictor:
    """Run a model on one image prepared as in evaluation.

    Args:
        model: a built model in eval mode, weights loaded.
        augmentations: the test-time augmentations (e.g. ``[ResizeShortestEdge(800, 1333)]``), applied in order.
        input_format: channel order of the images given to :meth:`__call__` and expected by the model
            (``"BGR"``, ``"RGB"``, ...; as ``read_image(format=...)`` returns them).
    """

    def __init__(self, model: torch.nn.Module, *, augmentations: Sequence[Any], input_format: str = "BGR"):
        self.model = model.eval()
        self.augmentations = list(augmentations)
        self.input_format = input_format

    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        """Predict on one ``(H, W, C)`` image in :attr:`input_format`; results are at ``(H, W)``."""
        from libdet.data import transforms as T

        height, width = image.shape[:2]
        resized, _ = T.apply_augmentations(self.augmentations, image)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        with torch.no_grad():
            return self.model([{"image": tensor, "height": height, "width": width}])[0]


def build_predictor(cfg: Any, device: torch.device) -> DemoPredictor:
    """Build ``cfg.model`` on ``device``, load ``train.init_checkpoint`` and wrap it with the test-time
    preprocessing of ``dataloader.test.mapper`` (see the module docstring).

    Raises:
        ValueError: no ``train.init_checkpoint`` is set.
        FileNotFoundError: the weights file does not exist.
    """
    from libdet.checkpoint import load_config_weights
    from libdet.config import instantiate
    from libdet.data import transforms as T

    model = instantiate(cfg.model)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"demo: cfg.model built a {type(model).__name__}, not an nn.Module.")
    model.to(device)
    weights = load_config_weights(model, cfg, caller="demo")
    augs_cfg = _select(cfg, "dataloader.test.mapper.augmentations")
    if augs_cfg is not None:
        augmentations = list(instantiate(augs_cfg))
    else:
        augmentations = [T.ResizeShortestEdge(800, max_size=1333)]
        logger.info("demo: the config has no dataloader.test.mapper.augmentations; resizing to 800 / max 1333.")
    input_format = _select(cfg, "dataloader.test.mapper.image_format") or getattr(model, "input_format", None)
    logger.info(f"demo: weights {weights}; test-time augmentations {augmentations}; input format {input_format}")
    return DemoPredictor(model, augmentations=augmentations, input_format=input_format or "BGR")


def get_metadata(cfg: Any, dataset: str | None = None) -> Any:
    """Metadata of ``dataset``, else of the first name in ``dataloader.test.dataset.names``; ``None`` when
    neither is known (classes are then drawn as numbers)."""
    from libdet.data import MetadataCatalog

    name = dataset
    if name is None:
        names = _select(cfg, "dataloader.test.dataset.names")
        if isinstance(names, str):
            name = names
        elif names is not None and len(names) > 0:
            name = str(names[0])
    if name is None:
        return None
    return MetadataCatalog.get(name)


def draw_predictions(
    image_rgb: np.ndarray,
    outputs: dict[str, Any],
    metadata: Any,
    *,
    confidence_threshold: float = 0.5,
    visualizer: Any = None,
) -> Any:
    """Draw one image's model outputs.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB image.
        outputs: the model's output for the image: ``"panoptic_seg"`` (``(seg (H, W), segments_info)``), else
            ``"sem_seg"`` (``(C, H, W)`` scores) and/or ``"instances"``; or ``"proposals"``.
        metadata: dataset metadata or None.
        confidence_threshold: instances scoring below it are not drawn.
        visualizer: a :class:`VideoVisualizer` to draw a video frame with; default a new :class:`Visualizer`.

    Returns:
        the :class:`VisImage`.

    Raises:
        ValueError: the outputs hold nothing this tool can draw.
    """
    from libdet.utils.visualizer import Visualizer

    known = ("panoptic_seg", "sem_seg", "instances", "proposals")
    if not any(k in outputs for k in known):
        raise ValueError(f"demo: the model output has keys {sorted(outputs)}; expected one of {list(known)}.")
    video = visualizer is not None

    def on(fn_name: str, *a: Any, **kw: Any) -> Any:
        if video:
            return getattr(visualizer, fn_name)(image_rgb, *a, **kw)
        return getattr(Visualizer(image_rgb, metadata), fn_name)(*a, **kw)

    if "panoptic_seg" in outputs:
        seg, segments_info = outputs["panoptic_seg"]
        return on("draw_panoptic_seg", seg.to("cpu"), segments_info)
    if "proposals" in outputs and not any(k in outputs for k in ("sem_seg", "instances")):
        proposals = outputs["proposals"].to("cpu")
        return Visualizer(image_rgb, metadata).overlay_instances(boxes=proposals.proposal_boxes[:100])
    vis_image = None
    if "sem_seg" in outputs:
        vis_image = on("draw_sem_seg", outputs["sem_seg"].argmax(dim=0).to("cpu"))
        image_rgb = vis_image.get_image()
    if "instances" in outputs:
        instances = outputs["instances"].to("cpu")
        if instances.has("scores"):
            instances = instances[instances.scores >= confidence_threshold]
        vis_image = on("draw_instance_predictions", instances)
    return vis_image


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Expand files, folders (their images, sorted) and glob patterns into a list of image paths.

    Raises:
        FileNotFoundError: a file that does not exist or a pattern that matches nothing.
        ValueError: a folder without images, or no input at all.
    """
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, f))
            )
            if not found:
                raise ValueError(f"demo: input folder {item!r} contains no images ({', '.join(IMAGE_EXTENSIONS)}).")
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        elif any(c in item for c in _GLOB_CHARS):
            found = sorted(p for p in glob.glob(os.path.expanduser(item)) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"demo: input pattern {item!r} matches no file.")
            paths.extend(found)
        else:
            raise FileNotFoundError(f"demo: input file {item!r} does not exist.")
    if not paths:
        raise ValueError("demo: no input images given.")
    return paths


def _image_output_paths(paths: Sequence[str], output: str) -> list[str]:
    """One output file per input: ``output`` itself for one input and an image file name, else
    ``output/<basename>`` (formats PIL cannot write become ``.png``)."""
    if len(paths) == 1 and output.lower().endswith(IMAGE_EXTENSIONS) and not os.path.isdir(output):
        return [output]
    if os.path.isfile(output):
        raise ValueError(f"demo: --output {output!r} is a file, but {len(paths)} inputs need a folder.")
    names = []
    for p in paths:
        base = os.path.basename(p)
        if not base.lower().endswith(IMAGE_EXTENSIONS):
            base = os.path.splitext(base)[0] + ".png"
        names.append(base)
    seen: dict[str, str] = {}
    for p, n in zip(paths, names):
        if n in seen:
            raise ValueError(
                f"demo: inputs {seen[n]!r} and {p!r} would both be written to {n!r} in {output!r}; run them separately."
            )
        seen[n] = p
    return [os.path.join(output, n) for n in names]


def _progress(items: Sequence[Any], desc: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency of libdet, but the per-image log line is enough without it
        return items
    return tqdm(items, desc=desc, disable=None)


def _describe(outputs: dict[str, Any], threshold: float) -> str:
    if "instances" in outputs:
        inst = outputs["instances"]
        n = int((inst.scores >= threshold).sum()) if inst.has("scores") else len(inst)
        return f"{n} instances"
    return "+".join(k for k in ("panoptic_seg", "sem_seg", "proposals") if k in outputs)


def run_on_images(predictor: DemoPredictor, jobs: Sequence[tuple], metadata: Any, threshold: float) -> list[str]:
    """Predict on and draw each ``(name, load_image, output_path)`` job; returns the written paths.

    ``load_image()`` returns the image in ``predictor.input_format``.
    """
    from libdet.data.detection_utils import convert_image_to_rgb

    written = []
    for name, load_image, out_path in _progress(jobs, "demo"):
        image = load_image()
        start = time.perf_counter()
        outputs = predictor(image)
        took = time.perf_counter() - start
        vis = draw_predictions(
            convert_image_to_rgb(image, predictor.input_format), outputs, metadata, confidence_threshold=threshold
        )
        vis.save(out_path)
        logger.info(f"{name}: {_describe(outputs, threshold)} in {took:.2f}s -> {out_path}")
        written.append(out_path)
    return written


def _image_jobs(paths: Sequence[str], output: str, input_format: str) -> list[tuple]:
    from libdet.data.detection_utils import read_image

    def loader(path: str) -> Callable[[], np.ndarray]:
        return lambda: read_image(path, format=input_format)

    return [(p, loader(p), o) for p, o in zip(paths, _image_output_paths(paths, output))]


def _dataset_jobs(dataset: str, num_images: int | None, output: str, input_format: str) -> list[tuple]:
    from libdet.data import DatasetCatalog
    from libdet.data.detection_utils import read_image

    registered = DatasetCatalog.list()
    if dataset not in registered:
        import difflib

        close = difflib.get_close_matches(dataset, registered, n=5, cutoff=0.5)
        raise ValueError(
            f"demo: --dataset {dataset!r} is not registered in DatasetCatalog"
            + (f"; did you mean one of {close}?" if close else ".")
        )
    dicts = DatasetCatalog.get(dataset)
    if num_images is not None:
        dicts = dicts[:num_images]
    if not dicts:
        raise ValueError(f"demo: dataset {dataset!r} has no images.")
    if os.path.isfile(output):
        raise ValueError(f"demo: --output {output!r} is a file; --dataset needs a folder.")
    jobs = []
    for i, d in enumerate(dicts):
        if "file_name" not in d:
            raise ValueError(f"demo: dataset {dataset!r} image {i} (image_id={d.get('image_id')!r}) has no file_name.")
        image_id = d.get("image_id", i)
        path = d["file_name"]
        jobs.append(
            (
                f"{dataset}[{image_id}]",
                (lambda p=path: read_image(p, format=input_format)),
                os.path.join(output, f"{image_id}.png"),
            )
        )
    return jobs


def run_on_video(predictor: DemoPredictor, video_path: str, output: str, metadata: Any, threshold: float) -> str:
    """Draw the predictions on every frame of ``video_path`` and write the video; returns its path.

    Raises:
        ImportError: OpenCV is not installed.
        FileNotFoundError / OSError: the video does not exist or cannot be read or written.
    """
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            "demo: --video-input needs OpenCV (the `cv2` module), which libdet does not depend on: "
            "pip install opencv-python"
        ) from e
    from libdet.utils.video_visualizer import VideoVisualizer

    if not os.path.isfile(video_path):
        raise FileNotFoundError(f"demo: video file {video_path!r} does not exist.")
    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        raise OSError(f"demo: cannot open video file {video_path!r} with OpenCV.")
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if output.lower().endswith(VIDEO_EXTENSIONS) and not os.path.isdir(output):
        out_path = output
    else:
        out_path = os.path.join(output, os.path.splitext(os.path.basename(video_path))[0] + ".mp4")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(out_path))
    tmp_path = os.path.join(out_dir, f".{stem}.{os.getpid()}.tmp{ext}")  # the extension picks the container
    fourcc = cv2.VideoWriter_fourcc(*("XVID" if ext.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(tmp_path, fourcc, float(fps), (width, height), True)
    if not writer.isOpened():
        capture.release()
        raise OSError(f"demo: OpenCV cannot write video {out_path!r}.")
    video_vis = VideoVisualizer(metadata)
    frames = 0
    try:
        from tqdm import tqdm

        progress = tqdm(total=num_frames, desc="demo video", disable=None)
    except ImportError:  # tqdm is a dependency of libdet; without it only the final log line is written
        progress = None
    try:
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            frame = _bgr_to(frame_bgr, predictor.input_format)
            outputs = predictor(frame)
            vis = draw_predictions(
                frame_bgr[:, :, ::-1], outputs, metadata, confidence_threshold=threshold, visualizer=video_vis
            )
            writer.write(np.ascontiguousarray(vis.get_image()[:, :, ::-1]))
            frames += 1
            if progress is not None:
                progress.update(1)
        writer.release()
        if frames == 0:
            raise OSError(f"demo: no frame could be read from video {video_path!r}.")
        os.replace(tmp_path, out_path)
    finally:
        if progress is not None:
            progress.close()
        capture.release()
        writer.release()
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    logger.info(f"{video_path}: {frames} frames -> {out_path}")
    return out_path


def _bgr_to(frame_bgr: np.ndarray, input_format: str) -> np.ndarray:
    if input_format == "BGR":
        return frame_bgr
    if input_format == "RGB":
        return np.ascontiguousarray(frame_bgr[:, :, ::-1])
    raise ValueError(f"demo: video frames are BGR; cannot feed a model with input format {input_format!r}.")


def main(args: argparse.Namespace) -> list[str]:
    """Run the demo as ``args`` say (see :func:`get_parser`); returns the paths of the written files."""
    _split_overrides(args)
    if args.num_images is not None and args.num_images < 1:
        raise ValueError(f"demo: --num-images must be >= 1, got {args.num_images}.")
    if args.input:
        paths = expand_inputs(args.input)  # fail on a bad input before the model is built
        if args.num_images is not None:
            paths = paths[: args.num_images]
    from libdet.engine.defaults import resolve_device

    cfg = setup_cfg(args)
    predictor = build_predictor(cfg, resolve_device(args.device, setting="--device"))
    metadata = get_metadata(cfg, args.dataset)
    threshold = float(args.confidence_threshold)
    if args.video_input:
        return [run_on_video(predictor, args.video_input, args.output, metadata, threshold)]
    if args.dataset:
        jobs = _dataset_jobs(args.dataset, args.num_images, args.output, predictor.input_format)
    else:
        jobs = _image_jobs(paths, args.output, predictor.input_format)
    return run_on_images(predictor, jobs, metadata, threshold)


def invoke_main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    from libdet.utils.logger import setup_logger

    setup_logger(name="libdet")
    setup_logger(name="fvcore")
    args = get_parser().parse_args(argv)
    written = main(args)
    logger.info(f"demo: wrote {len(written)} file(s) under {args.output}")


if __name__ == "__main__":
    invoke_main(sys.argv[1:])
