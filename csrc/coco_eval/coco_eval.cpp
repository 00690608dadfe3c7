// Registers libdet::coco_eval_decode_masks, libdet::coco_eval_evaluate and libdet::coco_eval_accumulate
// with the dispatcher (CPU only: evaluation runs on host data).
#include <torch/library.h>

#include "coco_eval.h"

TORCH_LIBRARY_FRAGMENT(libdet, m) {
  m.def("coco_eval_decode_masks(Tensor[] masks) -> (Tensor, Tensor)");
  m.def(
      "coco_eval_evaluate(int iou_type, Tensor gt_rows, Tensor gt_offsets, Tensor dt_rows, Tensor dt_offsets, "
      "Tensor gt_ids, Tensor gt_areas, Tensor gt_crowd, Tensor gt_ignore, Tensor dt_ids, Tensor dt_areas, "
      "Tensor dt_scores, Tensor gt_geometry, Tensor dt_geometry, Tensor[] gt_masks, Tensor[] dt_masks, "
      "Tensor kpt_sigmas, Tensor iou_thrs, Tensor area_rngs, int max_det, bool match) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "coco_eval_accumulate(Tensor eval_offsets, Tensor scores, Tensor flags, Tensor num_gt, Tensor present, "
      "int num_images, Tensor cat_list, Tensor area_list, Tensor max_dets, Tensor img_list, Tensor rec_thrs, "
      "int num_cats, int num_areas, int num_max_dets) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(libdet, CPU, m) {
  m.impl("coco_eval_decode_masks", &libdet::coco_eval_decode_masks_cpu);
  m.impl("coco_eval_evaluate", &libdet::coco_eval_evaluate_cpu);
  m.impl("coco_eval_accumulate", &libdet::coco_eval_accumulate_cpu);
}
