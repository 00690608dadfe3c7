#include <ATen/Parallel.h>
#include <c10/util/irange.h>

#include <cmath>
#include <vector>

#include "roi_align.h"

namespace libdet {

namespace {

// One bilinear sample of one bin: the flat pixel index (y * width + x) of its four corners and their
// weights, already divided as torchvision divides them (grad * w / count is formed per channel below).
template <typename T>
struct Sample {
  int64_t bin;  // ph * pooled_width + pw
  int64_t corner[4];
  T weight[4];
};

// The corners and weights of the sample at (y, x), exactly as torchvision's bilinear_interpolate_gradient
// computes them; false when the sample lies more than one pixel outside the map (no gradient).
template <typename T>
bool bilinear_corners(int64_t height, int64_t width, T y, T x, Sample<T>& sample) {
  if (y < -1.0 || y > height || x < -1.0 || x > width) {
    return false;
  }
  if (y <= 0) {
    y = 0;
  }
  if (x <= 0) {
    x = 0;
  }
  int64_t y_low = static_cast<int>(y);
  int64_t x_low = static_cast<int>(x);
  int64_t y_high;
  int64_t x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - y_low;
  const T lx = x - x_low;
  const T hy = 1. - ly;
  const T hx = 1. - lx;
  sample.corner[0] = y_low * width + x_low;
  sample.corner[1] = y_low * width + x_high;
  sample.corner[2] = y_high * width + x_low;
  sample.corner[3] = y_high * width + x_high;
  sample.weight[0] = hy * hx;
  sample.weight[1] = hy * lx;
  sample.weight[2] = ly * hx;
  sample.weight[3] = ly * lx;
  // torchvision skips a sample when any corner index is negative; after the clamping above that cannot
  // happen for a map with at least one pixel.
  return y_low >= 0 && x_low >= 0;
}

// The batch index of RoI `n` and its samples (in torchvision's order), with the same arithmetic, in the same
// order and type, as torchvision's kernels; returns the number of grid points of a bin (torchvision's `count`,
// before the forward pass's max(count, 1)).
template <typename T>
int64_t roi_samples(
    const T* rois,
    int64_t n,
    T spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t height,
    int64_t width,
    int64_t sampling_ratio,
    bool aligned,
    int64_t& roi_batch,
    std::vector<Sample<T>>& samples) {
  const T* roi = rois + n * 5;
  roi_batch = static_cast<int64_t>(roi[0]);
  TORCH_CHECK(
      roi_batch >= 0 && roi_batch < batch_size,
      "roi_align: rois[",
      n,
      ", 0] is batch index ",
      roi_batch,
      ", but the input has ",
      batch_size,
      " images.");
  const T offset = aligned ? static_cast<T>(0.5) : static_cast<T>(0.0);
  const T roi_start_w = roi[1] * spatial_scale - offset;
  const T roi_start_h = roi[2] * spatial_scale - offset;
  const T roi_end_w = roi[3] * spatial_scale - offset;
  const T roi_end_h = roi[4] * spatial_scale - offset;
  T roi_width = roi_end_w - roi_start_w;
  T roi_height = roi_end_h - roi_start_h;
  if (!aligned) {
    roi_width = std::max(roi_width, static_cast<T>(1.));
    roi_height = std::max(roi_height, static_cast<T>(1.));
  }
  const T bin_size_h = static_cast<T>(roi_height) / static_cast<T>(pooled_height);
  const T bin_size_w = static_cast<T>(roi_width) / static_cast<T>(pooled_width);
  const int64_t grid_h = (sampling_ratio > 0) ? sampling_ratio : std::ceil(roi_height / pooled_height);
  const int64_t grid_w = (sampling_ratio > 0) ? sampling_ratio : std::ceil(roi_width / pooled_width);

  samples.clear();
  for (const auto ph : c10::irange(pooled_height)) {
    for (const auto pw : c10::irange(pooled_width)) {
      for (const auto iy : c10::irange(grid_h)) {
        const T y = roi_start_h + ph * bin_size_h + static_cast<T>(iy + .5f) * bin_size_h / static_cast<T>(grid_h);
        for (const auto ix : c10::irange(grid_w)) {
          const T x =
              roi_start_w + pw * bin_size_w + static_cast<T>(ix + .5f) * bin_size_w / static_cast<T>(grid_w);
          Sample<T> sample;
          sample.bin = ph * pooled_width + pw;
          if (bilinear_corners(height, width, y, x, sample)) {
            samples.push_back(sample);
          }
        }
      }
    }
  }
  return grid_h * grid_w;
}

template <typename T>
void forward_channels_last(
    const T* input,  // [B, H, W, C]
    const T* rois,
    int64_t num_rois,
    T spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t sampling_ratio,
    bool aligned,
    T* output) {  // [K, pooled_height * pooled_width, C], zero-initialised
  const int64_t bins_per_roi = pooled_height * pooled_width;
  // Validate every batch index first: an error inside the parallel region would be raised from a worker.
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
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample<T>> samples;
    for (int64_t n = begin; n < end; ++n) {
      int64_t roi_batch;
      const T count = static_cast<T>(std::max<int64_t>(
          roi_samples(
              rois,
              n,
              spatial_scale,
              pooled_height,
              pooled_width,
              batch_size,
              height,
              width,
              sampling_ratio,
              aligned,
              roi_batch,
              samples),
          1));
      const T* image = input + roi_batch * height * width * channels;
      T* roi_out = output + n * bins_per_roi * channels;
      for (const Sample<T>& sample : samples) {
        T* __restrict__ out = roi_out + sample.bin * channels;
        const T* __restrict__ v1 = image + sample.corner[0] * channels;
        const T* __restrict__ v2 = image + sample.corner[1] * channels;
        const T* __restrict__ v3 = image + sample.corner[2] * channels;
        const T* __restrict__ v4 = image + sample.corner[3] * channels;
        const T w1 = sample.weight[0], w2 = sample.weight[1], w3 = sample.weight[2], w4 = sample.weight[3];
        for (int64_t c = 0; c < channels; ++c) {
          out[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c];
        }
      }
      for (int64_t i = 0; i < bins_per_roi * channels; ++i) {
        roi_out[i] /= count;
      }
    }
  });
}

