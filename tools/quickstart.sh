#!/usr/bin/env bash
# libdet quickstart, on CPU: install, train a Mask R-CNN on the built-in synthetic shapes dataset, evaluate it
# (COCO box and mask AP on shapes_val) and draw predictions.
#
#   bash tools/quickstart.sh [config overrides, e.g. train.max_iter=100]
#
# Steps (each is also a command you can run on its own, see README "Quickstart"):
#   1. a virtual environment in ./.venv (or $LIBDET_VENV; "current" uses the active one) with torch, torchvision
#      and libdet installed, unless libdet already imports there;
#   2. python tools/lazyconfig_train_net.py --config-file $CONFIG: trains (the shapes dataset is generated on
#      first use), then evaluates; logs, metrics.json, model_final.pth and eval results go to $OUTPUT;
#   3. python tools/demo.py: pictures of the predictions on 8 validation images into $OUTPUT/predictions/;
#   4. python tools/plot_metrics.py: the loss / learning-rate / AP curves into $OUTPUT/metrics.png.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONFIG=${LIBDET_QUICKSTART_CONFIG:-configs/shapes/mask_rcnn_cpu.py}
OUTPUT=${LIBDET_QUICKSTART_OUTPUT:-output/quickstart}
VENV=${LIBDET_VENV:-.venv}
start=$(date +%s)

if [ "$VENV" != "current" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating virtual environment $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
fi
if ! python -c "import libdet, torchvision" >/dev/null 2>&1; then
  echo "== installing torch, torchvision and libdet"
  python -m pip install --quiet --disable-pip-version-check "torch==2.15.*" "torchvision==0.29.*" 2>&1 \
    | { grep -v "^WARNING: Location '" || true; }
  python -m pip install --quiet --disable-pip-version-check -e . 2>&1 | { grep -v "^WARNING: Location '" || true; }
fi
installed=$(date +%s)

echo "== training and evaluating $CONFIG (output: $OUTPUT)"
python tools/lazyconfig_train_net.py --config-file "$CONFIG" train.output_dir="$OUTPUT" "$@"
trained=$(date +%s)

echo "== drawing predictions on 8 validation images"
python tools/demo.py --config-file "$CONFIG" --dataset shapes_val --num-images 8 \
  --output "$OUTPUT/predictions" train.init_checkpoint="$OUTPUT/model_final.pth"
python tools/plot_metrics.py "$OUTPUT/metrics.json" -o "$OUTPUT/metrics.png" \
  --keys total_loss "loss_*" lr "*/AP" --smooth 5
done_at=$(date +%s)

echo "== done: install $((installed - start)) s, training + evaluation $((trained - installed)) s," \
  "pictures $((done_at - trained)) s; total $((done_at - start)) s"
echo "   predictions: $OUTPUT/predictions/   curves: $OUTPUT/metrics.png   log: $OUTPUT/log.txt"
# Prints the AP; with LIBDET_QUICKSTART_MIN_BOX_AP set (CI), fails when box AP is lower.
python - "$OUTPUT" "${LIBDET_QUICKSTART_MIN_BOX_AP:-}" <<'PY'
import json, sys
results = json.load(open(f"{sys.argv[1]}/eval_results.json"))
for task in ("bbox", "segm"):
    r = results[task]
    print(f"   {task}: AP {r['AP']:.1f}  AP50 {r['AP50']:.1f}  AP75 {r['AP75']:.1f}  "
          f"APs {r['APs']:.1f}  APm {r['APm']:.1f}  APl {r['APl']:.1f}")
if sys.argv[2] and results["bbox"]["AP"] < float(sys.argv[2]):
    sys.exit(f"quickstart: box AP {results['bbox']['AP']:.1f} is below LIBDET_QUICKSTART_MIN_BOX_AP={sys.argv[2]}")
PY
