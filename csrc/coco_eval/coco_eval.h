// coco_eval: COCO-style detection evaluation (pycocotools' COCOeval.evaluate + accumulate) on flat tensors.
//
// The Python side (libdet/evaluation/fast_eval_api.py) flattens the COCO objects into tensors; these
// kernels reproduce pycocotools' arithmetic, sorting and tie rules exactly (see coco_eval_cpu.cpp).
//
// Vocabulary shared by the three operators:
//   group      one (category, image) pair, numbered k0 * num_images + i (pycocotools' evalImgs order
//              without the area axis). With useCats=0 there is a single "category".
//   rows       int64 indices into the per-annotation arrays, grouped by *_offsets ([num_groups + 1]);
//              inside a group they keep pycocotools' annotation order.
//   masks      (segm only) a list of 5 tensors describing where each annotation's mask comes from:
//              meta [N, 7] int64 (kind, height, width, begin, end, annotation id, image id), where kind is
//              0 polygons (begin/end index polygons in poly_offsets), 1 a compressed RLE string (byte range
//              in rle_bytes), 2 an uncompressed RLE (range in rle_counts); poly_coords float64 (x, y pairs),
//              poly_offsets int64 [P + 1] (coordinate ranges of the polygons), rle_bytes uint8, rle_counts
//              int64.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace libdet {

// iou_type codes; keep in sync with fast_eval_api.py.
constexpr int64_t kCocoIouBbox = 0;
constexpr int64_t kCocoIouSegm = 1;
constexpr int64_t kCocoIouKeypoints = 2;

// Decodes masks (see "masks" above) into canonical run lengths: counts int64 (alternating runs of 0s and
// 1s in column-major order, starting with 0s, every run but the first non-empty) and offsets [N + 1].
std::tuple<at::Tensor, at::Tensor> coco_eval_decode_masks_cpu(at::TensorList masks);

// pycocotools' computeIoU/computeOks + evaluateImg for every group, every area range and IoU threshold.
//   iou_type: kCocoIou*; gt_*/dt_* per-annotation arrays (ids int64, areas/scores float64, crowd/ignore
//   uint8); gt_geometry/dt_geometry float64: bbox [N, 4] (x, y, w, h); keypoints gt [N, 4 + 3K] (bbox then
//   keypoints), dt [N, 3K]; unused for segm (masks instead). kpt_sigmas [K]; iou_thrs [T]; area_rngs [A, 2];
//   max_det: detections kept per group (highest scores); match: false skips matching (pycocotools'
//   keypoints with useCats=0).
// Returns eval_offsets [num_groups + 1] (kept detections per group), scores [D] (by decreasing score in
// each group), flags uint8 [A, T, D] (bit 0: matched to a gt of nonzero id, bit 1: ignored),
// num_gt int64 [A, num_groups] (non-ignored gts), present uint8 [num_groups] (the group has a gt or a dt).
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
    bool match);

// pycocotools' accumulate: precision/scores [T, R, num_cats, num_areas, num_max_dets] and recall
// [T, num_cats, num_areas, num_max_dets], -1 where not evaluated. cat_list/area_list/img_list hold the
// evaluated indices (pycocotools' k_list, a_list, i_list), max_dets the values of m_list.
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
    int64_t num_max_dets);

namespace coco_masks {

// A decoded mask: sorted, disjoint [begin, end) intervals of foreground pixels (column-major indices).
struct Mask {
  std::vector<int64_t> intervals;  // begin0, end0, begin1, end1, ...
  int64_t area = 0;
  int64_t first = 0;  // first foreground index (valid when area > 0)
  int64_t last = -1;  // last foreground index
};

// Read-only view of the 5 mask tensors (validated once).
struct Sources {
  const int64_t* meta = nullptr;
  int64_t size = 0;
  const double* coords = nullptr;
  int64_t num_coords = 0;
  const int64_t* poly_offsets = nullptr;
  int64_t num_polys = 0;
  const uint8_t* bytes = nullptr;
  int64_t num_bytes = 0;
  const int64_t* counts = nullptr;
  int64_t num_counts = 0;
};

// Checks the tensors (dtype, shape, contiguity) and returns a view; `what` names them in errors.
Sources make_sources(at::TensorList masks, const char* what);

// Buffers of decode(), reused between calls (a polygon's boundary has thousands of points; allocating and
// growing them for each polygon cost about as much as filling them).
struct DecodeScratch {
  std::vector<int64_t> toggles;
  std::vector<int> x, y, u, v;
};

// Decodes mask `row`; raises ValueError naming the annotation and image ids if it is malformed.
// `area_only`: checks the mask and measures `area` but leaves `intervals` empty (RLEs need no intervals
// for that; polygons are decoded fully).
void decode(const Sources& sources, int64_t row, Mask& out, DecodeScratch& scratch, bool area_only);

// Number of pixels in both masks.
int64_t intersection(const Mask& a, const Mask& b);

}  // namespace coco_masks

}  // namespace libdet
