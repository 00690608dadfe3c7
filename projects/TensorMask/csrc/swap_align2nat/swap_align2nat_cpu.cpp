// CPU kernels of tensormask::swap_align2nat_forward / _backward.
//
// The per-axis samples depend on one or two output indices only (v; u; (v, y); (u, x)), so they are
// tabulated once per call. The forward runs one output mask channel (n, v, u) per task. The backward
// gathers instead of scattering: a task owns one input mask row (n, cv) and adds the contributions of every
// output channel v that samples it, so no two threads ever write the same gradient value.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "swap_align2nat.h"

namespace tensormask {

namespace {

using swap_align2nat_detail::AxisSample;
using swap_align2nat_detail::Geometry;
using swap_align2nat_detail::inside;
using swap_align2nat_detail::mask_axis_sample;
using swap_align2nat_detail::spatial_axis_sample;

template <typename T>
struct Tables {
  std::vector<AxisSample<T>> mask;  // [side_out]: samples of v (and of u, the same)
  std::vector<AxisSample<T>> rows;  // [side_out * height_out]: y samples of (v, y)
  std::vector<AxisSample<T>> cols;  // [side_out * width_out]: x samples of (u, x)
};

template <typename T>
Tables<T> make_tables(const Geometry& g) {
  Tables<T> t;
  t.mask.reserve(g.side_out);
  t.rows.reserve(g.side_out * g.height_out);
  t.cols.reserve(g.side_out * g.width_out);
  for (int64_t s = 0; s < g.side_out; ++s) {
    t.mask.push_back(mask_axis_sample<T>(s, g.lambda));
    for (int64_t y = 0; y < g.height_out; ++y) {
      t.rows.push_back(spatial_axis_sample<T>(y, s, g.lambda, g.side_out));
    }
    for (int64_t x = 0; x < g.width_out; ++x) {
      t.cols.push_back(spatial_axis_sample<T>(x, s, g.lambda, g.side_out));
    }
  }
  return t;
}

template <typename T>
T corner_weight(const AxisSample<T>& s, int corner) {
  return corner == 0 ? s.w_low : s.w_high;
}

template <typename T>
void forward_kernel(const T* in, T* out, const Geometry& g, T pad) {
  const Tables<T> t = make_tables<T>(g);
  const int64_t V = g.side_in, H = g.height_in, W = g.width_in;
  const int64_t plane_out = g.height_out * g.width_out;
  at::parallel_for(0, g.batch * g.side_out * g.side_out, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t u = row % g.side_out;
      const int64_t v = (row / g.side_out) % g.side_out;
      const int64_t n = row / (g.side_out * g.side_out);
      const AxisSample<T>& sv = t.mask[v];
      const AxisSample<T>& su = t.mask[u];
      T* dst = out + row * plane_out;
      for (int64_t y = 0; y < g.height_out; ++y) {
        const AxisSample<T>& sy = t.rows[v * g.height_out + y];
        for (int64_t x = 0; x < g.width_out; ++x) {
          const AxisSample<T>& sx = t.cols[u * g.width_out + x];
          T acc = 0;
          for (int c = 0; c < 2; ++c) {
            const int64_t iy = sy.low + c;
            for (int d = 0; d < 2; ++d) {
              const int64_t ix = sx.low + d;
              for (int a = 0; a < 2; ++a) {
                const int64_t iv = sv.low + a;
                for (int b = 0; b < 2; ++b) {
                  const int64_t iu = su.low + b;
                  const T w = corner_weight(sy, c) * corner_weight(sx, d) * corner_weight(sv, a) *
                      corner_weight(su, b);
                  const bool ok = inside(iy, H) && inside(ix, W) && inside(iv, V) && inside(iu, V);
                  acc += w * (ok ? in[(((n * V + iv) * V + iu) * H + iy) * W + ix] : pad);
                }
              }
            }
          }
          dst[y * g.width_out + x] = acc;
        }
      }
    }
  });
}

