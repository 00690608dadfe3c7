"""BatchPredictor gives, in input order, what one DefaultPredictor call per image gives; unreadable images give
per-image errors naming the file."""

import io

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import LazyCall as L
from libdet.data import DatasetMapper
from libdet.data.detection_utils import read_image
from libdet.data.errors import ImageNotFoundError, ImageReadError
from libdet.data.transforms import RandomFlip, ResizeShortestEdge
from libdet.engine import BatchPredictionError, BatchPredictor, DefaultPredictor, PredictionResult
from tests.export import _models

SIZES = dict(min_size_test=64, max_size_test=96)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def mask_rcnn():
    return _models.build("mask_rcnn_fpn")


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random (h, w, 3) uint8 image (smooth, so that JPEG keeps it close and detections vary)."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def _inputs(tmp_path):
    """Paths (PNG, JPEG), bytes, a BGR array, a corrupt file, a missing file, an image of another padded size (sharing
    a batch of 3 with two others), and
    each one's expected result as ``(source, BGR image or the expected error type)``."""
    images = [_image(48, 64, i) for i in range(5)]
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    Image.fromarray(images[1]).save(tmp_path / "b.jpg", quality=90)
    png = io.BytesIO()
    Image.fromarray(images[2]).save(png, format="PNG")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.fromarray(_image(50, 50, 9)).save(tmp_path / "square.png")  # padded to 64x64, the others to 64x96
    bgr = np.ascontiguousarray(images[3][:, :, ::-1])
    inputs = [
        str(tmp_path / "a.png"),
        tmp_path / "b.jpg",
        str(tmp_path / "square.png"),
        str(tmp_path / "corrupt.jpg"),
        png.getvalue(),
        bgr,
        str(tmp_path / "missing.png"),
        np.zeros((8, 8), dtype=np.uint8),  # not (H, W, 3)
    ]
    expected = [
        read_image(str(tmp_path / "a.png"), format="BGR"),
        read_image(str(tmp_path / "b.jpg"), format="BGR"),
        read_image(str(tmp_path / "square.png"), format="BGR"),
        ImageReadError,
        np.ascontiguousarray(images[2][:, :, ::-1]),
        bgr,
        ImageNotFoundError,
        ValueError,
    ]
    return inputs, expected


def _assert_same(expected: dict, got: dict, exact: bool) -> None:
    e, g = expected["instances"], got["instances"]
    assert e.image_size == g.image_size
    assert len(e) == len(g) > 0
    assert sorted(e.get_fields()) == sorted(g.get_fields())
    assert torch.equal(e.pred_classes, g.pred_classes)
    if exact:
        for name in e.get_fields():
            a, b = e.get(name), g.get(name)
            a, b = (a.tensor, b.tensor) if hasattr(a, "tensor") else (a, b)
            assert torch.equal(a, b), name
    else:  # a batched forward may sum in another order
        assert torch.allclose(e.pred_boxes.tensor, g.pred_boxes.tensor, atol=1e-3)
        assert torch.allclose(e.scores, g.scores, atol=1e-5)
        if e.has("pred_masks"):
            assert (e.pred_masks != g.pred_masks).float().mean() < 1e-3


@pytest.mark.parametrize("batch_size, num_workers", [(1, 0), (3, 0), (1, 2), (3, 1), (3, 2)])
def test_batch_predictor_equals_per_image_calls(tmp_path, mask_rcnn, batch_size, num_workers):
    inputs, expected = _inputs(tmp_path)
    single = DefaultPredictor(mask_rcnn, **SIZES)
    predictor = BatchPredictor(mask_rcnn, **SIZES, batch_size=batch_size, num_workers=num_workers)
    results = predictor.predict(inputs, errors="return")
    assert [r.index for r in results] == list(range(len(inputs)))
    for result, source, want in zip(results, inputs, expected):
        assert isinstance(result, PredictionResult)
        if isinstance(want, type):  # an expected failure
            assert not result.ok and result.outputs is None and result.instances is None
            assert isinstance(result.error, want), result.error
            if isinstance(source, str):
                assert source in str(result.error) and result.source == source
            continue
        assert result.ok, result.error
        # one image per forward reproduces DefaultPredictor bit for bit; batches agree to rounding
        _assert_same(single(want), result.outputs, exact=batch_size == 1)
    assert results[4].source == "<bytes #4>" and results[5].source == "<array #5>"
    assert results[1].source == str(tmp_path / "b.jpg")


def test_rgb_model_and_a_model_without_separate_postprocessing(tmp_path):
    model = _models.build("retinanet")  # a dense detector: the whole forward runs in the model stage
    inputs, expected = _inputs(tmp_path)
    keep = [i for i, e in enumerate(expected) if not isinstance(e, type)]
    single = DefaultPredictor(model, **SIZES, input_format="RGB")
    predictor = BatchPredictor(model, **SIZES, input_format="RGB", batch_size=2, num_workers=2)
    outputs = predictor([inputs[i] for i in keep])
    assert len(outputs) == len(keep)
    for i, got in zip(keep, outputs):
        _assert_same(single(expected[i]), got, exact=False)


