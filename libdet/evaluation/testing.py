"""detectron2's module name for :mod:`libdet.evaluation.results` (printing, checking and flattening evaluation
results); kept so that code written for ``detectron2.evaluation.testing`` imports unchanged."""

from .results import flatten_results_dict, print_csv_format, verify_results

__all__ = ["print_csv_format", "verify_results", "flatten_results_dict"]
