"""nms / batched_nms (torchvision) and nms_rotated / batched_nms_rotated (kernel vs twin vs plain Python)."""

import importlib

import pytest
import torch
import torchvision

from libdet.utils import compiled_ops

nms_module = importlib.import_module("libdet.layers.nms")
rotated_boxes = importlib.import_module("libdet.layers.rotated_boxes")

DTYPES = [torch.float32, torch.float64]


def _kernel_nms(boxes, scores, iou_threshold):
    return torch.ops.libdet.nms_rotated(boxes, scores, iou_threshold)


@pytest.fixture(scope="module")
def kernel():
    if not compiled_ops.load_op("nms_rotated"):
        pytest.skip(f"compiled nms_rotated unavailable: {compiled_ops.ops_status()['nms_rotated']}")
    return _kernel_nms


@pytest.fixture(params=["twin", "kernel"])
def nms_impl(request):
    if request.param == "kernel":
        return request.getfixturevalue("kernel")
    return nms_module._nms_rotated_twin


def _strided(t: torch.Tensor) -> torch.Tensor:
    """Same values as ``t`` (1-D or 2-D) in a non-contiguous view."""
    wide = t.new_zeros(t.shape[:-1] + (t.shape[-1] * 2,))
    wide[..., ::2] = t
    view = wide[..., ::2]
    assert not view.is_contiguous()
    return view


def _clustered_boxes(n: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes jittered around a few centres (so that NMS suppresses), some degenerate, angles across 180."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(1, n // 8), 2, generator=g, dtype=torch.float64) * 100
    pick = torch.randint(0, centres.shape[0], (n,), generator=g)
    xy = centres[pick] + torch.randn(n, 2, generator=g, dtype=torch.float64) * 2
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 10 + 4
    angle = 180 + torch.randn(n, 1, generator=g, dtype=torch.float64) * 20  # around +-180
    angle = torch.where(torch.rand(n, 1, generator=g, dtype=torch.float64) < 0.5, angle, angle - 360)
    boxes = torch.cat([xy, wh, angle], dim=1)
    boxes[::17, 2] = 0  # degenerate boxes: never suppress nor get suppressed
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    scores[5:9] = scores[4]  # ties: the lower index wins
    return boxes.to(dtype), scores.to(dtype)


def _reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list:
    """Plain-Python greedy NMS over the float64 rotated-IoU matrix."""
    ious = rotated_boxes._box_iou_rotated_twin(boxes.double(), boxes.double()).tolist()
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # sorted() is stable
    keep = []
    for i in order:
        if all(ious[i][k] <= iou_threshold for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("iou_threshold", [0.1, 0.5])
def test_nms_rotated_matches_reference(nms_impl, dtype, contiguous, iou_threshold):
    boxes, scores = _clustered_boxes(150, seed=0, dtype=dtype)
    expected = _reference_nms(boxes, scores, iou_threshold)
    if not contiguous:
        boxes, scores = _strided(boxes), _strided(scores)
    keep = nms_impl(boxes, scores, iou_threshold)
    assert keep.dtype == torch.int64
    assert 10 < len(expected) < 140  # suppression happened, and not everything was suppressed
    assert keep.tolist() == expected


def test_kernel_matches_twin_on_many_boxes(kernel):
    boxes, scores = _clustered_boxes(600, seed=1, dtype=torch.float32)
    twin = nms_module._nms_rotated_twin(boxes, scores, 0.3)
    assert torch.equal(kernel(boxes, scores, 0.3), twin)


def test_nms_rotated_empty(nms_impl):
    keep = nms_impl(torch.zeros(0, 5), torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


def test_nms_rotated_identical_boxes_keep_highest(nms_impl):
    boxes = torch.tensor([[5.0, 5.0, 4.0, 2.0, 179.9], [5.0, 5.0, 4.0, 2.0, -180.1], [5.0, 5.0, 2.0, 4.0, 90.0]])
    keep = nms_impl(boxes, torch.tensor([0.2, 0.9, 0.5]), 0.5)
    assert keep.tolist() == [1]


def test_nms_rotated_public_function():
    boxes, scores = _clustered_boxes(80, seed=2, dtype=torch.float32)
    keep = nms_module.nms_rotated(boxes, scores.half(), 0.4)
    assert keep.tolist() == _reference_nms(boxes, scores.half().float(), 0.4)
    with pytest.raises(ValueError, match="scores"):
        nms_module.nms_rotated(boxes, scores[:-1], 0.4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms_rotated_keeps_classes_separate(dtype):
    boxes, scores = _clustered_boxes(120, seed=3, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    idxs = torch.randint(0, 4, (120,), generator=g)
    keep = nms_module.batched_nms_rotated(boxes, scores, idxs, 0.3)
    expected = []
    for c in range(4):
        members = (idxs == c).nonzero()[:, 0]
        expected += members[_reference_nms(boxes[members], scores[members], 0.3)].tolist()
    expected.sort(key=lambda i: -float(scores[i]))
    assert keep.tolist() == expected
    # Identical boxes of different classes are all kept.
    same = torch.tensor([[1.0, 1.0, 4.0, 4.0, 30.0]] * 3, dtype=dtype)
    kept = nms_module.batched_nms_rotated(
        same, torch.tensor([0.5, 0.7, 0.6], dtype=dtype), torch.tensor([0, 1, 2]), 0.5
    )
    assert kept.tolist() == [1, 2, 0]
    assert nms_module.batched_nms_rotated(
        same[:0], torch.zeros(0, dtype=dtype), torch.zeros(0, dtype=torch.int64), 0.5
    ).shape == (0,)


def test_batched_nms_rotated_negative_and_large_coordinates():
    boxes = torch.tensor(
        [[-500.0, -500.0, 10.0, 10.0, 45.0], [-498.0, -500.0, 10.0, 10.0, 45.0], [3e4, 3e4, 10.0, 10.0, 0.0]]
    )
    keep = nms_module.batched_nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.1)
    assert keep.tolist() == [0, 1, 2]


def test_nms_and_batched_nms_are_torchvisions():
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(50, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 20 + 1], dim=1)
    scores = torch.rand(50, generator=g)
    idxs = torch.randint(0, 3, (50,), generator=g)
    assert torch.equal(nms_module.nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(nms_module.batched_nms(boxes, scores, idxs, 0.5), expected)
    # float16 boxes are promoted (fp16 lacks the range of the coordinate-offset trick).
    assert torch.equal(
        nms_module.batched_nms(boxes.half(), scores.half(), idxs, 0.5),
        torchvision.ops.batched_nms(boxes.half().float(), scores.half().float(), idxs, 0.5),
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    boxes, scores = _clustered_boxes(700, seed=6, dtype=dtype)  # > 64 boxes: several mask words
    expected = _reference_nms(boxes, scores, 0.3)
    assert nms_module._nms_rotated_twin(boxes.cuda(), scores.cuda(), 0.3).tolist() == expected
    assert nms_module.nms_rotated(boxes.cuda(), scores.cuda(), 0.3).tolist() == expected
    if compiled_ops.use_kernel("nms_rotated", "cuda"):
        assert _kernel_nms(_strided(boxes).cuda(), scores.cuda(), 0.3).tolist() == expected
        assert _kernel_nms(boxes[:0].cuda(), scores[:0].cuda(), 0.3).shape == (0,)
