// CPU kernel of libdet::box_iou_rotated.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "box_iou_rotated.h"
#include "rotated_box_geometry.h"

namespace libdet {

namespace {

void check_boxes(const at::Tensor& boxes, const char* name) {
  TORCH_CHECK(
      boxes.dim() == 2 && boxes.size(1) == 5,
      "box_iou_rotated: ", name, " must have shape [N, 5] (cx, cy, w, h, angle), got ", boxes.sizes());
  TORCH_CHECK(
      at::isFloatingType(boxes.scalar_type()),
      "box_iou_rotated: ", name, " must be float32 or float64, got ", boxes.scalar_type());
}

}  // namespace

at::Tensor box_iou_rotated_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_boxes(boxes1, "boxes1");
  check_boxes(boxes2, "boxes2");
  TORCH_CHECK(
      boxes1.scalar_type() == boxes2.scalar_type(),
      "box_iou_rotated: boxes1 and boxes2 must have the same dtype, got ", boxes1.scalar_type(), " and ",
      boxes2.scalar_type());
  TORCH_CHECK(boxes1.is_cpu() && boxes2.is_cpu(), "box_iou_rotated_cpu: boxes must be CPU tensors");

  const int64_t n = boxes1.size(0);
  const int64_t m = boxes2.size(0);
  at::Tensor ious = at::empty({n, m}, boxes1.options());
  if (n == 0 || m == 0) {
    return ious;
  }
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();

  // Per-box geometry (trigonometry included) once, then only the clipping per pair.
  std::vector<rotated_geometry::BoxGeometry> geometry1(n);
  std::vector<rotated_geometry::BoxGeometry> geometry2(m);
  AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "box_iou_rotated_cpu", [&] {
    const scalar_t* p1 = b1.const_data_ptr<scalar_t>();
    const scalar_t* p2 = b2.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      geometry1[i] = rotated_geometry::box_geometry(p1 + 5 * i);
    }
    for (int64_t j = 0; j < m; ++j) {
      geometry2[j] = rotated_geometry::box_geometry(p2 + 5 * j);
    }
    scalar_t* out = ious.mutable_data_ptr<scalar_t>();
    // Pairs whose circumscribed circles are apart cost a few nanoseconds, overlapping ones a few hundred:
    // a grain of 4096 pairs keeps the threading overhead small either way.
    at::parallel_for(0, n * m, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t i = k / m;
        const int64_t j = k - i * m;
        out[k] = static_cast<scalar_t>(rotated_geometry::rotated_box_iou(geometry1[i], geometry2[j]));
      }
    });
  });
  return ious;
}

}  // namespace libdet
