"""The built-in synthetic "shapes" dataset: COCO-format detection, segmentation and keypoints, made on first use.

Each image (192–256 px, a few sizes and aspect ratios) has 1–6 shapes of 3 classes (``circle``,
``square``, ``triangle``) in colours drawn independently of the class, with random sizes (about 12 to
140 px across, many under 32² px), rotations and partial overlaps, on a textured background (noise,
stripes or gradients). Everything is generated with numpy (+ PIL, pycocotools) from a seed; the same seed gives the
same files byte for byte (on the same Pillow/libjpeg).

Annotation conventions:

* **Occlusion.** A shape's ``segmentation`` is the polygon of the *full* shape; shapes later in the image's
  list are drawn on top of earlier ones. Every shape is painted on exactly the pixels that
  ``libdet.structures.polygons_to_bitmask`` (pycocotools) gives for its polygon, minus those of later
  shapes. A placement that would leave an earlier shape less than half visible is rejected, so no shape
  is nearly hidden. ``bbox`` and ``area`` are those of the polygon.
* **Semantic map** (``sem_seg/<id>.png``): 0 background, ``1 + class`` for the top-most shape at a pixel.
* **Keypoints** (5 per shape): ``center`` (vertex mean), and the ``left``/``right``/``top``/``bottom``
  extreme points of the polygon (the mean of the tied vertices when an edge is extreme). Stored as integer
  pixel indices, COCO style (``load_coco_json`` adds 0.5); visibility 2 where the shape is visible at that
  pixel, 1 where a later shape covers it. Flip map: ``left`` <-> ``right``.

:func:`prepare_shapes_dataset` generates a split once into a cache folder (see :func:`shapes_cache_dir`)
and is safe when several processes call it at the same time: each writes a private temporary folder and
renames it into place; a folder without the completion marker is regenerated.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from libdet.utils.file_io import atomic_write

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_COLORS",
    "SHAPES_KEYPOINT_NAMES",
    "SHAPES_KEYPOINT_FLIP_MAP",
    "SHAPES_KEYPOINT_CONNECTION_RULES",
    "SHAPES_SPLITS",
    "generate_shapes_dataset",
    "prepare_shapes_dataset",
    "shapes_cache_dir",
    "shapes_split_paths",
]

logger = logging.getLogger(__name__)

#: Bump when the generator's output changes: cached sets of another version are not reused.
SHAPES_VERSION = 1
SHAPES_CLASSES = ("circle", "square", "triangle")
#: Colours used to draw the classes in visualizations (not the colours in the images).
SHAPES_COLORS = ((220, 20, 60), (0, 130, 200), (60, 180, 75))
SHAPES_KEYPOINT_NAMES = ("center", "left", "right", "top", "bottom")
SHAPES_KEYPOINT_FLIP_MAP = (("left", "right"),)
SHAPES_KEYPOINT_CONNECTION_RULES = (
    ("left", "center", (255, 128, 0)),
    ("right", "center", (0, 128, 255)),
    ("top", "center", (255, 255, 0)),
    ("bottom", "center", (255, 0, 255)),
)
#: Default image sizes, (height, width).
DEFAULT_IMAGE_SIZES = ((192, 256), (256, 192), (224, 224), (256, 256), (208, 240))
#: The registered splits: number of images and seed.
SHAPES_SPLITS = {"train": {"num_images": 1000, "seed": 0}, "val": {"num_images": 200, "seed": 1}}

# Object colours: saturated, drawn independently of the class.
_PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (250, 250, 250),
        (20, 20, 20),
    ],
    dtype=np.float32,
)
_MARKER = ".complete"
_MIN_VISIBLE_FRACTION = 0.5
_MIN_PIXELS = 30


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float32 (h, w, 3) textured background: a gradient, stripes or smooth noise."""
    from PIL import Image

    c1, c2 = rng.uniform(40, 210, size=(2, 3)).astype(np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    kind = rng.integers(3)
    if kind == 0:  # linear gradient in a random direction
        a = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(a) + yy * np.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    elif kind == 1:  # soft stripes
        a = rng.uniform(0, np.pi)
        period = rng.uniform(8, 32)
        t = 0.5 + 0.5 * np.sin((xx * np.cos(a) + yy * np.sin(a)) * (2 * np.pi / period))
    else:  # smooth noise: a coarse random grid upsampled bilinearly
        g = rng.uniform(0, 255, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)))).astype(np.uint8)
        t = np.asarray(Image.fromarray(g).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    t = np.broadcast_to(t, (h, w))[..., None]
    return c1 + (c2 - c1) * t


def _shape_vertices(rng: np.random.Generator, cls: int, size: float) -> np.ndarray:
    """Vertices (N, 2) of a shape of class ``cls`` and extent about ``size``, centred on the origin."""
    angle = rng.uniform(0, 2 * np.pi)
    r = size / 2
    if cls == 0:  # circle as a 32-gon
        t = angle + np.arange(32) * (2 * np.pi / 32)
        radii = np.full(32, r)
    elif cls == 1:  # square, rotated
        t = angle + np.arange(4) * (np.pi / 2) + np.pi / 4
        radii = np.full(4, r)
    else:  # triangle, roughly equilateral
        t = angle + np.arange(3) * (2 * np.pi / 3) + rng.uniform(-0.3, 0.3, size=3)
        radii = r * rng.uniform(0.85, 1.15, size=3)
    return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)


