"""DensePose annotations: parsing, horizontal flip (part swap, U/V through the symmetry tables), the mapper."""

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from densepose.data import DensePoseDatasetMapper, generate_synthetic_densepose
from densepose.structures import DensePoseDataRelative, DensePoseList, DensePoseTransformData

import libdet.data.transforms as T
from libdet.structures import BoxMode


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [256, 256], "counts": rle["counts"].decode("ascii")}


def _annotation():
    torso = np.zeros((256, 256), bool)
    torso[64:192, 96:160] = True
    right_hand = np.zeros((256, 256), bool)
    right_hand[100:120, 10:40] = True  # the person's right hand, on the image's left
    masks = [[] for _ in range(14)]
    masks[0] = _rle(torso)  # coarse part 1: torso
    masks[1] = _rle(right_hand)  # coarse part 2: right hand
    return {
        "bbox": [20.0, 10.0, 40.0, 80.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "dp_x": [25.0, 128.0],
        "dp_y": [110.0, 100.0],
        "dp_I": [3.0, 2.0],  # right hand, torso front
        "dp_U": [0.2, 0.5],
        "dp_V": [0.3, 0.9],
        "dp_masks": masks,
    }


def _tables():
    """Hand-made symmetry tables: mirrored U = 1 - u, mirrored V = v / 2 (so that both are checkable)."""
    grid = torch.arange(256, dtype=torch.float32) / 255
    return DensePoseTransformData(
        u_transforms=(1 - grid)[None, None, :].expand(24, 256, 256).clone(),
        v_transforms=(grid / 2)[None, :, None].expand(24, 256, 256).clone(),
    )


def test_parse_annotation():
    dp = DensePoseDataRelative(_annotation())
    assert dp.x.tolist() == [25.0, 128.0] and dp.i.tolist() == [3.0, 2.0]
    assert dp.segm.shape == (256, 256)
    assert int(dp.segm[100, 128]) == 1 and int(dp.segm[110, 20]) == 2 and int(dp.segm[5, 5]) == 0
    assert int((dp.segm == 1).sum()) == 128 * 64


def test_parse_errors_name_the_annotation():
    bad = _annotation()
    bad["dp_U"] = [0.1]
    with pytest.raises(ValueError, match="annotation 7 of 'x.jpg'"):
        DensePoseDataRelative(bad, where="annotation 7 of 'x.jpg'")
    bad = _annotation()
    bad["dp_I"] = [0.0, 25.0]
    with pytest.raises(ValueError, match="dp_I"):
        DensePoseDataRelative(bad)


def test_hflip_swaps_parts_and_mirrors_uv():
    dp = DensePoseDataRelative(_annotation())
    dp.hflip(_tables())
    assert dp.x.tolist() == [231.0, 128.0]
    assert dp.y.tolist() == [110.0, 100.0]
    assert dp.i.tolist() == [4.0, 2.0]  # right hand -> left hand; the torso stays
    u_loc = [int(0.2 * 255), int(0.5 * 255)]
    v_loc = [int(0.3 * 255), int(0.9 * 255)]
    assert dp.u.tolist() == pytest.approx([1 - u / 255 for u in u_loc])
    assert dp.v.tolist() == pytest.approx([v / 255 / 2 for v in v_loc])
    # the mask is mirrored and the right hand (2) becomes the left hand (3)
    assert int(dp.segm[110, 255 - 20]) == 3 and int(dp.segm[110, 20]) == 0
    assert int(dp.segm[100, 255 - 128]) == 1


def test_symmetry_tables_missing_file_is_named(tmp_path):
    path = str(tmp_path / "UV_symmetry_transforms.mat")
    with pytest.raises(FileNotFoundError, match="UV_symmetry_transforms.mat"):
        DensePoseTransformData.load(path)


def test_symmetry_tables_load_mat(tmp_path):
    from scipy.io import savemat

    tables = _tables().uv_symmetries
    cells_u = np.empty((1, 24), dtype=object)
    cells_v = np.empty((1, 24), dtype=object)
    for i in range(24):
        cells_u[0, i] = tables["U_transforms"][i].numpy()
        cells_v[0, i] = tables["V_transforms"][i].numpy()
    path = str(tmp_path / "UV_symmetry_transforms.mat")
    savemat(path, {"U_transforms": cells_u, "V_transforms": cells_v})
    loaded = DensePoseTransformData.load(path)
    assert torch.equal(loaded.uv_symmetries["U_transforms"], tables["U_transforms"])


def test_densepose_list_indexing():
    dp = DensePoseDataRelative(_annotation())
    lst = DensePoseList([dp, None, dp])
    assert len(lst[torch.tensor([True, False, True])]) == 2
    assert lst[torch.tensor([1, 1])].items == [None, None]
    assert lst[0] is dp


def test_mapper_flips_densepose_with_the_box(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((100, 80, 3), np.uint8)).save(tmp_path / "a.png")
    np.savez(
        tmp_path / "uv.npz",
        U_transforms=_tables().uv_symmetries["U_transforms"].numpy(),
        V_transforms=_tables().uv_symmetries["V_transforms"].numpy(),
    )
    mapper = DensePoseDatasetMapper(
        is_train=True,
        augmentations=[T.HFlipTransform(80)],
        image_format="RGB",
        uv_symmetries_path=str(tmp_path / "uv.npz"),
    )
    out = mapper({"file_name": str(tmp_path / "a.png"), "height": 100, "width": 80, "annotations": [_annotation()]})
    inst = out["instances"]
    assert inst.gt_boxes.tensor.tolist() == [[20.0, 10.0, 60.0, 90.0]]  # x: 80 - (20 + 40) .. 80 - 20
    (dp,) = inst.gt_densepose
    assert dp.x.tolist() == [231.0, 128.0] and dp.i.tolist() == [4.0, 2.0]


def test_mapper_without_tables_says_what_is_missing(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((100, 80, 3), np.uint8)).save(tmp_path / "a.png")
    mapper = DensePoseDatasetMapper(is_train=True, augmentations=[T.HFlipTransform(80)], image_format="RGB")
    with pytest.raises(ValueError, match="uv_symmetries_path"):
        mapper({"file_name": str(tmp_path / "a.png"), "height": 100, "width": 80, "annotations": [_annotation()]})


def test_synthetic_set_flip_is_exact(tmp_path):
    """The synthetic set's tables mirror U (1 - U) and keep V: flipped annotations swap parts and mirror U."""
    import json

    paths = generate_synthetic_densepose(str(tmp_path), num_images=2, seed=3)
    ann = json.load(open(paths["json_file"]))["annotations"][0]
    dp = DensePoseDataRelative(ann)
    before = {k: getattr(dp, k).clone() for k in ("x", "i", "u", "v")}
    dp.hflip(DensePoseTransformData.load(paths["uv_symmetries"]))
    sym = [0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23]
    assert dp.i.long().tolist() == [sym[int(i)] for i in before["i"]]
    # mirrored U = 1 - U up to the tables' 1/255 quantization; V unchanged up to it
    assert torch.allclose(dp.u, 1 - before["u"], atol=1 / 255 + 1e-6)
    assert torch.allclose(dp.v, before["v"], atol=1 / 255 + 1e-6)
