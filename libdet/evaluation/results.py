"""Helpers to print, flatten and check evaluation results (``{task: {metric: value}}``)."""

from __future__ import annotations

import logging
import pprint
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["print_csv_format", "verify_results", "flatten_results_dict"]

logger = logging.getLogger(__name__)


def print_csv_format(results: Mapping[str, Any]) -> None:
    """Log ``results`` so that each task's metrics can be pasted into a spreadsheet.

    Per-category metrics (names containing ``"-"``, e.g. ``"AP-person"``) are left out.

    Args:
        results: ``{task: {metric: value}}`` as returned by an evaluator; non-dict task values
            are logged as they are.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"print_csv_format: results must be a mapping {{task: {{metric: value}}}}, got {results!r}.")
    for task, res in results.items():
        if isinstance(res, Mapping):
            important = [(k, v) for k, v in res.items() if "-" not in k]
            logger.info(f"copypaste: Task: {task}")
            logger.info("copypaste: " + ",".join(k for k, _ in important))
            logger.info("copypaste: " + ",".join(f"{v:.4f}" for _, v in important))
        else:
            logger.info(f"copypaste: {task}={res}")


def verify_results(expected_results: Sequence[Sequence[Any]], results: Mapping[str, Any]) -> bool:
    """Check that ``results`` matches a list of expectations; logs the mismatches.

    Args:
        expected_results: entries ``[task, metric, expected_value, tolerance]``; the check is
            ``abs(actual - expected) <= tolerance`` (a NaN actual value is always a mismatch).
        results: ``{task: {metric: value}}`` as returned by an evaluator.

    Returns:
        Whether every expectation holds (``True`` for an empty list).
    """
    ok = True
    for entry in expected_results:
        if len(entry) != 4:
            raise ValueError(f"verify_results: each expectation is [task, metric, value, tolerance], got {entry!r}.")
        task, metric, expected, tolerance = entry
        if task not in results or metric not in results[task]:
            logger.error(f"verify_results: metric {task}/{metric} is missing from the results.")
            ok = False
            continue
        actual = results[task][metric]
        if not np.isfinite(actual) or abs(actual - expected) > tolerance:
            logger.error(
                f"Result verification failed for {task}/{metric}: expected {expected} +- {tolerance}, got {actual}"
            )
            ok = False
    if ok:
        logger.info("Results verification passed.")
    else:
        logger.error("Results verification failed. Results:\n" + pprint.pformat(results))
    return ok


def flatten_results_dict(results: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested dicts into one level with ``"/"``-joined keys.

    For example ``{"bbox": {"AP": 40.0}}`` becomes ``{"bbox/AP": 40.0}``.

    Args:
        results: a (possibly nested) mapping with string keys.
    """
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_results_dict(value).items():
                flat[f"{key}/{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat
