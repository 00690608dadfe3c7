"""box_iou_rotated: compiled kernel vs pure-PyTorch twin vs shapely, hand values, edge cases."""

import importlib
import math

import pytest
import torch

from libdet.utils import compiled_ops

rotated_boxes = importlib.import_module("libdet.layers.rotated_boxes")
box_iou_rotated = rotated_boxes.box_iou_rotated
twin_iou = rotated_boxes._box_iou_rotated_twin

DTYPES = [torch.float32, torch.float64]
ATOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def _kernel_iou(boxes1, boxes2):
    return torch.ops.libdet.box_iou_rotated(boxes1, boxes2)


def _twin_iou(boxes1, boxes2):
    return twin_iou(boxes1, boxes2).to(boxes1.dtype)


@pytest.fixture(scope="module")
def kernel():
    if not compiled_ops.load_op("box_iou_rotated"):
        pytest.skip(f"compiled box_iou_rotated unavailable: {compiled_ops.ops_status()['box_iou_rotated']}")
    return _kernel_iou


@pytest.fixture(params=["twin", "kernel"])
def iou_impl(request):
    if request.param == "kernel":
        return request.getfixturevalue("kernel")
    return _twin_iou


def _strided(t: torch.Tensor) -> torch.Tensor:
    """Same values as ``t`` in a non-contiguous view."""
    wide = t.new_zeros((t.shape[0], t.shape[1] * 2))
    wide[:, ::2] = t
    view = wide[:, ::2]
    assert not view.is_contiguous()
    return view


def _random_boxes(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g, dtype=torch.float64) * 60
    sizes = torch.rand(n, 2, generator=g, dtype=torch.float64) * 30 + 0.5
    angles = torch.rand(n, 1, generator=g, dtype=torch.float64) * 720 - 360
    return torch.cat([centers, sizes, angles], dim=1).to(dtype)


def _special_boxes(dtype) -> torch.Tensor:
    """Degenerate boxes, angles across +-180, coincident and rotated copies."""
    return torch.tensor(
        [
            [10.0, 10.0, 8.0, 4.0, 179.9],
            [10.0, 10.0, 8.0, 4.0, -180.1],  # same box as above
            [10.0, 10.0, 8.0, 4.0, 0.0],
            [10.0, 10.0, 8.0, 4.0, 180.0],  # same as angle 0
            [10.0, 10.0, 4.0, 8.0, 90.0],  # same as angle 0
            [12.0, 10.0, 8.0, 4.0, 0.0],
            [10.0, 10.0, 0.0, 4.0, 30.0],  # zero width
            [10.0, 10.0, 0.0, 0.0, 0.0],  # a point
            [10.0, 10.0, 8.0, 0.0, -45.0],  # zero height
            [1e4 + 10.0, 1e4 + 10.0, 8.0, 4.0, 15.0],  # far away, large coordinates
            [1e4 + 10.0, 1e4 + 9.0, 8.0, 4.0, 90.0],  # shifted by 1 along the width axis of the next one
            [1e4 + 10.0, 1e4 + 10.0, 8.0, 4.0, 90.0],
        ],
        dtype=dtype,
    )


