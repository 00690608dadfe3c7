// Bilinear sampling terms with RoIAlign's conventions (torchvision's roi_align, detectron2's ROIAlignRotated):
// a point more than one pixel outside the map contributes nothing, a point in the last row / column or on the
// border half-pixel is clamped to it.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace libdet {

// The four pixels (offsets y * width + x into an H x W plane: top-left, top-right, bottom-left,
// bottom-right) and weights of a bilinear sample.
template <typename T>
struct BilinearTerms {
  int64_t offset[4];
  T weight[4];
};

// Returns false (the sample contributes nothing) for a point more than one pixel outside the map, or NaN.
// The arithmetic is torchvision's step for step, so that kernels built on it give its results bit for bit.
template <typename T>
LIBDET_HOST_DEVICE bool bilinear_terms(int64_t height, int64_t width, T y, T x, BilinearTerms<T>& t) {
  if (!(y >= static_cast<T>(-1) && y <= static_cast<T>(height) && x >= static_cast<T>(-1) &&
        x <= static_cast<T>(width))) {
    return false;
  }
  if (y < 0) {
    y = 0;
  }
  if (x < 0) {
    x = 0;
  }
  int64_t y_low = static_cast<int64_t>(y);
  int64_t x_low = static_cast<int64_t>(x);
  int64_t y_high;
  int64_t x_high;
  if (y_low >= height - 1) {
    y_low = y_high = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_low = x_high = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - static_cast<T>(y_low);
  const T lx = x - static_cast<T>(x_low);
  const T hy = static_cast<T>(1) - ly;
  const T hx = static_cast<T>(1) - lx;
  t.offset[0] = y_low * width + x_low;
  t.offset[1] = y_low * width + x_high;
  t.offset[2] = y_high * width + x_low;
  t.offset[3] = y_high * width + x_high;
  t.weight[0] = hy * hx;
  t.weight[1] = hy * lx;
  t.weight[2] = ly * hx;
  t.weight[3] = ly * lx;
  return true;
}

}  // namespace libdet
