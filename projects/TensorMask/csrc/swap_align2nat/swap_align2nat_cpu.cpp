// CPU kernels of tensormask::swap_align2nat_forward / _backward.
//
// The 4-D sample is separable, so it runs in two passes: first along (mask row, spatial row), which reads and
// writes contiguous rows of x, into an intermediate tensor about the size of X; then along (mask column,
// spatial column). The weight of the corners outside X is the product of the per-axis weights outside, and reads
// pad_val. The per-axis samples depend on one or two output indices only (v; u; (v, y); (u, x)), so they are
// tabulated once per call. The backward runs the transposed passes in reverse order; every task owns the slice
// it writes (no atomics, deterministic).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
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

// The part of a sample's weight that falls inside [0, size).
template <typename T>
T inside_weight(const AxisSample<T>& s, int64_t size) {
  return (inside(s.low, size) ? s.w_low : T(0)) + (inside(s.low + 1, size) ? s.w_high : T(0));
}

// Layout of the intermediate "rows" tensor: R[n, v, iu, y, ix] = sum over the (mask row, spatial row) corners of
// X[n, iv, iu, iy, ix], i.e. X sampled along v and y only ([N, Vout, V, Hout, W], about the size of X).
struct RowsLayout {
  int64_t side_out, side_in, height_out, width_in;
  int64_t offset(int64_t n, int64_t v, int64_t iu, int64_t y) const {
    return (((n * side_out + v) * side_in + iu) * height_out + y) * width_in;
  }
};

template <typename T>
void forward_kernel(const T* in, T* rows, T* out, const Geometry& g, T pad) {
  const Tables<T> t = make_tables<T>(g);
  const int64_t V = g.side_in, H = g.height_in, W = g.width_in;
  const RowsLayout r{g.side_out, V, g.height_out, W};
  // Pass 1, one (n, v) per task: sample along the mask row and the spatial row (contiguous rows of x).
  at::parallel_for(0, g.batch * g.side_out, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t v = task % g.side_out;
      const int64_t n = task / g.side_out;
      const AxisSample<T>& sv = t.mask[v];
      for (int64_t iu = 0; iu < V; ++iu) {
        for (int64_t y = 0; y < g.height_out; ++y) {
          const AxisSample<T>& sy = t.rows[v * g.height_out + y];
          T* dst = rows + r.offset(n, v, iu, y);
          std::fill(dst, dst + W, T(0));
          for (int a = 0; a < 2; ++a) {
            const int64_t iv = sv.low + a;
            const T wa = corner_weight(sv, a);
            if (wa == T(0) || !inside(iv, V)) {
              continue;
            }
            for (int c = 0; c < 2; ++c) {
              const int64_t iy = sy.low + c;
              const T wc = corner_weight(sy, c);
              if (wc == T(0) || !inside(iy, H)) {
                continue;
              }
              const T w = wa * wc;
              const T* src = in + (((n * V + iv) * V + iu) * H + iy) * W;
              for (int64_t ix = 0; ix < W; ++ix) {
                dst[ix] += w * src[ix];
              }
            }
          }
        }
      }
    }
  });
  // Pass 2, one output mask channel (n, v, u) per task: sample the rows along the mask column and the spatial
  // column; the weight of the corners outside X (on any axis) reads pad_val.
  at::parallel_for(0, g.batch * g.side_out * g.side_out, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t u = row % g.side_out;
      const int64_t v = (row / g.side_out) % g.side_out;
      const int64_t n = row / (g.side_out * g.side_out);
      const AxisSample<T>& sv = t.mask[v];
      const AxisSample<T>& su = t.mask[u];
      const T inside_v = inside_weight(sv, V);
      const T inside_u = inside_weight(su, V);
      T* dst = out + row * g.height_out * g.width_out;
      for (int64_t y = 0; y < g.height_out; ++y) {
        const T inside_rows = inside_v * inside_weight(t.rows[v * g.height_out + y], H);
        for (int64_t x = 0; x < g.width_out; ++x) {
          const AxisSample<T>& sx = t.cols[u * g.width_out + x];
          T acc = 0;
          for (int b = 0; b < 2; ++b) {
            const int64_t iu = su.low + b;
            const T wb = corner_weight(su, b);
            if (wb == T(0) || !inside(iu, V)) {
              continue;
            }
            const T* src = rows + r.offset(n, v, iu, y);
            for (int d = 0; d < 2; ++d) {
              const int64_t ix = sx.low + d;
              const T wd = corner_weight(sx, d);
              if (wd != T(0) && inside(ix, W)) {
                acc += wb * wd * src[ix];
              }
            }
          }
          const T inside_all = inside_rows * inside_u * inside_weight(sx, W);
          dst[y * g.width_out + x] = acc + pad * (T(1) - inside_all);
        }
      }
    }
  });
}

