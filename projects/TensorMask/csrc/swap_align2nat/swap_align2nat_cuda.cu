// CUDA kernels of tensormask::swap_align2nat_forward / _backward: one thread per output element; the
// backward scatters its 16 weighted corners with atomicAdd (so it is not bitwise deterministic).
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "swap_align2nat.h"

namespace tensormask {

namespace {

using swap_align2nat_detail::AxisSample;
using swap_align2nat_detail::Geometry;
using swap_align2nat_detail::inside;
using swap_align2nat_detail::mask_axis_sample;
using swap_align2nat_detail::spatial_axis_sample;

constexpr int kThreads = 256;

int64_t num_blocks(int64_t total) {
  return std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20);
}

template <typename T>
__device__ __forceinline__ T corner_weight(const AxisSample<T>& s, int corner) {
  return corner == 0 ? s.w_low : s.w_high;
}

// Output element `index` of a [N, Vout, Vout, Hout, Wout] tensor: (n, v, u, y, x) and its four axis samples.
struct OutputIndex {
  int64_t n, v, u, y, x;
};

__device__ __forceinline__ OutputIndex unravel(int64_t index, const Geometry& g) {
  OutputIndex o;
  o.x = index % g.width_out;
  index /= g.width_out;
  o.y = index % g.height_out;
  index /= g.height_out;
  o.u = index % g.side_out;
  index /= g.side_out;
  o.v = index % g.side_out;
  o.n = index / g.side_out;
  return o;
}

template <typename T>
__global__ void swap_align2nat_forward_kernel(int64_t total, const T* __restrict__ in, Geometry g, T pad, T* __restrict__ out) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const OutputIndex o = unravel(index, g);
    const AxisSample<T> sv = mask_axis_sample<T>(o.v, g.lambda);
    const AxisSample<T> su = mask_axis_sample<T>(o.u, g.lambda);
    const AxisSample<T> sy = spatial_axis_sample<T>(o.y, o.v, g.lambda, g.side_out);
    const AxisSample<T> sx = spatial_axis_sample<T>(o.x, o.u, g.lambda, g.side_out);
    const int64_t V = g.side_in, H = g.height_in, W = g.width_in;
    T acc = 0;
    for (int c = 0; c < 2; ++c) {
      const int64_t iy = sy.low + c;
      for (int d = 0; d < 2; ++d) {
        const int64_t ix = sx.low + d;
        for (int a = 0; a < 2; ++a) {
          const int64_t iv = sv.low + a;
          for (int b = 0; b < 2; ++b) {
            const int64_t iu = su.low + b;
            const T w = corner_weight(sy, c) * corner_weight(sx, d) * corner_weight(sv, a) * corner_weight(su, b);
            const bool ok = inside(iy, H) && inside(ix, W) && inside(iv, V) && inside(iu, V);
            acc += w * (ok ? in[(((o.n * V + iv) * V + iu) * H + iy) * W + ix] : pad);
          }
        }
      }
    }
    out[index] = acc;
  }
}

template <typename T>
__global__ void swap_align2nat_backward_kernel(int64_t total, const T* __restrict__ grad_out, Geometry g, T* __restrict__ grad_in) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const OutputIndex o = unravel(index, g);
    const AxisSample<T> sv = mask_axis_sample<T>(o.v, g.lambda);
    const AxisSample<T> su = mask_axis_sample<T>(o.u, g.lambda);
    const AxisSample<T> sy = spatial_axis_sample<T>(o.y, o.v, g.lambda, g.side_out);
    const AxisSample<T> sx = spatial_axis_sample<T>(o.x, o.u, g.lambda, g.side_out);
    const int64_t V = g.side_in, H = g.height_in, W = g.width_in;
    const T gy = grad_out[index];
    for (int c = 0; c < 2; ++c) {
      const int64_t iy = sy.low + c;
      for (int d = 0; d < 2; ++d) {
        const int64_t ix = sx.low + d;
        for (int a = 0; a < 2; ++a) {
          const int64_t iv = sv.low + a;
          for (int b = 0; b < 2; ++b) {
            const int64_t iu = su.low + b;
            const T w = corner_weight(sy, c) * corner_weight(sx, d) * corner_weight(sv, a) * corner_weight(su, b);
            if (w != T(0) && inside(iy, H) && inside(ix, W) && inside(iv, V) && inside(iu, V)) {
              gpuAtomicAdd(grad_in + (((o.n * V + iv) * V + iu) * H + iy) * W + ix, w * gy);
            }
          }
        }
      }
    }
  }
}

}  // namespace

at::Tensor swap_align2nat_forward_cuda(const at::Tensor& X, int64_t lambda_val, double pad_val) {
  TORCH_CHECK(X.dim() == 4, "swap_align2nat: X must be [N, V*V, H, W], got ", X.sizes());
  TORCH_CHECK(X.is_cuda(), "swap_align2nat_forward_cuda: X must be a CUDA tensor");
  const Geometry g = swap_align2nat_geometry(X.size(0), X.size(1), X.size(2), X.size(3), lambda_val);
  c10::cuda::CUDAGuard device_guard(X.device());
  at::Tensor Y = at::empty({g.batch, g.side_out * g.side_out, g.height_out, g.width_out}, X.options());
  const int64_t total = Y.numel();
  if (total == 0) {
    return Y;
  }
  const at::Tensor in = X.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "swap_align2nat_forward_cuda", [&] {
    swap_align2nat_forward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        total, in.const_data_ptr<scalar_t>(), g, static_cast<scalar_t>(pad_val), Y.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return Y;
}

at::Tensor swap_align2nat_backward_cuda(
    const at::Tensor& gY,
    int64_t lambda_val,
    int64_t batch_size,
    int64_t channel,
    int64_t height,
    int64_t width) {
  TORCH_CHECK(gY.dim() == 4, "swap_align2nat_backward: gY must be 4-D, got ", gY.sizes());
  TORCH_CHECK(gY.is_cuda(), "swap_align2nat_backward_cuda: gY must be a CUDA tensor");
  const Geometry g = swap_align2nat_geometry(batch_size, channel, height, width, lambda_val);
  TORCH_CHECK(
      gY.size(0) == g.batch && gY.size(1) == g.side_out * g.side_out && gY.size(2) == g.height_out &&
          gY.size(3) == g.width_out,
      "swap_align2nat_backward: gY has shape ", gY.sizes(), ", which is not the forward output of a [", batch_size,
      ", ", channel, ", ", height, ", ", width, "] input with lambda ", lambda_val);
  c10::cuda::CUDAGuard device_guard(gY.device());
  at::Tensor gX = at::zeros({batch_size, channel, height, width}, gY.options());
  const int64_t total = gY.numel();
  if (total == 0 || gX.numel() == 0) {
    return gX;
  }
  const at::Tensor grad = gY.contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "swap_align2nat_backward_cuda", [&] {
    swap_align2nat_backward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        total, grad.const_data_ptr<scalar_t>(), g, gX.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gX;
}

}  // namespace tensormask
