"""Apply a DensePose model to images: ``dump`` the results to a file or ``show`` them as PNG drawings.

    python projects/DensePose/apply_net.py dump CONFIG WEIGHTS INPUT --output results.pt
    python projects/DensePose/apply_net.py show CONFIG WEIGHTS INPUT dp_contour,bbox --output out.png

CONFIG is a lazy config (``projects/DensePose/configs/*.py``), WEIGHTS a checkpoint (a detectron2 model-zoo
``.pkl`` or a libdet ``.pth``; ``""`` keeps the initialisation), INPUT an image, a folder or a glob. Trailing
``key=value`` arguments override the config. ``show`` takes a comma-separated list of ``dp_segm``, ``dp_u``,
``dp_v``, ``dp_contour``, ``bbox``; with several images, the image's index is inserted before the extension.

Dump format: ``torch.save`` of a list with one dict per image, loadable with ``torch.load(path, weights_only=True)``
(plain containers and tensors only, no pickled classes)::

    {"file_name": str, "image_size": [H, W], "scores": (N,) float32, "pred_boxes_XYXY": (N, 4) float32,
     "pred_densepose": [{"labels": (h_i, w_i) uint8 fine part 0..24, "uv": (2, h_i, w_i) float32}, ...]}

where result ``i`` covers the integer box ``x0 = int(x0), y0 = int(y0)``, ``w_i = max(int(x1 - x0), 1)``,
``h_i = max(int(y1 - y0), 1)`` of ``pred_boxes_XYXY[i]``.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))
if PROJECT_ROOT not in sys.path:
    sys.path.insert(0, PROJECT_ROOT)


def _input_files(pattern: str) -> list[str]:
    if os.path.isdir(pattern):
        files = sorted(
            os.path.join(pattern, f)
            for f in os.listdir(pattern)
            if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp"))
        )
    elif os.path.isfile(pattern):
        files = [pattern]
    else:
        files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"apply_net: no image found at '{pattern}' (a file, a folder or a glob).")
    return files


def build_model(config_file: str, weights: str, opts: list[str]):
    """The config's model with ``weights`` loaded, in eval mode, and its test resize augmentations."""
    from libdet.checkpoint import DetectionCheckpointer
    from libdet.config import LazyConfig, instantiate

    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), opts)
    model = instantiate(cfg.model)
    model.eval()
    if weights:
        DetectionCheckpointer(model).load(weights)
    augmentations = instantiate(cfg.dataloader.test.mapper.augmentations)
    return model, augmentations, cfg.model.get("input_format", "BGR")


def predict(model, augmentations, input_format: str, file_name: str):
    """``(image RGB (H, W, 3) uint8, Instances in the image's size)`` of one image file."""
    import numpy as np
    import torch

    import libdet.data.transforms as T
    from libdet.data.detection_utils import read_image

    image = read_image(file_name, format=input_format)
    aug_input = T.AugInput(image)
    T.AugmentationList(list(augmentations))(aug_input)
    tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
    with torch.no_grad():
        output = model([{"image": tensor, "height": image.shape[0], "width": image.shape[1]}])[0]
    rgb = image[:, :, ::-1] if input_format == "BGR" else image
    return np.ascontiguousarray(rgb), output["instances"].to("cpu")


def _results(instances):
    from densepose.inference import chart_output_to_results

    if not instances.has("pred_densepose") or len(instances) == 0:
        return []
    return chart_output_to_results(instances.pred_densepose, instances.pred_boxes)


def dump(args) -> None:
    import torch

    from libdet.utils.file_io import atomic_write

    model, augs, fmt = build_model(args.config, args.weights, args.opts)
    records = []
    for file_name in _input_files(args.input):
        image, inst = predict(model, augs, fmt, file_name)
        inst = inst[inst.scores >= args.min_score]
        records.append(
            {
                "file_name": file_name,
                "image_size": list(image.shape[:2]),
                "scores": inst.scores.float().clone(),
                "pred_boxes_XYXY": inst.pred_boxes.tensor.float().clone(),
                "pred_densepose": [{"labels": r.labels.to(torch.uint8), "uv": r.uv.float()} for r in _results(inst)],
            }
        )
    with atomic_write(args.output, "wb") as f:
        torch.save(records, f)
    print(f"apply_net: wrote DensePose results of {len(records)} image(s) to {args.output}")


def show(args) -> None:
    from densepose.inference import VISUALIZATIONS, draw_densepose
    from PIL import Image

    from libdet.utils.file_io import atomic_write

    visualizations = [v for v in args.visualizations.split(",") if v]
    unknown = [v for v in visualizations if v not in VISUALIZATIONS]
    if unknown or not visualizations:
        raise SystemExit(f"apply_net show: unknown visualizations {unknown}; choose from {', '.join(VISUALIZATIONS)}.")
    model, augs, fmt = build_model(args.config, args.weights, args.opts)
    files = _input_files(args.input)
    for k, file_name in enumerate(files):
        image, inst = predict(model, augs, fmt, file_name)
        inst = inst[inst.scores >= args.min_score]
        drawing = draw_densepose(
            image, inst.pred_boxes.tensor.numpy(), inst.scores.numpy(), _results(inst), visualizations
        )
        base, ext = os.path.splitext(args.output)
        out = args.output if len(files) == 1 else f"{base}.{k:04d}{ext or '.png'}"
        with atomic_write(out, "wb") as f:
            Image.fromarray(drawing).save(f, format="PNG")
        print(f"apply_net: wrote {out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ("dump", "show"):
        raise SystemExit("usage: apply_net.py {dump,show} CONFIG WEIGHTS INPUT [VISUALIZATIONS] --output OUT [opts]")
    command = argv[0]
    parser = argparse.ArgumentParser(prog=f"apply_net.py {command}", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="lazy config file")
    parser.add_argument("weights", help="checkpoint ('' keeps the initialisation)")
    parser.add_argument("input", help="an image, a folder or a glob")
    if command == "show":
        parser.add_argument("visualizations", help="comma-separated: dp_segm, dp_u, dp_v, dp_contour, bbox")
    parser.add_argument("--output", required=True, help="the dump file, or the PNG drawing")
    parser.add_argument("--min-score", type=float, default=0.8, help="keep detections scoring at least this")
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    args = parser.parse_intermixed_args(argv[1:])
    args.command = command
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dump(args) if args.command == "dump" else show(args)


if __name__ == "__main__":
    main()
