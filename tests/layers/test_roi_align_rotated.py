"""roi_align_rotated: kernel vs twin, torchvision roi_align at angle 0, rotation by 90, gradients."""

import importlib

import pytest
import torch
import torchvision

from libdet.utils import compiled_ops

ra = importlib.import_module("libdet.layers.roi_align_rotated")

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-12)}


def _kernel(input, rois, output_size, spatial_scale, sampling_ratio):
    return ra._ROIAlignRotatedFunction.apply(input, rois, output_size, spatial_scale, sampling_ratio)


@pytest.fixture(scope="module")
def kernel():
    if not compiled_ops.load_op("roi_align_rotated"):
        pytest.skip(f"compiled roi_align_rotated unavailable: {compiled_ops.ops_status()['roi_align_rotated']}")
    return _kernel


@pytest.fixture(params=["twin", "kernel"])
def impl(request):
    if request.param == "kernel":
        return request.getfixturevalue("kernel")
    return ra._roi_align_rotated_twin


def _features(dtype, contiguous=True, shape=(2, 3, 20, 24), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if not contiguous:
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
        assert not x.is_contiguous()
    return x


def _rotated_rois(dtype, seed=1):
    """RoIs in image coordinates (spatial scale 0.5 on a 20x24 map: image ~40x48): inside, partly
    outside, fully outside, zero-size, angles across +-180 and beyond."""
    g = torch.Generator().manual_seed(seed)
    k = 12
    rois = torch.cat(
        [
            torch.randint(0, 2, (k, 1), generator=g).double(),
            torch.rand(k, 1, generator=g, dtype=torch.float64) * 52 - 2,
            torch.rand(k, 1, generator=g, dtype=torch.float64) * 44 - 2,
            torch.rand(k, 2, generator=g, dtype=torch.float64) * 24 + 1,
            torch.rand(k, 1, generator=g, dtype=torch.float64) * 720 - 360,
        ],
        dim=1,
    )
    special = torch.tensor(
        [
            [0, 20.0, 20.0, 10.0, 6.0, 179.9],
            [1, 20.0, 20.0, 10.0, 6.0, -180.1],
            [0, 20.0, 20.0, 0.0, 0.0, 30.0],  # zero size: zero output
            [1, 10.0, 10.0, 0.0, 8.0, 0.0],  # zero width
            [0, -40.0, -40.0, 8.0, 8.0, 45.0],  # outside: zero output
            [1, 47.0, 39.0, 30.0, 20.0, 60.0],  # partly outside
        ],
        dtype=torch.float64,
    )
    return torch.cat([rois, special]).to(dtype)


def _to_axis_aligned(boxes):
    """torchvision (batch, x1, y1, x2, y2) -> rotated (batch, cx, cy, w, h, angle 0)."""
    return torch.stack(
        [
            boxes[:, 0],
            (boxes[:, 1] + boxes[:, 3]) / 2,
            (boxes[:, 2] + boxes[:, 4]) / 2,
            boxes[:, 3] - boxes[:, 1],
            boxes[:, 4] - boxes[:, 2],
            torch.zeros_like(boxes[:, 0]),
        ],
        dim=1,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_angle_zero_equals_torchvision_aligned(impl, dtype, sampling_ratio):
    x = _features(dtype)
    boxes = torch.tensor(
        [[0, 2.0, 3.0, 19.0, 20.5], [1, 5.0, 1.0, 35.0, 17.0], [0, -4.0, 30.0, 12.0, 50.0], [1, 30.0, 6.0, 31.0, 40.0]],
        dtype=dtype,
    )
    expected = torchvision.ops.roi_align(x, boxes, (3, 4), 0.5, sampling_ratio, aligned=True)
    actual = impl(x, _to_axis_aligned(boxes), (3, 4), 0.5, sampling_ratio)
    torch.testing.assert_close(actual, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio", [0, 3])
def test_angle_90_rotates_the_pooled_grid(impl, dtype, sampling_ratio):
    x = _features(dtype)
    rois0 = torch.tensor([[0, 22.0, 18.0, 16.0, 16.0, 0.0], [1, 15.0, 21.0, 10.0, 10.0, 0.0]], dtype=dtype)
    rois90 = rois0.clone()
    rois90[:, 5] = 90
    out0 = impl(x, rois0, (5, 5), 0.5, sampling_ratio)
    out90 = impl(x, rois90, (5, 5), 0.5, sampling_ratio)
    # At +90 degrees bin (i, j) samples where bin (P-1-j, i) samples at 0 degrees.
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out90, out0.flip(-2).transpose(-2, -1), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_kernel_matches_twin(kernel, dtype, contiguous, sampling_ratio):
    x = _features(dtype, contiguous).requires_grad_()
    rois = _rotated_rois(dtype)
    if not contiguous:
        rois = rois.t().contiguous().t()
    grad = torch.randn(rois.shape[0], 3, 4, 5, dtype=dtype)
    expected = ra._roi_align_rotated_twin(x, rois, (4, 5), 0.5, sampling_ratio)
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    actual = kernel(x, rois, (4, 5), 0.5, sampling_ratio)
    (actual_grad,) = torch.autograd.grad(actual, x, grad)
    torch.testing.assert_close(actual, expected, **TOL[dtype])
    torch.testing.assert_close(actual_grad, expected_grad, **TOL[dtype])
    assert (actual[-2] == 0).all()  # a RoI outside the map
    if sampling_ratio == 0:  # adaptive grids of zero-size RoIs have no samples (fixed grids sample the centre)
        assert (actual[-4:-2] == 0).all()
    assert actual.abs().sum() > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_rois(impl, dtype):
    x = _features(dtype).requires_grad_()
    out = impl(x, torch.zeros(0, 6, dtype=dtype), (2, 3), 0.5, 2)
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert x.grad is not None and (x.grad == 0).all()


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gradcheck(impl, sampling_ratio):
    x = _features(torch.float64, shape=(2, 2, 7, 8)).requires_grad_()
    rois = torch.tensor(
        [[0, 7.0, 6.0, 6.0, 4.0, 30.0], [1, 4.0, 8.0, 5.0, 7.0, -150.0], [1, 14.0, 3.0, 5.0, 5.0, 200.0]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(lambda inp: impl(inp, rois, (2, 3), 0.5, sampling_ratio), (x,))


def test_module_and_dtypes():
    module = ra.ROIAlignRotated((3, 4), spatial_scale=0.5, sampling_ratio=2)
    assert repr(module) == "ROIAlignRotated(output_size=(3, 4), spatial_scale=0.5, sampling_ratio=2)"
    x = _features(torch.float32)
    rois = _rotated_rois(torch.float32)
    expected = module(x, rois)
    assert expected.shape == (rois.shape[0], 3, 3, 4) and expected.dtype == torch.float32
    for low in (torch.float16, torch.bfloat16):
        out = module(x.to(low), rois.to(low))
        assert out.dtype == low
        # Computed in float32 from the rounded inputs, then rounded.
        assert torch.equal(out, module(x.to(low).float(), rois.to(low).float()).to(low))
    assert ra.roi_align_rotated(x, rois, 3, 0.5, 0).shape == (rois.shape[0], 3, 3, 3)


def test_wrapper_validates_arguments():
    x = _features(torch.float32)
    with pytest.raises(ValueError, match=r"rois.*\[K, 6\]"):
        ra.roi_align_rotated(x, torch.zeros(2, 5), (2, 2), 1.0, 0)
    with pytest.raises(ValueError, match="batch index 2"):
        ra._roi_align_rotated_twin(x, torch.tensor([[2.0, 5, 5, 4, 4, 0]]), (2, 2), 1.0, 0)


def test_wrapper_uses_kernel_or_twin_consistently(kernel, monkeypatch):
    x = _features(torch.float32).requires_grad_()
    rois = _rotated_rois(torch.float32)
    with_kernel = ra.roi_align_rotated(x, rois, (2, 2), 0.5, 0)
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "roi_align_rotated")
    with_twin = ra.roi_align_rotated(x, rois, (2, 2), 0.5, 0)
    torch.testing.assert_close(with_kernel, with_twin, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="batch index"):
        _kernel(x, torch.tensor([[2.0, 5, 5, 4, 4, 0]]), (2, 2), 1.0, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    x = _features(dtype).requires_grad_()
    rois = _rotated_rois(dtype)
    grad = torch.randn(rois.shape[0], 3, 4, 5, dtype=dtype)
    expected = ra._roi_align_rotated_twin(x, rois, (4, 5), 0.5, 0)
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    x_cuda = x.detach().cuda().requires_grad_()
    paths = [ra._roi_align_rotated_twin, ra.roi_align_rotated]
    if compiled_ops.use_kernel("roi_align_rotated", "cuda"):
        paths.append(_kernel)
    for path in paths:
        out = path(x_cuda, rois.cuda(), (4, 5), 0.5, 0)
        (out_grad,) = torch.autograd.grad(out, x_cuda, grad.cuda())
        torch.testing.assert_close(out.cpu(), expected, **TOL[dtype])
        torch.testing.assert_close(out_grad.cpu(), expected_grad, **TOL[dtype])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_missing_image_pools_zeros_without_device_assert():
    x = _features(torch.float32).cuda().requires_grad_()
    rois = torch.tensor([[0.0, 10, 10, 6, 4, 30], [5.0, 10, 10, 6, 4, 30], [-1.0, 8, 8, 4, 4, 0]], device="cuda")
    paths = [ra._roi_align_rotated_twin]
    if compiled_ops.use_kernel("roi_align_rotated", "cuda"):
        paths.append(_kernel)
    for path in paths:
        out = path(x, rois, (2, 2), 0.5, 0)
        assert out[0].abs().sum() > 0
        assert torch.equal(out[1:], torch.zeros_like(out[1:]))
        (grad,) = torch.autograd.grad(out.sum(), x)
        (grad_valid,) = torch.autograd.grad(path(x, rois[:1], (2, 2), 0.5, 0).sum(), x)
        torch.testing.assert_close(grad, grad_valid)
