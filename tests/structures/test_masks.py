import numpy as np
import pytest
import torch

from libdet.structures import BitMasks, Boxes, PolygonMasks, ROIMasks, polygons_to_bitmask
from libdet.structures.masks import polygon_area, rasterize_polygons_within_box, rle_to_bitmask

RECT = [1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0]  # [1, 4] x [1, 3]: area 6
TRIANGLE = [0.0, 0.0, 4.0, 0.0, 0.0, 3.0]  # legs 4 and 3: area 6


def _square_mask() -> torch.Tensor:
    """An 8x8 image whose foreground is the 4x4 square of pixels [2, 6) x [2, 6)."""
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True
    return mask


def test_polygon_area_shoelace():
    assert polygon_area(np.array(RECT[0::2]), np.array(RECT[1::2])) == pytest.approx(6.0)
    assert polygon_area(np.array(TRIANGLE[0::2]), np.array(TRIANGLE[1::2])) == pytest.approx(6.0)
    # Orientation does not matter.
    reversed_rect = np.array(RECT).reshape(-1, 2)[::-1].reshape(-1)
    assert polygon_area(reversed_rect[0::2], reversed_rect[1::2]) == pytest.approx(6.0)


def test_polygons_to_bitmask():
    mask = polygons_to_bitmask([np.array(RECT)], 6, 6)
    assert mask.dtype == bool and mask.shape == (6, 6)
    expected = np.zeros((6, 6), dtype=bool)
    expected[1:3, 1:4] = True  # pixels whose area lies inside x in [1, 4], y in [1, 3]
    np.testing.assert_array_equal(mask, expected)
    assert not polygons_to_bitmask([], 4, 5).any() and polygons_to_bitmask([], 4, 5).shape == (4, 5)
    with pytest.raises(ValueError, match=r"`polygons\[1\]` has 4 coordinates"):
        polygons_to_bitmask([np.array(RECT), np.array([0.0, 0.0, 1.0, 1.0])], 6, 6)


def test_polygon_masks_validation_names_instance():
    with pytest.raises(ValueError, match="polygon 0 of instance 1 has 4 coordinates"):
        PolygonMasks([[RECT], [[0.0, 0.0, 1.0, 1.0]]])
    with pytest.raises(ValueError, match="polygon 1 of instance 0 has 7 coordinates"):
        PolygonMasks([[RECT, RECT[:7]]])
    with pytest.raises(ValueError, match="must be a list"):
        PolygonMasks(np.zeros((1, 1, 6)))
    with pytest.raises(ValueError, match="instance 0 must be a list of polygons"):
        PolygonMasks([np.array(RECT)])


def test_polygon_masks_area_boxes_nonempty():
    shifted_triangle = [10.0, 10.0, 14.0, 10.0, 10.0, 13.0]
    pm = PolygonMasks([[RECT], [TRIANGLE, shifted_triangle], []])
    assert all(p.dtype == np.float64 for per in pm.polygons for p in per)
    torch.testing.assert_close(pm.area(), torch.tensor([6.0, 12.0, 0.0]))
    expected_boxes = torch.tensor([[1.0, 1.0, 4.0, 3.0], [0.0, 0.0, 14.0, 13.0], [0.0, 0.0, 0.0, 0.0]])
    boxes = pm.get_bounding_boxes()
    assert isinstance(boxes, Boxes)
    torch.testing.assert_close(boxes.tensor, expected_boxes)
    assert pm.nonempty().tolist() == [True, True, False]
    # Polygons given as tensors or (K, 2) arrays are flattened to float64 coordinate arrays.
    pm2 = PolygonMasks([[torch.tensor(RECT)], [np.array(TRIANGLE).reshape(3, 2)]])
    torch.testing.assert_close(pm2.area(), torch.tensor([6.0, 6.0]))


