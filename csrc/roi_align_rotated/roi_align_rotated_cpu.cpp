// CPU kernels of libdet::roi_align_rotated_forward / _backward.
//
// The bilinear terms of a RoI's samples do not depend on the channel, so they are computed once per RoI
// (per thread) and reused for every channel. The kernels work on channels-last copies of the feature map
// and its gradient, so that every bilinear term is a multiply-add over a contiguous vector of channels.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "roi_align_rotated.h"

namespace libdet {

namespace {

using roi_align_rotated_detail::bilinear_terms;
using roi_align_rotated_detail::BilinearTerms;
using roi_align_rotated_detail::make_rotated_roi;
using roi_align_rotated_detail::RotatedRoi;
using roi_align_rotated_detail::sample_position;

// The valid samples of every bin of a RoI: bin b owns terms[bin_start[b] .. bin_start[b + 1]).
template <typename T>
void collect_samples(
    const RotatedRoi<T>& roi,
    int64_t height,
    int64_t width,
    int64_t pooled_height,
    int64_t pooled_width,
    std::vector<BilinearTerms<T>>& terms,
    std::vector<int64_t>& bin_start) {
  terms.clear();
  bin_start.assign(pooled_height * pooled_width + 1, 0);
  for (int64_t ph = 0; ph < pooled_height; ++ph) {
    for (int64_t pw = 0; pw < pooled_width; ++pw) {
      for (int iy = 0; iy < roi.grid_h; ++iy) {
        for (int ix = 0; ix < roi.grid_w; ++ix) {
          T y;
          T x;
          sample_position(roi, ph, pw, iy, ix, y, x);
          BilinearTerms<T> t;
          if (bilinear_terms(height, width, y, x, t)) {
            terms.push_back(t);
          }
        }
      }
      bin_start[ph * pooled_width + pw + 1] = static_cast<int64_t>(terms.size());
    }
  }
}

void check_batch_index(int64_t batch, int64_t batch_size, int64_t roi_index) {
  TORCH_CHECK(
      batch >= 0 && batch < batch_size,
      "roi_align_rotated: rois[", roi_index, ", 0] is batch index ", batch, ", but the input has ",
      batch_size, " images");
}

}  // namespace

at::Tensor roi_align_rotated_forward_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio) {
  TORCH_CHECK(input.dim() == 4, "roi_align_rotated: input must be [B, C, H, W], got ", input.sizes());
  check_roi_align_rotated_rois(rois, input, "input");
  check_pooled_size(pooled_height, pooled_width);
  TORCH_CHECK(input.is_cpu(), "roi_align_rotated_forward_cpu: input must be a CPU tensor");

  const int64_t num_rois = rois.size(0);
  const int64_t batch_size = input.size(0);
  const int64_t channels = input.size(1);
  const int64_t height = input.size(2);
  const int64_t width = input.size(3);
  if (num_rois * channels == 0 || height == 0 || width == 0) {
    return at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  }
  const at::Tensor in = input.permute({0, 2, 3, 1}).contiguous();  // [B, H, W, C]
  const at::Tensor r = rois.contiguous();
  const int64_t bins = pooled_height * pooled_width;
  at::Tensor output = at::empty({num_rois, pooled_height, pooled_width, channels}, input.options());

  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "roi_align_rotated_forward_cpu", [&] {
    const scalar_t* in_ptr = in.const_data_ptr<scalar_t>();
    const scalar_t* roi_ptr = r.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
    const scalar_t scale = static_cast<scalar_t>(spatial_scale);
    at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
      std::vector<BilinearTerms<scalar_t>> terms;
      std::vector<int64_t> bin_start;
      for (int64_t k = begin; k < end; ++k) {
        const RotatedRoi<scalar_t> roi =
            make_rotated_roi(roi_ptr + 6 * k, scale, pooled_height, pooled_width, sampling_ratio);
        check_batch_index(roi.batch, batch_size, k);
        collect_samples(roi, height, width, pooled_height, pooled_width, terms, bin_start);
        const scalar_t* image = in_ptr + roi.batch * height * width * channels;
        for (int64_t b = 0; b < bins; ++b) {
          scalar_t* acc = out_ptr + (k * bins + b) * channels;
          std::fill(acc, acc + channels, scalar_t(0));
          for (int64_t s = bin_start[b]; s < bin_start[b + 1]; ++s) {
            const BilinearTerms<scalar_t>& t = terms[s];
            const scalar_t* v0 = image + t.offset[0] * channels;
            const scalar_t* v1 = image + t.offset[1] * channels;
            const scalar_t* v2 = image + t.offset[2] * channels;
            const scalar_t* v3 = image + t.offset[3] * channels;
            for (int64_t c = 0; c < channels; ++c) {
              acc[c] += t.weight[0] * v0[c] + t.weight[1] * v1[c] + t.weight[2] * v2[c] + t.weight[3] * v3[c];
            }
          }
          for (int64_t c = 0; c < channels; ++c) {
            acc[c] /= roi.count;
          }
        }
      }
    });
  });
  return output.permute({0, 3, 1, 2}).contiguous();
}

