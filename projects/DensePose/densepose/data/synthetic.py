"""A small synthetic DensePose set: front-facing rectangle "people" whose parts, charts and UVs are known exactly.

Each person is 17 axis-aligned rectangles in a canonical frame 1 wide and 2 tall (head halves, torso front,
upper/lower arms, hands, upper/lower legs, feet; the person's right on the image's left), mirror-symmetric about
the vertical axis. Inside a part, U is the horizontal and V the vertical fraction of its rectangle, and each
pixel is coloured from its part and (U, V), so that all of I, U and V are learnable from the image. A horizontal
flip maps a point of part p at (U, V) onto the mirrored part at (1 - U, V): these are the set's UV symmetry
tables (``uv_symmetries.npz``, written beside the images), so flipped annotations are exact.

Images are 128 x 128 PNGs with one or two people side by side; annotations follow the COCO DensePose extension
(60 points per person, 14 coarse-part RLE masks over the box). Generated with numpy from a seed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from libdet.data import DatasetCatalog, MetadataCatalog
from libdet.utils.file_io import atomic_write

__all__ = [
    "SYNTHETIC_PARTS",
    "generate_synthetic_densepose",
    "prepare_synthetic_densepose",
    "synthetic_uv_symmetries_path",
    "register_synthetic_densepose",
]

SYNTHETIC_VERSION = 1
_SPLITS = {"densepose_synthetic_train": (0, 48), "densepose_synthetic_val": (1, 16)}  # name -> (seed, images)

#: (fine part 1..24, coarse part 1..14, x0, x1, y0, y1) in the canonical frame (x in [0, 1], y in [0, 2]).
SYNTHETIC_PARTS = (
    (23, 14, 0.35, 0.50, 0.00, 0.28),  # head, person's right half
    (24, 14, 0.50, 0.65, 0.00, 0.28),  # head, left half
    (2, 1, 0.30, 0.70, 0.30, 1.00),  # torso front
    (16, 11, 0.14, 0.29, 0.30, 0.64),  # upper arm right front
    (20, 13, 0.14, 0.29, 0.64, 0.94),  # lower arm right front
    (3, 2, 0.12, 0.29, 0.94, 1.06),  # right hand
    (15, 10, 0.71, 0.86, 0.30, 0.64),  # upper arm left front
    (19, 12, 0.71, 0.86, 0.64, 0.94),  # lower arm left front
    (4, 3, 0.71, 0.88, 0.94, 1.06),  # left hand
    (9, 6, 0.31, 0.49, 1.00, 1.45),  # upper leg right front
    (13, 8, 0.31, 0.49, 1.45, 1.88),  # lower leg right front
    (6, 5, 0.24, 0.49, 1.88, 2.00),  # right foot
    (10, 7, 0.51, 0.69, 1.00, 1.45),  # upper leg left front
    (14, 9, 0.51, 0.69, 1.45, 1.88),  # lower leg left front
    (5, 4, 0.51, 0.76, 1.88, 2.00),  # left foot
)
_X_EXTENT = (0.12, 0.88)  # the figure's horizontal extent in the canonical frame (its box)


def _part_colors() -> np.ndarray:
    rng = np.random.default_rng(12345)
    return rng.integers(40, 216, size=(25, 3)).astype(np.float32)


def _rasterize(h: int, w: int, x0: float, y0: float, scale_x: float, scale_y: float):
    """Per-pixel (fine part, coarse part, U, V) maps of a person whose canonical frame origin is at pixel
    ``(x0, y0)``, 1 unit = ``scale_x`` / ``scale_y`` pixels; pixel centres are sampled."""
    fine = np.zeros((h, w), np.int64)
    coarse = np.zeros((h, w), np.int64)
    u = np.zeros((h, w), np.float32)
    v = np.zeros((h, w), np.float32)
    cx = (np.arange(w) + 0.5 - x0) / scale_x
    cy = (np.arange(h) + 0.5 - y0) / scale_y
    for part, cpart, px0, px1, py0, py1 in SYNTHETIC_PARTS:
        inx = (cx >= px0) & (cx < px1)
        iny = (cy >= py0) & (cy < py1)
        m = iny[:, None] & inx[None, :]
        fine[m], coarse[m] = part, cpart
        u[m] = ((cx[None, :] - px0) / (px1 - px0) * np.ones((h, 1)))[m]
        v[m] = ((cy[:, None] - py0) / (py1 - py0) * np.ones((1, w)))[m]
    return fine, coarse, u, v


def _person(rng: np.random.Generator, image, x_lo: float, x_hi: float, ann_id: int, image_id: int) -> dict:
    h, w = image.shape[:2]
    height = rng.uniform(0.55, 0.9) * h
    scale_y = height / 2.0
    scale_x = scale_y * 2.0 * rng.uniform(0.35, 0.5)  # body width in pixels = scale_x
    body_w = (_X_EXTENT[1] - _X_EXTENT[0]) * scale_x
    left = rng.uniform(x_lo, max(x_lo, x_hi - body_w))
    x0 = left - _X_EXTENT[0] * scale_x
    y0 = rng.uniform(0, h - height)
    fine, coarse, u, v = _rasterize(h, w, x0, y0, scale_x, scale_y)
    colors = _part_colors()
    fg = fine > 0
    shade = np.stack([u, v, 0.5 * np.ones_like(u)], axis=-1) * 255.0
    image[fg] = (0.55 * colors[fine[fg]] + 0.45 * shade[fg]).astype(np.uint8)

    bx, by = left, y0
    bw, bh = body_w, height
    # points: pixel centres on the body, coordinates relative to the box in [0, 256]
    ys, xs = np.nonzero(fg)
    pick = rng.choice(len(ys), size=min(60, len(ys)), replace=False)
    ys, xs = ys[pick], xs[pick]
    dp_x = (xs + 0.5 - bx) / bw * 256.0
    dp_y = (ys + 0.5 - by) / bh * 256.0
    # coarse part masks: the person re-rasterized on a 256 x 256 grid over the box
    _, coarse_box, _, _ = _rasterize(
        256, 256, (x0 - bx) * 256.0 / bw, (y0 - by) * 256.0 / bh, scale_x * 256.0 / bw, scale_y * 256.0 / bh
    )
    import pycocotools.mask as mask_utils

    dp_masks = []
    for c in range(1, 15):
        m = coarse_box == c
        if m.any():
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            dp_masks.append({"size": [256, 256], "counts": rle["counts"].decode("ascii")})
        else:
            dp_masks.append([])
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": [float(bx), float(by), float(bw), float(bh)],
        "area": float(fg.sum()),
        "dp_x": dp_x.tolist(),
        "dp_y": dp_y.tolist(),
        "dp_I": fine[ys, xs].astype(float).tolist(),
        "dp_U": u[ys, xs].tolist(),
        "dp_V": v[ys, xs].tolist(),
        "dp_masks": dp_masks,
    }


def write_synthetic_uv_symmetries(path: str) -> None:
    """The set's UV symmetry tables (mirrored U = 1 - U, V unchanged, for every part) as an .npz."""
    grid = np.arange(256, dtype=np.float32) / 255.0
    u_table = np.broadcast_to(1.0 - grid[None, None, :], (24, 256, 256)).astype(np.float32)
    v_table = np.broadcast_to(grid[None, :, None], (24, 256, 256)).astype(np.float32)
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, U_transforms=u_table, V_transforms=v_table)


