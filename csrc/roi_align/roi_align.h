// RoIAlign (torchvision's roi_align, aligned or not) on CPU, for channels-last feature maps.
//
// roi_align_forward: same results, bit for bit, as torchvision's CPU roi_align, which first copies a
// channels-last map to NCHW and then runs on one thread. Here each sample's four corner pixels are contiguous
// C-vectors of the NHWC map, every output bin is accumulated for all channels at once (in torchvision's order:
// sample row, sample column; corners top-left, top-right, bottom-left, bottom-right), and RoIs are split across
// threads.
//
// roi_align_backward: same results, bit for bit, as torchvision's CPU `_roi_align_backward`: every RoI's sample positions and
// bilinear weights are computed with the same floating-point steps, and each gradient pixel receives its
// contributions in the same order (RoI, bin row, bin column, sample row, sample column; the four corners of
// a sample in the order top-left, top-right, bottom-left, bottom-right). It is faster because
//   - the positions and weights of a RoI are computed once for all channels (torchvision: once per channel),
//   - the gradient is accumulated channels-last, so every sample adds one contiguous C-vector per corner,
//   - channels are split across threads (each channel's gradient belongs to one thread, so the summation
//     order, and hence the result, does not depend on the number of threads).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace libdet {

// input: [B, C, H, W] with channels-last strides; rois: [K, 5] rows (batch_index, x0, y0, x1, y1) in image
// coordinates. Returns [K, C, pooled_height, pooled_width] (contiguous).
at::Tensor roi_align_forward_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned);

// grad: [K, C, pooled_height, pooled_width]; rois: [K, 5] rows (batch_index, x0, y0, x1, y1) in image
// coordinates. Returns the gradient of the input, [batch_size, C, height, width], in the memory format
// `channels_last` asks for (channels-last strides when true, contiguous otherwise).
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
    bool channels_last);

}  // namespace libdet