template <typename T>
void backward_channels_last(
    const T* grad_bins,  // [K, pooled_height * pooled_width, C]
    const T* rois,
    int64_t num_rois,
    T spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t sampling_ratio,
    bool aligned,
    T* grad_input) {  // [B, H, W, C], zero-initialised
  const int64_t bins_per_roi = pooled_height * pooled_width;
  std::vector<Sample<T>> samples;
  for (const auto n : c10::irange(num_rois)) {
    int64_t roi_batch;
    const T count = static_cast<T>(roi_samples(
        rois,
        n,
        spatial_scale,
        pooled_height,
        pooled_width,
        batch_size,
        height,
        width,
        sampling_ratio,
        aligned,
        roi_batch,
        samples));
    if (samples.empty()) {
      continue;
    }
    const T* roi_grad = grad_bins + n * bins_per_roi * channels;
    T* image_grad = grad_input + roi_batch * height * width * channels;
    // Each thread owns a range of channels; within it, the contributions keep torchvision's order.
    at::parallel_for(0, channels, 32, [&](int64_t c_begin, int64_t c_end) {
      for (const Sample<T>& sample : samples) {
        const T* __restrict__ bin_grad = roi_grad + sample.bin * channels;
        for (int corner = 0; corner < 4; ++corner) {
          T* __restrict__ pixel = image_grad + sample.corner[corner] * channels;
          const T w = sample.weight[corner];
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
  const int64_t batch_size = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  // [K, ph, pw, C] storage, returned as a contiguous [K, C, ph, pw].
  at::Tensor output = at::zeros({rois.size(0), pooled_height, pooled_width, channels}, input.options());
  if (output.numel() > 0 && height > 0 && width > 0) {
    const at::Tensor input_nhwc = input.permute({0, 2, 3, 1}).contiguous();  // no copy for a channels-last map
    const at::Tensor rois_c = rois.contiguous();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward", [&] {
      forward_channels_last<scalar_t>(
          input_nhwc.data_ptr<scalar_t>(),
          rois_c.data_ptr<scalar_t>(),
          rois.size(0),
          static_cast<scalar_t>(spatial_scale),
          pooled_height,
          pooled_width,
          batch_size,
          channels,
          height,
          width,
          sampling_ratio,
          aligned,
          output.data_ptr<scalar_t>());
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

  // [B, H, W, C] storage: viewed as [B, C, H, W] with channels-last strides.
  at::Tensor grad_input_nhwc = at::zeros({batch_size, height, width, channels}, grad.options());
  if (grad.numel() > 0 && height > 0 && width > 0) {
    const at::Tensor grad_bins = grad.permute({0, 2, 3, 1}).contiguous();  // [K, ph, pw, C]
    const at::Tensor rois_c = rois.contiguous();
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward", [&] {
      backward_channels_last<scalar_t>(
          grad_bins.data_ptr<scalar_t>(),
          rois_c.data_ptr<scalar_t>(),
          rois.size(0),
          static_cast<scalar_t>(spatial_scale),
          pooled_height,
          pooled_width,
          batch_size,
          channels,
          height,
          width,
          sampling_ratio,
          aligned,
          grad_input_nhwc.data_ptr<scalar_t>());
    });
  }
  at::Tensor grad_input = grad_input_nhwc.permute({0, 3, 1, 2});
  return channels_last ? grad_input : grad_input.contiguous();
}

}  // namespace libdet