def generate_synthetic_densepose(root: str, *, num_images: int, seed: int, size: int = 128) -> dict[str, str]:
    """Write ``num_images`` images under ``root/images``, ``root/annotations.json`` and ``root/uv_symmetries.npz``;
    returns their paths (``image_root``, ``json_file``, ``uv_symmetries``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8) + rng.integers(0, 120, size=3).astype(
            np.uint8
        )
        n = int(rng.integers(1, 3))
        bounds = [(0, size)] if n == 1 else [(0, size / 2), (size / 2, size)]
        for lo, hi in bounds:
            annotations.append(_person(rng, image, lo, hi, len(annotations) + 1, image_id))
        file_name = f"{image_id:05d}.png"
        Image.fromarray(image).save(os.path.join(root, "images", file_name))
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    json_file = os.path.join(root, "annotations.json")
    with atomic_write(json_file, "w") as f:
        json.dump(data, f)
    uv = os.path.join(root, "uv_symmetries.npz")
    write_synthetic_uv_symmetries(uv)
    return {"image_root": os.path.join(root, "images"), "json_file": json_file, "uv_symmetries": uv}


def _cache_root() -> str:
    base = os.getenv("LIBDET_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "libdet"))
    return os.path.join(base, f"densepose_synthetic_v{SYNTHETIC_VERSION}")


def prepare_synthetic_densepose(name: str, root: str | None = None) -> dict[str, str]:
    """Generate split ``name`` (a key of the built-in splits) once into the cache folder (safe under concurrent
    callers: each writes a private folder and renames it into place); returns its paths."""
    if name not in _SPLITS:
        raise KeyError(f"Unknown synthetic DensePose split {name!r}; known: {sorted(_SPLITS)}.")
    seed, num_images = _SPLITS[name]
    root = _cache_root() if root is None else root
    final = os.path.join(root, name)
    paths = {
        "image_root": os.path.join(final, "images"),
        "json_file": os.path.join(final, "annotations.json"),
        "uv_symmetries": os.path.join(final, "uv_symmetries.npz"),
    }
    if not os.path.exists(os.path.join(final, "DONE")):
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=root)
        generate_synthetic_densepose(tmp, num_images=num_images, seed=seed)
        open(os.path.join(tmp, "DONE"), "w").close()
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first (or a stale incomplete folder is in the way)
            if not os.path.exists(os.path.join(final, "DONE")):
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return paths


def synthetic_uv_symmetries_path(name: str = "densepose_synthetic_train") -> str:
    """The UV symmetry tables of the synthetic set (generating it if needed), for the mapper's
    ``uv_symmetries_path``."""
    return prepare_synthetic_densepose(name)["uv_symmetries"]


def _load(name: str) -> list[dict]:
    from .datasets import load_densepose_coco_json

    paths = prepare_synthetic_densepose(name)
    return load_densepose_coco_json(paths["json_file"], paths["image_root"], name)


def register_synthetic_densepose() -> None:
    """Register ``densepose_synthetic_train`` (48 images) and ``densepose_synthetic_val`` (16 images)."""
    import functools

    for name in _SPLITS:
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(name, functools.partial(_load, name))
        final = os.path.join(_cache_root(), name)  # where prepare_synthetic_densepose writes it (on first load)
        MetadataCatalog.get(name).set(
            thing_classes=["person"],
            evaluator_type="densepose",
            json_file=os.path.join(final, "annotations.json"),
            image_root=os.path.join(final, "images"),
        )
