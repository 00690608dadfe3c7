"""Distances between body-surface points given as (fine part, U, V), for the GPS measure.

GPS (Güler et al. 2018) scores a point by ``exp(-d^2 / (2 kappa^2))``, ``d`` the geodesic distance on the body
between the annotated and the estimated point, ``kappa`` a per-body-region normaliser. Two providers:

- :class:`SMPLGeodesicDistances`: the COCO DensePose protocol. Each (part, U, V) is snapped to the closest vertex of
  the same part of the subdivided SMPL mesh (in UV space) and distances come from the precomputed pairwise geodesic
  matrix. Needs detectron2's DensePose evaluation assets (not bundled, no downloads here): ``SMPL_subdiv.mat``,
  ``SMPL_SUBDIV_TRANSFORM.mat`` and ``Pdist_matrix.pkl``.
- :class:`ChartGeodesicDistances`: for the synthetic set, whose people are flat: the Euclidean distance between
  the points' positions on the figure (1 canonical unit = 0.85 m, so that the figure is 1.7 m tall).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = [
    "COARSE_PARTS",
    "MEAN_DISTANCES",
    "ChartGeodesicDistances",
    "SMPLGeodesicDistances",
    "gps_normalizers",
    "synthetic_geodesic_distances",
]

#: body region (1..8) of each fine part (index 1..24; 0 = background), and the region's normalising distance
COARSE_PARTS = np.array([0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8])
MEAN_DISTANCES = np.array([0, 0.351, 0.107, 0.126, 0.237, 0.173, 0.142, 0.128, 0.150])


def gps_normalizers(parts: np.ndarray) -> np.ndarray:
    """``kappa`` of each gt point from its fine part (1..24)."""
    return MEAN_DISTANCES[COARSE_PARTS[parts.astype(np.int64)]]


class ChartGeodesicDistances:
    """Distances on a flat figure made of one rectangle per part (the synthetic set's people)."""

    def __init__(self, parts: tuple, metres_per_unit: float = 0.85):
        """
        Args:
            parts: ``(fine part, coarse part, x0, x1, y0, y1)`` rectangles in the canonical frame
                (e.g. :data:`densepose.data.synthetic.SYNTHETIC_PARTS`).
            metres_per_unit: scale of the canonical frame.
        """
        self.rects = np.zeros((25, 4))
        self.known = np.zeros(25, bool)
        for part, _, x0, x1, y0, y1 in parts:
            self.rects[part] = (x0, x1, y0, y1)
            self.known[part] = True
        self.scale = metres_per_unit

    def _positions(self, i, u, v) -> np.ndarray:
        r = self.rects[i.astype(np.int64)]
        return np.stack([r[:, 0] + u * (r[:, 1] - r[:, 0]), r[:, 2] + v * (r[:, 3] - r[:, 2])], axis=1)

    def __call__(self, i_gt, u_gt, v_gt, i_est, u_est, v_est) -> np.ndarray:
        """``(P,)`` distances between gt points and estimates; ``inf`` where the estimate is background (0) or a
        part the figure does not have."""
        i_est = np.asarray(i_est, dtype=np.int64)
        d = np.linalg.norm(self._positions(i_gt, u_gt, v_gt) - self._positions(i_est, u_est, v_est), axis=1)
        d = d * self.scale
        d[(i_est <= 0) | ~self.known[np.clip(i_est, 0, 24)]] = np.inf
        return d


def _require(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"DensePose GPS evaluation needs {what} at '{path}', which does not exist. It is one of detectron2's "
            "DensePose evaluation assets (SMPL_subdiv.mat, SMPL_SUBDIV_TRANSFORM.mat, Pdist_matrix.pkl; not bundled "
            "with libdet); pass its path to the evaluator's geodesic distances."
        )
    return path


class SMPLGeodesicDistances:
    """Geodesic distances on the subdivided SMPL mesh (the COCO DensePose protocol)."""

    def __init__(self, *, smpl_subdiv_path: str, pdist_transform_path: str, pdist_matrix_path: str):
        """
        Args:
            smpl_subdiv_path: ``SMPL_subdiv.mat`` (``U_subdiv``, ``V_subdiv``, ``Part_ID_subdiv`` per vertex).
            pdist_transform_path: ``SMPL_SUBDIV_TRANSFORM.mat`` (``index``: vertex -> row of the distance matrix).
            pdist_matrix_path: ``Pdist_matrix.pkl`` (``{"Pdist_matrix": condensed pairwise distances}``), read
                with libdet's restricted unpickler (numpy arrays and plain containers only).
        """
        from scipy.io import loadmat

        from libdet.checkpoint.restricted_unpickler import restricted_load

        subdiv = loadmat(_require(smpl_subdiv_path, "the SMPL subdivision (SMPL_subdiv.mat)"))
        self.part_ids = np.asarray(subdiv["Part_ID_subdiv"]).squeeze().astype(np.int64)
        uv = np.stack([np.asarray(subdiv["U_subdiv"]).squeeze(), np.asarray(subdiv["V_subdiv"]).squeeze()])
        self.part_uvs, self.part_vertices = [], []
        for part in range(1, 25):
            sel = np.nonzero(self.part_ids == part)[0]
            self.part_uvs.append(uv[:, sel])
            self.part_vertices.append(sel + 1)  # 1-based vertex ids; 0 / -1 = none
        transform = loadmat(_require(pdist_transform_path, "the vertex transform (SMPL_SUBDIV_TRANSFORM.mat)"))
        self.pdist_transform = np.asarray(transform["index"]).squeeze().astype(np.int64)
        with open(_require(pdist_matrix_path, "the geodesic distance matrix (Pdist_matrix.pkl)"), "rb") as f:
            data = restricted_load(f, filename=pdist_matrix_path)
        self.pdist = np.asarray(data["Pdist_matrix"]).reshape(-1)
        self.n = int(round((1 + np.sqrt(1 + 8 * self.pdist.size)) / 2))  # condensed size n (n - 1) / 2

    def closest_vertices(self, i, u, v) -> np.ndarray:
        """1-based id of the closest (in UV) mesh vertex of each point's part; -1 for background points."""
        from scipy.spatial.distance import cdist

        out = -np.ones(len(i), dtype=np.int64)
        for part in range(1, 25):
            sel = i == part
            if sel.any():
                d = cdist(self.part_uvs[part - 1].T, np.stack([u[sel], v[sel]], axis=1))
                out[sel] = self.part_vertices[part - 1][np.argmin(d, axis=0)]
        return out

    def _pair(self, a: int, b: int) -> float:
        """Distance between rows ``a`` and ``b`` (0-based) of the condensed matrix."""
        if a == b:
            return 0.0
        a, b = min(a, b), max(a, b)
        n = self.n
        return float(self.pdist[n * a - a * (a + 1) // 2 + b - a - 1])

    def __call__(self, i_gt, u_gt, v_gt, i_est, u_est, v_est) -> np.ndarray:
        gt = self.closest_vertices(np.asarray(i_gt, np.int64), u_gt, v_gt)
        est = self.closest_vertices(np.asarray(i_est, np.int64), u_est, v_est)
        d = np.full(len(gt), np.inf)
        for k, (g, e) in enumerate(zip(gt, est)):
            if g > 0 and e > 0:
                d[k] = self._pair(self.pdist_transform[g - 1] - 1, self.pdist_transform[e - 1] - 1)
        return d


def synthetic_geodesic_distances() -> ChartGeodesicDistances:
    """The distances of the synthetic DensePose set (its figures' rectangles)."""
    from ..data.synthetic import SYNTHETIC_PARTS

    return ChartGeodesicDistances(SYNTHETIC_PARTS)
