// Mask decoding for libdet::coco_eval: COCO polygons and RLEs -> foreground intervals.
//
// Polygons are rasterised with pycocotools' rule (maskApi.c rleFrPoly: vertices scaled by 5 and rounded,
// dense boundary points, one toggle per column crossing), so the masks are pixel-identical to
// pycocotools' frPyObjects + merge. Compressed RLE strings use COCO's 6-bit LEB128-like encoding where
// the counts from the fourth on are stored as differences to the count two places before.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "coco_eval.h"

namespace libdet {
namespace coco_masks {

namespace {

constexpr int64_t kMetaColumns = 7;
enum MetaColumn { kKind = 0, kHeight, kWidth, kBegin, kEnd, kAnnId, kImageId };
enum Kind { kPolygons = 0, kCompressed = 1, kUncompressed = 2 };

// C's (int) cast of a double as x86-64 performs it (cvttsd2si): truncation toward zero, and INT_MIN for
// NaN or values out of range. pycocotools casts NaN when a polygon has two equal consecutive vertices.
inline int to_int(double value) {
  if (!(value > -2147483649.0 && value < 2147483648.0)) {
    return std::numeric_limits<int>::min();
  }
  return static_cast<int>(value);
}

// Appends to `toggles` the column-major indices where pycocotools' rasterisation of one polygon toggles
// between background and foreground (an index may appear several times: only its parity matters).
void polygon_toggles(const double* xy, int64_t k, int64_t h, int64_t w, DecodeScratch& scratch) {
  constexpr double kScale = 5.0;
  std::vector<int>&x = scratch.x, &y = scratch.y, &u = scratch.u, &v = scratch.v;
  std::vector<int64_t>& toggles = scratch.toggles;
  x.resize(k + 1);
  y.resize(k + 1);
  u.clear();
  v.clear();
  for (int64_t j = 0; j < k; ++j) {
    x[j] = to_int(kScale * xy[2 * j] + 0.5);
    y[j] = to_int(kScale * xy[2 * j + 1] + 0.5);
  }
  x[k] = x[0];
  y[k] = y[0];
  // Dense points along the upsampled boundary, one per step of the longer axis of each edge.
  for (int64_t j = 0; j < k; ++j) {
    int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const int dx = std::abs(xe - xs);
    const int dy = std::abs(ys - ye);
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      std::swap(xs, xe);
      std::swap(ys, ye);
    }
    if (dx >= dy) {
      const double slope = static_cast<double>(ye - ys) / dx;  // NaN for a zero-length edge, as in C
      for (int d = 0; d <= dx; ++d) {
        const int t = flip ? dx - d : d;
        u.push_back(t + xs);
        v.push_back(to_int(ys + slope * t + 0.5));
      }
    } else {
      const double slope = static_cast<double>(xe - xs) / dy;
      for (int d = 0; d <= dy; ++d) {
        const int t = flip ? dy - d : d;
        v.push_back(t + ys);
        u.push_back(to_int(xs + slope * t + 0.5));
      }
    }
  }
  // Where the boundary crosses a pixel column: back to pixel coordinates, one toggle per crossing.
  const double max_x = static_cast<double>(w - 1);
  const double max_y = static_cast<double>(h);
  for (size_t j = 1; j < u.size(); ++j) {
    if (u[j] == u[j - 1]) {
      continue;
    }
    const int64_t column = u[j] < u[j - 1] ? u[j] : static_cast<int64_t>(u[j]) - 1;
    // (column + 0.5) / 5 - 0.5 is an integer exactly when column = 2 (mod 5) (the float division is exact
    // then, and otherwise at least 0.2 away from an integer): the other 4 in 5 are skipped without it.
    if (((column - 2) % 5 + 5) % 5 != 0) {
      continue;
    }
    double xd = static_cast<double>(column);
    xd = (xd + 0.5) / kScale - 0.5;
    if (std::floor(xd) != xd || xd < 0 || xd > max_x) {
      continue;
    }
    double yd = static_cast<double>(v[j] < v[j - 1] ? v[j] : v[j - 1]);
    yd = (yd + 0.5) / kScale - 0.5;
    if (yd < 0) {
      yd = 0;
    } else if (yd > max_y) {
      yd = max_y;
    }
    yd = std::ceil(yd);
    toggles.push_back(static_cast<int64_t>(xd) * h + static_cast<int64_t>(yd));
  }
}

// Sorted toggles -> foreground intervals (an index toggled an even number of times does nothing).
void toggles_to_intervals(std::vector<int64_t>& toggles, int64_t total, std::vector<int64_t>& intervals) {
  std::sort(toggles.begin(), toggles.end());
  bool inside = false;
  int64_t start = 0;
  size_t j = 0;
  while (j < toggles.size()) {
    const int64_t position = toggles[j];
    size_t same = 0;
    while (j < toggles.size() && toggles[j] == position) {
      ++same;
      ++j;
    }
    if (same % 2 == 0 || position >= total) {
      continue;
    }
    if (!inside) {
      start = position;
    } else if (position > start) {
      intervals.push_back(start);
      intervals.push_back(position);
    }
    inside = !inside;
  }
  if (inside && total > start) {
    intervals.push_back(start);
    intervals.push_back(total);
  }
}

// Union of possibly overlapping intervals (several polygons of one annotation).
void union_in_place(std::vector<int64_t>& intervals) {
  const size_t n = intervals.size() / 2;
  if (n < 2) {
    return;
  }
  std::vector<std::pair<int64_t, int64_t>> pairs(n);
  for (size_t i = 0; i < n; ++i) {
    pairs[i] = {intervals[2 * i], intervals[2 * i + 1]};
  }
  std::sort(pairs.begin(), pairs.end());
  intervals.clear();
  int64_t begin = pairs[0].first, end = pairs[0].second;
  for (size_t i = 1; i < n; ++i) {
    if (pairs[i].first <= end) {
      end = std::max(end, pairs[i].second);
    } else {
      intervals.push_back(begin);
      intervals.push_back(end);
      begin = pairs[i].first;
      end = pairs[i].second;
    }
  }
  intervals.push_back(begin);
  intervals.push_back(end);
}

[[noreturn]] void malformed(const int64_t* meta, const std::string& what) {
  TORCH_CHECK_VALUE(
      false, "coco_eval: malformed segmentation of annotation id ", meta[kAnnId], " (image id ", meta[kImageId],
      "): ", what);
  std::abort();  // unreachable
}

// Run lengths (first run = background) -> intervals (only the area when `intervals` is null); checks
// that they cover height * width pixels.
template <typename NextCount>
int64_t runs_to_intervals(
    const int64_t* meta, int64_t total, NextCount next_count, std::vector<int64_t>* intervals) {
  int64_t position = 0;
  int64_t count = 0;
  int64_t area = 0;
  bool foreground = false;
  while (next_count(count)) {
    if (count < 0) {
      malformed(meta, "negative RLE count " + std::to_string(count));
    }
    if (foreground && count > 0) {
      area += count;
      if (intervals != nullptr) {
        if (!intervals->empty() && intervals->back() == position) {
          intervals->back() = position + count;  // a zero-length background run between two runs
        } else {
          intervals->push_back(position);
          intervals->push_back(position + count);
        }
      }
    }
    position += count;
    if (position > total) {
      break;
    }
    foreground = !foreground;
  }
  if (position != total) {
    malformed(
        meta, "the RLE counts cover " + std::to_string(position) + " pixels (or more), expected height * width = " +
            std::to_string(meta[kHeight]) + " * " + std::to_string(meta[kWidth]) + " = " + std::to_string(total));
  }
  return area;
}

}  // namespace

Sources make_sources(at::TensorList masks, const char* what) {
  TORCH_CHECK_VALUE(
      masks.size() == 5, "coco_eval: ", what,
      " must be 5 tensors (meta, poly_coords, poly_offsets, rle_bytes, rle_counts), got ", masks.size());
  const at::Tensor& meta = masks[0];
  TORCH_CHECK_VALUE(
      meta.dim() == 2 && meta.size(1) == kMetaColumns && meta.scalar_type() == at::kLong,
      "coco_eval: ", what, " meta must be int64 [N, 7], got ", meta.scalar_type(), " ", meta.sizes());
  TORCH_CHECK_VALUE(masks[1].scalar_type() == at::kDouble, "coco_eval: ", what, " poly_coords must be float64");
  TORCH_CHECK_VALUE(masks[2].scalar_type() == at::kLong, "coco_eval: ", what, " poly_offsets must be int64");
  TORCH_CHECK_VALUE(masks[3].scalar_type() == at::kByte, "coco_eval: ", what, " rle_bytes must be uint8");
  TORCH_CHECK_VALUE(masks[4].scalar_type() == at::kLong, "coco_eval: ", what, " rle_counts must be int64");
  for (const at::Tensor& t : masks) {
    TORCH_CHECK_VALUE(t.is_cpu() && t.is_contiguous(), "coco_eval: ", what, " tensors must be contiguous CPU tensors");
  }
  Sources s;
  s.meta = meta.const_data_ptr<int64_t>();
  s.size = meta.size(0);
  s.coords = masks[1].const_data_ptr<double>();
  s.num_coords = masks[1].numel();
  s.poly_offsets = masks[2].const_data_ptr<int64_t>();
  s.num_polys = std::max<int64_t>(masks[2].numel() - 1, 0);
  s.bytes = masks[3].const_data_ptr<uint8_t>();
  s.num_bytes = masks[3].numel();
  s.counts = masks[4].const_data_ptr<int64_t>();
  s.num_counts = masks[4].numel();
  return s;
}

void decode(const Sources& s, int64_t row, Mask& out, DecodeScratch& scratch, bool area_only) {
  TORCH_CHECK_VALUE(row >= 0 && row < s.size, "coco_eval: mask row ", row, " out of range [0, ", s.size, ")");
  const int64_t* meta = s.meta + row * kMetaColumns;
  const int64_t h = meta[kHeight], w = meta[kWidth], begin = meta[kBegin], end = meta[kEnd];
  if (h <= 0 || w <= 0) {
    malformed(meta, "height and width must be positive, got " + std::to_string(h) + " x " + std::to_string(w));
  }
  const int64_t total = h * w;
  out.intervals.clear();
  std::vector<int64_t>* intervals = area_only ? nullptr : &out.intervals;
  switch (meta[kKind]) {
    case kPolygons: {  // polygons overlap, so their area needs the intervals
      TORCH_CHECK_VALUE(begin >= 0 && begin <= end && end <= s.num_polys, "coco_eval: bad polygon range for row ", row);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c0 = s.poly_offsets[p], c1 = s.poly_offsets[p + 1];
        TORCH_CHECK_VALUE(0 <= c0 && c0 <= c1 && c1 <= s.num_coords, "coco_eval: bad polygon offsets for row ", row);
        const int64_t k = (c1 - c0) / 2;  // an odd trailing coordinate is ignored, as in pycocotools
        if (k < 1) {
          malformed(meta, "a polygon needs at least one (x, y) point");
        }
        for (int64_t c = c0; c < c0 + 2 * k; ++c) {
          if (!std::isfinite(s.coords[c])) {
            malformed(meta, "polygon coordinates must be finite");
          }
        }
        scratch.toggles.clear();
        polygon_toggles(s.coords + c0, k, h, w, scratch);
        toggles_to_intervals(scratch.toggles, total, out.intervals);
      }
      if (end - begin > 1) {
        union_in_place(out.intervals);
      }
      out.area = 0;
      for (size_t i = 0; i < out.intervals.size(); i += 2) {
        out.area += out.intervals[i + 1] - out.intervals[i];
      }
      break;
    }
    case kCompressed: {
      TORCH_CHECK_VALUE(
          begin >= 0 && begin <= end && end <= s.num_bytes, "coco_eval: bad RLE byte range for row ", row);
      // Counts from the fourth on are deltas to the count two places before: only those two are kept.
      int64_t before_last = 0, last = 0, num_counts = 0;
      int64_t p = begin;
      const uint8_t* bytes = s.bytes;
      auto next = [&](int64_t& count) -> bool {
        if (p >= end) {
          return false;
        }
        int64_t value = 0;
        int shift = 0;
        bool more = true;
        while (more) {
          if (p >= end) {
            malformed(meta, "the compressed RLE string ends in the middle of a count");
          }
          const int c = static_cast<int>(bytes[p]) - 48;
          if (c < 0 || c > 63 || shift > 55) {
            malformed(meta, "invalid character in the compressed RLE string");
          }
          value |= static_cast<int64_t>(c & 0x1f) << shift;
          more = (c & 0x20) != 0;
          ++p;
          shift += 5;
          if (!more && (c & 0x10)) {
            value |= static_cast<int64_t>(-1) * (static_cast<int64_t>(1) << shift);
          }
        }
        if (num_counts > 2) {
          value += before_last;
        }
        ++num_counts;
        before_last = last;
        last = value;
        count = value;
        return true;
      };
      out.area = runs_to_intervals(meta, total, next, intervals);
      break;
    }
    case kUncompressed: {
      TORCH_CHECK_VALUE(
          begin >= 0 && begin <= end && end <= s.num_counts, "coco_eval: bad RLE count range for row ", row);
      int64_t p = begin;
      auto next = [&](int64_t& count) -> bool {
        if (p >= end) {
          return false;
        }
        count = s.counts[p++];
        return true;
      };
      out.area = runs_to_intervals(meta, total, next, intervals);
      break;
    }
    default:
      malformed(meta, "unknown segmentation kind " + std::to_string(meta[kKind]));
  }
  out.first = out.intervals.empty() ? 0 : out.intervals.front();
  out.last = out.intervals.empty() ? -1 : out.intervals.back() - 1;
}

