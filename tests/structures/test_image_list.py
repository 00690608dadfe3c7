import pytest
import torch

from libdet.structures import ImageList


def _images():
    a = torch.arange(3 * 5 * 7, dtype=torch.float32).view(3, 5, 7)
    b = -torch.arange(3 * 6 * 4, dtype=torch.float32).view(3, 6, 4) - 1
    return a, b


def test_from_tensors_pads_bottom_right():
    a, b = _images()
    images = ImageList.from_tensors([a, b], pad_value=-100.0)
    assert images.tensor.shape == (2, 3, 6, 7)
    assert images.image_sizes == [(5, 7), (6, 4)]
    assert all(isinstance(v, int) for size in images.image_sizes for v in size)
    assert len(images) == 2
    assert torch.equal(images[0], a) and torch.equal(images[1], b)
    # Padding sits after the image on both axes, never before.
    assert torch.equal(images.tensor[0, :, :5, :7], a)
    assert (images.tensor[0, :, 5:, :] == -100.0).all()
    assert (images.tensor[1, :, :, 4:] == -100.0).all()
    assert images.tensor.is_contiguous()


@pytest.mark.parametrize(
    "size_divisibility, constraints, expected_hw",
    [
        (0, None, (9, 7)),
        (1, None, (9, 7)),
        (4, None, (12, 8)),
        (32, None, (32, 32)),
        (4, {"size_divisibility": 8}, (16, 8)),  # the constraint overrides the argument
        (0, {"square_size": 10}, (10, 10)),
        (0, {"square_size": 10, "size_divisibility": 4}, (12, 12)),
        (0, {"square_size": 0}, (9, 7)),  # 0 disables square padding
    ],
)
def test_padded_sizes(size_divisibility, constraints, expected_hw):
    a = torch.ones(3, 5, 7)
    b = torch.ones(3, 9, 3)
    images = ImageList.from_tensors([a, b], size_divisibility=size_divisibility, padding_constraints=constraints)
    assert tuple(images.tensor.shape) == (2, 3) + expected_hw
    assert images.image_sizes == [(5, 7), (9, 3)]
    assert images.tensor.sum().item() == 3 * (5 * 7 + 9 * 3)


def test_single_image():
    a = torch.ones(3, 5, 7)
    images = ImageList.from_tensors([a], size_divisibility=4, pad_value=2.5)
    assert images.tensor.shape == (1, 3, 8, 8)
    assert torch.equal(images[0], a)
    assert (images.tensor[0, :, 5:, :] == 2.5).all() and (images.tensor[0, :, :, 7:] == 2.5).all()
    square = ImageList.from_tensors([a], padding_constraints={"square_size": 9})
    assert square.tensor.shape == (1, 3, 9, 9)


def test_two_dimensional_images():
    images = ImageList.from_tensors([torch.ones(5, 7), torch.ones(6, 4)], size_divisibility=2)
    assert images.tensor.shape == (2, 6, 8)
    assert images[1].shape == (6, 4)
    assert images.tensor.sum().item() == 5 * 7 + 6 * 4


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        ImageList.from_tensors([])
    with pytest.raises(ValueError, match=r"`tensors\[1\]` has shape \(1, 5, 5\).*\(3, 5, 5\)"):
        ImageList.from_tensors([torch.zeros(3, 5, 5), torch.zeros(1, 5, 5)])
    with pytest.raises(TypeError, match="list or tuple"):
        ImageList.from_tensors(torch.zeros(2, 3, 5, 5))
    with pytest.raises(TypeError, match=r"`tensors\[0\]`"):
        ImageList.from_tensors([[1.0, 2.0]])
    with pytest.raises(ValueError, match="square_size'\\]=8 is smaller"):
        ImageList.from_tensors([torch.zeros(3, 9, 5)], padding_constraints={"square_size": 8})


def test_to_and_device():
    images = ImageList.from_tensors([torch.ones(3, 4, 4, dtype=torch.uint8), torch.ones(3, 2, 5, dtype=torch.uint8)])
    assert images.tensor.dtype == torch.uint8
    as_float = images.to(torch.float32)
    assert isinstance(as_float, ImageList) and as_float.tensor.dtype == torch.float32
    assert as_float.image_sizes == images.image_sizes
    assert as_float.device == torch.device("cpu")
    assert torch.equal(as_float[1], torch.ones(3, 2, 5))
