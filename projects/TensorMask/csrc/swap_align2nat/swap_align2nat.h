// swap_align2nat: TensorMask's aligned -> natural mask representation (Chen et al., ICCV 2019).
//
// The input X is [N, V*U, H, W] with V == U: at every location (y, x) a V x U mask in the *aligned*
// representation (mask pixel (v, u) of the window at (y, x) describes image pixel (y, x) itself, as
// seen from a window shifted by (v, u)). The output Y is [N, (lambda V) * (lambda U), ceil(H / lambda),
// ceil(W / lambda)] in the *natural* representation, at 1 / lambda of the input's resolution: mask
// pixel (v, u) of the window at (y, x) is the image pixel at offset (v, u) from the window's corner.
// Each output value is a 4-D multilinear sample of X:
//
//   spatial y = y * lambda + v - lambda V / 2 + 0.5      channel v = (v + 0.5) / lambda - 0.5
//   spatial x = x * lambda + u - lambda U / 2 + 0.5      channel u = (u + 0.5) / lambda - 0.5
//
// (the same for both pairs), interpolating between floor(p) and floor(p) + 1 along each of the four
// axes; a corner outside the input (in any axis) contributes pad_val. With lambda = 1 and an odd V the
// positions are integers, so the op is an exact shift of each mask channel. Positions are computed in
// double precision and the weights cast to the tensor's type.
//
// The pure-PyTorch twin in projects/TensorMask/tensormask/layers/swap_align2nat.py computes the same
// sums (in another order); keep the two in sync.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TENSORMASK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TENSORMASK_HOST_DEVICE inline
#endif

namespace tensormask {

// X: [N, V*V, H, W] (float or double); returns [N, (lambda V)^2, ceil(H / lambda), ceil(W / lambda)].
at::Tensor swap_align2nat_forward_cpu(const at::Tensor& X, int64_t lambda_val, double pad_val);

// gY: gradient of the output; returns the gradient of X, [batch_size, channel, height, width].
at::Tensor swap_align2nat_backward_cpu(
    const at::Tensor& gY,
    int64_t lambda_val,
    int64_t batch_size,
    int64_t channel,
    int64_t height,
    int64_t width);

#ifdef WITH_CUDA
at::Tensor swap_align2nat_forward_cuda(const at::Tensor& X, int64_t lambda_val, double pad_val);
at::Tensor swap_align2nat_backward_cuda(
    const at::Tensor& gY,
    int64_t lambda_val,
    int64_t batch_size,
    int64_t channel,
    int64_t height,
    int64_t width);
#endif

namespace swap_align2nat_detail {

// The sizes of one call: input side (V, H, W), output side (Vout = lambda V, Hout, Wout).
struct Geometry {
  int64_t batch;
  int64_t side_in;  // V (== U)
  int64_t height_in;
  int64_t width_in;
  int64_t side_out;  // lambda V
  int64_t height_out;
  int64_t width_out;
  int64_t lambda;
};

// A linear sample along one axis: value(low) * w_low + value(low + 1) * w_high.
template <typename T>
struct AxisSample {
  int64_t low;
  T w_low;
  T w_high;
};

template <typename T>
TENSORMASK_HOST_DEVICE AxisSample<T> axis_sample(double position) {
  const double low = floor(position);
  const double t = position - low;
  return AxisSample<T>{static_cast<int64_t>(low), static_cast<T>(1.0 - t), static_cast<T>(t)};
}

// Sample along a mask axis (v or u) of output index `sub`.
template <typename T>
TENSORMASK_HOST_DEVICE AxisSample<T> mask_axis_sample(int64_t sub, int64_t lambda) {
  return axis_sample<T>((static_cast<double>(sub) + 0.5) / static_cast<double>(lambda) - 0.5);
}

// Sample along a spatial axis (y or x) of output location `out` and mask index `sub` (v or u).
template <typename T>
TENSORMASK_HOST_DEVICE AxisSample<T> spatial_axis_sample(int64_t out, int64_t sub, int64_t lambda, int64_t side_out) {
  return axis_sample<T>(
      static_cast<double>(out * lambda + sub) - static_cast<double>(side_out) / 2.0 + 0.5);
}

TENSORMASK_HOST_DEVICE bool inside(int64_t i, int64_t size) {
  return i >= 0 && i < size;
}

}  // namespace swap_align2nat_detail

// Checks shared by the CPU and CUDA kernels; returns the geometry of a forward call.
inline swap_align2nat_detail::Geometry swap_align2nat_geometry(
    int64_t batch,
    int64_t channel,
    int64_t height,
    int64_t width,
    int64_t lambda_val) {
  TORCH_CHECK(lambda_val >= 1, "swap_align2nat: lambda_val must be >= 1, got ", lambda_val);
  const int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(channel))));
  TORCH_CHECK(
      side * side == channel,
      "swap_align2nat: the input's channels must be a square number V * V (a V x V mask per location), got ",
      channel);
  return swap_align2nat_detail::Geometry{
      batch,
      side,
      height,
      width,
      lambda_val * side,
      (height + lambda_val - 1) / lambda_val,
      (width + lambda_val - 1) / lambda_val,
      lambda_val};
}

}  // namespace tensormask
