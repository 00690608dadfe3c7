// CUDA kernels of libdet::roi_align_rotated_forward / _backward: one thread per output element; the
// backward scatters with atomicAdd (so it is not bitwise deterministic, and says so to
// torch.use_deterministic_algorithms).
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "roi_align_rotated.h"

namespace libdet {

namespace {

using roi_align_rotated_detail::bilinear_terms;
using roi_align_rotated_detail::BilinearTerms;
using roi_align_rotated_detail::make_rotated_roi;
using roi_align_rotated_detail::RotatedRoi;
using roi_align_rotated_detail::sample_position;

constexpr int kThreads = 256;

int64_t num_blocks(int64_t total) {
  return std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20);
}

template <typename scalar_t>
__global__ void roi_align_rotated_forward_kernel(
    int64_t total,
    const scalar_t* __restrict__ input,
    const scalar_t* __restrict__ rois,
    scalar_t spatial_scale,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    scalar_t* __restrict__ output) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    // output is [K, C, pooled_height, pooled_width]
    const int64_t pw = index % pooled_width;
    const int64_t ph = (index / pooled_width) % pooled_height;
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t k = index / pooled_width / pooled_height / channels;
    const RotatedRoi<scalar_t> roi =
        make_rotated_roi(rois + 6 * k, spatial_scale, pooled_height, pooled_width, sampling_ratio);
    scalar_t acc = 0;
    // RoIs naming a missing image give 0 (the CPU kernel raises instead; a device assert would poison
    // the CUDA context).
    if (roi.batch >= 0 && roi.batch < batch_size) {
      const scalar_t* src = input + (roi.batch * channels + c) * height * width;
      for (int iy = 0; iy < roi.grid_h; ++iy) {
        for (int ix = 0; ix < roi.grid_w; ++ix) {
          scalar_t y;
          scalar_t x;
          sample_position(roi, ph, pw, iy, ix, y, x);
          BilinearTerms<scalar_t> t;
          if (bilinear_terms(height, width, y, x, t)) {
            acc += t.weight[0] * src[t.offset[0]] + t.weight[1] * src[t.offset[1]] +
                t.weight[2] * src[t.offset[2]] + t.weight[3] * src[t.offset[3]];
          }
        }
      }
    }
    output[index] = acc / roi.count;
  }
}

template <typename scalar_t>
__global__ void roi_align_rotated_backward_kernel(
    int64_t total,
    const scalar_t* __restrict__ grad,
    const scalar_t* __restrict__ rois,
    scalar_t spatial_scale,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    scalar_t* __restrict__ grad_input) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t pw = index % pooled_width;
    const int64_t ph = (index / pooled_width) % pooled_height;
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t k = index / pooled_width / pooled_height / channels;
    const RotatedRoi<scalar_t> roi =
        make_rotated_roi(rois + 6 * k, spatial_scale, pooled_height, pooled_width, sampling_ratio);
    if (roi.batch < 0 || roi.batch >= batch_size) {
      continue;
    }
    const scalar_t g = grad[index] / roi.count;
    scalar_t* dst = grad_input + (roi.batch * channels + c) * height * width;
    for (int iy = 0; iy < roi.grid_h; ++iy) {
      for (int ix = 0; ix < roi.grid_w; ++ix) {
        scalar_t y;
        scalar_t x;
        sample_position(roi, ph, pw, iy, ix, y, x);
        BilinearTerms<scalar_t> t;
        if (bilinear_terms(height, width, y, x, t)) {
          atomicAdd(dst + t.offset[0], t.weight[0] * g);
          atomicAdd(dst + t.offset[1], t.weight[1] * g);
          atomicAdd(dst + t.offset[2], t.weight[2] * g);
          atomicAdd(dst + t.offset[3], t.weight[3] * g);
        }
      }
    }
  }
}

}  // namespace

at::Tensor roi_align_rotated_forward_cuda(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio) {
  TORCH_CHECK(input.dim() == 4, "roi_align_rotated: input must be [B, C, H, W], got ", input.sizes());
  check_roi_align_rotated_rois(rois, input, "input");
  check_pooled_size(pooled_height, pooled_width);
  TORCH_CHECK(input.is_cuda(), "roi_align_rotated_forward_cuda: input must be a CUDA tensor");
  c10::cuda::CUDAGuard device_guard(input.device());

  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  const int64_t height = input.size(2);
  const int64_t width = input.size(3);
  at::Tensor output = at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  const int64_t total = output.numel();
  if (total == 0 || height == 0 || width == 0) {
    return output;
  }
  const at::Tensor in = input.contiguous();
  const at::Tensor r = rois.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "roi_align_rotated_forward_cuda", [&] {
    roi_align_rotated_forward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        total,
        in.const_data_ptr<scalar_t>(),
        r.const_data_ptr<scalar_t>(),
        static_cast<scalar_t>(spatial_scale),
        in.size(0),
        channels,
        height,
        width,
        pooled_height,
        pooled_width,
        sampling_ratio,
        output.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

at::Tensor roi_align_rotated_backward_cuda(
    const at::Tensor& grad,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t sampling_ratio) {
  check_roi_align_rotated_backward_args(grad, rois, channels, pooled_height, pooled_width);
  TORCH_CHECK(grad.is_cuda(), "roi_align_rotated_backward_cuda: grad must be a CUDA tensor");
  c10::cuda::CUDAGuard device_guard(grad.device());
  at::globalContext().alertNotDeterministic("roi_align_rotated_backward_cuda");

  at::Tensor grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  const int64_t total = grad.numel();
  if (total == 0 || grad_input.numel() == 0) {
    return grad_input;
  }
  const at::Tensor g = grad.contiguous();
  const at::Tensor r = rois.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "roi_align_rotated_backward_cuda", [&] {
    roi_align_rotated_backward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        total,
        g.const_data_ptr<scalar_t>(),
        r.const_data_ptr<scalar_t>(),
        static_cast<scalar_t>(spatial_scale),
        batch_size,
        channels,
        height,
        width,
        pooled_height,
        pooled_width,
        sampling_ratio,
        grad_input.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace libdet