def _rasterize(verts: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bool (h, w) mask of a polygon, rasterized exactly as ``libdet.structures.polygons_to_bitmask`` does."""
    from pycocotools import mask as mask_util

    rle = mask_util.frPyObjects([verts.reshape(-1).astype(np.float64).tolist()], h, w)
    return mask_util.decode(mask_util.merge(rle)).astype(bool)


def _place_shapes(rng: np.random.Generator, h: int, w: int, max_objects: int) -> tuple[list, np.ndarray]:
    """Sample shapes (class, vertices, mask) with bounded occlusion; returns them and the owner map."""
    owner = np.full((h, w), -1, dtype=np.int32)
    shapes: list[tuple[int, np.ndarray, np.ndarray]] = []
    target = int(rng.integers(1, max_objects + 1))
    log_lo, log_hi = np.log(12.0), np.log(0.55 * min(h, w))
    for _ in range(target * 8):
        if len(shapes) == target:
            break
        cls = int(rng.integers(len(SHAPES_CLASSES)))
        verts = _shape_vertices(rng, cls, float(np.exp(rng.uniform(log_lo, log_hi))))
        lo, hi = verts.min(0), verts.max(0)
        cmin, cmax = 1 - lo, np.array([w - 1, h - 1]) - hi
        if np.any(cmax < cmin):
            continue
        if shapes and rng.uniform() < 0.4:  # near an existing shape, to create overlaps
            other = shapes[int(rng.integers(len(shapes)))][1]
            centre = other.mean(0) + rng.normal(0, 0.6, size=2) * (hi - lo)
        else:
            centre = rng.uniform(0, 1, size=2) * (cmax - cmin) + cmin
        verts = np.round(verts + np.clip(centre, cmin, cmax), 2)
        mask = _rasterize(verts, h, w)
        if mask.sum() < _MIN_PIXELS:
            continue
        new_owner = owner.copy()
        new_owner[mask] = len(shapes)
        if any((new_owner == j).sum() < _MIN_VISIBLE_FRACTION * m.sum() for j, (_, _, m) in enumerate(shapes)):
            continue
        owner = new_owner
        shapes.append((cls, verts, mask))
    return shapes, owner


def _keypoints(verts: np.ndarray, owner: np.ndarray, k: int) -> list[int]:
    """COCO keypoints [x, y, v] * 5 (integer pixels) of shape ``k``; see the module docstring."""
    h, w = owner.shape
    x, y = verts[:, 0], verts[:, 1]
    pts = [verts.mean(0)]
    for coord, pick in ((x, np.min), (x, np.max), (y, np.min), (y, np.max)):
        ext = pick(coord)
        pts.append(verts[np.abs(coord - ext) < 0.5].mean(0))
    out: list[int] = []
    for px, py in pts:
        ix, iy = int(np.clip(np.floor(px), 0, w - 1)), int(np.clip(np.floor(py), 0, h - 1))
        window = owner[max(iy - 1, 0) : iy + 2, max(ix - 1, 0) : ix + 2]
        out += [ix, iy, 2 if np.any(window == k) else 1]
    return out


def _polygon_area(verts: np.ndarray) -> float:
    x, y = verts[:, 0], verts[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _render_image(
    rng: np.random.Generator, h: int, w: int, max_objects: int
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One image: uint8 RGB (h, w, 3), uint8 semantic map (h, w), and its annotations (without ids)."""
    img = _background(rng, h, w)
    shapes, owner = _place_shapes(rng, h, w, max_objects)
    sem = np.zeros((h, w), dtype=np.uint8)
    annos = []
    for k, (cls, verts, _) in enumerate(shapes):
        colour = _PALETTE[int(rng.integers(len(_PALETTE)))] * rng.uniform(0.8, 1.0)
        visible = owner == k
        img[visible] = colour
        sem[visible] = cls + 1
        x0, y0 = verts.min(0)
        x1, y1 = verts.max(0)
        annos.append(
            {
                "category_id": cls + 1,
                "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                "area": round(_polygon_area(verts), 2),
                "iscrowd": 0,
                "segmentation": [[float(v) for v in verts.reshape(-1)]],
                "keypoints": _keypoints(verts, owner, k),
                "num_keypoints": len(SHAPES_KEYPOINT_NAMES),
            }
        )
    # Mild sensor noise over everything, so shapes are not flat colour.
    arr = img + 6.0 * rng.standard_normal(size=(h, w, 3), dtype=np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8), sem, annos


def _categories() -> list[dict]:
    skeleton = [
        [SHAPES_KEYPOINT_NAMES.index(a) + 1, SHAPES_KEYPOINT_NAMES.index(b) + 1]
        for a, b, _ in SHAPES_KEYPOINT_CONNECTION_RULES
    ]
    return [
        {
            "id": i + 1,
            "name": name,
            "supercategory": "shape",
            "keypoints": list(SHAPES_KEYPOINT_NAMES),
            "skeleton": skeleton,
        }
        for i, name in enumerate(SHAPES_CLASSES)
    ]


def shapes_split_paths(root: str, split: str, image_format: str = "jpg") -> dict[str, str]:
    """Where :func:`generate_shapes_dataset` writes ``split`` under ``root``.

    Returns:
        ``{"root": <root>/<split>, "json_file": .../annotations.json, "image_root": .../images,
        "sem_seg_root": .../sem_seg}``; image ``i`` is ``image_root/{i:06d}.<image_format>`` and its
        semantic map ``sem_seg_root/{i:06d}.png``.
    """
    base = os.path.join(root, split)
    return {
        "root": base,
        "json_file": os.path.join(base, "annotations.json"),
        "image_root": os.path.join(base, "images"),
        "sem_seg_root": os.path.join(base, "sem_seg"),
    }


def generate_shapes_dataset(
    root: str,
    split: str,
    *,
    num_images: int,
    seed: int,
    image_sizes: Sequence[tuple[int, int]] = DEFAULT_IMAGE_SIZES,
    max_objects: int = 6,
    image_format: str = "jpg",
) -> dict[str, str]:
    """Generate ``num_images`` images of the shapes dataset into ``root/<split>`` (see :func:`shapes_split_paths`).

    Image ``i`` depends only on ``(seed, i)``. The COCO json (images, annotations with ``bbox`` XYWH,
    ``area``, ``iscrowd=0``, polygon ``segmentation``, ``keypoints``; categories with keypoint names and
    skeleton) is written last and atomically, then a completion marker.

    Args:
        root: output directory (created).
        split: sub-folder name, e.g. ``"train"``.
        num_images: number of images (>= 1).
        seed: base seed.
        image_sizes: (height, width) choices, sampled uniformly per image.
        max_objects: each image has 1..max_objects shapes (fewer if they do not fit).
        image_format: ``"jpg"`` (quality 90) or ``"png"``.

    Returns:
        The paths of :func:`shapes_split_paths`.
    """
    from PIL import Image

    if num_images < 1:
        raise ValueError(f"generate_shapes_dataset: num_images must be >= 1, got {num_images}.")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"generate_shapes_dataset: image_format must be 'jpg' or 'png', got {image_format!r}.")
    if max_objects < 1:
        raise ValueError(f"generate_shapes_dataset: max_objects must be >= 1, got {max_objects}.")
    paths = shapes_split_paths(root, split, image_format)
    os.makedirs(paths["image_root"], exist_ok=True)
    os.makedirs(paths["sem_seg_root"], exist_ok=True)
    start = time.perf_counter()
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        h, w = image_sizes[int(rng.integers(len(image_sizes)))]
        img, sem, annos = _render_image(rng, int(h), int(w), max_objects)
        file_name = f"{i:06d}.{image_format}"
        save_kw = {"quality": 90} if image_format == "jpg" else {}
        Image.fromarray(img).save(os.path.join(paths["image_root"], file_name), **save_kw)
        Image.fromarray(sem).save(os.path.join(paths["sem_seg_root"], f"{i:06d}.png"))
        images.append({"id": i + 1, "file_name": file_name, "height": int(h), "width": int(w)})
        for a in annos:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **a})
    info = {
        "description": f"libdet synthetic shapes dataset, split {split!r}",
        "version": SHAPES_VERSION,
        "seed": seed,
        "num_images": num_images,
    }
    coco = {"info": info, "images": images, "annotations": annotations, "categories": _categories()}
    with atomic_write(paths["json_file"], "w") as f:
        json.dump(coco, f)
    with atomic_write(os.path.join(paths["root"], _MARKER), "w") as f:
        json.dump(info, f)
    logger.info(
        f"Generated {num_images} shapes images ({len(annotations)} objects) in {paths['root']} "
        f"in {time.perf_counter() - start:.1f}s."
    )
    return paths


