import torch

from libdet.export import fold_frozen_batchnorm
from libdet.layers import Conv2d, FrozenBatchNorm2d
from tests.export import _models


def _frozen_norm_convs(model):
    return [m for m in model.modules() if isinstance(m, Conv2d) and isinstance(m.norm, FrozenBatchNorm2d)]


def test_fold_frozen_batchnorm_keeps_outputs_and_leaves_the_model_alone():
    model = _models.build("mask_rcnn_fpn")
    frozen = _frozen_norm_convs(model)
    assert frozen, "the tiny Mask R-CNN should have a FrozenBN backbone"
    for conv in frozen:  # non-trivial statistics, so that a missed fold would show
        conv.norm.running_mean.normal_(0, 0.1)
        conv.norm.running_var.uniform_(0.5, 2.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    folded = fold_frozen_batchnorm(model)
    assert folded is not model
    assert not _frozen_norm_convs(folded)
    assert not any(".norm." in k for k in folded.state_dict() if k.startswith("backbone.bottom_up"))
    # The original keeps its layers and values.
    assert len(_frozen_norm_convs(model)) == len(frozen)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    _, batches = _models.images("mask_rcnn_fpn")
    inputs = [{"image": batches[0][0]}]
    with torch.no_grad():
        expected, actual = model(inputs)[0]["instances"], folded(inputs)[0]["instances"]
    assert len(expected) > 0
    # Eager mode folds the same weights on each call: the same detections, bit for bit.
    assert torch.equal(expected.pred_boxes.tensor, actual.pred_boxes.tensor)
    assert torch.equal(expected.scores, actual.scores)
    assert torch.equal(expected.pred_masks, actual.pred_masks)


def test_fold_frozen_batchnorm_without_frozen_norms_returns_the_model():
    model = torch.nn.Sequential(Conv2d(3, 4, 1, norm=torch.nn.GroupNorm(2, 4)))
    assert fold_frozen_batchnorm(model) is model


def test_exported_graph_holds_no_frozen_norm(tmp_path):
    """export_model exports the folded copy: no per-channel multiply-add (FrozenBatchNorm2d's addcmul) is
    left after the convolutions."""
    from libdet.export import export_model

    model = _models.build("mask_rcnn_fpn")
    sample, _ = _models.images("mask_rcnn_fpn")
    exported = export_model(model, sample, "torch_export", tmp_path, dynamic=False)
    program = torch.export.load(str(exported.path))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "aten.conv2d.default" in targets
    assert not any("addcmul" in target for target in targets)
    assert _frozen_norm_convs(model)  # the model itself is unchanged
