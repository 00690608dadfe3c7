// box_iou_rotated: IoU matrix between two sets of rotated boxes.
#pragma once

#include <ATen/ATen.h>

namespace libdet {

// boxes1: [N, 5], boxes2: [M, 5], (cx, cy, w, h, angle in degrees), same floating dtype and device.
// Returns [N, M] in that dtype; the geometry is computed in double precision.
at::Tensor box_iou_rotated_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2);

#ifdef WITH_CUDA
at::Tensor box_iou_rotated_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2);
#endif

}  // namespace libdet
