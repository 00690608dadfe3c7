#include <ATen/Parallel.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "bilinear.h"
#include "roi_align.h"

namespace libdet {

namespace {

// What both passes know about the pooling: the feature map's size and the op's arguments.
struct Geometry {
  double spatial_scale;
  int64_t pooled_height;
  int64_t pooled_width;
  int64_t batch_size;
  int64_t channels;
  int64_t height;
  int64_t width;
  int64_t sampling_ratio;
  bool aligned;

  int64_t bins() const {
    return pooled_height * pooled_width;
  }
};

// One bilinear sample of one bin (ph * pooled_width + pw).
template <typename T>
struct Sample {
  int64_t bin;
  BilinearTerms<T> terms;
};

// Every RoI's batch index must name an image; checked before any parallel region (an error raised inside one
// would come from a worker thread).
template <typename T>
void check_batch_indices(const T* rois, int64_t num_rois, int64_t batch_size) {
  for (const auto n : c10::irange(num_rois)) {
    const int64_t roi_batch = static_cast<int64_t>(rois[n * 5]);
    TORCH_CHECK(
        roi_batch >= 0 && roi_batch < batch_size,
        "roi_align: rois[",
        n,
        ", 0] is batch index ",
        roi_batch,
        ", but the input has ",
        batch_size,
        " images.");
  }
}

// The samples of RoI `roi` (a row (batch_index, x0, y0, x1, y1)) in torchvision's order, with its arithmetic,
// in the same order and type; returns the number of grid points of a bin (torchvision's `count`, before the
// forward pass's max(count, 1)).
template <typename T>
int64_t roi_samples(const T* roi, const Geometry& g, std::vector<Sample<T>>& samples) {
  const T spatial_scale = static_cast<T>(g.spatial_scale);
  const T offset = g.aligned ? static_cast<T>(0.5) : static_cast<T>(0.0);
  const T roi_start_w = roi[1] * spatial_scale - offset;
  const T roi_start_h = roi[2] * spatial_scale - offset;
  const T roi_end_w = roi[3] * spatial_scale - offset;
  const T roi_end_h = roi[4] * spatial_scale - offset;
  T roi_width = roi_end_w - roi_start_w;
  T roi_height = roi_end_h - roi_start_h;
  if (!g.aligned) {
    roi_width = std::max(roi_width, static_cast<T>(1.));
    roi_height = std::max(roi_height, static_cast<T>(1.));
  }
  const T bin_size_h = roi_height / static_cast<T>(g.pooled_height);
  const T bin_size_w = roi_width / static_cast<T>(g.pooled_width);
  const int64_t grid_h = (g.sampling_ratio > 0) ? g.sampling_ratio : std::ceil(roi_height / g.pooled_height);
  const int64_t grid_w = (g.sampling_ratio > 0) ? g.sampling_ratio : std::ceil(roi_width / g.pooled_width);

  samples.clear();
  for (const auto ph : c10::irange(g.pooled_height)) {
    for (const auto pw : c10::irange(g.pooled_width)) {
      for (const auto iy : c10::irange(grid_h)) {
        const T y = roi_start_h + ph * bin_size_h + static_cast<T>(iy + .5f) * bin_size_h / static_cast<T>(grid_h);
        for (const auto ix : c10::irange(grid_w)) {
          const T x =
              roi_start_w + pw * bin_size_w + static_cast<T>(ix + .5f) * bin_size_w / static_cast<T>(grid_w);
          Sample<T> sample;
          sample.bin = ph * g.pooled_width + pw;
          if (bilinear_terms(g.height, g.width, y, x, sample.terms)) {
            samples.push_back(sample);
          }
        }
      }
    }
  }
  return grid_h * grid_w;
}

// input: [B, H, W, C]; output: [K, bins, C], zero-initialised. RoIs are split across threads.
template <typename T>
void forward_channels_last(const T* input, const T* rois, int64_t num_rois, const Geometry& g, T* output) {
  const int64_t C = g.channels;
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample<T>> samples;
    for (int64_t n = begin; n < end; ++n) {
      const T* roi = rois + n * 5;
      const T count = static_cast<T>(std::max<int64_t>(roi_samples(roi, g, samples), 1));
      const T* image = input + static_cast<int64_t>(roi[0]) * g.height * g.width * C;
      T* roi_out = output + n * g.bins() * C;
      for (const Sample<T>& sample : samples) {
        const BilinearTerms<T>& t = sample.terms;
        T* __restrict__ out = roi_out + sample.bin * C;
        const T* __restrict__ v1 = image + t.offset[0] * C;
        const T* __restrict__ v2 = image + t.offset[1] * C;
        const T* __restrict__ v3 = image + t.offset[2] * C;
        const T* __restrict__ v4 = image + t.offset[3] * C;
        const T w1 = t.weight[0], w2 = t.weight[1], w3 = t.weight[2], w4 = t.weight[3];
        for (int64_t c = 0; c < C; ++c) {
          out[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c];
        }
      }
      for (int64_t i = 0; i < g.bins() * C; ++i) {
        roi_out[i] /= count;
      }
    }
  });
}

