#!/usr/bin/env bash
# Reproduce docs/router-eval.md: rebuild the default router from the shared routing data
# (train splits only, contaminated lines dropped), evaluate it on the held-out test splits,
# write JSON results to $OUT and the cost-quality plots to docs/router-*.png.
#
# Two routers are evaluated:
#  * the pair-only router (train splits of routellm-mmlu + routellm-gsm8k only, IDF fitted on
#    those prompts) - the protocol of the two-model bars (MMLU, GSM8K, MT-Bench): "pair-*" files;
#  * the shipped default router (three train splits incl. llmrouter) - the many-model
#    (llmrouter) numbers, and its two-model numbers for information: "router-*" files.
#
#   bash bench/router_eval.sh            # needs: pip install -e '.[train,plot]'
#   SKIP_TRAIN=1 bash bench/router_eval.sh   # evaluate the shipped router as is (the pair-only
#                                            # router is trained if $OUT has none)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
DATA=${TIERLINE_ROUTING_DATA:-../shared/routing-data}
OUT=${OUT:-build/router-eval}
ROUTER=src/tierline/routing/learned/default_router.npz
PAIR_ROUTER=$OUT/pair_router.npz
CLI="$PY -m tierline.routing.learned.cli router"
mkdir -p "$OUT"
if [ -z "${SKIP_TRAIN:-}" ]; then
  $PY -m tierline.routing.learned.build_default --data "$DATA" -o "$ROUTER"
fi
if [ -z "${SKIP_TRAIN:-}" ] || [ ! -f "$PAIR_ROUTER" ]; then
  $CLI train "$DATA/routellm-mmlu.jsonl" "$DATA/routellm-gsm8k.jsonl" -o "$PAIR_ROUTER"
fi
PAIR="--strong gpt-4-1106-preview --weak mixtral-8x7b-instruct-v0.1"
for which in pair router; do
  if [ "$which" = pair ]; then R=$PAIR_ROUTER; else R=$ROUTER; fi
  EV="$CLI eval --router $R"
  for mode in gain threshold; do
    $EV "$DATA/routellm-mmlu.jsonl" $PAIR --mode $mode --out "$OUT" --name "$which-mmlu-$mode"
    $EV "$DATA/routellm-gsm8k.jsonl" $PAIR --mode $mode --out "$OUT" --name "$which-gsm8k-$mode"
    # all 80 MT-Bench questions, turn-1 scores
    $EV "$DATA/routellm-mtbench.jsonl" $PAIR --mode $mode --include-contaminated \
      --out "$OUT" --name "$which-mtbench-turn1-all80-$mode"
    # RouteLLM's own MT-Bench protocol: 72 uncontaminated questions, mean of both turns
    $EV "$DATA/routellm-mtbench.jsonl" $PAIR --mode $mode --both-turns \
      --out "$OUT" --name "$which-mtbench-routellm72-$mode"
  done
done
# many models: llmrouter test split without train_test_overlap prompts (default router)
$CLI eval --router $ROUTER "$DATA/llmrouter.jsonl" --out "$OUT" --name router-llmrouter
$PY bench/router_speed.py
for f in pair-mmlu-gain pair-gsm8k-gain pair-mtbench-turn1-all80-threshold router-llmrouter; do
  cp "$OUT/$f.png" "docs/$f.png"
done
echo "results: $OUT/*.json, plots: docs/*.png"