def _boxes_for_comparison(dtype) -> tuple:
    random1 = _random_boxes(70, seed=1, dtype=dtype)
    random2 = _random_boxes(50, seed=2, dtype=dtype)
    special = _special_boxes(dtype)
    return torch.cat([random1, special]), torch.cat([special, random2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_hand_values(iou_impl, dtype):
    boxes = torch.tensor(
        [
            [0.0, 0.0, 2.0, 2.0, 0.0],
            [1.0, 0.0, 2.0, 2.0, 0.0],  # 2x2 square shifted by 1: IoU 2 / 6
            [0.0, 0.0, 2.0, 2.0, 180.0],  # itself rotated by 180 degrees
            [5.0, 5.0, 2.0, 2.0, 0.0],  # disjoint
            [0.0, 0.0, 2.0, 2.0, 45.0],  # square vs 45-degree square: 8(sqrt2-1) / (8 - 8(sqrt2-1))
        ],
        dtype=dtype,
    )
    ious = iou_impl(boxes, boxes)
    assert ious.dtype == dtype and ious.shape == (5, 5)
    inter45 = 8 * (math.sqrt(2) - 1)
    expected = {
        (0, 0): 1.0,
        (1, 1): 1.0,
        (0, 1): 1 / 3,
        (0, 2): 1.0,
        (1, 2): 1 / 3,
        (0, 3): 0.0,
        (0, 4): inter45 / (8 - inter45),
    }
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for (i, j), value in expected.items():
        assert ious[i, j].item() == pytest.approx(value, abs=tol), (i, j)
        assert ious[j, i].item() == pytest.approx(value, abs=tol), (j, i)


@pytest.mark.parametrize("dtype", DTYPES)
def test_angle_direction_is_counter_clockwise_on_screen(iou_impl, dtype):
    # A long thin box at +30 degrees points up-right on screen (image y points down): its width axis is
    # (cos 30, -sin 30) in image coordinates. A small square on that axis overlaps it, its mirror does not.
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    long_box = torch.tensor([[0.0, 0.0, 20.0, 1.0, 30.0]], dtype=dtype)
    squares = torch.tensor([[6 * c, -6 * s, 0.5, 0.5, 0.0], [6 * c, 6 * s, 0.5, 0.5, 0.0]], dtype=dtype)
    ious = iou_impl(long_box, squares)
    assert ious[0, 0] > 0.01
    assert ious[0, 1] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_boxes(iou_impl, dtype):
    special = _special_boxes(dtype)
    ious = iou_impl(special, special)
    assert torch.isfinite(ious).all()
    tol = ATOL[dtype] * 10
    for i, j in [(0, 1), (2, 3), (2, 4), (3, 4), (0, 0), (9, 9)]:
        assert ious[i, j].item() == pytest.approx(1.0, abs=tol), (i, j)
    # Degenerate boxes have IoU 0 with everything, themselves included (not NaN).
    assert (ious[6:9] == 0).all() and (ious[:, 6:9] == 0).all()
    # 8x4 boxes shifted by 2 along their width: intersection 6x4 = 24, union 40.
    assert ious[2, 5].item() == pytest.approx(24 / 40, abs=tol)
    assert ious[10, 11].item() == pytest.approx(28 / 36, abs=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_empty(iou_impl, dtype, shape):
    boxes1 = _random_boxes(shape[0], seed=3, dtype=dtype)
    boxes2 = _random_boxes(shape[1], seed=4, dtype=dtype)
    ious = iou_impl(boxes1, boxes2)
    assert ious.shape == shape and ious.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("contiguous", [True, False])
def test_kernel_matches_twin(kernel, dtype, contiguous):
    boxes1, boxes2 = _boxes_for_comparison(dtype)
    if not contiguous:
        boxes1, boxes2 = _strided(boxes1), _strided(boxes2)
    expected = _twin_iou(boxes1, boxes2)
    actual = kernel(boxes1, boxes2)
    assert actual.dtype == dtype
    assert (expected > 0).float().mean() > 0.05  # the comparison covers real overlaps
    torch.testing.assert_close(actual, expected, atol=ATOL[dtype], rtol=0)


def test_public_function_uses_kernel_or_twin_consistently(kernel, monkeypatch):
    boxes1, boxes2 = _boxes_for_comparison(torch.float32)
    with_kernel = box_iou_rotated(boxes1, boxes2)
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "box_iou_rotated")
    with_twin = box_iou_rotated(boxes1, boxes2)
    torch.testing.assert_close(with_kernel, with_twin, atol=1e-6, rtol=0)


def _shapely_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    import numpy as np
    import shapely

    def polygons(boxes):
        b = boxes.double().numpy()
        theta = np.deg2rad(b[:, 4])
        c, s = np.cos(theta), np.sin(theta)
        local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])  # x (width), y (height)
        lx = local[None, :, 0] * b[:, 2, None]
        ly = local[None, :, 1] * b[:, 3, None]
        # Image coordinates: x' = c*lx + s*ly, y' = -s*lx + c*ly (counter-clockwise on screen).
        xs = b[:, 0, None] + c[:, None] * lx + s[:, None] * ly
        ys = b[:, 1, None] - s[:, None] * lx + c[:, None] * ly
        return shapely.polygons(np.stack([xs, ys], axis=-1))

    p1, p2 = polygons(boxes1)[:, None], polygons(boxes2)[None, :]
    inter = shapely.area(shapely.intersection(p1, p2))
    union = shapely.area(p1) + shapely.area(p2) - inter
    return torch.from_numpy(np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_shapely(iou_impl, dtype):
    pytest.importorskip("shapely", reason="shapely (test extra) is the independent reference for rotated IoU")
    boxes1 = _random_boxes(200, seed=5, dtype=dtype)
    boxes2 = _random_boxes(150, seed=6, dtype=dtype)
    expected = _shapely_iou(boxes1, boxes2)
    actual = iou_impl(boxes1, boxes2).double()
    assert (expected > 0).sum() > 500
    torch.testing.assert_close(actual, expected, atol=1e-6 if dtype == torch.float32 else 1e-9, rtol=0)


@pytest.mark.parametrize(
    "dtype, result_dtype",
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_wrapper_dtypes(dtype, result_dtype):
    boxes = _special_boxes(torch.float64)[:6].to(dtype)
    ious = box_iou_rotated(boxes, boxes)
    assert ious.dtype == result_dtype
    assert ious[0, 1].item() == pytest.approx(1.0, abs=1e-3)


def test_pairwise_iou_rotated_alias():
    boxes = _random_boxes(5, seed=7)
    torch.testing.assert_close(rotated_boxes.pairwise_iou_rotated(boxes, boxes), box_iou_rotated(boxes, boxes))


def test_wrapper_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"boxes2.*\[N, 5\]"):
        box_iou_rotated(torch.zeros(2, 5), torch.zeros(2, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    boxes1, boxes2 = _boxes_for_comparison(dtype)
    expected = _twin_iou(boxes1, boxes2)
    # Twin on the GPU, then the public function (kernel when compiled with CUDA).
    torch.testing.assert_close(_twin_iou(boxes1.cuda(), boxes2.cuda()).cpu(), expected, atol=ATOL[dtype], rtol=0)
    torch.testing.assert_close(box_iou_rotated(boxes1.cuda(), boxes2.cuda()).cpu(), expected, atol=ATOL[dtype], rtol=0)
    if compiled_ops.use_kernel("box_iou_rotated", "cuda"):
        torch.testing.assert_close(
            _kernel_iou(_strided(boxes1).cuda(), boxes2.cuda()).cpu(), expected, atol=ATOL[dtype], rtol=0
        )
