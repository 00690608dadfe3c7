"""SwapAlign2Nat: the twin against a literal reference, the C++ kernel against the twin, gradients, CUDA."""

import importlib
import math

import pytest
import torch

from libdet.utils import compiled_ops

op_module = importlib.import_module("tensormask.layers.swap_align2nat")
SwapAlign2Nat = op_module.SwapAlign2Nat
swap_align2nat = op_module.swap_align2nat
twin = op_module._swap_align2nat_twin
OP = op_module.SWAP_ALIGN2NAT_OP


def _reference(X: torch.Tensor, lam: int, pad: float) -> torch.Tensor:
    """Element by element, as the op's definition reads (16 corners, floor and ceil, pad outside)."""
    n, c, h, w = X.shape
    side = math.isqrt(c)
    so, ho, wo = lam * side, math.ceil(h / lam), math.ceil(w / lam)
    Xr = X.reshape(n, side, side, h, w)
    out = torch.empty(n, so, so, ho, wo, dtype=X.dtype)

    def corners(p):
        lo, hi = math.floor(p), math.ceil(p)
        return [(lo, 1 - (p - lo)), (hi, p - lo)]

    def value(b, iv, iu, iy, ix):
        if 0 <= iv < side and 0 <= iu < side and 0 <= iy < h and 0 <= ix < w:
            return float(Xr[b, iv, iu, iy, ix])
        return pad

    for b in range(n):
        for v in range(so):
            for u in range(so):
                for y in range(ho):
                    for x in range(wo):
                        total = 0.0
                        for iy, wy in corners(y * lam + v - so / 2 + 0.5):
                            for ix, wx in corners(x * lam + u - so / 2 + 0.5):
                                for iv, wv in corners((v + 0.5) / lam - 0.5):
                                    for iu, wu in corners((u + 0.5) / lam - 0.5):
                                        total += wy * wx * wv * wu * value(b, iv, iu, iy, ix)
                        out[b, v, u, y, x] = total
    return out.reshape(n, so * so, ho, wo)


def _kernel_or_skip():
    if not OP.load():
        pytest.skip(f"compiled swap_align2nat unavailable: {compiled_ops.ops_status()['swap_align2nat']}")


@pytest.fixture
def no_disable_env(monkeypatch):
    monkeypatch.delenv("LIBDET_DISABLE_OPS", raising=False)


