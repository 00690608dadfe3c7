"""DensePose evaluation: GPS, GPSm and mask IoU on hand-computed pairs, and the AP they give."""

import math
import pickle

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from densepose.evaluation import (
    MEAN_DISTANCES,
    SMPLGeodesicDistances,
    evaluate_densepose,
    gps_of_pair,
    synthetic_geodesic_distances,
)


def _full_masks():
    rle = mask_utils.encode(np.asfortranarray(np.ones((256, 256), np.uint8)))
    return [{"size": [256, 256], "counts": rle["counts"].decode("ascii")}] + [[] for _ in range(13)]


def _gt(points):
    """A person with box (0, 0, 100, 100) in a 200 x 200 image; ``points``: (dp_x, dp_y, I, U, V)."""
    x, y, i, u, v = (list(c) for c in zip(*points))
    return {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": [0.0, 0.0, 100.0, 100.0],
        "area": 10000.0,
        "dp_x": x,
        "dp_y": y,
        "dp_I": i,
        "dp_U": u,
        "dp_V": v,
        "dp_masks": _full_masks(),
    }


def _det(x0=0.0, part=2, u=0.5, v=0.5):
    """A detection of box (x0, 0, 100, 100) whose pixels are all ``part`` with the given U, V."""
    return {
        "image_id": 1,
        "category_id": 1,
        "bbox": [x0, 0.0, 100.0, 100.0],
        "score": 0.9,
        "labels": np.full((100, 100), part, np.uint8),
        "uv": np.stack([np.full((100, 100), u, np.float32), np.full((100, 100), v, np.float32)]),
    }


def _dataset(gt):
    return {
        "images": [{"id": 1, "height": 200, "width": 200}],
        "annotations": [gt],
        "categories": [{"id": 1, "name": "person"}],
    }


def test_gps_hand_computed():
    distances = synthetic_geodesic_distances()
    # exact point; a point 0.1 off in U on the torso (0.4 units wide, 0.85 m per unit); a point outside the box
    gt = _gt([(127.5, 127.5, 2, 0.5, 0.5), (127.5, 127.5, 2, 0.6, 0.5), (256.0, 10.0, 2, 0.5, 0.5)])
    d = 0.1 * 0.4 * 0.85
    kappa = MEAN_DISTANCES[1]  # the torso's region
    expected = (1.0 + math.exp(-(d**2) / (2 * kappa**2)) + 0.0) / 3
    assert gps_of_pair(gt, _det(), distances) == pytest.approx(expected, rel=1e-9)
    # the estimate says background, or another part far away: no credit / partial credit
    assert gps_of_pair(gt, _det(part=0), distances) == 0.0
    assert gps_of_pair(gt, _det(x0=300.0), distances) == 0.0


def test_gps_ap_hand_computed():
    # 2 exact points out of 3 (one outside the detection): GPS 2/3 matches at thresholds 0.50 .. 0.65 (4 of 10)
    gt = _gt([(127.5, 127.5, 2, 0.5, 0.5), (60.0, 30.0, 2, 0.5, 0.5), (256.0, 10.0, 2, 0.5, 0.5)])
    res = evaluate_densepose(_dataset(gt), [_det()], "GPS", synthetic_geodesic_distances())
    assert res["AP"] == pytest.approx(40.0) and res["AP50"] == pytest.approx(100.0) and res["AP75"] == 0.0
    assert res["APl"] == pytest.approx(40.0) and math.isnan(res["APm"])  # a 100 x 100 person is "large"
    assert res["AR"] == pytest.approx(40.0)


def test_iou_and_gpsm_hand_computed():
    gt = _gt([(127.5, 127.5, 2, 0.5, 0.5)])
    det = _det(x0=20.0)  # overlaps the person's mask (its box) on 80 x 100 of a 120 x 100 union: IoU 2/3
    res = evaluate_densepose(_dataset(gt), [det], "IOU")
    assert res["AP"] == pytest.approx(40.0)
    # the point (x 50 in the image) is at x 30 in the detection: exact, GPS 1; GPSm = sqrt(1 * 2/3) = 0.816
    res = evaluate_densepose(_dataset(gt), [det], "GPSm", synthetic_geodesic_distances())
    assert res["AP"] == pytest.approx(70.0)  # thresholds 0.50 .. 0.80


def test_person_without_densepose_is_ignored():
    gt = _gt([(127.5, 127.5, 2, 0.5, 0.5)])
    other = {k: v for k, v in gt.items() if not k.startswith("dp_")}
    other.update(id=2, bbox=[100.0, 100.0, 90.0, 90.0])
    data = _dataset(gt)
    data["annotations"].append(other)
    res = evaluate_densepose(data, [_det()], "GPS", synthetic_geodesic_distances())
    assert res["AP"] == pytest.approx(100.0)


def test_smpl_assets_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="SMPL_subdiv.mat"):
        SMPLGeodesicDistances(
            smpl_subdiv_path=str(tmp_path / "SMPL_subdiv.mat"),
            pdist_transform_path=str(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat"),
            pdist_matrix_path=str(tmp_path / "Pdist_matrix.pkl"),
        )


def test_smpl_distances_on_a_tiny_mesh(tmp_path):
    """3 vertices: two of part 1 at UV (0, 0) and (1, 1), one of part 2 at (0.5, 0.5); condensed geodesic
    distances d01 = 0.2, d02 = 0.5, d12 = 0.7."""
    from scipy.io import savemat

    savemat(
        tmp_path / "SMPL_subdiv.mat",
        {
            "U_subdiv": np.array([[0.0, 1.0, 0.5]]),
            "V_subdiv": np.array([[0.0, 1.0, 0.5]]),
            "Part_ID_subdiv": [[1, 1, 2]],
        },
    )
    savemat(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat", {"index": np.array([[1, 2, 3]])})
    with open(tmp_path / "Pdist_matrix.pkl", "wb") as f:
        pickle.dump({"Pdist_matrix": np.array([[0.2], [0.5], [0.7]])}, f)
    dist = SMPLGeodesicDistances(
        smpl_subdiv_path=str(tmp_path / "SMPL_subdiv.mat"),
        pdist_transform_path=str(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat"),
        pdist_matrix_path=str(tmp_path / "Pdist_matrix.pkl"),
    )
    i_gt, u_gt, v_gt = np.array([1, 1, 1, 2]), np.array([0.1, 0.1, 0.9, 0.5]), np.array([0.1, 0.1, 0.8, 0.5])
    i_est, u_est, v_est = np.array([2, 1, 2, 0]), np.array([0.4, 0.9, 0.5, 0.5]), np.array([0.6, 0.8, 0.5, 0.5])
    d = dist(i_gt, u_gt, v_gt, i_est, u_est, v_est)
    assert d[:3].tolist() == [0.5, 0.2, 0.7] and d[3] == np.inf