def test_polygon_bitmask_box_round_trip():
    pm = PolygonMasks([[RECT], [[2.0, 3.0, 7.0, 3.0, 7.0, 8.0, 2.0, 8.0]]])
    bm = BitMasks.from_polygon_masks(pm, 10, 12)
    assert bm.tensor.shape == (2, 10, 12) and bm.image_size == (10, 12)
    torch.testing.assert_close(bm.get_bounding_boxes().tensor, pm.get_bounding_boxes().tensor)
    torch.testing.assert_close(bm.area(), pm.area())
    from_list = BitMasks.from_polygon_masks(pm.polygons, 10, 12)
    assert torch.equal(from_list.tensor, bm.tensor)
    assert BitMasks.from_polygon_masks([], 4, 5).tensor.shape == (0, 4, 5)


def test_polygon_masks_indexing():
    polys = [[[float(i), 0.0, i + 1.0, 0.0, i + 1.0, 1.0]] for i in range(4)]
    pm = PolygonMasks(polys)

    def firsts(p):
        return [per[0][0] for per in p.polygons]

    assert firsts(pm[2]) == [2.0]
    assert firsts(pm[-1]) == [3.0]
    assert firsts(pm[1:3]) == [1.0, 2.0]
    assert firsts(pm[[3, 0]]) == [3.0, 0.0]
    assert firsts(pm[[True, False, True, False]]) == [0.0, 2.0]
    assert firsts(pm[torch.tensor([False, True, True, True])]) == [1.0, 2.0, 3.0]
    assert firsts(pm[torch.tensor([1, 1])]) == [1.0, 1.0]
    assert firsts(pm[np.array([2])]) == [2.0]
    assert firsts(pm[np.int64(3)]) == [3.0]
    assert len(pm[[]]) == 0 and len(pm[torch.zeros(4, dtype=torch.bool)]) == 0
    for item in (pm[0], pm[:2], pm[[0]], pm[torch.tensor([0])]):
        assert isinstance(item, PolygonMasks)
    with pytest.raises(ValueError, match="dtype"):
        pm[torch.tensor([0.0])]
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        pm[torch.tensor([True, False])]


def test_polygon_masks_cat_iter_to_repr():
    a = PolygonMasks([[RECT]])
    b = PolygonMasks([[TRIANGLE], [RECT, TRIANGLE]])
    cat = PolygonMasks.cat([a, b])
    assert len(cat) == 3 and len(cat.polygons[2]) == 2
    np.testing.assert_array_equal(cat.polygons[1][0], np.array(TRIANGLE))
    with pytest.raises(ValueError, match="non-empty"):
        PolygonMasks.cat([])
    with pytest.raises(TypeError, match=r"polymasks_list\[1\]"):
        PolygonMasks.cat([a, BitMasks(torch.zeros(1, 2, 2))])
    assert len(list(b)) == 2
    assert b.to("cpu") is b and b.device == torch.device("cpu")
    assert repr(b) == "PolygonMasks(num_instances=2)"


def test_polygon_crop_and_resize():
    square = [2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0]
    pm = PolygonMasks([[square], [square]])
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 8.0, 8.0]])
    out = pm.crop_and_resize(boxes, 4)
    assert out.dtype == torch.bool and out.shape == (2, 4, 4)
    assert out[0].all()  # the box is exactly the polygon
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True  # the polygon is the middle half of the box
    assert torch.equal(out[1], expected)
    assert torch.equal(pm.crop_and_resize(Boxes(boxes), 4), out)
    assert pm[:0].crop_and_resize(torch.zeros(0, 4), 4).shape == (0, 4, 4)
    with pytest.raises(ValueError, match="got 1 boxes for 2 instances"):
        pm.crop_and_resize(boxes[:1], 4)
    # The helper does not modify the polygons it is given.
    poly = [np.array(square)]
    rasterize_polygons_within_box(poly, np.array([0.0, 0.0, 8.0, 8.0]), 4)
    np.testing.assert_array_equal(poly[0], np.array(square))


def test_bitmasks_construction_area_nonempty():
    arr = np.zeros((3, 4, 5), dtype=np.uint8)
    arr[0, 1, 1] = 7
    arr[2] = 1
    bm = BitMasks(arr)
    assert bm.tensor.dtype == torch.bool and bm.image_size == (4, 5)
    torch.testing.assert_close(bm.area(), torch.tensor([1.0, 0.0, 20.0]))
    assert bm.nonempty().tolist() == [True, False, True]
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        BitMasks(torch.zeros(4, 5))


