// CPU kernel of libdet::nms_rotated: greedy suppression, IoUs computed only for boxes still alive.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "nms_rotated.h"
#include "rotated_box_geometry.h"

namespace libdet {

at::Tensor nms_rotated_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_rotated_args(boxes, scores);
  TORCH_CHECK(boxes.is_cpu(), "nms_rotated_cpu: boxes must be CPU tensors");
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }

  // Stable descending sort: equal scores keep their input order.
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous();
  const int64_t* order_ptr = order.const_data_ptr<int64_t>();

  std::vector<uint8_t> suppressed(n, 0);
  std::vector<int64_t> keep;
  keep.reserve(n);
  std::vector<rotated_geometry::BoxGeometry> geometry(n);
  AT_DISPATCH_FLOATING_TYPES(sorted_boxes.scalar_type(), "nms_rotated_cpu", [&] {
    const scalar_t* b = sorted_boxes.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      geometry[i] = rotated_geometry::box_geometry(b + 5 * i);
    }
  });
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) {
      continue;
    }
    keep.push_back(order_ptr[i]);
    const rotated_geometry::BoxGeometry& kept = geometry[i];
    // Each j is written by one thread only; the grain keeps short rows on the calling thread.
    at::parallel_for(i + 1, n, 2048, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        if (!suppressed[j] && rotated_geometry::rotated_box_iou(kept, geometry[j]) > iou_threshold) {
          suppressed[j] = 1;
        }
      }
    });
  }

  at::Tensor result = at::empty({static_cast<int64_t>(keep.size())}, boxes.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), result.mutable_data_ptr<int64_t>());
  return result;
}

}  // namespace libdet