// grad_bins: [K, bins, C]; grad_input: [B, H, W, C], zero-initialised. Channels are split across threads.
template <typename T>
void backward_channels_last(const T* grad_bins, const T* rois, int64_t num_rois, const Geometry& g, T* grad_input) {
  const int64_t C = g.channels;
  std::vector<Sample<T>> samples;
  for (const auto n : c10::irange(num_rois)) {
    const T* roi = rois + n * 5;
    const T count = static_cast<T>(roi_samples(roi, g, samples));
    if (samples.empty()) {
      continue;
    }
    const T* roi_grad = grad_bins + n * g.bins() * C;
    T* image_grad = grad_input + static_cast<int64_t>(roi[0]) * g.height * g.width * C;
    // Each thread owns a range of channels; within it, the contributions keep torchvision's order
    // (grad * w / count per corner, corners in order), so the result does not depend on the thread count.
    at::parallel_for(0, C, 32, [&](int64_t c_begin, int64_t c_end) {
      for (const Sample<T>& sample : samples) {
        const T* __restrict__ bin_grad = roi_grad + sample.bin * C;
        for (int corner = 0; corner < 4; ++corner) {
          T* __restrict__ pixel = image_grad + sample.terms.offset[corner] * C;
          const T w = sample.terms.weight[corner];
          for (int64_t c = c_begin; c < c_end; ++c) {
            pixel[c] += bin_grad[c] * w / count;
          }
        }
      }
    });
  }
}

}  // namespace

at::Tensor roi_align_forward_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(), "roi_align_forward: CPU tensors expected.");
  TORCH_CHECK(input.dim() == 4, "roi_align_forward: input must be [B, C, H, W], got ", input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align_forward: rois must be [K, 5], got ", rois.sizes());
  TORCH_CHECK(input.scalar_type() == rois.scalar_type(), "roi_align_forward: input and rois must have one dtype.");
  const Geometry g{
      spatial_scale,
      pooled_height,
      pooled_width,
      input.size(0),
      input.size(1),
      input.size(2),
      input.size(3),
      sampling_ratio,
      aligned};
  // [K, ph, pw, C] storage, returned as a contiguous [K, C, ph, pw].
  at::Tensor output = at::zeros({rois.size(0), pooled_height, pooled_width, g.channels}, input.options());
  if (output.numel() > 0 && g.height > 0 && g.width > 0) {
    const at::Tensor input_nhwc = input.permute({0, 2, 3, 1}).contiguous();  // no copy for a channels-last map
    const at::Tensor rois_c = rois.contiguous();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward", [&] {
      check_batch_indices(rois_c.data_ptr<scalar_t>(), rois.size(0), g.batch_size);
      forward_channels_last<scalar_t>(
          input_nhwc.data_ptr<scalar_t>(), rois_c.data_ptr<scalar_t>(), rois.size(0), g, output.data_ptr<scalar_t>());
    });
  }
  return output.permute({0, 3, 1, 2}).contiguous();
}

at::Tensor roi_align_backward_cpu(
    const at::Tensor& grad,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t sampling_ratio,
    bool aligned,
    bool channels_last) {
  TORCH_CHECK(grad.device().is_cpu() && rois.device().is_cpu(), "roi_align_backward: CPU tensors expected.");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align_backward: rois must be [K, 5], got ", rois.sizes());
  TORCH_CHECK(
      grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels && grad.size(2) == pooled_height &&
          grad.size(3) == pooled_width,
      "roi_align_backward: grad must be [K, C, pooled_height, pooled_width] = [",
      rois.size(0),
      ", ",
      channels,
      ", ",
      pooled_height,
      ", ",
      pooled_width,
      "], got ",
      grad.sizes());
  TORCH_CHECK(grad.scalar_type() == rois.scalar_type(), "roi_align_backward: grad and rois must have one dtype.");
  const Geometry g{
      spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio, aligned};

  // [B, H, W, C] storage: viewed as [B, C, H, W] with channels-last strides.
  at::Tensor grad_input_nhwc = at::zeros({batch_size, height, width, channels}, grad.options());
  if (grad.numel() > 0 && height > 0 && width > 0) {
    const at::Tensor grad_bins = grad.permute({0, 2, 3, 1}).contiguous();  // [K, ph, pw, C]
    const at::Tensor rois_c = rois.contiguous();
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward", [&] {
      check_batch_indices(rois_c.data_ptr<scalar_t>(), rois.size(0), batch_size);
      backward_channels_last<scalar_t>(
          grad_bins.data_ptr<scalar_t>(), rois_c.data_ptr<scalar_t>(), rois.size(0), g, grad_input_nhwc.data_ptr<scalar_t>());
    });
  }
  at::Tensor grad_input = grad_input_nhwc.permute({0, 3, 1, 2});
  return channels_last ? grad_input : grad_input.contiguous();
}

}  // namespace libdet