int64_t intersection(const Mask& a, const Mask& b) {
  if (a.area == 0 || b.area == 0 || a.last < b.first || b.last < a.first) {
    return 0;
  }
  const std::vector<int64_t>& x = a.intervals;
  const std::vector<int64_t>& y = b.intervals;
  size_t i = 0, j = 0;
  int64_t total = 0;
  while (i < x.size() && j < y.size()) {
    const int64_t lo = std::max(x[i], y[j]);
    const int64_t hi = std::min(x[i + 1], y[j + 1]);
    if (hi > lo) {
      total += hi - lo;
    }
    if (x[i + 1] < y[j + 1]) {
      i += 2;
    } else {
      j += 2;
    }
  }
  return total;
}

}  // namespace coco_masks

std::tuple<at::Tensor, at::Tensor> coco_eval_decode_masks_cpu(at::TensorList masks) {
  const coco_masks::Sources sources = coco_masks::make_sources(masks, "masks");
  const int64_t n = sources.size;
  std::vector<coco_masks::Mask> decoded(n);
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    coco_masks::DecodeScratch scratch;
    for (int64_t row = begin; row < end; ++row) {
      coco_masks::decode(sources, row, decoded[row], scratch, false);
    }
  });
  at::Tensor offsets = at::empty({n + 1}, at::kLong);
  int64_t* off = offsets.mutable_data_ptr<int64_t>();
  off[0] = 0;
  for (int64_t row = 0; row < n; ++row) {
    // background, then (foreground, background) per interval, the trailing background only if non-empty
    const auto& iv = decoded[row].intervals;
    const int64_t* meta = sources.meta + row * coco_masks::kMetaColumns;
    const int64_t total = meta[coco_masks::kHeight] * meta[coco_masks::kWidth];
    const bool trailing = iv.empty() || iv.back() < total;
    off[row + 1] = off[row] + 1 + static_cast<int64_t>(iv.size()) - (trailing ? 0 : 1);
  }
  at::Tensor counts = at::empty({off[n]}, at::kLong);
  int64_t* out = counts.mutable_data_ptr<int64_t>();
  for (int64_t row = 0; row < n; ++row) {
    const auto& iv = decoded[row].intervals;
    const int64_t* meta = sources.meta + row * coco_masks::kMetaColumns;
    const int64_t total = meta[coco_masks::kHeight] * meta[coco_masks::kWidth];
    int64_t* o = out + off[row];
    int64_t position = 0;
    for (size_t i = 0; i < iv.size(); i += 2) {
      *o++ = iv[i] - position;
      *o++ = iv[i + 1] - iv[i];
      position = iv[i + 1];
    }
    if (position < total || iv.empty()) {
      *o++ = total - position;
    }
  }
  return {counts, offsets};
}

}  // namespace libdet
