// CPU kernels of libdet::coco_eval_evaluate and libdet::coco_eval_accumulate.
//
// Both reproduce pycocotools' cocoeval.py operation by operation (same float64 expressions in the same
// order, same stable sorts), so precision/recall/scores are bit-identical to pycocotools':
//   * box IoU: maskApi.c bbIou (crowd gt: the detection's area is the union);
//   * mask IoU: intersection / union of the pixel sets (crowd gt: / detection area), 0 when disjoint;
//   * OKS: computeOks, with numpy's pairwise summation order; exp is the C library's, which may differ
//     from numpy's SIMD exp by one ulp in the OKS value (it changes a match only if an OKS lies within
//     one ulp of an IoU threshold);
//   * evaluateImg: detections by decreasing score (stable), gts with ignored ones last (stable), greedy
//     matching at min(t, 1 - 1e-10), crowd gts matchable again, a match to a regular gt not replaced by
//     an ignored one; "matched" means a nonzero gt id, "gt already matched" a positive detection id, as
//     pycocotools stores ids in float arrays;
//   * accumulate: stable sort of the concatenated scores, cumulative tp/fp, precision envelope, recall
//     thresholds looked up with searchsorted(side="left"), stopping at the first one out of range.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "coco_eval.h"

namespace libdet {

namespace {

void check_tensor(const at::Tensor& t, at::ScalarType dtype, int64_t dim, const char* name) {
  TORCH_CHECK_VALUE(
      t.scalar_type() == dtype && t.dim() == dim, "coco_eval: ", name, " must be a ", dim, "-d ", dtype,
      " tensor, got ", t.dim(), "-d ", t.scalar_type());
  TORCH_CHECK_VALUE(t.is_cpu() && t.is_contiguous(), "coco_eval: ", name, " must be a contiguous CPU tensor");
}

// Calls f(begin, end) on chunks of [0, n) of `chunk` items, handed out one at a time to torch's intra-op
// threads: one parallel region, and no thread idles while another still has a long static share (the
// work per group varies with its detections; an idle OpenMP thread spins, burning CPU time).
template <typename F>
void parallel_chunks(int64_t n, int64_t chunk, const F& f) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), (n + chunk - 1) / chunk);
  if (threads <= 1 || at::in_parallel_region()) {
    if (n > 0) {
      f(0, n);
    }
    return;
  }
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    try {
      for (int64_t begin = next.fetch_add(chunk); begin < n && !failed.load(std::memory_order_relaxed);
           begin = next.fetch_add(chunk)) {
        f(begin, std::min(begin + chunk, n));
      }
    } catch (...) {
      failed = true;  // the others stop; at::parallel_for rethrows this error
      throw;
    }
  });
}

// numpy's float64 add.reduce of a contiguous array: pairwise summation in blocks of 8 (numpy's
// pairwise_sum), which np.sum uses for the OKS average.
double numpy_sum(const double* a, int64_t n) {
  if (n < 8) {
    double res = 0.;
    for (int64_t i = 0; i < n; ++i) {
      res += a[i];
    }
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) {
      r[j] = a[j];
    }
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) {
        r[j] += a[i + j];
      }
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) {
      res += a[i];
    }
    return res;
  }
  int64_t half = n / 2;
  half -= half % 8;
  return numpy_sum(a, half) + numpy_sum(a + half, n - half);
}

// maskApi.c bbIou for one pair; boxes are (x, y, w, h).
inline double box_iou(const double* d, const double* g, bool crowd) {
  const double ga = g[2] * g[3];
  const double da = d[2] * d[3];
  const double w = std::fmin(d[2] + d[0], g[2] + g[0]) - std::fmax(d[0], g[0]);
  if (w <= 0) {
    return 0.0;
  }
  const double h = std::fmin(d[3] + d[1], g[3] + g[1]) - std::fmax(d[1], g[1]);
  if (h <= 0) {
    return 0.0;
  }
  const double inter = w * h;
  const double uni = crowd ? da : da + ga - inter;
  return inter / uni;
}