at::Tensor roi_align_rotated_backward_cpu(
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
  TORCH_CHECK(grad.is_cpu(), "roi_align_rotated_backward_cpu: grad must be a CPU tensor");

  const int64_t num_rois = rois.size(0);
  if (num_rois == 0 || batch_size * channels * height * width == 0) {
    return at::zeros({batch_size, channels, height, width}, grad.options());
  }
  const at::Tensor g = grad.permute({0, 2, 3, 1}).contiguous();  // [K, ph, pw, C]
  const at::Tensor r = rois.contiguous();
  const int64_t bins = pooled_height * pooled_width;
  at::Tensor grad_input = at::zeros({batch_size, height, width, channels}, grad.options());

  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "roi_align_rotated_backward_cpu", [&] {
    const scalar_t* g_ptr = g.const_data_ptr<scalar_t>();
    const scalar_t* roi_ptr = r.const_data_ptr<scalar_t>();
    scalar_t* gi_ptr = grad_input.mutable_data_ptr<scalar_t>();
    const scalar_t scale = static_cast<scalar_t>(spatial_scale);
    // Threads own disjoint channel ranges, so the scatter-adds never race; each thread computes the
    // samples of every RoI once for its whole channel range.
    const int64_t grain = std::max<int64_t>(16, channels / std::max<int64_t>(1, at::get_num_threads()));
    at::parallel_for(0, channels, grain, [&](int64_t c_begin, int64_t c_end) {
      std::vector<BilinearTerms<scalar_t>> terms;
      std::vector<int64_t> bin_start;
      std::vector<scalar_t> scaled(c_end - c_begin);
      for (int64_t k = 0; k < num_rois; ++k) {
        const RotatedRoi<scalar_t> roi =
            make_rotated_roi(roi_ptr + 6 * k, scale, pooled_height, pooled_width, sampling_ratio);
        check_batch_index(roi.batch, batch_size, k);
        collect_samples(roi, height, width, pooled_height, pooled_width, terms, bin_start);
        scalar_t* image = gi_ptr + roi.batch * height * width * channels + c_begin;
        for (int64_t b = 0; b < bins; ++b) {
          if (bin_start[b] == bin_start[b + 1]) {
            continue;
          }
          const scalar_t* src = g_ptr + (k * bins + b) * channels + c_begin;
          for (int64_t c = 0; c < c_end - c_begin; ++c) {
            scaled[c] = src[c] / roi.count;
          }
          for (int64_t s = bin_start[b]; s < bin_start[b + 1]; ++s) {
            const BilinearTerms<scalar_t>& t = terms[s];
            for (int corner = 0; corner < 4; ++corner) {
              scalar_t* dst = image + t.offset[corner] * channels;
              const scalar_t w = t.weight[corner];
              for (int64_t c = 0; c < c_end - c_begin; ++c) {
                dst[c] += w * scaled[c];
              }
            }
          }
        }
      }
    });
  });
  return grad_input.permute({0, 3, 1, 2}).contiguous();
}

}  // namespace libdet
