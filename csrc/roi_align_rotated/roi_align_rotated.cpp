// Registers libdet::roi_align_rotated_forward and libdet::roi_align_rotated_backward with the dispatcher
// (same schemas as detectron2's ops of the same names).
#include <torch/library.h>

#include "roi_align_rotated.h"

TORCH_LIBRARY_FRAGMENT(libdet, m) {
  m.def(
      "roi_align_rotated_forward(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio) -> Tensor");
  m.def(
      "roi_align_rotated_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int batch_size, int channels, int height, int width, int sampling_ratio) -> Tensor");
}

TORCH_LIBRARY_IMPL(libdet, CPU, m) {
  m.impl("roi_align_rotated_forward", &libdet::roi_align_rotated_forward_cpu);
  m.impl("roi_align_rotated_backward", &libdet::roi_align_rotated_backward_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(libdet, CUDA, m) {
  m.impl("roi_align_rotated_forward", &libdet::roi_align_rotated_forward_cuda);
  m.impl("roi_align_rotated_backward", &libdet::roi_align_rotated_backward_cuda);
}
#endif
