#include <ATen/Parallel.h>
#include <c10/util/irange.h>

#include <vector>

#include "roi_align.h"
#include "roi_align_kernel.h"

namespace libdet {

namespace {

using Geometry = RoiAlignGeometry;
template <typename T>
using Sample = RoiAlignSample<T>;

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

// input: [B, H, W, C]; output: [K, bins, C]. RoIs are split across threads.
template <typename T>
void forward_channels_last(const T* input, const T* rois, int64_t num_rois, const Geometry& g, T* output) {
  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample<T>> samples;
    for (int64_t n = begin; n < end; ++n) {
      const T* roi = rois + n * 5;
      const T* image = input + static_cast<int64_t>(roi[0]) * g.height * g.width * g.channels;
      T* roi_out = output + n * g.bins() * g.channels;
      roi_align_pool_channels_last(image, roi[1], roi[2], roi[3], roi[4], g, samples, roi_out);
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
    const T count = static_cast<T>(roi_align_samples(roi[1], roi[2], roi[3], roi[4], g, samples));
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
  // [K, ph, pw, C] storage, returned as a contiguous [K, C, ph, pw]. The kernel writes every element; without
  // anything to sample (an empty map) every bin is 0.
  const std::vector<int64_t> output_size{rois.size(0), pooled_height, pooled_width, g.channels};
  const bool has_samples = g.height > 0 && g.width > 0;
  at::Tensor output = has_samples ? at::empty(output_size, input.options()) : at::zeros(output_size, input.options());
  if (has_samples && output.numel() > 0) {
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
