"""Drawing DensePose results on an image (numpy + PIL): fine-part segmentation, U, V, iso-contours of U/V, boxes."""

from __future__ import annotations

import numpy as np

from .converters import DensePoseChartResult

__all__ = ["VISUALIZATIONS", "draw_densepose"]

#: the names ``apply_net.py show`` accepts
VISUALIZATIONS = ("dp_segm", "dp_u", "dp_v", "dp_contour", "bbox")


def _part_palette() -> np.ndarray:
    rng = np.random.default_rng(7)
    palette = rng.integers(30, 256, size=(25, 3)).astype(np.uint8)
    palette[0] = 0
    return palette


def _ramp(x: np.ndarray) -> np.ndarray:
    """``(H, W)`` values in [0, 1] -> ``(H, W, 3)`` uint8 colours (blue -> green -> red)."""
    x = np.clip(x, 0, 1)
    r = np.clip(2 * x - 1, 0, 1)
    g = 1 - np.abs(2 * x - 1)
    b = np.clip(1 - 2 * x, 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def _contours(labels: np.ndarray, u: np.ndarray, v: np.ndarray, levels: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Pixels where U (resp. V) crosses one of ``levels`` iso-lines between two pixels of the same part (part
    borders are not iso-lines)."""
    same_x = (labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] > 0)
    same_y = (labels[1:, :] == labels[:-1, :]) & (labels[1:, :] > 0)
    out = []
    for z in (u, v):
        q = np.floor(np.clip(z, 0, 0.999) * levels)
        edge = np.zeros(labels.shape, bool)
        edge[:, 1:] |= (q[:, 1:] != q[:, :-1]) & same_x
        edge[1:, :] |= (q[1:, :] != q[:-1, :]) & same_y
        out.append(edge)
    return out[0], out[1]


def draw_densepose(
    image_rgb: np.ndarray,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    results: list[DensePoseChartResult],
    visualizations: list[str],
    alpha: float = 0.7,
) -> np.ndarray:
    """Draw ``visualizations`` (names of :data:`VISUALIZATIONS`, in order) of each detection on a copy of the
    ``(H, W, 3)`` uint8 RGB image; returns the drawing."""
    from PIL import Image, ImageDraw

    unknown = [v for v in visualizations if v not in VISUALIZATIONS]
    if unknown:
        raise ValueError(f"draw_densepose: unknown visualizations {unknown}; choose from {VISUALIZATIONS}.")
    canvas = image_rgb.astype(np.float32).copy()
    height, width = canvas.shape[:2]
    palette = _part_palette()
    for box, result in zip(boxes_xyxy, results):
        labels = result.labels.cpu().numpy()
        u, v = (t.cpu().numpy() for t in result.uv)
        x, y = int(box[0]), int(box[1])
        h, w = labels.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            continue
        sl = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        region = canvas[y0:y1, x0:x1]
        fg = labels[sl] > 0
        for name in visualizations:
            if name == "dp_segm":
                region[fg] = (1 - alpha) * region[fg] + alpha * palette[labels[sl]][fg]
            elif name in ("dp_u", "dp_v"):
                colors = _ramp(u[sl] if name == "dp_u" else v[sl])
                region[fg] = (1 - alpha) * region[fg] + alpha * colors[fg]
            elif name == "dp_contour":
                cu, cv = _contours(labels[sl], u[sl], v[sl])
                region[cu] = (255, 64, 64)
                region[cv] = (64, 64, 255)
    out = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if "bbox" in visualizations:
        draw = ImageDraw.Draw(out)
        for box, score in zip(boxes_xyxy, scores):
            draw.rectangle([float(c) for c in box], outline=(0, 255, 0), width=2)
            draw.text((float(box[0]) + 2, float(box[1]) + 2), f"{score:.2f}", fill=(0, 255, 0))
    return np.asarray(out)
