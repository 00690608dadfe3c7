// Registers libdet::nms_rotated with the dispatcher.
#include <torch/library.h>

#include "nms_rotated.h"

TORCH_LIBRARY_FRAGMENT(libdet, m) {
  m.def("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
}

TORCH_LIBRARY_IMPL(libdet, CPU, m) {
  m.impl("nms_rotated", &libdet::nms_rotated_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(libdet, CUDA, m) {
  m.impl("nms_rotated", &libdet::nms_rotated_cuda);
}
#endif
