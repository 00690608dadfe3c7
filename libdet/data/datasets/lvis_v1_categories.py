"""``LVIS_CATEGORIES``: the 1203 LVIS v1 categories (``id``, ``name``, ``synset``, ``synonyms``, ``def``,
``frequency``), sorted by id, read on first access from ``lvis/lvis_v1_val.json`` (or ``lvis_v1_train.json``)
under ``$LIBDET_DATASETS``.
"""

from __future__ import annotations

from typing import Any

from ._lvis_tables import lvis_table


def __getattr__(name: str) -> Any:
    if name == "LVIS_CATEGORIES":
        return lvis_table(__name__, ("lvis_v1_val.json", "lvis_v1_train.json"), None)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
