import math

import pytest
import torch

from libdet.layers.roi_align import ROIAlign, roi_align


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _bilinear(feat: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Value of feat (C, H, W) at continuous (y, x), RoIAlign conventions (0 beyond one pixel outside)."""
    C, H, W = feat.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return torch.zeros(C, dtype=feat.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= H - 1:
        y0 = y1 = H - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= W - 1:
        x0 = x1 = W - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * feat[:, y0, x0] + hy * lx * feat[:, y0, x1] + ly * hx * feat[:, y1, x0] + ly * lx * feat[:, y1, x1]


def _reference_roi_align(feat, rois, out_hw, scale, sampling_ratio, aligned):
    """Straightforward RoIAlign: average of bilinear samples on a regular grid inside each bin."""
    ph_n, pw_n = out_hw
    out = torch.zeros(len(rois), feat.shape[1], ph_n, pw_n, dtype=torch.float64)
    offset = 0.5 if aligned else 0.0
    for k, (b, x0, y0, x1, y1) in enumerate(rois.tolist()):
        f = feat[int(b)].double()
        sx, sy = x0 * scale - offset, y0 * scale - offset
        rw, rh = x1 * scale - offset - sx, y1 * scale - offset - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / pw_n, rh / ph_n
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph_n)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw_n)
        for ph in range(ph_n):
            for pw in range(pw_n):
                acc = torch.zeros(f.shape[0], dtype=torch.float64)
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(f, y, x)
                out[k, :, ph, pw] = acc / max(gh * gw, 1)
    return out


_ROIS = torch.tensor(
    [
        [0, 1.0, 1.0, 9.0, 7.0],
        [1, -3.0, 2.5, 6.3, 15.0],  # partially outside the feature map
        [0, 4.2, 4.4, 4.9, 5.1],  # smaller than a pixel
        [1, 10.0, 0.0, 22.0, 12.0],  # at the right border (scale 0.5 -> x up to 11)
    ]
)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align_matches_reference(aligned, sampling_ratio):
    feat = torch.randn(2, 3, 10, 12)
    for scale, rois in ((1.0, _ROIS[:3]), (0.5, _ROIS)):
        op = ROIAlign((3, 4), spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
        out = op(feat, rois)
        assert out.shape == (len(rois), 3, 3, 4) and out.dtype == torch.float32
        expected = _reference_roi_align(feat, rois, (3, 4), scale, sampling_ratio, aligned)
        torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_roi_align_int_output_size_and_function():
    feat = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 0.5, 1.0, 6.5, 7.0]])
    out = ROIAlign(2, 1.0, 2)(feat, rois)
    assert out.shape == (1, 2, 2, 2)
    torch.testing.assert_close(out, roi_align(feat, rois, (2, 2), 1.0, 2, True))


def test_roi_align_gradcheck_float64():
    feat = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.6, 5.2], [0, 2.1, 1.3, 6.4, 3.9]], dtype=torch.float64)
    for aligned in (True, False):
        op = ROIAlign((2, 3), spatial_scale=1.0, sampling_ratio=2, aligned=aligned)
        assert torch.autograd.gradcheck(lambda x, op=op: op(x, rois), (feat,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_roi_align_reduced_precision(dtype):
    feat = torch.randn(1, 3, 10, 10)
    rois = torch.tensor([[0, 1.0, 2.0, 8.0, 9.0], [0, 0.0, 0.0, 5.0, 5.0]])
    op = ROIAlign((2, 2), 1.0, 2)
    out = op(feat.to(dtype), rois)  # float32 boxes are cast to match
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), op(feat, rois), atol=2e-2, rtol=2e-2)


def test_roi_align_empty_rois_and_errors():
    feat = torch.randn(1, 3, 10, 10)
    op = ROIAlign((2, 2), 1.0, 0)
    assert op(feat, torch.zeros(0, 5)).shape == (0, 3, 2, 2)
    with pytest.raises(ValueError, match="rois"):
        op(feat, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="input"):
        op(feat[0], torch.zeros(3, 5))


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script` is deprecated:FutureWarning")
def test_roi_align_scripted():
    feat = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 0.5, 1.0, 6.5, 7.0]])
    op = ROIAlign((2, 3), 0.5, 2)
    assert torch.equal(torch.jit.script(op)(feat, rois), op(feat, rois))


def test_roi_align_repr():
    r = repr(ROIAlign((7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=False))
    assert r == "ROIAlign(output_size=(7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=False)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_roi_align_cuda_matches_cpu(dtype):
    feat = torch.randn(2, 3, 10, 12)
    op = ROIAlign((3, 4), 0.5, 2)
    expected = op(feat, _ROIS)
    out = op(feat.cuda().to(dtype), _ROIS.cuda())
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.float().cpu(), expected, atol=tol, rtol=tol)


# --- libdet's CPU backward kernel (csrc/roi_align) -------------------------------------------------------------


def _require_kernel():
    from libdet.utils import compiled_ops

    if not compiled_ops.use_kernel("roi_align", "cpu"):
        pytest.skip(f"compiled roi_align unavailable: {compiled_ops.ops_status()['roi_align']}")


def _random_rois(num_rois: int, batch_size: int, image_size: float, dtype=torch.float32) -> torch.Tensor:
    """Boxes of 0.1-40% of the image, some partly (or wholly) outside it, some smaller than a pixel."""
    xy = torch.rand(num_rois, 2, dtype=dtype) * image_size * 1.1 - image_size * 0.1
    wh = torch.rand(num_rois, 2, dtype=dtype) * image_size * 0.4
    wh[::7] *= 0.01
    batch = torch.randint(0, batch_size, (num_rois, 1)).to(dtype)
    return torch.cat([batch, xy, xy + wh], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_backward_kernel_is_bitwise_torchvision(dtype, aligned, sampling_ratio):
    _require_kernel()
    batch, channels, height, width = 2, 37, 23, 31  # odd channel count: a thread's range is not a multiple of 8
    rois = _random_rois(120, batch, 4 * 31, dtype)
    grad = torch.randn(len(rois), channels, 7, 5, dtype=dtype)
    args = (rois, 0.25, 7, 5, batch, channels, height, width, sampling_ratio, aligned)
    expected = torch.ops.torchvision._roi_align_backward(grad, *args)
    for channels_last in (False, True):
        out = torch.ops.libdet.roi_align_backward(grad, *args, channels_last)
        assert torch.equal(out, expected)  # same arithmetic, same summation order per pixel
        assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_forward_kernel_is_bitwise_torchvision(dtype, aligned, sampling_ratio):
    _require_kernel()
    feat = torch.randn(2, 37, 23, 31, dtype=dtype)
    rois = _random_rois(120, 2, 4 * 31, dtype)
    expected = torch.ops.torchvision.roi_align(feat, rois, 0.25, 7, 5, sampling_ratio, aligned)
    for layout in (torch.channels_last, torch.contiguous_format):  # the kernel reads either
        out = torch.ops.libdet.roi_align_forward(
            feat.contiguous(memory_format=layout), rois, 0.25, 7, 5, sampling_ratio, aligned
        )
        assert torch.equal(out, expected) and out.is_contiguous()


def test_roi_align_forward_kernel_errors_and_empty():
    _require_kernel()
    feat = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match=r"rois\[1, 0\] is batch index 2"):
        torch.ops.libdet.roi_align_forward(
            feat, torch.tensor([[0.0, 0, 0, 4, 4], [2.0, 0, 0, 4, 4]]), 1.0, 2, 2, 0, True
        )
    assert torch.ops.libdet.roi_align_forward(feat, torch.zeros(0, 5), 1.0, 2, 2, 0, True).shape == (0, 3, 2, 2)


def test_roi_align_module_inference_on_channels_last_map():
    """Without autograd, a channels-last map is pooled by libdet's kernel: torchvision's result, bit for bit."""
    feat = torch.randn(2, 16, 20, 24)
    rois = _random_rois(50, 2, 96.0)
    op = ROIAlign((7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=True)
    with torch.no_grad():
        out = op(feat.contiguous(memory_format=torch.channels_last), rois)
    assert torch.equal(out, roi_align(feat, rois, (7, 7), 0.25, 0, True))


def test_roi_align_backward_kernel_does_not_depend_on_threads():
    _require_kernel()
    rois = _random_rois(64, 1, 128.0)
    grad = torch.randn(64, 256, 7, 7)
    args = (rois, 0.125, 7, 7, 1, 256, 16, 16, 0, True, False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = torch.ops.libdet.roi_align_backward(grad, *args)
        torch.set_num_threads(max(threads, 2))
        assert torch.equal(torch.ops.libdet.roi_align_backward(grad, *args), one_thread)
    finally:
        torch.set_num_threads(threads)


def test_roi_align_backward_kernel_errors_and_empty():
    _require_kernel()
    grad = torch.randn(1, 2, 3, 3)
    with pytest.raises(RuntimeError, match=r"rois\[0, 0\] is batch index 3"):
        torch.ops.libdet.roi_align_backward(
            grad, torch.tensor([[3.0, 0, 0, 4, 4]]), 1.0, 3, 3, 2, 2, 8, 8, 0, True, False
        )
    with pytest.raises(RuntimeError, match="grad must be"):
        torch.ops.libdet.roi_align_backward(grad, torch.zeros(2, 5), 1.0, 3, 3, 2, 2, 8, 8, 0, True, False)
    empty = torch.ops.libdet.roi_align_backward(
        torch.zeros(0, 2, 3, 3), torch.zeros(0, 5), 1.0, 3, 3, 2, 2, 8, 8, 0, True, False
    )
    assert empty.shape == (2, 2, 8, 8) and not empty.any()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_roi_align_module_gradient_equals_torchvision(memory_format):
    """The module's gradient (libdet's kernel when it is built, else torchvision's) is torchvision's, bit for
    bit, and comes back in the input's memory format."""
    feat = torch.randn(2, 16, 20, 24).contiguous(memory_format=memory_format).requires_grad_()
    rois = _random_rois(40, 2, 96.0)
    op = ROIAlign((7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=True)
    out = op(feat, rois)
    from libdet.utils import compiled_ops

    if compiled_ops.use_kernel("roi_align", "cpu"):
        assert type(out.grad_fn).__name__ == "_ROIAlignFunctionBackward"
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), feat)

    reference_feat = feat.detach().contiguous().requires_grad_()
    reference_out = roi_align(reference_feat, rois, (7, 7), 0.25, 0, True)
    (expected,) = torch.autograd.grad((reference_out * weights).sum(), reference_feat)
    assert torch.equal(out, reference_out)
    assert torch.equal(grad, expected)
    assert grad.is_contiguous(memory_format=memory_format)


def test_roi_align_module_without_kernel_uses_torchvision(monkeypatch):
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "roi_align")
    feat = torch.randn(1, 4, 10, 10, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 2.0, 8.0, 9.0]])
    out = ROIAlign((2, 2), 1.0, 2)(feat, rois)
    assert "_ROIAlignFunction" not in type(out.grad_fn).__name__  # torchvision's autograd node
    out.sum().backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
