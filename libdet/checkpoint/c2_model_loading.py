"""Name matching for checkpoints whose parameter names do not follow the model's module tree.

detectron2 marks such files with ``"matching_heuristics": True`` (and treats bare ``{name: array}``
pickles the same way): each model parameter is matched to the checkpoint name that is its longest
dot-separated suffix, e.g. ``backbone.bottom_up.res2.0.conv1.weight`` ← ``res2.0.conv1.weight``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["align_and_update_state_dicts"]

logger = logging.getLogger(__name__)


def _is_suffix(model_key: str, ckpt_key: str) -> bool:
    return model_key == ckpt_key or model_key.endswith("." + ckpt_key)


def align_and_update_state_dicts(
    model_state_dict: Mapping[str, Any], ckpt_state_dict: Mapping[str, Any]
) -> dict[str, Any]:
    """Rename checkpoint entries to the model names they match by longest dot-separated suffix.

    Args:
        model_state_dict: the model's ``state_dict()`` (only the names are used).
        ckpt_state_dict: ``{name: tensor or array}`` from the checkpoint.

    Returns:
        A new dict keyed by model names for the matched entries. Checkpoint entries that match no model
        name, or that several model names would claim (ambiguous), keep their own names, so the loader
        reports them as unexpected; their model names are then reported as missing. Shape mismatches are
        left for the loader to report.
    """
    ckpt_keys = sorted(ckpt_state_dict, key=len, reverse=True)
    chosen: dict[str, str] = {}  # model key -> checkpoint key
    for model_key in model_state_dict:
        for ckpt_key in ckpt_keys:  # longest first: the first hit is the longest suffix
            if _is_suffix(model_key, ckpt_key):
                chosen[model_key] = ckpt_key
                break
    claimants: dict[str, list[str]] = {}
    for model_key, ckpt_key in chosen.items():
        claimants.setdefault(ckpt_key, []).append(model_key)
    result: dict[str, Any] = {}
    used: set[str] = set()
    for ckpt_key, model_keys in claimants.items():
        if len(model_keys) > 1 and ckpt_key in model_keys:
            model_keys = [ckpt_key]  # an exact name match wins over suffix matches
        if len(model_keys) > 1:
            logger.warning(
                "Checkpoint key '%s' matches several model keys %s by suffix; it is not loaded into any of them.",
                ckpt_key,
                sorted(model_keys),
            )
            continue
        result[model_keys[0]] = ckpt_state_dict[ckpt_key]
        used.add(ckpt_key)
        if model_keys[0] != ckpt_key:
            logger.debug("Matched checkpoint key '%s' to model key '%s'.", ckpt_key, model_keys[0])
    for ckpt_key, value in ckpt_state_dict.items():
        if ckpt_key not in used and ckpt_key not in result:
            result[ckpt_key] = value
    return result
