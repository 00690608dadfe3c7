// Registers libdet::box_iou_rotated with the dispatcher.
#include <torch/library.h>

#include "box_iou_rotated.h"

TORCH_LIBRARY_FRAGMENT(libdet, m) {
  m.def("box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor");
}

TORCH_LIBRARY_IMPL(libdet, CPU, m) {
  m.impl("box_iou_rotated", &libdet::box_iou_rotated_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(libdet, CUDA, m) {
  m.impl("box_iou_rotated", &libdet::box_iou_rotated_cuda);
}
#endif
