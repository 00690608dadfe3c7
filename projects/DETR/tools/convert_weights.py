#!/usr/bin/env python
"""Convert DETR weights between the official release, Hugging Face and libdet.

    # official release (facebookresearch/detr) -> libdet checkpoint, COCO's 92 class rows -> 80 + 1
    python projects/DETR/tools/convert_weights.py detr-r50-e632da11.pth detr_r50_libdet.pth
    # Hugging Face hub files (model.safetensors or pytorch_model.bin of facebook/detr-resnet-50) -> libdet
    python projects/DETR/tools/convert_weights.py model.safetensors detr_r50_libdet.pth
    # libdet -> official ({"model": ...}) or Hugging Face (hub names; --hf-backbone timm for the hub's R50/R101)
    python projects/DETR/tools/convert_weights.py model_final.pth detr_official.pth --to official
    python projects/DETR/tools/convert_weights.py model_final.pth model.safetensors --to hf --hf-backbone timm

    # a detection DETR as the starting point of panoptic training (keys under "detr.", mask head left out)
    python projects/DETR/tools/convert_weights.py detr_r50_libdet.pth detr_r50_segm_init.pth --wrap-segm
    # panoptic checkpoints (251 class rows) need the panoptic json for the category ids
    python projects/DETR/tools/convert_weights.py detr-r50-panoptic-00ce5173.pth out.pth \
        --panoptic-json datasets/coco/annotations/panoptic_val2017.json

The input layout is detected from its keys (detection or segmentation models). ``--no-coco-classes`` keeps the class rows as they are (for models
not trained on COCO). Outputs are written atomically: ``.safetensors`` with safetensors, others with torch.save
(``{"model": state_dict}``, which libdet's checkpointer and the official code both read).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detr.weight_conversion import (  # noqa: E402
    detect_layout,
    hf_to_libdet,
    libdet_to_hf,
    libdet_to_official,
    load_state_dict_file,
    official_to_libdet,
    panoptic_category_ids_from_json,
)

from libdet.utils.file_io import atomic_write  # noqa: E402


def convert(
    state_dict,
    *,
    to: str,
    coco_classes: bool,
    hf_backbone: str = "native",
    hf_layout: str = "v4",
    panoptic_category_ids: list[int] | None = None,
    wrap_segm: bool = False,
):
    """``state_dict`` of any layout -> layout ``to`` ("libdet", "official" or "hf"); with ``wrap_segm`` a detection
    model's keys go under "detr." (the detector inside a panoptic ``DETRSegm``)."""
    source = detect_layout(state_dict)
    kwargs = dict(coco_classes=coco_classes, panoptic_category_ids=panoptic_category_ids)
    libdet_sd = {
        "libdet": lambda sd: dict(sd),
        "official": lambda sd: official_to_libdet(sd, **kwargs),
        "hf": lambda sd: hf_to_libdet(sd, **kwargs),
    }[source](state_dict)
    if wrap_segm:
        if any(k.startswith("detr.") for k in libdet_sd):
            raise ValueError("--wrap-segm: the weights are already a segmentation model's ('detr.' keys).")
        libdet_sd = {"detr." + k: v for k, v in libdet_sd.items()}
    if to == "libdet":
        return libdet_sd
    if to == "official":
        return libdet_to_official(libdet_sd, **kwargs)
    return libdet_to_hf(libdet_sd, backbone=hf_backbone, layout=hf_layout, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="weight file (.pth/.pkl/.bin torch file or .safetensors)")
    parser.add_argument("output", help="file to write (.safetensors for safetensors, else torch.save)")
    parser.add_argument("--to", choices=["libdet", "official", "hf"], default="libdet", help="output layout")
    parser.add_argument("--no-coco-classes", action="store_true", help="do not map COCO's 92 class rows to 80 + 1")
    parser.add_argument(
        "--hf-backbone", choices=["native", "timm"], default="native", help="backbone names for --to hf"
    )
    parser.add_argument(
        "--hf-layout", choices=["v4", "v5"], default="v4", help="--to hf: hub/transformers-4 names or transformers-5"
    )
    parser.add_argument("--panoptic-json", default="", help="COCO panoptic json: category ids of 251-row checkpoints")
    parser.add_argument("--wrap-segm", action="store_true", help="put a detection model under 'detr.' (DETRSegm init)")
    args = parser.parse_args(argv)
    state_dict = load_state_dict_file(args.input)
    out = convert(
        state_dict,
        to=args.to,
        coco_classes=not args.no_coco_classes,
        hf_backbone=args.hf_backbone,
        hf_layout=args.hf_layout,
        panoptic_category_ids=panoptic_category_ids_from_json(args.panoptic_json) if args.panoptic_json else None,
        wrap_segm=args.wrap_segm,
    )
    out = {k: v.contiguous() for k, v in out.items()}
    if args.output.endswith(".safetensors"):
        from safetensors.torch import save

        with atomic_write(args.output, "wb") as f:
            f.write(save(out))
    else:
        with atomic_write(args.output, "wb") as f:
            torch.save({"model": out} if args.to != "hf" else out, f)
    print(
        f"{args.input} ({detect_layout(state_dict)}, {len(state_dict)} tensors) -> {args.output} ({args.to}, {len(out)} tensors)"
    )


if __name__ == "__main__":
    main()