struct EvalInputs {
  int64_t iou_type;
  const int64_t* gt_rows;
  const int64_t* gt_offsets;
  const int64_t* dt_rows;
  const int64_t* dt_offsets;
  const int64_t* gt_ids;
  const double* gt_areas;
  const uint8_t* gt_crowd;
  const uint8_t* gt_ignore;
  const int64_t* dt_ids;
  const double* dt_areas;  // null: the areas of the decoded detection masks (segm)
  const double* dt_scores;
  const double* gt_geometry;
  int64_t gt_geometry_width;
  const double* dt_geometry;
  int64_t dt_geometry_width;
  coco_masks::Sources gt_masks;
  coco_masks::Sources dt_masks;
  const double* sigmas;
  int64_t num_kpts;
  const double* iou_thrs;
  int64_t num_thrs;
  const double* area_rngs;
  int64_t num_areas;
  int64_t max_det;
  bool match;
};

struct GroupScratch {
  std::vector<int64_t> dt_order, gt_order;
  std::vector<double> ious, e;
  std::vector<uint8_t> gt_ig;
  std::vector<int64_t> gt_matched;  // detection id matched to each gt (0: none)
  std::vector<coco_masks::Mask> gt_mask, dt_mask;
  std::vector<double> dt_area;  // area of each kept detection
  coco_masks::DecodeScratch mask_scratch;
};

// Decodes the group's masks (all of them: malformed ones are reported even where nothing is matched);
// `area_only` when no IoU is computed (RLEs are then only checked and measured).
void decode_masks(
    const EvalInputs& in, const int64_t* gts, int64_t G, const int64_t* dts, int64_t D, bool area_only,
    GroupScratch& s) {
  s.gt_mask.resize(G);
  s.dt_mask.resize(D);
  for (int64_t g = 0; g < G; ++g) {
    coco_masks::decode(in.gt_masks, gts[g], s.gt_mask[g], s.mask_scratch, area_only);
  }
  for (int64_t d = 0; d < D; ++d) {
    coco_masks::decode(in.dt_masks, dts[d], s.dt_mask[d], s.mask_scratch, area_only);
  }
}

// ious[d * G + g] for the kept detections (dt_rows_sorted) against the gts of the group (input order).
void compute_ious(
    const EvalInputs& in, const int64_t* gts, int64_t G, const int64_t* dts, int64_t D, GroupScratch& s) {
  s.ious.assign(D * G, 0.0);
  if (in.iou_type == kCocoIouBbox) {
    for (int64_t d = 0; d < D; ++d) {
      const double* db = in.dt_geometry + dts[d] * 4;
      for (int64_t g = 0; g < G; ++g) {
        s.ious[d * G + g] = box_iou(db, in.gt_geometry + gts[g] * 4, in.gt_crowd[gts[g]] != 0);
      }
    }
  } else if (in.iou_type == kCocoIouSegm) {  // masks decoded by decode_masks
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t g = 0; g < G; ++g) {
        const int64_t inter = coco_masks::intersection(s.dt_mask[d], s.gt_mask[g]);
        if (inter == 0) {
          continue;
        }
        const int64_t uni = in.gt_crowd[gts[g]] ? s.dt_mask[d].area : s.dt_mask[d].area + s.gt_mask[g].area - inter;
        s.ious[d * G + g] = static_cast<double>(inter) / static_cast<double>(uni);
      }
    }
  } else {  // keypoints: pycocotools computeOks
    const int64_t K = in.num_kpts;
    const double eps = std::numeric_limits<double>::epsilon();  // np.spacing(1)
    s.e.resize(K);
    for (int64_t g = 0; g < G; ++g) {
      const double* gg = in.gt_geometry + gts[g] * in.gt_geometry_width;
      const double* bb = gg;
      const double* kg = gg + 4;
      int64_t visible = 0;
      for (int64_t k = 0; k < K; ++k) {
        visible += kg[3 * k + 2] > 0;
      }
      const double x0 = bb[0] - bb[2], x1 = bb[0] + bb[2] * 2;
      const double y0 = bb[1] - bb[3], y1 = bb[1] + bb[3] * 2;
      const double area = in.gt_areas[gts[g]] + eps;
      for (int64_t d = 0; d < D; ++d) {
        const double* kd = in.dt_geometry + dts[d] * in.dt_geometry_width;
        int64_t n = 0;
        for (int64_t k = 0; k < K; ++k) {
          double dx, dy;
          if (visible > 0) {
            if (!(kg[3 * k + 2] > 0)) {
              continue;
            }
            dx = kd[3 * k] - kg[3 * k];
            dy = kd[3 * k + 1] - kg[3 * k + 1];
          } else {
            dx = std::max(0.0, x0 - kd[3 * k]) + std::max(0.0, kd[3 * k] - x1);
            dy = std::max(0.0, y0 - kd[3 * k + 1]) + std::max(0.0, kd[3 * k + 1] - y1);
          }
          const double var = (in.sigmas[k] * 2) * (in.sigmas[k] * 2);
          const double e = (dx * dx + dy * dy) / var / area / 2;
          s.e[n++] = std::exp(-e);
        }
        s.ious[d * G + g] = numpy_sum(s.e.data(), n) / static_cast<double>(n);
      }
    }
  }
}

