"""Box <-> regression-target encodings (R-CNN deltas, rotated deltas, FCOS-style distances) and the
dense box-regression loss shared by one-stage detectors.

Widths are ``x1 - x0`` (no "+1"), as in detectron2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from libdet.layers import cat, ciou_loss, diou_loss
from libdet.layers.losses import giou_loss, smooth_l1_loss
from libdet.structures import Boxes

__all__ = ["Box2BoxTransform", "Box2BoxTransformRotated", "Box2BoxTransformLinear"]

# Limits dw / dh so that exp() cannot make a box more than 1000/16 times larger than its anchor.
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _check_boxes(name: str, what: str, t: torch.Tensor, dim: int) -> None:
    if not isinstance(t, torch.Tensor):  # never true in TorchScript, which then skips the branch
        raise TypeError(f"{name}: `{what}` must be a Tensor, got {type(t).__name__}.")
    if t.dim() != 2 or t.shape[1] % dim != 0:
        raise ValueError(f"{name}: `{what}` must have shape (N, k*{dim}), got {list(t.shape)}.")


class Box2BoxTransform:
    """The R-CNN box encoding: ``(dx, dy, dw, dh)`` of a target box relative to a source box.

    ``dx = wx * (tx - sx) / sw``, ``dy = wy * (ty - sy) / sh``, ``dw = ww * log(tw / sw)``,
    ``dh = wh * log(th / sh)``, with ``(x, y)`` box centres and ``(w, h)`` sizes.

    Args:
        weights: ``(wx, wy, ww, wh)`` scaling of the deltas (e.g. (1, 1, 1, 1) for RPN,
            (10, 10, 5, 5) for Fast R-CNN).
        scale_clamp: upper clamp of ``dw`` and ``dh`` (after division by the weights) when decoding.
    """

    def __init__(self, weights: list[float], scale_clamp: float = _DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"Box2BoxTransform: `weights` must have 4 values (wx, wy, ww, wh), got {weights}.")
        # Spelled out (and made floats) so that TorchScript, which compiles this class, types it as 4 floats.
        self.weights = (float(weights[0]), float(weights[1]), float(weights[2]), float(weights[3]))
        self.scale_clamp = float(scale_clamp)

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Encode ``target_boxes`` relative to ``src_boxes``.

        Args:
            src_boxes: Tensor[N, 4] (x0, y0, x1, y1) source boxes (e.g. anchors or proposals); must have
                positive widths.
            target_boxes: Tensor[N, 4] target boxes.

        Returns:
            Tensor[N, 4] deltas such that ``apply_deltas(deltas, src_boxes) == target_boxes``.
        """
        _check_boxes("Box2BoxTransform.get_deltas", "src_boxes", src_boxes, 4)
        _check_boxes("Box2BoxTransform.get_deltas", "target_boxes", target_boxes, 4)
        src_widths = src_boxes[:, 2] - src_boxes[:, 0]
        src_heights = src_boxes[:, 3] - src_boxes[:, 1]
        src_ctr_x = src_boxes[:, 0] + 0.5 * src_widths
        src_ctr_y = src_boxes[:, 1] + 0.5 * src_heights

        target_widths = target_boxes[:, 2] - target_boxes[:, 0]
        target_heights = target_boxes[:, 3] - target_boxes[:, 1]
        target_ctr_x = target_boxes[:, 0] + 0.5 * target_widths
        target_ctr_y = target_boxes[:, 1] + 0.5 * target_heights

        wx, wy, ww, wh = self.weights
        dx = wx * (target_ctr_x - src_ctr_x) / src_widths
        dy = wy * (target_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(target_widths / src_widths)
        dh = wh * torch.log(target_heights / src_heights)

        deltas = torch.stack((dx, dy, dw, dh), dim=1)
        if not torch.jit.is_tracing() and not bool((src_widths > 0).all()):
            raise ValueError("Box2BoxTransform.get_deltas: `src_boxes` contains boxes with width <= 0.")
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` relative to ``boxes`` (computed in float32).

        Args:
            deltas: Tensor[N, k*4] deltas; ``deltas[i]`` holds k boxes for ``boxes[i]`` (e.g. one per
                class).
            boxes: Tensor[N, 4] reference boxes (x0, y0, x1, y1).

        Returns:
            float32 Tensor[N, k*4] of decoded (x0, y0, x1, y1) boxes.
        """
        _check_boxes("Box2BoxTransform.apply_deltas", "deltas", deltas, 4)
        _check_boxes("Box2BoxTransform.apply_deltas", "boxes", boxes, 4)
        deltas = deltas.float()  # fp32 for decoding precision
        boxes = boxes.to(deltas.dtype)

        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = deltas[:, 2::4] / ww
        dh = deltas[:, 3::4] / wh

        # Prevent sending too large values into torch.exp().
        dw = torch.clamp(dw, max=self.scale_clamp)
        dh = torch.clamp(dh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
        pred_boxes = torch.stack((x1, y1, x2, y2), dim=-1)
        return pred_boxes.reshape(deltas.shape)


class Box2BoxTransformRotated:
    """The R-CNN encoding for rotated boxes ``(cx, cy, w, h, angle_degrees)``: ``(dx, dy, dw, dh, da)``.

    ``dx, dy`` are relative to the source box's width / height in the image axes (as detectron2's
    rotated transform), ``dw, dh`` log-ratios and ``da = wa * radians(wrap(ta - sa))`` with angles wrapped
    to ``[-180, 180)``.

    Args:
        weights: ``(wx, wy, ww, wh, wa)`` scaling of the deltas.
        scale_clamp: upper clamp of ``dw`` and ``dh`` when decoding.
    """

    def __init__(self, weights: Sequence[float], scale_clamp: float = _DEFAULT_SCALE_CLAMP):
        if len(weights) != 5:
            raise ValueError(
                f"Box2BoxTransformRotated: `weights` must have 5 values (wx, wy, ww, wh, wa), got {weights}."
            )
        self.weights = tuple(weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Encode rotated ``target_boxes`` (Tensor[N, 5]) relative to ``src_boxes`` (Tensor[N, 5]).

        Returns:
            Tensor[N, 5] deltas.
        """
        _check_boxes("Box2BoxTransformRotated.get_deltas", "src_boxes", src_boxes, 5)
        _check_boxes("Box2BoxTransformRotated.get_deltas", "target_boxes", target_boxes, 5)
        src_ctr_x, src_ctr_y, src_widths, src_heights, src_angles = torch.unbind(src_boxes, dim=1)
        target_ctr_x, target_ctr_y, target_widths, target_heights, target_angles = torch.unbind(target_boxes, dim=1)

        wx, wy, ww, wh, wa = self.weights
        dx = wx * (target_ctr_x - src_ctr_x) / src_widths
        dy = wy * (target_ctr_y - src_ctr_y) / src_heights
        dw = ww * torch.log(target_widths / src_widths)
        dh = wh * torch.log(target_heights / src_heights)
        # Angle difference wrapped to [-180, 180), then in radians.
        da = target_angles - src_angles
        da = (da + 180.0) % 360.0 - 180.0
        da = da * (wa * math.pi / 180.0)

        deltas = torch.stack((dx, dy, dw, dh, da), dim=1)
        if not torch.jit.is_tracing() and not bool((src_widths > 0).all()):
            raise ValueError("Box2BoxTransformRotated.get_deltas: `src_boxes` contains boxes with width <= 0.")
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` (Tensor[N, k*5]) relative to rotated ``boxes`` (Tensor[N, 5]).

        Returns:
            Tensor[N, k*5] decoded boxes, angles wrapped to ``[-180, 180)``.
        """
        _check_boxes("Box2BoxTransformRotated.apply_deltas", "deltas", deltas, 5)
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"Box2BoxTransformRotated.apply_deltas: `boxes` must have shape (N, 5), got {tuple(boxes.shape)}."
            )
        boxes = boxes.to(deltas.dtype).unsqueeze(2)  # (N, 5, 1) to broadcast over the k boxes

        ctr_x = boxes[:, 0]
        ctr_y = boxes[:, 1]
        widths = boxes[:, 2]
        heights = boxes[:, 3]
        angles = boxes[:, 4]

        wx, wy, ww, wh, wa = self.weights
        dx = deltas[:, 0::5] / wx
        dy = deltas[:, 1::5] / wy
        dw = deltas[:, 2::5] / ww
        dh = deltas[:, 3::5] / wh
        da = deltas[:, 4::5] / wa

        dw = torch.clamp(dw, max=self.scale_clamp)
        dh = torch.clamp(dh, max=self.scale_clamp)

        pred_boxes = torch.zeros_like(deltas)
        pred_boxes[:, 0::5] = dx * widths + ctr_x
        pred_boxes[:, 1::5] = dy * heights + ctr_y
        pred_boxes[:, 2::5] = torch.exp(dw) * widths
        pred_boxes[:, 3::5] = torch.exp(dh) * heights
        pred_angle = da * 180.0 / math.pi + angles
        pred_boxes[:, 4::5] = (pred_angle + 180.0) % 360.0 - 180.0
        return pred_boxes


class Box2BoxTransformLinear:
    """The FCOS encoding: distances ``(l, t, r, b)`` from a source box's centre to the target box's
    sides, optionally divided by the source box's size (so an anchor point of stride s has a box s x s).

    Args:
        normalize_by_size: divide the distances by the source box's width / height.
    """

    def __init__(self, normalize_by_size: bool = True):
        self.normalize_by_size = normalize_by_size

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Encode ``target_boxes`` (Tensor[N, 4]) relative to the centres of ``src_boxes`` (Tensor[N, 4]).

        Returns:
            Tensor[N, 4] of (l, t, r, b) distances (negative when the centre is outside the target).
        """
        _check_boxes("Box2BoxTransformLinear.get_deltas", "src_boxes", src_boxes, 4)
        _check_boxes("Box2BoxTransformLinear.get_deltas", "target_boxes", target_boxes, 4)
        src_ctr_x = 0.5 * (src_boxes[:, 0] + src_boxes[:, 2])
        src_ctr_y = 0.5 * (src_boxes[:, 1] + src_boxes[:, 3])

        target_l = src_ctr_x - target_boxes[:, 0]
        target_t = src_ctr_y - target_boxes[:, 1]
        target_r = target_boxes[:, 2] - src_ctr_x
        target_b = target_boxes[:, 3] - src_ctr_y

        deltas = torch.stack((target_l, target_t, target_r, target_b), dim=1)
        if self.normalize_by_size:
            deltas = deltas / Box2BoxTransformLinear._strides(src_boxes, 1)
        return deltas

    @staticmethod
    def _strides(boxes: torch.Tensor, k: int) -> torch.Tensor:
        stride_w = boxes[:, 2] - boxes[:, 0]
        stride_h = boxes[:, 3] - boxes[:, 1]
        return torch.stack([stride_w, stride_h, stride_w, stride_h], dim=1).repeat(1, k)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` (Tensor[N, k*4]) relative to ``boxes`` (Tensor[N, 4]).

        Negative distances are clamped to 0 (ReLU), so the output boxes are always valid
        (Sec 2.1 of https://arxiv.org/abs/2006.09214).

        Returns:
            Tensor[N, k*4] of (x0, y0, x1, y1).
        """
        _check_boxes("Box2BoxTransformLinear.apply_deltas", "deltas", deltas, 4)
        _check_boxes("Box2BoxTransformLinear.apply_deltas", "boxes", boxes, 4)
        deltas = F.relu(deltas)
        boxes = boxes.to(deltas.dtype)

        ctr_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
        ctr_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
        if self.normalize_by_size:
            deltas = deltas * Box2BoxTransformLinear._strides(boxes, deltas.shape[1] // 4)
        l = deltas[:, 0::4]  # noqa: E741
        t = deltas[:, 1::4]
        r = deltas[:, 2::4]
        b = deltas[:, 3::4]

        pred_boxes = torch.zeros_like(deltas)
        pred_boxes[:, 0::4] = ctr_x[:, None] - l
        pred_boxes[:, 1::4] = ctr_y[:, None] - t
        pred_boxes[:, 2::4] = ctr_x[:, None] + r
        pred_boxes[:, 3::4] = ctr_y[:, None] + b
        return pred_boxes


_BoxTransform = Box2BoxTransform | Box2BoxTransformLinear


def _dense_box_regression_loss(
    anchors: list[Boxes | torch.Tensor],
    box2box_transform: _BoxTransform,
    pred_anchor_deltas: list[torch.Tensor],
    gt_boxes: list[torch.Tensor],
    fg_mask: torch.Tensor,
    box_reg_loss_type: str = "smooth_l1",
    smooth_l1_beta: float = 0.0,
) -> torch.Tensor:
    """Box regression loss of a dense detector (RetinaNet, FCOS), summed over foreground anchors.

    Args:
        anchors: anchors of each feature level, ``Boxes`` or Tensor[R_i, 4]; R = sum(R_i).
        box2box_transform: the box encoding.
        pred_anchor_deltas: predicted deltas of each level, Tensor[N, R_i, 4].
        gt_boxes: for each of the N images, Tensor[R, 4] the ground-truth box matched to every anchor.
        fg_mask: Tensor[N, R] bool, the foreground anchors.
        box_reg_loss_type: ``"smooth_l1"`` (on deltas), ``"giou"``, ``"diou"`` or ``"ciou"`` (on
            decoded boxes).
        smooth_l1_beta: beta of the smooth L1 loss (0 = L1).

    Returns:
        scalar loss (a sum, not normalised).
    """
    if isinstance(anchors[0], Boxes):
        anchors_t = type(anchors[0]).cat(anchors).tensor  # (R, 4)
    else:
        anchors_t = cat(anchors)
    if box_reg_loss_type == "smooth_l1":
        gt_anchor_deltas = torch.stack([box2box_transform.get_deltas(anchors_t, k) for k in gt_boxes])  # (N, R, 4)
        return smooth_l1_loss(
            cat(pred_anchor_deltas, dim=1)[fg_mask],
            gt_anchor_deltas[fg_mask],
            beta=smooth_l1_beta,
            reduction="sum",
        )
    losses = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}
    if box_reg_loss_type not in losses:
        raise ValueError(
            f"_dense_box_regression_loss: invalid `box_reg_loss_type` {box_reg_loss_type!r}; expected "
            '"smooth_l1", "giou", "diou" or "ciou".'
        )
    pred_boxes = [box2box_transform.apply_deltas(k, anchors_t) for k in cat(pred_anchor_deltas, dim=1)]
    # Box-overlap losses in float32: under (b)f16 autocast the predictions are half precision while the ground
    # truth is float32, and the losses' masked writes need one dtype (and IoU ratios want the precision).
    return losses[box_reg_loss_type](
        torch.stack(pred_boxes)[fg_mask].float(), torch.stack(gt_boxes)[fg_mask].float(), reduction="sum"
    )
