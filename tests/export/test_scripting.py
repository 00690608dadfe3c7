"""TorchScript scripting (detectron2's ``scripting_with_instances`` and ``torchscript_patch``): modules that
create and read ``Instances`` with ``Boxes`` fields, libdet's backbones, anchor generator and box transform,
scripted and compared to eager; and the families whose full model does not script yet, with the error."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from libdet.export import scripting_with_instances
from libdet.export.torchscript_patch import freeze_training_mode, patch_instances
from libdet.modeling.box_regression import Box2BoxTransform
from libdet.structures import Boxes, Instances
from libdet.utils.testing import assert_instances_allclose, convert_scripted_instances, reload_script_model
from tests.export import _models, _scripting
from tests.export.support_table import read_table

FIELDS = {"pred_boxes": Boxes, "scores": Tensor, "pred_classes": Tensor}


class _MakeInstances(nn.Module):
    """Builds Instances from raw boxes and scores: set fields, clip boxes in place, index with masks, len, has."""

    def forward(self, boxes: Tensor, scores: Tensor) -> list[Instances]:
        instances = Instances((60, 80))
        instances.pred_boxes = Boxes(boxes)
        instances.scores = scores
        instances.pred_classes = (scores * 10).long() % 3
        instances.pred_boxes.clip(instances.image_size)
        kept = instances[instances.scores > 0.3]
        nonempty = kept[kept.pred_boxes.nonempty()]
        assert nonempty.has("scores") and not nonempty.has("pred_masks") and len(nonempty) <= len(instances)
        return [kept, nonempty]


class _ReadInstances(nn.Module):
    """Reads Instances given as input: total box area and score of each image."""

    def forward(self, instances: list[Instances]) -> Tensor:
        totals = []
        for x in instances:
            totals.append(x.pred_boxes.area().sum() + x.scores.sum() + float(len(x)))
        return torch.stack(totals)


def _random_boxes(n: int) -> Tensor:
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * 70
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 30], dim=1)  # some beyond the 60 x 80 image


@pytest.mark.parametrize("n", [0, 7])
def test_created_instances_match_eager(n):
    model = _MakeInstances().eval()
    scripted = scripting_with_instances(model, FIELDS)
    boxes, scores = _random_boxes(n), torch.rand(n, generator=torch.Generator().manual_seed(1))
    expected = model(boxes, scores)
    for reloaded in (scripted, reload_script_model(scripted)):
        for ref, out in zip(expected, reloaded(boxes, scores), strict=True):
            assert_instances_allclose(ref, convert_scripted_instances(out), rtol=0)


def test_instances_as_inputs():
    model = _ReadInstances().eval()
    boxes = [_random_boxes(3), _random_boxes(5)]
    expected = model([Instances((99, 99), pred_boxes=Boxes(b), scores=b[:, 0] / 100) for b in boxes])
    with patch_instances(FIELDS) as scripted_instances_class:
        scripted = torch.jit.script(model)
        inputs = []
        for b in boxes:
            x = scripted_instances_class((99, 99))
            x.pred_boxes, x.scores = Boxes(b), b[:, 0] / 100
            inputs.append(x)
        torch.testing.assert_close(scripted(inputs), expected)
    assert "_jit_override_qualname" not in Instances.__dict__  # the patch is undone


def test_patch_instances_rejects_bad_fields():
    with pytest.raises(ValueError, match="_private"):
        with patch_instances({"_private": Tensor}):
            pass
    with pytest.raises(ValueError, match="must be a class"):
        with patch_instances({"scores": "Tensor"}):
            pass


class _TrainingOnlyCode(nn.Module):
    """Its training branch uses what TorchScript cannot compile (numpy)."""

    scale: float  # a class annotation, a string under `from __future__ import annotations`

    def __init__(self):
        super().__init__()
        self.scale = 2.0

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return torch.from_numpy(x.numpy() * 2)
        return x * self.scale


def test_freeze_training_mode_skips_the_other_mode():
    model = _TrainingOnlyCode().eval()
    with pytest.raises(Exception):  # noqa: B017  (TorchScript raises several error types)
        torch.jit.script(model)
    scripted = scripting_with_instances(model, {})
    x = torch.rand(3)
    torch.testing.assert_close(scripted(x), model(x))
    with freeze_training_mode(model):
        assert "training" in _TrainingOnlyCode.__annotations__
    assert "training" not in _TrainingOnlyCode.__annotations__  # restored
    assert model.training is False


@pytest.mark.parametrize("family", ["mask_rcnn_fpn", "retinanet"])
def test_backbone_scripts_and_matches_eager(family):
    """ResNet + FPN (with its top block) scripted: the same features on two image sizes."""
    backbone = _models.build(family).backbone
    scripted = scripting_with_instances(backbone, _scripting.INFERENCE_FIELDS)
    for height, width in [(64, 96), (128, 64)]:
        x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height))
        expected, actual = backbone(x), scripted(x)
        assert list(actual) == list(expected)
        for name in expected:
            torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5)


class _Anchors(nn.Module):
    """Anchors and decoded boxes of a detector's anchor generator and box transform."""

    def __init__(self, anchor_generator: nn.Module):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.box2box_transform = Box2BoxTransform(weights=(10, 10, 5, 5))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        decoded = []
        for anchors in self.anchor_generator(features):
            deltas = torch.linspace(-1, 1, anchors.tensor.numel()).view(-1, 4)
            decoded.append(self.box2box_transform.apply_deltas(deltas, anchors.tensor))
        return decoded


