"""inference_on_dataset / inference_context / DatasetEvaluators with a fake model and evaluator."""

import logging

import pytest
import torch
from torch import nn

from libdet.evaluation import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset


class _FakeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.seen_training, self.seen_grad, self.seen_inference = [], [], []

    def forward(self, batch):
        self.seen_training.append(self.training)
        self.seen_grad.append(torch.is_grad_enabled())
        self.seen_inference.append(torch.is_inference_mode_enabled())
        return [{"value": d["x"] * 2} for d in batch]


class _CountingEvaluator(DatasetEvaluator):
    def __init__(self, task="count"):
        self.task = task
        self.resets = 0

    def reset(self):
        self.resets += 1
        self.inputs, self.outputs = [], []

    def process(self, inputs, outputs):
        self.inputs.extend(inputs)
        self.outputs.extend(outputs)

    def evaluate(self):
        return {self.task: {"n": len(self.inputs), "sum": float(sum(o["value"] for o in self.outputs))}}


def _loader(num_batches, batch_size=2):
    return [[{"x": float(b * batch_size + i)} for i in range(batch_size)] for b in range(num_batches)]


def test_counts_eval_mode_and_inference_mode(caplog):
    model = _FakeModel().train()
    evaluator = _CountingEvaluator()
    with caplog.at_level(logging.INFO, logger="libdet.evaluation.evaluator"):
        results = inference_on_dataset(model, _loader(9), evaluator)
    assert results == {"count": {"n": 18, "sum": float(2 * sum(range(18)))}}
    assert evaluator.resets == 1
    assert model.seen_training == [False] * 9 and model.training  # eval inside, restored after
    assert not any(model.seen_grad) and all(model.seen_inference)
    # timing lines: total and pure compute time per image, data and eval time; warm-up excluded
    assert "Total inference time" in caplog.text and "s / img per device" in caplog.text
    assert "Total inference pure compute time" in caplog.text
    assert "data time" in caplog.text and "eval time" in caplog.text
    assert "18 images, 9 batches, 5 warm-up batches not timed" in caplog.text


def test_eval_mode_restored_on_exception():
    class _Failing(_FakeModel):
        def forward(self, batch):
            raise RuntimeError("boom")

    model = _Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, _loader(2), _CountingEvaluator())
    assert model.training
    model.eval()
    with inference_context(model):
        assert not model.training
    assert not model.training


def test_empty_loader_warns(caplog):
    model = _FakeModel()
    with caplog.at_level(logging.WARNING):
        results = inference_on_dataset(model, [], _CountingEvaluator())
    assert results == {"count": {"n": 0, "sum": 0.0}}
    assert "data loader is empty" in caplog.text


def test_callbacks_and_multiple_evaluators():
    calls = []
    callbacks = {
        name: (lambda n=name: calls.append(n)) for name in ("on_start", "before_inference", "after_inference", "on_end")
    }
    results = inference_on_dataset(
        _FakeModel(), _loader(3), [_CountingEvaluator("a"), _CountingEvaluator("b")], callbacks=callbacks
    )
    assert set(results) == {"a", "b"}
    assert calls == ["on_start"] + ["before_inference", "after_inference"] * 3 + ["on_end"]
    with pytest.raises(ValueError, match="unknown callbacks"):
        inference_on_dataset(_FakeModel(), _loader(1), None, callbacks={"on_begin": lambda: None})


def test_no_evaluator_and_plain_callable():
    assert inference_on_dataset(lambda batch: [{} for _ in batch], _loader(2), None) == {}


def test_loader_without_len_and_single_batch(caplog):
    with caplog.at_level(logging.INFO, logger="libdet.evaluation.evaluator"):
        results = inference_on_dataset(_FakeModel(), iter(_loader(1)), _CountingEvaluator())
    assert results["count"]["n"] == 2
    with caplog.at_level(logging.INFO, logger="libdet.evaluation.evaluator"):
        inference_on_dataset(_FakeModel(), _loader(1), _CountingEvaluator())
    assert "0 warm-up batches not timed" in caplog.text


def test_duplicate_task_names_error():
    evaluators = DatasetEvaluators([_CountingEvaluator("a"), _CountingEvaluator("a")])
    evaluators.reset()
    with pytest.raises(ValueError, match="same task 'a'"):
        evaluators.evaluate()


def test_public_names():
    import libdet.evaluation as evaluation

    names = [
        "COCOEvaluator",
        "COCOPanopticEvaluator",
        "CityscapesInstanceEvaluator",
        "CityscapesSemSegEvaluator",
        "DatasetEvaluator",
        "DatasetEvaluators",
        "LVISEvaluator",
        "PascalVOCDetectionEvaluator",
        "RotatedCOCOEvaluator",
        "SemSegEvaluator",
        "cityscapes_evaluation",
        "coco_evaluation",
        "evaluator",
        "fast_eval_api",
        "inference_context",
        "inference_on_dataset",
        "lvis_evaluation",
        "panoptic_evaluation",
        "pascal_voc_evaluation",
        "print_csv_format",
        "rotated_coco_evaluation",
        "sem_seg_evaluation",
        "testing",
        "verify_results",
    ]
    assert [n for n in names if not hasattr(evaluation, n)] == []