// evaluateImg for one group: writes flags [A, T, total_kept] at column `out_col` and num_gt [A, groups].
void evaluate_group(
    const EvalInputs& in,
    int64_t group,
    int64_t num_groups,
    int64_t out_col,
    int64_t total_kept,
    double* scores_out,
    uint8_t* flags_out,
    int64_t* num_gt_out,
    uint8_t* present_out,
    GroupScratch& s) {
  const int64_t* gts = in.gt_rows + in.gt_offsets[group];
  const int64_t G = in.gt_offsets[group + 1] - in.gt_offsets[group];
  const int64_t* dts_all = in.dt_rows + in.dt_offsets[group];
  const int64_t D_all = in.dt_offsets[group + 1] - in.dt_offsets[group];
  present_out[group] = (G > 0 || D_all > 0) ? 1 : 0;
  for (int64_t a = 0; a < in.num_areas; ++a) {
    num_gt_out[a * num_groups + group] = 0;
  }
  if (G == 0 && D_all == 0) {
    return;
  }
  // Detections by decreasing score; a stable sort keeps equal scores in input order (mergesort).
  s.dt_order.resize(D_all);
  for (int64_t d = 0; d < D_all; ++d) {
    s.dt_order[d] = dts_all[d];
  }
  std::stable_sort(s.dt_order.begin(), s.dt_order.end(), [&](int64_t x, int64_t y) {
    return in.dt_scores[x] > in.dt_scores[y];
  });
  const int64_t D = std::min(D_all, in.max_det);
  s.dt_order.resize(D);
  const int64_t* dts = s.dt_order.data();
  for (int64_t d = 0; d < D; ++d) {
    scores_out[out_col + d] = in.dt_scores[dts[d]];
  }
  const bool have_ious = in.match && G > 0 && D > 0;
  if (in.iou_type == kCocoIouSegm) {
    // Also where nothing is matched: malformed masks are still reported (pycocotools would not notice them).
    decode_masks(in, gts, G, dts, D, !have_ious, s);
  }
  if (have_ious) {
    compute_ious(in, gts, G, dts, D, s);
  }
  s.dt_area.resize(D);
  for (int64_t d = 0; d < D; ++d) {
    // loadRes stores mask areas as uint32
    s.dt_area[d] = in.dt_areas != nullptr ? in.dt_areas[dts[d]]
                                           : static_cast<double>(static_cast<uint32_t>(s.dt_mask[d].area));
  }

  s.gt_order.resize(G);
  s.gt_ig.resize(G);
  s.gt_matched.resize(G);
  for (int64_t a = 0; a < in.num_areas; ++a) {
    const double lo = in.area_rngs[2 * a], hi = in.area_rngs[2 * a + 1];
    // gts with ignored ones last, each part in input order (stable argsort of the ignore flags)
    int64_t n = 0;
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t g = 0; g < G; ++g) {
        const double area = in.gt_areas[gts[g]];
        const bool ignored = in.gt_ignore[gts[g]] || area < lo || area > hi;
        if (static_cast<int>(ignored) == pass) {
          s.gt_order[n] = g;
          s.gt_ig[n] = ignored;
          ++n;
        }
      }
    }
    int64_t regular = 0;
    for (int64_t j = 0; j < G; ++j) {
      regular += !s.gt_ig[j];
    }
    num_gt_out[a * num_groups + group] = regular;

    for (int64_t t = 0; t < in.num_thrs; ++t) {
      uint8_t* flags = flags_out + (a * in.num_thrs + t) * total_kept + out_col;
      std::fill(s.gt_matched.begin(), s.gt_matched.end(), 0);
      const double threshold = std::min(in.iou_thrs[t], 1 - 1e-10);
      for (int64_t d = 0; d < D; ++d) {
        const double dt_area = s.dt_area[d];
        const bool outside = dt_area < lo || dt_area > hi;
        int64_t m = -1;
        if (have_ious) {
          double best = threshold;
          const double* row = s.ious.data() + d * G;
          for (int64_t j = 0; j < G; ++j) {
            const int64_t g = s.gt_order[j];
            if (s.gt_matched[j] > 0 && !in.gt_crowd[gts[g]]) {
              continue;
            }
            if (m > -1 && !s.gt_ig[m] && s.gt_ig[j]) {
              break;
            }
            if (row[g] < best) {
              continue;
            }
            best = row[g];
            m = j;
          }
        }
        bool matched_id = false;  // pycocotools' dtm != 0
        bool ignored = false;
        if (m > -1) {
          const int64_t gt_id = in.gt_ids[gts[s.gt_order[m]]];
          matched_id = gt_id != 0;
          ignored = s.gt_ig[m];
          s.gt_matched[m] = in.dt_ids[dts[d]];
        }
        ignored = ignored || (!matched_id && outside);
        flags[d] = static_cast<uint8_t>((matched_id ? 1 : 0) | (ignored ? 2 : 0));
      }
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> coco_eval_evaluate_cpu(
    int64_t iou_type,
    const at::Tensor& gt_rows,
    const at::Tensor& gt_offsets,
    const at::Tensor& dt_rows,
    const at::Tensor& dt_offsets,
    const at::Tensor& gt_ids,
    const at::Tensor& gt_areas,
    const at::Tensor& gt_crowd,
    const at::Tensor& gt_ignore,
    const at::Tensor& dt_ids,
    const at::Tensor& dt_areas,
    const at::Tensor& dt_scores,
    const at::Tensor& gt_geometry,
    const at::Tensor& dt_geometry,
    at::TensorList gt_masks,
    at::TensorList dt_masks,
    const at::Tensor& kpt_sigmas,
    const at::Tensor& iou_thrs,
    const at::Tensor& area_rngs,
    int64_t max_det,
    bool match) {
  TORCH_CHECK_VALUE(
      iou_type == kCocoIouBbox || iou_type == kCocoIouSegm || iou_type == kCocoIouKeypoints,
      "coco_eval_evaluate: iou_type must be 0 (bbox), 1 (segm) or 2 (keypoints), got ", iou_type);
  check_tensor(gt_rows, at::kLong, 1, "gt_rows");
  check_tensor(gt_offsets, at::kLong, 1, "gt_offsets");
  check_tensor(dt_rows, at::kLong, 1, "dt_rows");
  check_tensor(dt_offsets, at::kLong, 1, "dt_offsets");
  check_tensor(gt_ids, at::kLong, 1, "gt_ids");
  check_tensor(gt_areas, at::kDouble, 1, "gt_areas");
  check_tensor(gt_crowd, at::kByte, 1, "gt_crowd");
  check_tensor(gt_ignore, at::kByte, 1, "gt_ignore");
  check_tensor(dt_ids, at::kLong, 1, "dt_ids");
  check_tensor(dt_areas, at::kDouble, 1, "dt_areas");
  check_tensor(dt_scores, at::kDouble, 1, "dt_scores");
  check_tensor(gt_geometry, at::kDouble, 2, "gt_geometry");
  check_tensor(dt_geometry, at::kDouble, 2, "dt_geometry");
  check_tensor(kpt_sigmas, at::kDouble, 1, "kpt_sigmas");
  check_tensor(iou_thrs, at::kDouble, 1, "iou_thrs");
  check_tensor(area_rngs, at::kDouble, 2, "area_rngs");
  TORCH_CHECK_VALUE(area_rngs.size(1) == 2, "coco_eval_evaluate: area_rngs must be [A, 2], got ", area_rngs.sizes());
  TORCH_CHECK_VALUE(max_det >= 0, "coco_eval_evaluate: max_det must be >= 0, got ", max_det);
  const int64_t num_groups = gt_offsets.numel() - 1;
  TORCH_CHECK_VALUE(
      num_groups >= 0 && dt_offsets.numel() == num_groups + 1,
      "coco_eval_evaluate: gt_offsets and dt_offsets must both have num_groups + 1 entries");
  const int64_t num_gt = gt_ids.numel(), num_dt = dt_ids.numel();
  TORCH_CHECK_VALUE(
      gt_areas.numel() == num_gt && gt_crowd.numel() == num_gt && gt_ignore.numel() == num_gt,
      "coco_eval_evaluate: gt_ids, gt_areas, gt_crowd and gt_ignore must have the same length");
  const bool measure_dt_masks = iou_type == kCocoIouSegm && dt_areas.numel() == 0 && num_dt > 0;
  TORCH_CHECK_VALUE(
      (dt_areas.numel() == num_dt || measure_dt_masks) && dt_scores.numel() == num_dt,
      "coco_eval_evaluate: dt_ids, dt_areas and dt_scores must have the same length (dt_areas may be empty for "
      "segm: the masks' areas)");

  EvalInputs in{};
  in.iou_type = iou_type;
  in.gt_rows = gt_rows.const_data_ptr<int64_t>();
  in.gt_offsets = gt_offsets.const_data_ptr<int64_t>();
  in.dt_rows = dt_rows.const_data_ptr<int64_t>();
  in.dt_offsets = dt_offsets.const_data_ptr<int64_t>();
  in.gt_ids = gt_ids.const_data_ptr<int64_t>();
  in.gt_areas = gt_areas.const_data_ptr<double>();
  in.gt_crowd = gt_crowd.const_data_ptr<uint8_t>();
  in.gt_ignore = gt_ignore.const_data_ptr<uint8_t>();
  in.dt_ids = dt_ids.const_data_ptr<int64_t>();
  in.dt_areas = measure_dt_masks ? nullptr : dt_areas.const_data_ptr<double>();
  in.dt_scores = dt_scores.const_data_ptr<double>();
  in.gt_geometry = gt_geometry.const_data_ptr<double>();
  in.gt_geometry_width = gt_geometry.size(1);
  in.dt_geometry = dt_geometry.const_data_ptr<double>();
  in.dt_geometry_width = dt_geometry.size(1);
  in.sigmas = kpt_sigmas.const_data_ptr<double>();
  in.num_kpts = kpt_sigmas.numel();
  in.iou_thrs = iou_thrs.const_data_ptr<double>();
  in.num_thrs = iou_thrs.numel();
  in.area_rngs = area_rngs.const_data_ptr<double>();
  in.num_areas = area_rngs.size(0);
  in.max_det = max_det;
  in.match = match;
  if (iou_type == kCocoIouBbox) {
    TORCH_CHECK_VALUE(
        gt_geometry.size(0) == num_gt && gt_geometry.size(1) == 4 && dt_geometry.size(0) == num_dt &&
            dt_geometry.size(1) == 4,
        "coco_eval_evaluate: bbox geometry must be gt [", num_gt, ", 4] and dt [", num_dt, ", 4], got ",
        gt_geometry.sizes(), " and ", dt_geometry.sizes());
  } else if (iou_type == kCocoIouSegm) {
    in.gt_masks = coco_masks::make_sources(gt_masks, "gt_masks");
    in.dt_masks = coco_masks::make_sources(dt_masks, "dt_masks");
    TORCH_CHECK_VALUE(
        in.gt_masks.size == num_gt && in.dt_masks.size == num_dt,
        "coco_eval_evaluate: gt_masks/dt_masks must describe every gt/dt annotation");
  } else {
    const int64_t K = in.num_kpts;
    TORCH_CHECK_VALUE(K > 0, "coco_eval_evaluate: kpt_sigmas must not be empty for keypoints");
    TORCH_CHECK_VALUE(
        gt_geometry.size(0) == num_gt && gt_geometry.size(1) == 4 + 3 * K && dt_geometry.size(0) == num_dt &&
            dt_geometry.size(1) == 3 * K,
        "coco_eval_evaluate: keypoint geometry must be gt [", num_gt, ", ", 4 + 3 * K, "] and dt [", num_dt, ", ",
        3 * K, "], got ", gt_geometry.sizes(), " and ", dt_geometry.sizes());
  }
  // Validate the grouping once, so that the parallel part indexes safely.
  const int64_t* go = in.gt_offsets;
  const int64_t* dof = in.dt_offsets;
  TORCH_CHECK_VALUE(
      num_groups == -1 || (go[0] == 0 && dof[0] == 0 && go[num_groups] == gt_rows.numel() &&
                           dof[num_groups] == dt_rows.numel()),
      "coco_eval_evaluate: offsets must start at 0 and end at the number of rows");
  for (int64_t g = 0; g < num_groups; ++g) {
    TORCH_CHECK_VALUE(go[g] <= go[g + 1] && dof[g] <= dof[g + 1], "coco_eval_evaluate: offsets must be non-decreasing");
  }
  for (int64_t i = 0; i < gt_rows.numel(); ++i) {
    TORCH_CHECK_VALUE(in.gt_rows[i] >= 0 && in.gt_rows[i] < num_gt, "coco_eval_evaluate: gt_rows out of range");
  }
  for (int64_t i = 0; i < dt_rows.numel(); ++i) {
    TORCH_CHECK_VALUE(in.dt_rows[i] >= 0 && in.dt_rows[i] < num_dt, "coco_eval_evaluate: dt_rows out of range");
  }

  at::Tensor eval_offsets = at::empty({num_groups + 1}, at::kLong);
  int64_t* eo = eval_offsets.mutable_data_ptr<int64_t>();
  eo[0] = 0;
  for (int64_t g = 0; g < num_groups; ++g) {
    eo[g + 1] = eo[g] + std::min(dof[g + 1] - dof[g], max_det);
  }
  const int64_t total_kept = eo[num_groups];
  at::Tensor scores = at::empty({total_kept}, at::kDouble);
  // evaluate_group writes every entry of these (no fill: a parallel one costs a parallel region)
  at::Tensor flags = at::empty({in.num_areas, in.num_thrs, total_kept}, at::kByte);
  at::Tensor num_gt_t = at::empty({in.num_areas, num_groups}, at::kLong);
  at::Tensor present = at::empty({num_groups}, at::kByte);
  double* scores_ptr = scores.mutable_data_ptr<double>();
  uint8_t* flags_ptr = flags.mutable_data_ptr<uint8_t>();
  int64_t* num_gt_ptr = num_gt_t.mutable_data_ptr<int64_t>();
  uint8_t* present_ptr = present.mutable_data_ptr<uint8_t>();
  parallel_chunks(num_groups, 256, [&](int64_t begin, int64_t end) {
    GroupScratch scratch;
    for (int64_t g = begin; g < end; ++g) {
      evaluate_group(in, g, num_groups, eo[g], total_kept, scores_ptr, flags_ptr, num_gt_ptr, present_ptr, scratch);
    }
  });
  return {eval_offsets, scores, flags, num_gt_t, present};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> coco_eval_accumulate_cpu(
    const at::Tensor& eval_offsets,
    const at::Tensor& scores,
    const at::Tensor& flags,
    const at::Tensor& num_gt,
    const at::Tensor& present,
    int64_t num_images,
    const at::Tensor& cat_list,
    const at::Tensor& area_list,
    const at::Tensor& max_dets,
    const at::Tensor& img_list,
    const at::Tensor& rec_thrs,
    int64_t num_cats,
    int64_t num_areas,
    int64_t num_max_dets) {
  check_tensor(eval_offsets, at::kLong, 1, "eval_offsets");
  check_tensor(scores, at::kDouble, 1, "scores");
  check_tensor(flags, at::kByte, 3, "flags");
  check_tensor(num_gt, at::kLong, 2, "num_gt");
  check_tensor(present, at::kByte, 1, "present");
  check_tensor(cat_list, at::kLong, 1, "cat_list");
  check_tensor(area_list, at::kLong, 1, "area_list");
  check_tensor(max_dets, at::kLong, 1, "max_dets");
  check_tensor(img_list, at::kLong, 1, "img_list");
  check_tensor(rec_thrs, at::kDouble, 1, "rec_thrs");
  const int64_t num_groups = present.numel();
  const int64_t A0 = flags.size(0), T = flags.size(1), total = flags.size(2);
  const int64_t R = rec_thrs.numel();
  TORCH_CHECK_VALUE(
      eval_offsets.numel() == num_groups + 1 && scores.numel() == total && num_gt.size(0) == A0 &&
          num_gt.size(1) == num_groups,
      "coco_eval_accumulate: inconsistent evaluation tensors");
  TORCH_CHECK_VALUE(num_images >= 0 && (num_images == 0 ? num_groups == 0 : num_groups % num_images == 0),
      "coco_eval_accumulate: num_groups (", num_groups, ") must be a multiple of num_images (", num_images, ")");
  const int64_t K0 = num_images == 0 ? 0 : num_groups / num_images;
  const int64_t nk = cat_list.numel(), na = area_list.numel(), nm = max_dets.numel(), ni = img_list.numel();
  TORCH_CHECK_VALUE(
      nk <= num_cats && na <= num_areas && nm <= num_max_dets,
      "coco_eval_accumulate: more evaluated indices than output entries");
  const int64_t* ks = cat_list.const_data_ptr<int64_t>();
  const int64_t* as = area_list.const_data_ptr<int64_t>();
  const int64_t* ms = max_dets.const_data_ptr<int64_t>();
  const int64_t* is = img_list.const_data_ptr<int64_t>();
  for (int64_t k = 0; k < nk; ++k) {
    TORCH_CHECK_VALUE(ks[k] >= 0 && ks[k] < K0, "coco_eval_accumulate: category index ", ks[k], " was not evaluated");
  }
  for (int64_t a = 0; a < na; ++a) {
    TORCH_CHECK_VALUE(as[a] >= 0 && as[a] < A0, "coco_eval_accumulate: area index ", as[a], " was not evaluated");
  }
  for (int64_t i = 0; i < ni; ++i) {
    TORCH_CHECK_VALUE(
        is[i] >= 0 && is[i] < num_images, "coco_eval_accumulate: image index ", is[i], " was not evaluated");
  }

  // -1 where not evaluated; filled here, not by a parallel at::full (one parallel region per call)
  at::Tensor precision = at::empty({T, R, num_cats, num_areas, num_max_dets}, at::kDouble);
  at::Tensor recall = at::empty({T, num_cats, num_areas, num_max_dets}, at::kDouble);
  at::Tensor score_out = at::empty({T, R, num_cats, num_areas, num_max_dets}, at::kDouble);
  double* prec = precision.mutable_data_ptr<double>();
  double* rec = recall.mutable_data_ptr<double>();
  double* sco = score_out.mutable_data_ptr<double>();
  std::fill_n(prec, precision.numel(), -1.0);
  std::fill_n(rec, recall.numel(), -1.0);
  std::fill_n(sco, score_out.numel(), -1.0);
  const int64_t* eo = eval_offsets.const_data_ptr<int64_t>();
  const double* sc = scores.const_data_ptr<double>();
  const uint8_t* fl = flags.const_data_ptr<uint8_t>();
  const int64_t* ng = num_gt.const_data_ptr<int64_t>();
  const uint8_t* pr_ = present.const_data_ptr<uint8_t>();
  const double* rt = rec_thrs.const_data_ptr<double>();
  const double eps = std::numeric_limits<double>::epsilon();  // np.spacing(1)
  int64_t largest_max_det = 0;
  for (int64_t m = 0; m < nm; ++m) {
    largest_max_det = std::max(largest_max_det, ms[m]);
  }

  // One category at a time: its detections in all images sorted once (stable, by decreasing score), each
  // with its rank in its image. pycocotools sorts the detections of each (area, maxDet) again; those of a
  // maxDet m are the ones of rank < m, and filtering the sorted list keeps them in the order of their own
  // stable sort (the same scores, the same relative positions in the concatenation); areas share the sort.
  parallel_chunks(nk, 1, [&](int64_t k_begin, int64_t k_end) {
    std::vector<int64_t> cols, ranks, order, kept_cols;
    std::vector<int64_t> npig(na);
    std::vector<double> rc, pr, tps, fps, q(R), q_scores(R);
    for (int64_t k = k_begin; k < k_end; ++k) {
      const int64_t k0 = ks[k];
      cols.clear();
      ranks.clear();
      std::fill(npig.begin(), npig.end(), 0);
      bool any = false;
      for (int64_t ii = 0; ii < ni; ++ii) {
        const int64_t group = k0 * num_images + is[ii];
        if (!pr_[group]) {
          continue;
        }
        any = true;
        for (int64_t a = 0; a < na; ++a) {
          npig[a] += ng[as[a] * num_groups + group];
        }
        const int64_t kept = std::min(eo[group + 1] - eo[group], largest_max_det);
        for (int64_t d = 0; d < kept; ++d) {
          cols.push_back(eo[group] + d);
          ranks.push_back(d);
        }
      }
      if (!any) {
        continue;
      }
      order.resize(cols.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return sc[cols[x]] > sc[cols[y]]; });
      for (int64_t m = 0; m < nm; ++m) {
        const int64_t max_det = ms[m];
        kept_cols.clear();
        for (const int64_t j : order) {
          if (ranks[j] < max_det) {
            kept_cols.push_back(cols[j]);
          }
        }
        const int64_t nd = static_cast<int64_t>(kept_cols.size());
        rc.resize(nd);
        pr.resize(nd);
        tps.resize(nd);
        fps.resize(nd);
        for (int64_t a = 0; a < na; ++a) {
          if (npig[a] == 0) {
            continue;
          }
          const int64_t a0 = as[a];
          for (int64_t t = 0; t < T; ++t) {
            const uint8_t* f = fl + (a0 * T + t) * total;
            int64_t tp = 0, fp = 0;
            for (int64_t j = 0; j < nd; ++j) {
              const int flag = f[kept_cols[j]] & 3;  // branch-free: the flags follow no pattern
              tp += flag == 1;  // matched, not ignored
              fp += flag == 0;  // unmatched, not ignored
              tps[j] = static_cast<double>(tp);
              fps[j] = static_cast<double>(fp);
            }
            // The divisions apart from the running counts, so that the compiler vectorises them (the same
            // correctly rounded quotients).
            const double num_positives = static_cast<double>(npig[a]);
            for (int64_t j = 0; j < nd; ++j) {
              rc[j] = tps[j] / num_positives;
              pr[j] = tps[j] / (fps[j] + tps[j] + eps);
            }
            const int64_t out_r = ((t * num_cats + k) * num_areas + a) * num_max_dets + m;
            rec[out_r] = nd ? rc[nd - 1] : 0.0;
            for (int64_t j = nd - 1; j > 0; --j) {
              pr[j - 1] = pr[j] > pr[j - 1] ? pr[j] : pr[j - 1];  // pycocotools' envelope, as a max
            }
            // q and s of pycocotools, then written once: the outputs' stride over r is K * A * M doubles.
            std::fill(q.begin(), q.end(), 0.0);
            std::fill(q_scores.begin(), q_scores.end(), 0.0);
            // searchsorted(rc, rt, side="left"): rc is non-decreasing, so for ascending thresholds the
            // search goes on from the previous index (everything before it is below the threshold).
            int64_t idx = 0;
            for (int64_t r = 0; r < R; ++r) {
              if (r == 0 || !(rt[r] >= rt[r - 1])) {
                idx = 0;
              }
              while (idx < nd && rc[idx] < rt[r]) {
                ++idx;
              }
              if (idx >= nd) {
                break;  // pycocotools' try/except: the remaining thresholds stay 0
              }
              q[r] = pr[idx];
              q_scores[r] = sc[kept_cols[idx]];
            }
            for (int64_t r = 0; r < R; ++r) {
              const int64_t out_p = (((t * R + r) * num_cats + k) * num_areas + a) * num_max_dets + m;
              prec[out_p] = q[r];
              sco[out_p] = q_scores[r];
            }
          }
        }
      }
    }
  });
  return {precision, recall, score_out};
}

}  // namespace libdet