def test_anchor_generator_and_box_transform_script():
    model = _Anchors(_models.build("retinanet").anchor_generator).eval()
    scripted = scripting_with_instances(model, _scripting.INFERENCE_FIELDS)
    features = [torch.zeros(1, 1, 16 // 2**i, 12 // 2**i) for i in range(len(model.anchor_generator.strides))]
    for expected, actual in zip(model(features), scripted(features), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)


_SLOW_FAMILIES = {"mask_rcnn_c4", "keypoint_rcnn_fpn", "cascade_mask_rcnn_fpn", "fcos"}  # 4-10 s each


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=pytest.mark.slow if f in _SLOW_FAMILIES else ()) for f in sorted(_models.FAMILIES)]
)
def test_full_model_scripting_is_as_documented(family):
    """The support table's "TorchScript (script)" cell says what scripting the whole model does now: where
    it stops (file:line and TorchScript's message), or that the scripted outputs match eager."""
    error, problems = _scripting.script_and_compare(family)
    cell = read_table()[(family, "torchscript_scripting")]
    if error is None:
        assert not problems, problems
        assert cell[0] == "yes", cell
    else:
        assert cell[0] == "no" and error.split(":")[0] in cell[1], (error, cell)


def test_scripted_detector_reloads_and_handles_empty_images():
    """A scripted Mask R-CNN saved and loaded back (as a deployment would) gives the eager detections, also
    when no detection passes the score threshold."""
    model = _models.build("mask_rcnn_fpn")
    _, batches = _models.images("mask_rcnn_fpn")
    reloaded = reload_script_model(scripting_with_instances(model, _scripting.INFERENCE_FIELDS))
    inputs = [{"image": image} for image in batches[0]]
    with torch.no_grad():
        assert not _scripting.compare_outputs(
            model(inputs), _scripting.run_scripted(reloaded, inputs), 1e-3, 1e-4, 0.99
        )
        model.roi_heads.box_predictor.test_score_thresh = 1.0
        reloaded.roi_heads.box_predictor.test_score_thresh = 1.0
        expected, actual = model(inputs), _scripting.run_scripted(reloaded, inputs)
    assert len(expected[0]["instances"]) == len(actual[0]["instances"]) == 0
    assert actual[0]["instances"].pred_masks.shape == expected[0]["instances"].pred_masks.shape


def test_scripted_semantic_fpn_reloads_and_resizes_to_the_requested_size():
    """A scripted, saved and reloaded Semantic FPN gives the eager scores, also resized to a requested output
    size (``"height"``/``"width"``: ints in eager mode, 0-d tensors in the scripted model's tensor-only dicts)."""
    model = _models.build("semantic_fpn")
    _, batches = _models.images("semantic_fpn")
    reloaded = reload_script_model(scripting_with_instances(model, _scripting.INFERENCE_FIELDS))
    images = batches[2]  # two images in one padded batch
    sizes = [(50, 61), (140, 97)]
    with torch.no_grad():
        expected = model([{"image": x, "height": h, "width": w} for x, (h, w) in zip(images, sizes)])
        actual = reloaded(
            [{"image": x, "height": torch.tensor(h), "width": torch.tensor(w)} for x, (h, w) in zip(images, sizes)]
        )
    for ref, out, size in zip(expected, actual, sizes, strict=True):
        assert tuple(out["sem_seg"].shape) == (model.sem_seg_head.num_classes, *size)
        torch.testing.assert_close(out["sem_seg"], ref["sem_seg"], rtol=0, atol=1e-4)


def test_scripted_panoptic_fpn_reloads_and_merges_as_eager():
    """A scripted, saved and reloaded Panoptic FPN: its raw instances and semantic scores, post-processed and
    merged in Python, give the eager instances, semantic scores and panoptic segments. The score threshold of
    the merging is lowered so that the tiny model's detections are pasted as "thing" segments."""
    model = _models.build("panoptic_fpn")
    model.combine_instances_score_thresh = 0.0
    model.combine_stuff_area_thresh = 100
    reloaded = reload_script_model(scripting_with_instances(model, _scripting.INFERENCE_FIELDS))
    reloaded.combine_instances_score_thresh = 0.0
    reloaded.combine_stuff_area_thresh = 100
    _, batches = _models.images("panoptic_fpn")
    for batch in batches:
        inputs = [{"image": image} for image in batch]
        with torch.no_grad():
            expected, actual = model(inputs), _scripting.run_scripted(reloaded, inputs)
        assert not _scripting.compare_outputs(expected, actual, 1e-3, 1e-4, 0.99)
        for ref in expected:
            segments = ref["panoptic_seg"][1]
            assert len(ref["instances"]) > 0 and any(s["isthing"] for s in segments), segments
    with pytest.raises(torch.jit.Error, match="do_postprocess=False"):
        reloaded.inference(inputs)
