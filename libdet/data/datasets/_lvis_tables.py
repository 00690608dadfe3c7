"""Read LVIS category tables from the annotation json under the datasets root (cached per file).

detectron2 ships these tables as Python literals; libdet reads them from the dataset's own json, so they
always match the annotations in use. Used by ``lvis_v1_categories``, ``lvis_v1_category_image_count`` and
``lvis_v0_5_categories``.
"""

from __future__ import annotations

import functools
import json
import os

__all__ = ["lvis_table"]


@functools.cache
def _categories(json_file: str) -> tuple[dict, ...]:
    with open(json_file) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise ValueError(f"LVIS json {json_file!r} has no 'categories' list.")
    return tuple(sorted(data["categories"], key=lambda c: c["id"]))


def lvis_table(module: str, json_names: tuple[str, ...], fields: tuple[str, ...] | None) -> list[dict]:
    """The categories of the first existing ``lvis/<json name>`` under ``$LIBDET_DATASETS``, sorted by id.

    Args:
        module: the public module asking, for the error message.
        json_names: candidate files, in order of preference (e.g. the smaller val json first).
        fields: keep only these keys of each category; ``None`` drops the per-split counts
            (``image_count``, ``instance_count``) and keeps the rest.

    Raises:
        FileNotFoundError: none of the files exists (names them and ``LIBDET_DATASETS``).
    """
    from .builtin import datasets_root

    root = datasets_root()
    paths = [os.path.join(root, "lvis", name) for name in json_names]
    for path in paths:
        if os.path.isfile(path):
            cats = _categories(os.path.abspath(path))
            if fields is None:
                return [{k: v for k, v in c.items() if k not in ("image_count", "instance_count")} for c in cats]
            return [{k: c[k] for k in fields} for c in cats]
    raise FileNotFoundError(
        f"{module} reads the LVIS categories from {' or '.join(map(repr, paths))}, which do not exist. Set "
        f"$LIBDET_DATASETS (now {os.getenv('LIBDET_DATASETS', 'unset: ./datasets')!r}) to the folder holding lvis/."
    )
