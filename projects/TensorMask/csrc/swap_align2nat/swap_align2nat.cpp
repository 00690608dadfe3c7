// Registers tensormask::swap_align2nat_forward and tensormask::swap_align2nat_backward with the dispatcher.
#include <torch/library.h>

#include "swap_align2nat.h"

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def("swap_align2nat_forward(Tensor X, int lambda_val, float pad_val) -> Tensor");
  m.def(
      "swap_align2nat_backward(Tensor gY, int lambda_val, int batch_size, int channel, int height, "
      "int width) -> Tensor");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) {
  m.impl("swap_align2nat_forward", &tensormask::swap_align2nat_forward_cpu);
  m.impl("swap_align2nat_backward", &tensormask::swap_align2nat_backward_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(tensormask, CUDA, m) {
  m.impl("swap_align2nat_forward", &tensormask::swap_align2nat_forward_cuda);
  m.impl("swap_align2nat_backward", &tensormask::swap_align2nat_backward_cuda);
}
#endif