template <typename T>
void backward_kernel(const T* grad_out, T* grad_in, const Geometry& g) {
  const Tables<T> t = make_tables<T>(g);
  const int64_t V = g.side_in, H = g.height_in, W = g.width_in;
  const int64_t plane_out = g.height_out * g.width_out;
  // One task per input (n, iv): only it writes grad_in[n, iv, :, :, :].
  at::parallel_for(0, g.batch * V, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t iv = task % V;
      const int64_t n = task / V;
      for (int64_t v = 0; v < g.side_out; ++v) {
        const AxisSample<T>& sv = t.mask[v];
        const int a = static_cast<int>(iv - sv.low);
        if (a < 0 || a > 1 || corner_weight(sv, a) == T(0)) {
          continue;
        }
        for (int64_t u = 0; u < g.side_out; ++u) {
          const AxisSample<T>& su = t.mask[u];
          const T* src = grad_out + ((n * g.side_out + v) * g.side_out + u) * plane_out;
          for (int b = 0; b < 2; ++b) {
            const int64_t iu = su.low + b;
            if (!inside(iu, V)) {
              continue;
            }
            T* dst = grad_in + ((n * V + iv) * V + iu) * H * W;
            for (int64_t y = 0; y < g.height_out; ++y) {
              const AxisSample<T>& sy = t.rows[v * g.height_out + y];
              for (int64_t x = 0; x < g.width_out; ++x) {
                const AxisSample<T>& sx = t.cols[u * g.width_out + x];
                const T gy = src[y * g.width_out + x];
                for (int c = 0; c < 2; ++c) {
                  const int64_t iy = sy.low + c;
                  if (!inside(iy, H)) {
                    continue;
                  }
                  for (int d = 0; d < 2; ++d) {
                    const int64_t ix = sx.low + d;
                    if (!inside(ix, W)) {
                      continue;
                    }
                    const T w = corner_weight(sy, c) * corner_weight(sx, d) * corner_weight(sv, a) *
                        corner_weight(su, b);
                    dst[iy * W + ix] += w * gy;
                  }
                }
              }
            }
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor swap_align2nat_forward_cpu(const at::Tensor& X, int64_t lambda_val, double pad_val) {
  TORCH_CHECK(X.dim() == 4, "swap_align2nat: X must be [N, V*V, H, W], got ", X.sizes());
  TORCH_CHECK(X.is_cpu(), "swap_align2nat_forward_cpu: X must be a CPU tensor");
  const Geometry g = swap_align2nat_geometry(X.size(0), X.size(1), X.size(2), X.size(3), lambda_val);
  at::Tensor Y = at::empty({g.batch, g.side_out * g.side_out, g.height_out, g.width_out}, X.options());
  if (Y.numel() == 0) {
    return Y;
  }
  const at::Tensor in = X.contiguous();
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "swap_align2nat_forward_cpu", [&] {
    forward_kernel<scalar_t>(
        in.const_data_ptr<scalar_t>(), Y.mutable_data_ptr<scalar_t>(), g, static_cast<scalar_t>(pad_val));
  });
  return Y;
}

at::Tensor swap_align2nat_backward_cpu(
    const at::Tensor& gY,
    int64_t lambda_val,
    int64_t batch_size,
    int64_t channel,
    int64_t height,
    int64_t width) {
  TORCH_CHECK(gY.dim() == 4, "swap_align2nat_backward: gY must be 4-D, got ", gY.sizes());
  TORCH_CHECK(gY.is_cpu(), "swap_align2nat_backward_cpu: gY must be a CPU tensor");
  const Geometry g = swap_align2nat_geometry(batch_size, channel, height, width, lambda_val);
  TORCH_CHECK(
      gY.size(0) == g.batch && gY.size(1) == g.side_out * g.side_out && gY.size(2) == g.height_out &&
          gY.size(3) == g.width_out,
      "swap_align2nat_backward: gY has shape ", gY.sizes(), ", but the forward output of a [", batch_size, ", ",
      channel, ", ", height, ", ", width, "] input with lambda ", lambda_val, " is [", g.batch, ", ",
      g.side_out * g.side_out, ", ", g.height_out, ", ", g.width_out, "]");
  at::Tensor gX = at::zeros({batch_size, channel, height, width}, gY.options());
  if (gY.numel() == 0 || gX.numel() == 0) {
    return gX;
  }
  const at::Tensor grad = gY.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "swap_align2nat_backward_cpu", [&] {
    backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), gX.mutable_data_ptr<scalar_t>(), g);
  });
  return gX;
}

}  // namespace tensormask
