#!/usr/bin/env bash
# Set up (if needed), make Criteo-shaped synthetic data, and train a DLRM
# whose embedding tables live in a fast tier holding 10% of the rows, planned
# with lookahead. Prints validation AUC / log-loss next to the teacher's AUC
# (the ceiling). A few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT="${DEMO_DIR:-demo_run}"
ROWS="${DEMO_ROWS:-3000000}"
if [ ! -f "$OUT/data/manifest.json" ]; then
  hotpipe synth --out "$OUT/data" --rows "$ROWS" --scale 0.02 --zipf 1.05 --seed 0 --overwrite
fi
rm -rf "$OUT/run"
hotpipe train --data "$OUT/data" --out "$OUT/run" \
  data.batch_size=2048 model.embedding_dim=16 model.bottom=[64,16] model.top=[64,1] \
  optim.embedding=rowwise_adagrad optim.embedding_lr=0.05 optim.dense=adagrad optim.dense_lr=0.05 \
  cache.policy=lookahead cache.capacity=0.1 cache.window=64 cache.depth=2 "$@"
echo "run directory: $OUT/run (metrics.json, history.jsonl, checkpoints/)"