def test_bitmasks_bounding_boxes():
    t = torch.zeros(4, 5, 6, dtype=torch.bool)
    t[0, 1:3, 2:5] = True  # rows 1-2, columns 2-4
    t[2, 4, 0] = True  # bottom-left pixel
    t[3, 0, 5] = True  # top-right pixel
    t[3, 3, 1] = True  # the box spans both pixels
    boxes = BitMasks(t).get_bounding_boxes()
    expected = torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0], [0.0, 4.0, 1.0, 5.0], [1.0, 0.0, 6.0, 4.0]])
    torch.testing.assert_close(boxes.tensor, expected)
    assert BitMasks(torch.zeros(0, 5, 6)).get_bounding_boxes().tensor.shape == (0, 4)


def test_bitmasks_crop_and_resize():
    bm = BitMasks(_square_mask().repeat(3, 1, 1))
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 2.0, 2.0]])
    out = bm.crop_and_resize(boxes, 4)
    assert out.dtype == torch.bool and out.shape == (3, 4, 4)
    assert out[0].all()
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(out[1], expected)
    assert not out[2].any()
    # Polygon rasterization of the same square gives the same targets.
    pm = PolygonMasks([[[2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0]]] * 3)
    assert torch.equal(pm.crop_and_resize(boxes, 4), out)
    assert torch.equal(bm.crop_and_resize(Boxes(boxes), 4), out)
    assert bm[:0].crop_and_resize(torch.zeros(0, 4), 4).shape == (0, 4, 4)
    with pytest.raises(ValueError, match="got 2 boxes for 3 masks"):
        bm.crop_and_resize(boxes[:2], 4)


def test_bitmasks_indexing_cat_to():
    t = torch.zeros(3, 2, 2, dtype=torch.bool)
    t[1, 0, 0] = True
    t[2] = True
    bm = BitMasks(t)
    assert isinstance(bm[1], BitMasks) and bm[1].tensor.shape == (1, 2, 2) and bm[1].tensor[0, 0, 0]
    assert bm[-1].tensor.all()
    assert torch.equal(bm[1:].tensor, t[1:])
    assert torch.equal(bm[bm.nonempty()].tensor, t[1:])
    assert torch.equal(bm[torch.tensor([2, 0])].tensor, t[[2, 0]])
    with pytest.raises(IndexError):
        bm[0, 0]
    cat = BitMasks.cat([bm, bm[0]])
    assert len(cat) == 4 and torch.equal(cat.tensor[:3], t)
    with pytest.raises(ValueError, match="non-empty"):
        BitMasks.cat([])
    moved = bm.to("cpu")
    assert isinstance(moved, BitMasks) and moved.device == torch.device("cpu") and moved.tensor.dtype == torch.bool
    assert len(list(bm)) == 3 and repr(bm) == "BitMasks(num_instances=3)"


def test_bitmasks_selection_is_lazy_and_equal_to_indexing():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(3, 20, 24, generator=g) > 0.5
    bm = BitMasks(t)
    index = torch.tensor([2, 0, 0, 1, 2, 2, 1])
    sel = bm[index]
    assert sel._index is not None and len(sel) == 7 and sel.image_size == (20, 24)  # nothing gathered yet
    fg = torch.tensor([True, False, True, True, False, True, True])
    chained = sel[fg][torch.tensor([4, 0, -1])]  # selections of selections still pick from the 3 masks
    assert chained._source is t and torch.equal(chained._index, index[fg][torch.tensor([4, 0, -1])])
    boxes = torch.rand(5, 2, generator=g) * 10
    boxes = torch.cat([boxes, boxes + 4 + torch.rand(5, 2, generator=g) * 10], dim=1)
    lazy_crops = sel[fg].crop_and_resize(boxes, 7)  # cropped from the 3 source masks
    eager_crops = BitMasks(t[index[fg]]).crop_and_resize(boxes, 7)
    assert torch.equal(lazy_crops, eager_crops)
    assert torch.equal(sel.tensor, t[index]) and sel._index is None  # gathered on first read
    assert torch.equal(bm[torch.tensor([], dtype=torch.int64)].tensor, t[:0])
    with pytest.raises(IndexError):
        bm[torch.tensor([3])]
    with pytest.raises(IndexError):
        bm[torch.tensor([True, False])]


