// nms_rotated: greedy non-maximum suppression of rotated boxes.
#pragma once

#include <ATen/ATen.h>

namespace libdet {

// boxes: [N, 5] (cx, cy, w, h, angle in degrees), scores: [N], both floating point on the same device.
// Returns the int64 indices of the kept boxes, by decreasing score (ties keep the lower index first).
// A box is suppressed when its IoU with a kept, higher-scoring box is greater than iou_threshold.
at::Tensor nms_rotated_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);

#ifdef WITH_CUDA
at::Tensor nms_rotated_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);
#endif

// Shared argument checks of both implementations.
inline void check_nms_rotated_args(const at::Tensor& boxes, const at::Tensor& scores) {
  TORCH_CHECK(
      boxes.dim() == 2 && boxes.size(1) == 5,
      "nms_rotated: boxes must have shape [N, 5] (cx, cy, w, h, angle), got ", boxes.sizes());
  TORCH_CHECK(
      scores.dim() == 1 && scores.size(0) == boxes.size(0),
      "nms_rotated: scores must have shape [N] with N = ", boxes.size(0), ", got ", scores.sizes());
  TORCH_CHECK(
      at::isFloatingType(boxes.scalar_type()) && at::isFloatingType(scores.scalar_type()),
      "nms_rotated: boxes and scores must be floating point, got ", boxes.scalar_type(), " and ",
      scores.scalar_type());
  TORCH_CHECK(
      boxes.device() == scores.device(),
      "nms_rotated: boxes and scores must be on the same device, got ", boxes.device(), " and ",
      scores.device());
}

}  // namespace libdet
