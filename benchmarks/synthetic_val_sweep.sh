#!/bin/bash
# Which mechanism the `make demo` hnm_d2 model uses is chosen here, on the synthetic VAL split
# (never on test): the demo's data (hnm_d2.data.DEMO_SPLIT_SIZES: the same training split, val
# 100 positive + 300 negative images), the demo config (400 iterations, 128 px) and the demo's 2
# threads, once per mechanism, one seed, then a table at the same operating point. Finished
# runs (results.json) are reused.
#
#     bash benchmarks/synthetic_val_sweep.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-output/demo_sweep}
DATA=output/demo/data
PY=${PY:-.venv/bin/python}
# Results depend on the number of intra-op threads; hnm_d2.demo pins 2, and so do these runs,
# so that "kept" trains the demo's hnm_d2 model and "stock" its stock model, bit for bit.
export OMP_NUM_THREADS=2
STOCK="MODEL.META_ARCHITECTURE GeneralizedRCNN MODEL.PROPOSAL_GENERATOR.NAME RPN
       MODEL.ROI_HEADS.NAME StandardROIHeads DATALOADER.FILTER_EMPTY_ANNOTATIONS True"
OFF="MODEL.HNM.BUFFER.ENABLED False MODEL.HNM.ROI_OHEM.ENABLED False
     MODEL.HNM.RPN_OHEM.ENABLED False"
EVAL='DATASETS.TEST ("synthetic_val",)'

# The demo's splits, generated as the demo does (nothing is written when they exist), and
# registered under the names the demo config uses.
$PY -c 'import sys; from hnm_d2.data import DEMO_SPLIT_SIZES, register_synthetic_splits
register_synthetic_splits(sys.argv[1], sizes=DEMO_SPLIT_SIZES)' "$DATA"
REGISTER="--register-coco synthetic_train $DATA/train.json $DATA/train
          --register-coco synthetic_val $DATA/val.json $DATA/val"

run() {
    local name=$1; shift
    [ -f "$OUT/$name/results.json" ] && return
    mkdir -p "$OUT"
    # shellcheck disable=SC2086  # the option lists are meant to split into words
    $PY train_net.py --config-file configs/demo_synthetic_R18_FPN_cpu.yaml $REGISTER \
        $OFF $EVAL "$@" OUTPUT_DIR "$OUT/$name" > "$OUT/$name.log" 2>&1
}

# shellcheck disable=SC2086
run stock $STOCK
run kept
run buffer_boxes MODEL.HNM.BUFFER.ENABLED True MODEL.HNM.BUFFER.WARMUP_ITERS 100
# The feature memory; the run keeps its first name, so that a recorded run is reused.
run buffer_features MODEL.HNM.FEATURE_MEMORY.ENABLED True MODEL.HNM.FEATURE_MEMORY.WARMUP_ITERS 100 \
    MODEL.HNM.FEATURE_MEMORY.MAX_AGE 100 MODEL.HNM.FEATURE_MEMORY.CAPACITY 1024
run roi_ohem MODEL.HNM.ROI_OHEM.ENABLED True MODEL.HNM.ROI_OHEM.MIN_POSITIVE_FRACTION 0.25
run rpn_ohem MODEL.HNM.RPN_OHEM.ENABLED True MODEL.HNM.RPN_OHEM.NEG_POS_RATIO 3.0
run bg_weight MODEL.HNM.ROI_BG_WEIGHT 0.5 MODEL.HNM.RPN_BG_WEIGHT 0.5

$PY - "$OUT" <<'PYTHON'
import json, math, sys
from pathlib import Path
print("| run | AP50 (pos) | FA/neg img @R0.9 | FA/neg img @R0.8 | FA/neg img @0.5 | MR^-2 |")
print("|---|---|---|---|---|---|")
for results in sorted(Path(sys.argv[1]).glob("*/results.json")):
    r = json.loads(results.read_text())
    neg = r["negatives"]
    cell = lambda v: "n/a" if v is None or math.isnan(v) else f"{v:.3f}"
    print(f"| {results.parent.name} | {r['bbox_positives']['AP50']:.1f} | "
          f"{cell(neg['fa_per_image@recall0.9'])} | {cell(neg['fa_per_image@recall0.8'])} | "
          f"{cell(neg['fa_per_image@0.5'])} | {cell(neg['log_avg_miss_rate'])} |")
PYTHON
