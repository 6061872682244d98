#!/usr/bin/env bash
# Reproduce docs/router-eval.md: rebuild the default router from the shared routing data
# (train splits only, contaminated lines dropped), evaluate it on the held-out test splits,
# write JSON results to $OUT and the cost-quality plots to docs/router-*.png.
#
#   bash bench/router_eval.sh            # needs: pip install -e '.[train,plot]'
#   SKIP_TRAIN=1 bash bench/router_eval.sh   # evaluate the shipped router as is
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
DATA=${TIERLINE_ROUTING_DATA:-../shared/routing-data}
OUT=${OUT:-build/router-eval}
ROUTER=src/tierline/routing/learned/default_router.npz
mkdir -p "$OUT"
if [ -z "${SKIP_TRAIN:-}" ]; then
  $PY -m tierline.routing.learned.build_default --data "$DATA" -o "$ROUTER"
fi
EV="$PY -m tierline.routing.learned.cli router eval --router $ROUTER"
PAIR="--strong gpt-4-1106-preview --weak mixtral-8x7b-instruct-v0.1"
for mode in gain threshold; do
  $EV "$DATA/routellm-mmlu.jsonl" $PAIR --mode $mode --out "$OUT" --name "router-mmlu-$mode"
  $EV "$DATA/routellm-gsm8k.jsonl" $PAIR --mode $mode --out "$OUT" --name "router-gsm8k-$mode"
  # all 80 MT-Bench questions, turn-1 scores
  $EV "$DATA/routellm-mtbench.jsonl" $PAIR --mode $mode --include-contaminated \
    --out "$OUT" --name "router-mtbench-turn1-all80-$mode"
  # RouteLLM's own MT-Bench protocol: 72 uncontaminated questions, mean of both turns
  $EV "$DATA/routellm-mtbench.jsonl" $PAIR --mode $mode --both-turns \
    --out "$OUT" --name "router-mtbench-routellm72-$mode"
done
# many models: llmrouter test split without train_test_overlap prompts
$EV "$DATA/llmrouter.jsonl" --out "$OUT" --name router-llmrouter
$PY bench/router_speed.py
for f in router-mmlu-gain router-gsm8k-gain router-mtbench-turn1-all80-threshold router-llmrouter; do
  cp "$OUT/$f.png" "docs/$f.png"
done
echo "results: $OUT/*.json, plots: docs/router-*.png"