def shapes_cache_dir() -> str:
    """The folder holding generated shapes splits.

    ``$LIBDET_DATASETS/shapes-v<N>`` when ``LIBDET_DATASETS`` is set, else
    ``$LIBDET_CACHE_DIR/datasets/shapes-v<N>`` when ``LIBDET_CACHE_DIR`` is set, else
    ``~/.cache/libdet/datasets/shapes-v<N>``.
    """
    name = f"shapes-v{SHAPES_VERSION}"
    if os.environ.get("LIBDET_DATASETS"):
        return os.path.join(os.environ["LIBDET_DATASETS"], name)
    if os.environ.get("LIBDET_CACHE_DIR"):
        return os.path.join(os.environ["LIBDET_CACHE_DIR"], "datasets", name)
    return os.path.join(os.path.expanduser("~"), ".cache", "libdet", "datasets", name)


def _is_complete(split_root: str, num_images: int, seed: int) -> bool:
    try:
        with open(os.path.join(split_root, _MARKER)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return info.get("version") == SHAPES_VERSION and info.get("num_images") == num_images and info.get("seed") == seed


def prepare_shapes_dataset(split: str, root: str | None = None) -> dict[str, str]:
    """Make sure split ``split`` (a key of :data:`SHAPES_SPLITS`) exists in the cache; return its paths.

    Generates the split on first use (a few seconds). Concurrent callers each generate into a private
    temporary folder and rename it into place; the loser of the race discards its copy. A folder without
    a valid completion marker (e.g. an interrupted run) is deleted and regenerated.

    Args:
        split: ``"train"`` or ``"val"``.
        root: cache folder; default :func:`shapes_cache_dir`.
    """
    if split not in SHAPES_SPLITS:
        raise KeyError(f"Unknown shapes split {split!r}; available: {sorted(SHAPES_SPLITS)}.")
    params = SHAPES_SPLITS[split]
    root = root or shapes_cache_dir()
    paths = shapes_split_paths(root, split)
    if _is_complete(paths["root"], **params):
        return paths
    os.makedirs(root, exist_ok=True)
    if os.path.exists(paths["root"]):
        logger.warning(f"Shapes split at {paths['root']} is incomplete or outdated; regenerating it.")
        shutil.rmtree(paths["root"], ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=root)
    try:
        generate_shapes_dataset(tmp, split, **params)
        try:
            os.rename(os.path.join(tmp, split), paths["root"])
        except OSError:
            if not _is_complete(paths["root"], **params):  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