def test_rle_uncompressed_hand_value():
    # Column-major runs, starting with background: 1 zero, 2 ones, 3 zeros over a 3x2 image.
    mask = rle_to_bitmask({"size": [3, 2], "counts": [1, 2, 3]})
    np.testing.assert_array_equal(mask, np.array([[0, 0], [1, 0], [1, 0]], dtype=bool))


def test_bitmasks_from_rle():
    from pycocotools import mask as mask_util

    m0 = polygons_to_bitmask([np.array(RECT)], 6, 7)
    m1 = np.zeros((6, 7), dtype=bool)
    m1[5, 6] = True
    compressed = mask_util.encode(np.asfortranarray(np.stack([m0, m1], axis=-1).astype(np.uint8)))
    assert isinstance(compressed[0]["counts"], bytes)
    as_str = {"size": compressed[1]["size"], "counts": compressed[1]["counts"].decode("ascii")}
    # Uncompressed runs for m0 (column-major): column 0 empty, columns 1-3 have rows 1-2 set.
    uncompressed = {"size": [6, 7], "counts": [7, 2, 4, 2, 4, 2, 3 + 6 * 3]}

    bm = BitMasks.from_rle([compressed[0], as_str, uncompressed], height=6, width=7)
    assert bm.tensor.shape == (3, 6, 7)
    assert torch.equal(bm.tensor[0], torch.from_numpy(m0))
    assert torch.equal(bm.tensor[1], torch.from_numpy(m1))
    assert torch.equal(bm.tensor[2], torch.from_numpy(m0))
    assert BitMasks.from_rle([uncompressed]).image_size == (6, 7)

    assert BitMasks.from_rle([], height=3, width=4).tensor.shape == (0, 3, 4)
    with pytest.raises(ValueError, match="`height` and `width` are required"):
        BitMasks.from_rle([])
    with pytest.raises(ValueError, match=r"`rles\[1\]` has size \[3, 2\], expected \[6, 7\]"):
        BitMasks.from_rle([uncompressed, {"size": [3, 2], "counts": [1, 2, 3]}])
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        BitMasks.from_rle([{"counts": [1]}])


def test_roi_masks_container():
    t = torch.rand(3, 4, 4)
    rm = ROIMasks(t)
    assert len(rm) == 3 and rm.device == torch.device("cpu")
    assert torch.equal(rm[1].tensor, t[1:2]) and torch.equal(rm[1:].tensor, t[1:])
    assert torch.equal(rm[torch.tensor([True, False, True])].tensor, t[[0, 2]])
    assert isinstance(rm.to("cpu"), ROIMasks)
    assert repr(rm) == "ROIMasks(num_instances=3)"
    with pytest.raises(ValueError, match=r"\(N, M, M\)"):
        ROIMasks(torch.rand(4, 4))


def test_roi_masks_to_bitmasks():
    rm = ROIMasks(torch.ones(2, 2, 2))
    boxes = Boxes([[1.0, 1.0, 3.0, 3.0], [0.0, 2.0, 5.0, 5.0]])
    bm = rm.to_bitmasks(boxes, 5, 6)
    assert isinstance(bm, BitMasks) and bm.tensor.shape == (2, 5, 6)
    expected = torch.zeros(2, 5, 6, dtype=torch.bool)
    expected[0, 1:3, 1:3] = True  # pixels whose centres lie inside the box
    expected[1, 2:5, 0:5] = True
    assert torch.equal(bm.tensor, expected)
    assert torch.equal(BitMasks.from_roi_masks(rm, 5, 6, boxes=boxes.tensor).tensor, expected)
    with pytest.raises(ValueError, match="got 1 boxes for 2 masks"):
        rm.to_bitmasks(boxes[:1], 5, 6)
