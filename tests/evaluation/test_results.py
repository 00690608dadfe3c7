"""print_csv_format / verify_results / flatten_results_dict."""

import logging

import pytest

from libdet.evaluation import print_csv_format, verify_results
from libdet.evaluation.results import flatten_results_dict

RESULTS = {"bbox": {"AP": 40.0, "AP50": 60.5, "AP-cat": 12.0}, "sem_seg": {"mIoU": 70.25}}


def test_print_csv_format(caplog):
    with caplog.at_level(logging.INFO, logger="libdet.evaluation.results"):
        print_csv_format(RESULTS)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "copypaste: Task: bbox",
        "copypaste: AP,AP50",
        "copypaste: 40.0000,60.5000",
        "copypaste: Task: sem_seg",
        "copypaste: mIoU",
        "copypaste: 70.2500",
    ]
    with pytest.raises(TypeError):
        print_csv_format([1, 2])


def test_verify_results():
    assert verify_results([["bbox", "AP", 40.05, 0.1], ["sem_seg", "mIoU", 70.0, 0.3]], RESULTS)
    assert not verify_results([["bbox", "AP", 41.0, 0.1]], RESULTS)
    assert not verify_results([["bbox", "APs", 1.0, 0.1]], RESULTS)  # missing metric
    assert not verify_results([["bbox", "AP", 1.0, 0.1]], {"bbox": {"AP": float("nan")}})
    assert verify_results([], RESULTS)
    with pytest.raises(ValueError):
        verify_results([["bbox", "AP", 40.0]], RESULTS)


def test_flatten_results_dict():
    assert flatten_results_dict({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a/b": 1, "a/c/d": 2, "e": 3}


def test_detectron2_module_name_reexports():
    from libdet.evaluation import results, testing

    assert testing.print_csv_format is results.print_csv_format
    assert testing.verify_results is results.verify_results
    assert testing.flatten_results_dict is results.flatten_results_dict