@pytest.mark.parametrize("lam,side,h,w", [(1, 3, 5, 6), (2, 2, 5, 4), (3, 2, 4, 7), (2, 3, 3, 3)])
def test_twin_matches_the_literal_definition(lam, side, h, w):
    X = torch.randn(2, side * side, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(lam * 10 + side))
    torch.testing.assert_close(twin(X, lam, -6.0), _reference(X, lam, -6.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lam,h,w", [(1, 7, 9), (2, 7, 9), (2, 8, 8), (3, 10, 4), (4, 1, 1), (32, 33, 64)])
def test_output_shape_rule(lam, h, w):
    X = torch.randn(2, 9, h, w)
    Y = swap_align2nat(X, lam)
    assert Y.shape == (2, (3 * lam) ** 2, math.ceil(h / lam), math.ceil(w / lam))
    assert SwapAlign2Nat(lam)(X).shape == Y.shape
    assert twin(X, lam, -6.0).shape == Y.shape


@pytest.mark.parametrize("side", [1, 3, 5])
def test_lambda_one_with_odd_side_is_an_integer_shift(side):
    X = torch.randn(1, side * side, 6, 7, generator=torch.Generator().manual_seed(side))
    pad = -6.0
    Y = swap_align2nat(X, 1, pad).reshape(1, side, side, 6, 7)
    Xr = X.reshape(1, side, side, 6, 7)
    half = side // 2
    expected = torch.full_like(Y, pad)
    for v in range(side):
        for u in range(side):
            dy, dx = v - half, u - half  # natural pixel (v, u) of window (y, x) is aligned pixel (v, u) at (y+dy, x+dx)
            for y in range(6):
                for x in range(7):
                    if 0 <= y + dy < 6 and 0 <= x + dx < 7:
                        expected[0, v, u, y, x] = Xr[0, v, u, y + dy, x + dx]
    assert torch.equal(Y, expected)  # exact: every weight is 0 or 1


def test_pad_behaviour_at_borders():
    # A constant input: interior values keep the constant, values whose corners leave the map mix in pad_val.
    X = torch.full((1, 9, 6, 6), 2.0, dtype=torch.float64)
    for pad in (-6.0, 0.0, 3.5):
        Y = swap_align2nat(X, 2, pad).reshape(1, 6, 6, 3, 3)
        ref = _reference(X, 2, pad).reshape(1, 6, 6, 3, 3)
        torch.testing.assert_close(Y, ref, rtol=0, atol=1e-12)
        # Window (1, 1): mask pixels 1..4 sample rows/columns 0.5..3.5 and mask positions 0.25..1.75, all
        # inside X, so they read only X's value.
        torch.testing.assert_close(Y[0, 1:5, 1:5, 1, 1], torch.full((4, 4), 2.0, dtype=torch.float64))
        # Mask pixel (0, 2) reads mask row -0.25 (3/4 of the weight inside) and spatial row -0.5 (1/2 inside);
        # its mask column 0.75 and spatial column 1.5 are inside.
        inside = 0.75 * 0.5
        assert Y[0, 0, 2, 1, 1].item() == pytest.approx(inside * 2.0 + (1 - inside) * pad)
        # The window's corner pixel (v, u) = (0, 0) at (0, 0) reads spatial (-2.5, -2.5): all pad.
        assert Y[0, 0, 0, 0, 0].item() == pytest.approx(pad)
    # pad_val = 0: a zero input gives exactly zero everywhere.
    assert torch.equal(swap_align2nat(torch.zeros(1, 4, 3, 3), 2, 0.0), torch.zeros(1, 16, 2, 2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="square number"):
        swap_align2nat(torch.zeros(1, 8, 4, 4), 2)
    with pytest.raises(ValueError, match="lambda_val"):
        SwapAlign2Nat(0)
    with pytest.raises(ValueError, match=r"\[N, V\*V, H, W\]"):
        swap_align2nat(torch.zeros(9, 4, 4), 1)
    with pytest.raises(TypeError, match="floating point"):
        swap_align2nat(torch.zeros(1, 9, 4, 4, dtype=torch.int64), 1)


def test_empty_inputs_give_empty_outputs_with_gradients():
    for shape in [(0, 9, 4, 4), (2, 9, 0, 5)]:
        X = torch.zeros(shape, requires_grad=True)
        Y = swap_align2nat(X, 2)
        assert Y.shape == (shape[0], 36, math.ceil(shape[2] / 2), math.ceil(shape[3] / 2))
        Y.sum().backward()
        assert X.grad.shape == X.shape


def test_twin_gradcheck():
    X = torch.randn(2, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    for lam in (1, 2, 3):
        assert torch.autograd.gradcheck(lambda x, lam=lam: twin(x, lam, -6.0), (X,))


def test_kernel_gradcheck(no_disable_env):
    _kernel_or_skip()
    X = torch.randn(2, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    for lam in (1, 2, 3):
        assert torch.autograd.gradcheck(lambda x, lam=lam: op_module._SwapAlign2NatFunction.apply(x, lam, -6.0), (X,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam,side", [(1, 3), (1, 4), (2, 3), (4, 2), (3, 5)])
def test_kernel_matches_twin_forward_and_backward(no_disable_env, dtype, lam, side):
    _kernel_or_skip()
    g = torch.Generator().manual_seed(lam * 7 + side)
    X = torch.randn(2, side * side, 9, 11, generator=g, dtype=dtype)
    Xk = X.clone().requires_grad_()
    Xt = X.clone().requires_grad_()
    Yk = op_module._SwapAlign2NatFunction.apply(Xk, lam, -6.0)
    Yt = twin(Xt, lam, -6.0)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(Yk, Yt, **tol)
    grad = torch.randn(Yk.shape, generator=g, dtype=dtype)
    Yk.backward(grad)
    Yt.backward(grad)
    torch.testing.assert_close(Xk.grad, Xt.grad, **tol)


def test_wrapper_uses_twin_when_disabled(monkeypatch):
    monkeypatch.setenv("LIBDET_DISABLE_OPS", "swap_align2nat")
    assert not OP.use_kernel("cpu")
    X = torch.randn(1, 9, 4, 4)
    assert torch.equal(swap_align2nat(X, 2), twin(X, 2, -6.0))


def test_half_precision_is_computed_in_float32():
    X = torch.randn(1, 9, 4, 4)
    Y = swap_align2nat(X.bfloat16(), 2)
    assert Y.dtype == torch.bfloat16
    torch.testing.assert_close(Y.float(), swap_align2nat(X.bfloat16().float(), 2), rtol=1e-2, atol=1e-2)


def test_fake_kernels_give_shapes_and_export_traces(no_disable_env):
    _kernel_or_skip()
    ops = torch.ops.tensormask
    assert ops.swap_align2nat_forward(torch.empty(2, 9, 7, 9, device="meta"), 2, -6.0).shape == (2, 36, 4, 5)
    assert ops.swap_align2nat_backward(torch.empty(2, 36, 4, 5, device="meta"), 2, 2, 9, 7, 9).shape == (2, 9, 7, 9)
    X = torch.randn(1, 9, 6, 6)
    program = torch.export.export(SwapAlign2Nat(2), (X,))
    assert "tensormask.swap_align2nat_forward" in str(program.graph)
    torch.testing.assert_close(program.module()(X), swap_align2nat(X, 2))


def test_torch_compile_traces_the_kernel(no_disable_env):
    _kernel_or_skip()
    module = SwapAlign2Nat(2)
    X = torch.randn(1, 9, 6, 7)
    module(X)  # the kernel choice is made (and logged) eagerly; the compiled graph then has no break
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    Xc, Xe = X.clone().requires_grad_(), X.clone().requires_grad_()
    Yc, Ye = compiled(Xc), module(Xe)
    torch.testing.assert_close(Yc, Ye)
    Yc.square().sum().backward()
    Ye.square().sum().backward()
    torch.testing.assert_close(Xc.grad, Xe.grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("lam,side", [(1, 3), (2, 3), (4, 2)])
def test_cuda_kernel_matches_twin(no_disable_env, lam, side):
    if not OP.use_kernel("cuda"):
        pytest.skip(f"CUDA kernel of swap_align2nat unavailable: {compiled_ops.ops_status()['swap_align2nat']}")
    X = torch.randn(2, side * side, 9, 11, dtype=torch.float64, device="cuda")
    Xk = X.clone().requires_grad_()
    Xt = X.clone().requires_grad_()
    Yk = swap_align2nat(Xk, lam)
    Yt = twin(Xt, lam, -6.0)
    torch.testing.assert_close(Yk, Yt, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(Yk)
    Yk.backward(grad)
    Yt.backward(grad)
    torch.testing.assert_close(Xk.grad, Xt.grad, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x: swap_align2nat(x, lam), (X[:1, :, :4, :5].clone().requires_grad_(),))
