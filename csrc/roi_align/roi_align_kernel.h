// The RoIAlign forward pass on one channels-last RoI, free of torch: shared by libdet's torch op
// (roi_align_cpu.cpp) and its onnxruntime op (csrc/onnxruntime), so both give torchvision's results bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "bilinear.h"

namespace libdet {

// What every RoI's pooling knows: the feature map's size and the op's arguments.
struct RoiAlignGeometry {
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
struct RoiAlignSample {
  int64_t bin;
  BilinearTerms<T> terms;
};

// The samples of the RoI (x0, y0, x1, y1) (image coordinates) in torchvision's order, with its arithmetic, in
// the same order and type; returns the number of grid points of a bin (torchvision's `count`, before the
// forward pass's max(count, 1)).
template <typename T>
int64_t roi_align_samples(T x0, T y0, T x1, T y1, const RoiAlignGeometry& g, std::vector<RoiAlignSample<T>>& samples) {
  const T spatial_scale = static_cast<T>(g.spatial_scale);
  const T offset = g.aligned ? static_cast<T>(0.5) : static_cast<T>(0.0);
  const T roi_start_w = x0 * spatial_scale - offset;
  const T roi_start_h = y0 * spatial_scale - offset;
  const T roi_end_w = x1 * spatial_scale - offset;
  const T roi_end_h = y1 * spatial_scale - offset;
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
  for (int64_t ph = 0; ph < g.pooled_height; ++ph) {
    for (int64_t pw = 0; pw < g.pooled_width; ++pw) {
      for (int64_t iy = 0; iy < grid_h; ++iy) {
        const T y = roi_start_h + ph * bin_size_h + static_cast<T>(iy + .5f) * bin_size_h / static_cast<T>(grid_h);
        for (int64_t ix = 0; ix < grid_w; ++ix) {
          const T x =
              roi_start_w + pw * bin_size_w + static_cast<T>(ix + .5f) * bin_size_w / static_cast<T>(grid_w);
          RoiAlignSample<T> sample;
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

// Pools one RoI from `image` ([H, W, C], the RoI's image) into `out` ([bins, C]): every sample adds its four
// corner C-vectors to its bin (in torchvision's order), then every bin is divided by the grid's point count.
// `samples` is scratch space, reused across calls.
template <typename T>
void roi_align_pool_channels_last(
    const T* image,
    T x0,
    T y0,
    T x1,
    T y1,
    const RoiAlignGeometry& g,
    std::vector<RoiAlignSample<T>>& samples,
    T* roi_out) {
  const int64_t C = g.channels;
  const T count = static_cast<T>(std::max<int64_t>(roi_align_samples(x0, y0, x1, y1, g, samples), 1));
  std::fill(roi_out, roi_out + g.bins() * C, static_cast<T>(0));
  for (const RoiAlignSample<T>& sample : samples) {
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

}  // namespace libdet
