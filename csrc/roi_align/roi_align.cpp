// Registers libdet::roi_align_forward and libdet::roi_align_backward with the dispatcher (CPU only: on CUDA
// torchvision's kernels are used).
#include <torch/library.h>

#include "roi_align.h"

TORCH_LIBRARY_FRAGMENT(libdet, m) {
  m.def(
      "roi_align_forward(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
      "int batch_size, int channels, int height, int width, int sampling_ratio, bool aligned, "
      "bool channels_last) -> Tensor");
}

TORCH_LIBRARY_IMPL(libdet, CPU, m) {
  m.impl("roi_align_forward", &libdet::roi_align_forward_cpu);
  m.impl("roi_align_backward", &libdet::roi_align_backward_cpu);
}
