import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers.wrappers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Linear,
    cat,
    cross_entropy,
    empty_input_loss_func_wrapper,
    interpolate,
    move_device_like,
    nonzero_tuple,
    shapes_to_tensor,
)

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.(script|trace)` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


_D2_LAYERS_NAMES = """
ASPP BatchNorm2d CNNBlockBase Conv2d ConvTranspose2d CycleBatchNormList DeformConv DepthwiseSeparableConv2d
FrozenBatchNorm2d Linear ModulatedDeformConv NaiveSyncBatchNorm ROIAlign ROIAlignRotated ShapeSpec aspp
batch_norm batched_nms batched_nms_rotated blocks cat ciou_loss cross_entropy deform_conv diou_loss
empty_input_loss_func_wrapper get_norm interpolate losses mask_ops move_device_like nms nms_rotated
nonzero_tuple paste_masks_in_image roi_align roi_align_rotated shape_spec shapes_to_tensor wrappers
""".split()


def test_layers_package_exports_detectron2_names():
    import libdet.layers as layers

    missing = [n for n in _D2_LAYERS_NAMES + ["LayerNorm", "box_iou_rotated"] if n not in layers.__all__]
    assert missing == []
    assert all(hasattr(layers, n) for n in layers.__all__)
    assert layers.roi_align is __import__("torchvision").ops.roi_align
    spec = layers.ShapeSpec(channels=256, stride=4)
    assert (spec.channels, spec.height, spec.width, spec.stride) == (256, None, None, 4)
    with pytest.raises(AttributeError):
        spec.channels = 3  # frozen


def test_reexports_are_torch():
    assert ConvTranspose2d is nn.ConvTranspose2d
    assert BatchNorm2d is nn.BatchNorm2d
    assert Linear is nn.Linear
    assert interpolate is F.interpolate


def test_conv2d_with_norm_and_activation_matches_manual():
    conv = Conv2d(3, 4, kernel_size=3, padding=1, bias=False, norm=nn.BatchNorm2d(4), activation=F.relu)
    conv.norm.running_mean.uniform_(-1, 1)
    conv.norm.running_var.uniform_(0.5, 2)
    conv.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = F.relu(conv.norm(F.conv2d(x, conv.weight, None, padding=1)))
    torch.testing.assert_close(conv(x), expected)
    assert list(conv.state_dict().keys()) == [
        "weight",
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    ]


def test_conv2d_scripted():
    conv = Conv2d(3, 4, kernel_size=3, padding=1, norm=nn.GroupNorm(2, 4), activation=nn.ReLU())
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(torch.jit.script(conv)(x), conv(x))


@pytest.mark.parametrize(
    "function, module_class",
    [
        (F.relu, nn.ReLU),
        (torch.relu, nn.ReLU),
        (F.gelu, nn.GELU),
        (torch.sigmoid, nn.Sigmoid),
        (F.leaky_relu, nn.LeakyReLU),
    ],
)
def test_conv2d_function_activation_is_stored_as_module_and_scripts(function, module_class):
    """detectron2 code passes ``activation=F.relu``: stored as the equivalent module, the outputs are the
    function's, the state_dict keys do not change and TorchScript can script the conv."""
    conv = Conv2d(3, 4, kernel_size=3, padding=1, norm=nn.GroupNorm(2, 4), activation=function)
    assert type(conv.activation) is module_class
    assert f"(activation): {module_class.__name__}(" in repr(conv)
    assert list(conv.state_dict()) == ["weight", "bias", "norm.weight", "norm.bias"]
    x = torch.randn(2, 3, 6, 5)
    expected = function(conv.norm(F.conv2d(x, conv.weight, conv.bias, padding=1)))
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.jit.script(conv)(x), expected, rtol=0, atol=0)


def _double(x):
    return x * 2


def test_conv2d_other_function_activation_works_eagerly_and_names_itself_when_scripted():
    conv = Conv2d(3, 4, kernel_size=1, activation=_double)
    assert conv.activation is _double
    assert repr(conv).endswith("activation=tests.layers.test_wrappers._double)")
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(conv(x), 2 * F.conv2d(x, conv.weight, conv.bias))
    with pytest.raises(TypeError, match=r"activation=tests\.layers\.test_wrappers\._double.*nn\.ReLU\(\)"):
        torch.jit.script(nn.Sequential(conv))  # also as a submodule
    assert conv.activation is _double  # the failed scripting left the module as it was
    with pytest.raises(TypeError, match="`activation` must be a callable"):
        Conv2d(3, 4, kernel_size=1, activation="relu")


def test_conv2d_without_norm_is_nn_conv2d():
    ref = nn.Conv2d(3, 5, kernel_size=3, stride=2, padding=1, padding_mode="reflect")
    conv = Conv2d(3, 5, kernel_size=3, stride=2, padding=1, padding_mode="reflect")
    conv.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 9, 7)
    torch.testing.assert_close(conv(x), ref(x))
    assert conv.norm is None and conv.activation is None


@pytest.mark.parametrize("training", [True, False])
def test_conv2d_empty_batch(training):
    conv = Conv2d(3, 4, kernel_size=3, stride=2, padding=1, norm=nn.BatchNorm2d(4), activation=nn.ReLU())
    conv.train(training)
    x = torch.zeros(0, 3, 9, 10, requires_grad=True)
    out = conv(x)
    assert out.shape == (0, 4, 5, 5)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert conv.weight.grad is not None
    assert torch.count_nonzero(conv.weight.grad) == 0


def test_cat():
    a = torch.randn(2, 3)
    assert cat([a]) is a
    torch.testing.assert_close(cat([a, a], dim=1), torch.cat([a, a], dim=1))
    torch.testing.assert_close(cat((a, a)), torch.cat([a, a]))
    with pytest.raises(TypeError, match="tensors"):
        cat(a)


def test_nonzero_tuple_eager_and_scripted():
    x = torch.tensor([[0, 1, 0], [2, 0, 3]])
    expected = x.nonzero(as_tuple=True)
    scripted = torch.jit.script(nonzero_tuple)
    for fn in (nonzero_tuple, scripted):
        got = fn(x)
        assert len(got) == 2
        for g, e in zip(got, expected):
            assert torch.equal(g, e)
    zero_d = scripted(torch.tensor(5))
    assert len(zero_d) == 1 and torch.equal(zero_d[0], torch.tensor([0]))


def test_shapes_to_tensor():
    t = shapes_to_tensor([3, 4])
    assert torch.equal(t, torch.tensor([3, 4]))
    scripted = torch.jit.script(shapes_to_tensor)
    assert torch.equal(scripted([5, 6], None), torch.tensor([5, 6]))


def test_move_device_like():
    src = torch.arange(3)
    dst = torch.zeros(1, dtype=torch.float64)
    out = move_device_like(src, dst)
    assert out.device == dst.device and out.dtype == src.dtype


def test_cross_entropy_empty_input_is_connected_zero():
    logits = torch.randn(0, 5, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    loss = cross_entropy(logits, target)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == (0, 5)


def test_cross_entropy_nonempty_matches_torch():
    logits = torch.randn(6, 5)
    target = torch.tensor([0, 1, 2, 3, 4, 1])
    torch.testing.assert_close(cross_entropy(logits, target), F.cross_entropy(logits, target))
    torch.testing.assert_close(
        cross_entropy(logits, target, reduction="sum", ignore_index=1),
        F.cross_entropy(logits, target, reduction="sum", ignore_index=1),
    )


def test_empty_input_loss_func_wrapper_only_changes_empty_mean():
    calls = []

    def loss_func(input, target, reduction="mean"):
        calls.append(reduction)
        return input.sum() + 1.0

    wrapped = empty_input_loss_func_wrapper(loss_func)
    empty = torch.zeros(0, 2, requires_grad=True)
    assert wrapped(empty, torch.zeros(0)).item() == 0.0
    assert calls == []
    assert wrapped(empty, torch.zeros(0), reduction="sum").item() == 1.0
    assert calls == ["sum"]


def _random_frozen_norm(channels: int):
    from libdet.layers import FrozenBatchNorm2d

    norm = FrozenBatchNorm2d(channels)
    norm.weight.uniform_(0.5, 2.0)
    norm.bias.normal_()
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    return norm


@pytest.mark.parametrize("bias", [False, True])
def test_conv_folds_frozen_norm_in_eager(bias):
    """A FrozenBatchNorm2d norm is folded into the conv weights: the conv-then-norm result up to rounding,
    gradients included; tracing keeps the two separate layers."""
    torch.manual_seed(0)
    norm = _random_frozen_norm(6)
    conv = Conv2d(4, 6, kernel_size=3, padding=1, bias=bias, norm=norm, activation=F.relu)
    x = torch.randn(2, 4, 9, 11, requires_grad=True)

    def unfolded(inp):
        return F.relu(norm(F.conv2d(inp, conv.weight, conv.bias, padding=1)))

    out = conv(x)
    expected = unfolded(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, conv.weight))
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-4, rtol=1e-4)
    assert conv._folds_frozen_norm()

    traced = torch.jit.trace(conv, x.detach())
    assert torch.equal(traced(x.detach()), unfolded(x.detach()))  # the trace holds the unfolded layers

    # A norm with a hook runs as a module (its hook sees its input): the unfolded result, exactly.
    seen = []
    handle = norm.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape))
    assert not conv._folds_frozen_norm()
    hooked = conv(x.detach())
    assert seen == [(2, 6, 9, 11)]
    assert torch.equal(hooked, unfolded(x.detach()))
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    assert not conv._folds_frozen_norm()
    handle.remove()
    assert conv._folds_frozen_norm()


@pytest.mark.parametrize("bias", [False, True])
def test_fold_frozen_norm_in_place(bias):
    """`fold_frozen_norm_` stores the weights the eager fold computes: the same output, bit for bit, from one
    convolution with a bias and no norm; other norms are left alone."""
    torch.manual_seed(0)
    norm = _random_frozen_norm(6)
    conv = Conv2d(4, 6, kernel_size=3, padding=1, bias=bias, norm=norm, activation=F.relu)
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        expected = conv(x)
        assert conv.fold_frozen_norm_()
        assert conv.norm is None and conv.bias is not None and conv.bias.requires_grad
        assert torch.equal(conv(x), expected)
        assert torch.equal(conv(x), F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)))
    assert not conv.fold_frozen_norm_()  # nothing left to fold

    group_norm = Conv2d(4, 6, kernel_size=1, norm=torch.nn.GroupNorm(2, 6))
    assert not group_norm.fold_frozen_norm_()
    assert isinstance(group_norm.norm, torch.nn.GroupNorm)
