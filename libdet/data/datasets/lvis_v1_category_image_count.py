"""``LVIS_CATEGORY_IMAGE_COUNT``: ``[{"id", "image_count"}]`` of the LVIS v1 *train* split, sorted by id (the
class frequencies of federated loss and repeat-factor sampling), read on first access from
``lvis/lvis_v1_train.json`` under ``$LIBDET_DATASETS``.
"""

from __future__ import annotations

from typing import Any

from ._lvis_tables import lvis_table


def __getattr__(name: str) -> Any:
    if name == "LVIS_CATEGORY_IMAGE_COUNT":
        return lvis_table(__name__, ("lvis_v1_train.json",), ("id", "image_count"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
