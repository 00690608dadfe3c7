// roi_align_rotated: RoIAlign over rotated regions (detectron2's ROIAlignRotated semantics).
//
// A RoI is (batch_index, cx, cy, w, h, angle in degrees, counter-clockwise on screen), in input-image
// coordinates; spatial_scale maps them to the feature map, where pixel centres sit at integer + 0.5
// (hence the -0.5 shift of the centre, as RoIAlign with aligned=True does). Bin (ph, pw) of the
// pooled_height x pooled_width output averages grid_h x grid_w bilinear samples taken on a regular grid
// inside the bin, with the grid rotated around the RoI centre; grid = sampling_ratio if > 0, otherwise
// ceil(roi size / pooled size). Samples more than one pixel outside the map contribute 0.
//
// The pure-PyTorch twin in libdet/layers/roi_align_rotated.py follows these steps in the same order.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

#include "bilinear.h"
#include "host_device.h"

namespace libdet {

// input: [B, C, H, W]; rois: [K, 6]; returns [K, C, pooled_height, pooled_width].
at::Tensor roi_align_rotated_forward_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio);

// grad: [K, C, pooled_height, pooled_width]; returns the gradient of the input, [B, C, H, W].
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
    int64_t sampling_ratio);

#ifdef WITH_CUDA
at::Tensor roi_align_rotated_forward_cuda(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio);

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
    int64_t sampling_ratio);
#endif

// Argument checks shared by the CPU and CUDA implementations.
inline void check_roi_align_rotated_rois(const at::Tensor& rois, const at::Tensor& reference, const char* what) {
  TORCH_CHECK(
      rois.dim() == 2 && rois.size(1) == 6,
      "roi_align_rotated: rois must have shape [K, 6] (batch_index, cx, cy, w, h, angle), got ", rois.sizes());
  TORCH_CHECK(
      rois.scalar_type() == reference.scalar_type() && at::isFloatingType(reference.scalar_type()),
      "roi_align_rotated: rois and ", what, " must share a float32 or float64 dtype, got ",
      rois.scalar_type(), " and ", reference.scalar_type());
  TORCH_CHECK(
      rois.device() == reference.device(),
      "roi_align_rotated: rois and ", what, " must be on the same device, got ", rois.device(), " and ",
      reference.device());
}

inline void check_pooled_size(int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK(
      pooled_height > 0 && pooled_width > 0,
      "roi_align_rotated: output size must be positive, got ", pooled_height, "x", pooled_width);
}

inline void check_roi_align_rotated_backward_args(
    const at::Tensor& grad, const at::Tensor& rois, int64_t channels, int64_t pooled_height, int64_t pooled_width) {
  check_roi_align_rotated_rois(rois, grad, "grad");
  check_pooled_size(pooled_height, pooled_width);
  TORCH_CHECK(
      grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
          grad.size(2) == pooled_height && grad.size(3) == pooled_width,
      "roi_align_rotated_backward: grad must be [K, C, pooled_height, pooled_width] = [", rois.size(0), ", ",
      channels, ", ", pooled_height, ", ", pooled_width, "], got ", grad.sizes());
}

namespace roi_align_rotated_detail {

constexpr double kDegreesToRadians = 0.017453292519943295;  // pi / 180

// Where the samples of one RoI lie on the feature map.
template <typename T>
struct RotatedRoi {
  int64_t batch;  // image index (truncated towards zero, as an integer cast does)
  T center_x;     // centre in feature-map pixels, minus half a pixel
  T center_y;
  T cos_theta;
  T sin_theta;
  T start_w;  // -width / 2: sample offsets are relative to the centre before the rotation
  T start_h;
  T bin_w;
  T bin_h;
  int grid_w;  // samples per bin along each axis (0 for an empty RoI in adaptive mode)
  int grid_h;
  T count;  // max(grid_h * grid_w, 1)
};

template <typename T>
LIBDET_HOST_DEVICE RotatedRoi<T> make_rotated_roi(
    const T* roi, T spatial_scale, int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio) {
  RotatedRoi<T> r;
  r.batch = static_cast<int64_t>(roi[0]);
  r.center_x = roi[1] * spatial_scale - static_cast<T>(0.5);
  r.center_y = roi[2] * spatial_scale - static_cast<T>(0.5);
  const T width = roi[3] * spatial_scale;
  const T height = roi[4] * spatial_scale;
  const T theta = roi[5] * static_cast<T>(kDegreesToRadians);
  r.cos_theta = cos(theta);
  r.sin_theta = sin(theta);
  r.bin_w = width / static_cast<T>(pooled_width);
  r.bin_h = height / static_cast<T>(pooled_height);
  if (sampling_ratio > 0) {
    r.grid_w = static_cast<int>(sampling_ratio);
    r.grid_h = static_cast<int>(sampling_ratio);
  } else {
    const T grid_w = ceil(width / static_cast<T>(pooled_width));
    const T grid_h = ceil(height / static_cast<T>(pooled_height));
    r.grid_w = grid_w > 0 ? static_cast<int>(grid_w) : 0;
    r.grid_h = grid_h > 0 ? static_cast<int>(grid_h) : 0;
  }
  r.start_w = -width / static_cast<T>(2);
  r.start_h = -height / static_cast<T>(2);
  const int samples = r.grid_w * r.grid_h;
  r.count = static_cast<T>(samples > 1 ? samples : 1);
  return r;
}

// Feature-map coordinates (y, x) of sample (iy, ix) of bin (ph, pw).
template <typename T>
LIBDET_HOST_DEVICE void sample_position(
    const RotatedRoi<T>& r, int64_t ph, int64_t pw, int iy, int ix, T& y, T& x) {
  const T yy = r.start_h + static_cast<T>(ph) * r.bin_h +
      (static_cast<T>(iy) + static_cast<T>(0.5)) * r.bin_h / static_cast<T>(r.grid_h);
  const T xx = r.start_w + static_cast<T>(pw) * r.bin_w +
      (static_cast<T>(ix) + static_cast<T>(0.5)) * r.bin_w / static_cast<T>(r.grid_w);
  y = yy * r.cos_theta - xx * r.sin_theta + r.center_y;
  x = yy * r.sin_theta + xx * r.cos_theta + r.center_x;
}

// Shared with roi_align (csrc/common/bilinear.h).
using ::libdet::bilinear_terms;
using ::libdet::BilinearTerms;

}  // namespace roi_align_rotated_detail
}  // namespace libdet
