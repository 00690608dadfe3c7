"""``ShapeSpec``: the shape contract between a backbone's outputs and the heads that consume them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ShapeSpec"]


@dataclass(frozen=True)
class ShapeSpec:
    """Basic shape specification of a feature map (or any tensor).

    Modules report their outputs with it (``Backbone.output_shape() -> dict[str, ShapeSpec]``) so that
    the modules after them can be sized from it. Unknown or irrelevant fields stay ``None``.

    Attributes:
        channels: number of channels (C).
        height: spatial height (H), usually left ``None`` because inputs vary in size.
        width: spatial width (W), usually left ``None``.
        stride: total stride of the feature map with respect to the input image.
    """

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None
