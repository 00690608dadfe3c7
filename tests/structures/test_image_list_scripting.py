"""ImageList compiles with TorchScript, as in detectron2, and pads exactly as in eager mode."""

import pytest
import torch

from libdet.structures import ImageList

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _build(tensor: torch.Tensor, sizes: list[tuple[int, int]]):
    images = ImageList(tensor, sizes)
    return images.tensor, images.image_sizes, images[1], len(images)


def _pad(tensors: list[torch.Tensor], size_divisibility: int, square: int):
    constraints = {"square_size": square} if square > 0 else None
    images = ImageList.from_tensors(tensors, size_divisibility, 0.5, constraints)
    return images.tensor, images.image_sizes


def test_construct_and_index_in_script():
    scripted = torch.jit.script(_build)
    tensor = torch.rand(2, 3, 10, 20)
    out = scripted(tensor, [(10, 20), (8, 9)])
    assert torch.equal(out[0], tensor) and out[1] == [(10, 20), (8, 9)]
    assert torch.equal(out[2], tensor[1, :, :8, :9]) and out[3] == 2


@pytest.mark.parametrize("size_divisibility, square", [(0, 0), (10, 0), (32, 0), (0, 30), (8, 30)])
@pytest.mark.parametrize("num_images", [1, 3])
def test_from_tensors_in_script_matches_eager(size_divisibility, square, num_images):
    scripted = torch.jit.script(_pad)
    gen = torch.Generator().manual_seed(num_images)
    shapes = [(10, 20), (12, 22), (7, 3)][:num_images]
    tensors = [torch.rand(3, h, w, generator=gen) for h, w in shapes]
    expected = _pad(tensors, size_divisibility, square)
    actual = scripted(tensors, size_divisibility, square)
    assert torch.equal(actual[0], expected[0]) and actual[1] == expected[1]


def test_scripted_square_size_too_small_raises():
    scripted = torch.jit.script(_pad)
    with pytest.raises(torch.jit.Error, match="square_size"):
        scripted([torch.rand(3, 10, 40)], 0, 30)