// The transpose of the two passes, in reverse order; each task writes only its own slice.
template <typename T>
void backward_kernel(const T* grad_out, T* grad_rows, T* grad_in, const Geometry& g) {
  const Tables<T> t = make_tables<T>(g);
  const int64_t V = g.side_in, H = g.height_in, W = g.width_in;
  const RowsLayout r{g.side_out, V, g.height_out, W};
  // Pass 2 transposed, one (n, v) per task: it owns grad_rows[n, v].
  at::parallel_for(0, g.batch * g.side_out, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t v = task % g.side_out;
      const int64_t n = task / g.side_out;
      for (int64_t u = 0; u < g.side_out; ++u) {
        const AxisSample<T>& su = t.mask[u];
        const T* src = grad_out + ((n * g.side_out + v) * g.side_out + u) * g.height_out * g.width_out;
        for (int b = 0; b < 2; ++b) {
          const int64_t iu = su.low + b;
          const T wb = corner_weight(su, b);
          if (wb == T(0) || !inside(iu, V)) {
            continue;
          }
          for (int64_t y = 0; y < g.height_out; ++y) {
            T* dst = grad_rows + r.offset(n, v, iu, y);
            for (int64_t x = 0; x < g.width_out; ++x) {
              const AxisSample<T>& sx = t.cols[u * g.width_out + x];
              const T gy = wb * src[y * g.width_out + x];
              for (int d = 0; d < 2; ++d) {
                const int64_t ix = sx.low + d;
                const T wd = corner_weight(sx, d);
                if (wd != T(0) && inside(ix, W)) {
                  dst[ix] += wd * gy;
                }
              }
            }
          }
        }
      }
    }
  });
  // Pass 1 transposed, one input mask row (n, iv) per task: it owns grad_in[n, iv] and gathers from every
  // output mask row v that samples iv.
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
        const T wa = corner_weight(sv, a);
        for (int64_t iu = 0; iu < V; ++iu) {
          for (int64_t y = 0; y < g.height_out; ++y) {
            const AxisSample<T>& sy = t.rows[v * g.height_out + y];
            const T* src = grad_rows + r.offset(n, v, iu, y);
            for (int c = 0; c < 2; ++c) {
              const int64_t iy = sy.low + c;
              const T wc = corner_weight(sy, c);
              if (wc == T(0) || !inside(iy, H)) {
                continue;
              }
              const T w = wa * wc;
              T* dst = grad_in + (((n * V + iv) * V + iu) * H + iy) * W;
              for (int64_t ix = 0; ix < W; ++ix) {
                dst[ix] += w * src[ix];
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
  at::Tensor rows = at::empty({g.batch, g.side_out, g.side_in, g.height_out, g.width_in}, X.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "swap_align2nat_forward_cpu", [&] {
    forward_kernel<scalar_t>(
        in.const_data_ptr<scalar_t>(),
        rows.mutable_data_ptr<scalar_t>(),
        Y.mutable_data_ptr<scalar_t>(),
        g,
        static_cast<scalar_t>(pad_val));
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
  at::Tensor grad_rows = at::zeros({g.batch, g.side_out, g.side_in, g.height_out, g.width_in}, gY.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "swap_align2nat_backward_cpu", [&] {
    backward_kernel<scalar_t>(
        grad.const_data_ptr<scalar_t>(), grad_rows.mutable_data_ptr<scalar_t>(), gX.mutable_data_ptr<scalar_t>(), g);
  });
  return gX;
}

}  // namespace tensormask