def test_failures_are_raised_together_after_the_other_images(tmp_path, mask_rcnn):
    inputs, expected = _inputs(tmp_path)
    predictor = BatchPredictor(mask_rcnn, **SIZES, batch_size=2, num_workers=1)
    with pytest.raises(BatchPredictionError) as info:
        predictor.predict(inputs)
    err = info.value
    assert [f.index for f in err.failures] == [3, 6, 7]
    assert "corrupt.jpg" in str(err) and "missing.png" in str(err) and "(H, W, 3)" in str(err)
    assert len(err.results) == len(inputs) and sum(r.ok for r in err.results) == 5
    with pytest.raises(BatchPredictionError, match="missing.png"):
        predictor(inputs)  # __call__ returns bare outputs, so it never hides a failure


def test_predict_iter_streams_in_order_and_consumes_lazily(tmp_path, mask_rcnn):
    inputs, expected = _inputs(tmp_path)
    pulled = []

    def images():
        for i, x in enumerate(inputs):
            pulled.append(i)
            yield x

    predictor = BatchPredictor(mask_rcnn, **SIZES, batch_size=1, num_workers=1)
    stream = predictor.predict_iter(images())
    first = next(stream)
    assert first.index == 0 and first.ok
    assert len(pulled) < len(inputs)  # decoded ahead by a bounded number of images, not the whole input
    rest = []
    with pytest.raises(BatchPredictionError) as info:
        for result in stream:
            rest.append(result)
    assert [r.index for r in [first, *rest]] == [0, 1, 2, 4, 5]  # failures are not yielded with errors="raise"
    assert [f.index for f in info.value.failures] == [3, 6, 7] and info.value.results is None
    returned = list(predictor.predict_iter(inputs, errors="return"))
    assert [r.index for r in returned] == list(range(len(inputs)))
    assert [r.ok for r in returned] == [not isinstance(e, type) for e in expected]


def test_arguments_are_checked(mask_rcnn, tmp_path):
    for bad in (dict(batch_size=0), dict(num_workers=-1), dict(batch_size=2.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BatchPredictor(mask_rcnn, **bad)
    predictor = BatchPredictor(mask_rcnn, **SIZES)
    with pytest.raises(ValueError, match="errors must be"):
        predictor.predict([], errors="ignore")
    for single in (str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8), b"bytes"):
        with pytest.raises(TypeError, match="wrap it in a list"):
            predictor.predict(single)
    assert predictor.predict([]) == [] and predictor([]) == []
    (result,) = predictor.predict([1234], errors="return")
    assert isinstance(result.error, TypeError) and "image 0 is a int" in str(result.error)


def test_from_lazy_config_loads_weights_sizes_and_format(tmp_path, mask_rcnn):
    DetectionCheckpointer(mask_rcnn, str(tmp_path)).save("model_final")
    cfg = OmegaConf.create()
    cfg.model = _models.FAMILIES["mask_rcnn_fpn"]()
    cfg.train = dict(init_checkpoint=str(tmp_path / "model_final.pth"), device="cpu")
    cfg.dataloader = dict(
        test=dict(
            mapper=L(DatasetMapper)(
                is_train=False,
                augmentations=[L(RandomFlip)(prob=0.0), L(ResizeShortestEdge)(short_edge_length=64, max_size=96)],
                image_format="RGB",
            )
        )
    )
    predictor = BatchPredictor.from_lazy_config(cfg, batch_size=2, num_workers=1)
    assert (predictor.input_format, predictor.batch_size, predictor.num_workers) == ("RGB", 2, 1)
    assert (predictor.aug.short_edge_length, predictor.aug.max_size) == ((64, 64), 96)
    image = _image(48, 64, 0)
    single = DefaultPredictor(mask_rcnn, **SIZES, input_format="RGB")
    _assert_same(single(image), predictor([image])[0], exact=True)

    cfg.train.init_checkpoint = ""
    with pytest.raises(ValueError, match="init_checkpoint"):
        BatchPredictor.from_lazy_config(cfg)
    cfg.dataloader.test.mapper.augmentations = [L(RandomFlip)(prob=0.0)]
    with pytest.raises(ValueError, match="no ResizeShortestEdge"):
        BatchPredictor.from_lazy_config(cfg, weights=str(tmp_path / "model_final.pth"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_predictor_on_cuda(tmp_path, mask_rcnn):
    model = _models.build("mask_rcnn_fpn").cuda()
    inputs, expected = _inputs(tmp_path)
    keep = [i for i, e in enumerate(expected) if not isinstance(e, type)]
    single = DefaultPredictor(model, **SIZES)
    results = BatchPredictor(model, **SIZES, batch_size=2, num_workers=2).predict([inputs[i] for i in keep])
    for i, result in zip(keep, results):
        expected_out = single(expected[i])
        assert result.instances.pred_boxes.device.type == "cuda"
        _assert_same(
            {"instances": expected_out["instances"].to("cpu")}, {"instances": result.instances.to("cpu")}, False
        )
