"""detectron2's flatten / TracingAdapter / dump_torchscript_IR API."""

from __future__ import annotations

import torch

from libdet.export import TracingAdapter, dump_torchscript_IR, flatten_to_tuple
from libdet.structures import Boxes, Instances
from tests.export import _models


def test_flatten_round_trip():
    inst = Instances((20, 30))
    inst.pred_boxes = Boxes(torch.rand(3, 4))
    inst.scores = torch.rand(3)
    obj = [{"instances": inst, "extra": (torch.ones(2), [torch.zeros(1)])}]
    values, schema = flatten_to_tuple(obj)
    assert all(isinstance(v, torch.Tensor) for v in values)
    rebuilt = schema(values)
    out = rebuilt[0]["instances"]
    assert isinstance(out, Instances) and out.image_size == (20, 30)
    assert isinstance(out.pred_boxes, Boxes) and torch.equal(out.pred_boxes.tensor, inst.pred_boxes.tensor)
    assert torch.equal(out.scores, inst.scores)
    assert torch.equal(rebuilt[0]["extra"][1][0], torch.zeros(1))


def test_tracing_adapter_traces_a_model_with_dict_inputs(tmp_path):
    model = _models.build("semantic_fpn")
    image = torch.rand(3, 64, 96) * 255
    adapter = TracingAdapter(model, [{"image": image}])
    traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    outputs = adapter.outputs_schema(traced(*adapter.flattened_inputs))
    with torch.no_grad():
        ref = model([{"image": image}])
    # The trace runs NCHW (eager runs channels-last on CPU): equal up to rounding, as the parity tests ask.
    torch.testing.assert_close(outputs[0]["sem_seg"], ref[0]["sem_seg"], atol=1e-4, rtol=1e-4)

    dump_torchscript_IR(traced, tmp_path)
    for name in ("model_ts_code.txt", "model_ts_IR.txt", "model_ts_IR_inlined.txt", "model.txt"):
        assert (tmp_path / name).stat().st_size > 0
