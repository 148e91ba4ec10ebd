#!/usr/bin/env bash
# The preference-tuning run of docs/alignment.md, one command:
#
#   scripts/alignment.sh [OUT]            (default OUT: runs/alignment)
#
# SmolLM2-135M-Instruct -> ifeval-lite and held-out perplexity before -> preference pairs from
# its own sampled answers to the training prompts, labelled by the checkers -> DPO with LoRA ->
# ifeval-lite and perplexity after -> OUT/summary.json and the curves OUT/dpo/*.png.
# A step whose output exists is not run again, so an interrupted run continues where it was.
# Sizes are variables: EVAL_PROMPTS=120 PREF_PROMPTS=120 scripts/alignment.sh runs/bigger
set -euo pipefail

OUT=${1:-runs/alignment}
MODEL=${MODEL:-smollm2-135m-instruct}
EVAL_PROMPTS=${EVAL_PROMPTS:-60}      # held-out ifeval-lite prompts
EVAL_TOKENS=${EVAL_TOKENS:-96}        # answer length at evaluation
PREF_PROMPTS=${PREF_PROMPTS:-48}      # training prompts (topics disjoint from evaluation)
SAMPLES=${SAMPLES:-4}                 # answers sampled per training prompt
PREF_TOKENS=${PREF_TOKENS:-80}
STEPS=${STEPS:-12}
BATCH=${BATCH:-8}
LR=${LR:-1e-3}
BETA=${BETA:-0.1}
LORA_RANK=${LORA_RANK:-16}
GF="python -m glassformer.cli"

mkdir -p "$OUT"
start=$(date +%s)
step() {  # step NAME OUTPUT COMMAND...: run unless OUTPUT exists; log the seconds it took
  local name=$1 output=$2
  shift 2
  if [[ -e $output ]]; then
    echo "== $name: $output exists, kept" >&2
    return
  fi
  echo "== $name" >&2
  local t0=$(date +%s)
  "$@"
  echo "{\"step\": \"$name\", \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT/timings.jsonl"
}

# Held-out text for perplexity: Python's pydoc topic pages (English prose the run never
# trains on), the first 12 in sorted order.
if [[ ! -e $OUT/held_out.jsonl ]]; then
  python - "$OUT/held_out.jsonl" <<'EOF'
import json, sys
from pydoc_data import topics
names = sorted(topics.topics)[:12]
with open(sys.argv[1], "w") as fh:
    for n in names:
        fh.write(json.dumps({"text": topics.topics[n][:4000]}) + "\n")
EOF
fi

step "ifeval-lite before" "$OUT/before.json" \
  $GF eval ifeval-lite --model "$MODEL" --limit "$EVAL_PROMPTS" --max-new-tokens "$EVAL_TOKENS" \
  --out "$OUT/before.json" --json --no-progress
step "perplexity before" "$OUT/ppl_before.json" \
  sh -c "$GF eval perplexity --model $MODEL --data $OUT/held_out.jsonl --max-len 512 --json \
  --no-progress > $OUT/ppl_before.json"
step "preference pairs" "$OUT/pairs.jsonl" \
  sh -c "$GF data preferences --model $MODEL --prompts $PREF_PROMPTS --samples $SAMPLES \
  --max-new-tokens $PREF_TOKENS --out $OUT/pairs.jsonl --json --no-progress \
  > $OUT/pairs_summary.json"
step "DPO (LoRA)" "$OUT/dpo/merged" \
  $GF finetune "$MODEL" --task dpo --data "$OUT/pairs.jsonl" --out "$OUT/dpo" \
  --lora-rank "$LORA_RANK" --lora-alpha $((2 * LORA_RANK)) --lora-targets all-linear \
  --beta "$BETA" --lr "$LR" --max-steps "$STEPS" --batch-size "$BATCH" --eval-every 4 \
  --max-len 384 --no-progress --json
step "ifeval-lite after" "$OUT/after.json" \
  $GF eval ifeval-lite --model "$OUT/dpo/merged" --limit "$EVAL_PROMPTS" \
  --max-new-tokens "$EVAL_TOKENS" --out "$OUT/after.json" --json --no-progress
step "perplexity after" "$OUT/ppl_after.json" \
  sh -c "$GF eval perplexity --model $OUT/dpo/merged --data $OUT/held_out.jsonl --max-len 512 \
  --json --no-progress > $OUT/ppl_after.json"

python - "$OUT" "$start" <<'EOF'
import json, sys, time
from pathlib import Path
out = Path(sys.argv[1])
load = lambda name: json.loads((out / name).read_text())
before, after = load("before.json"), load("after.json")
pb, pa = load("ppl_before.json"), load("ppl_after.json")
steps = [json.loads(x) for x in (out / "timings.jsonl").read_text().splitlines()]
summary = {
    "strict_accuracy": [before["strict_accuracy"], after["strict_accuracy"]],
    "loose_accuracy": [before["loose_accuracy"], after["loose_accuracy"]],
    "instruction_strict_accuracy": [before["instruction_strict_accuracy"],
                                    after["instruction_strict_accuracy"]],
    "perplexity": [pb["perplexity"], pa["perplexity"]],
    "perplexity_change": pa["perplexity"] / pb["perplexity"] - 1,
    "strict_gain_points": 100 * (after["strict_accuracy"] - before["strict_accuracy"]),
    "pairs": load("pairs_summary.json"),
    "dpo": load("dpo/summary.json") if (out / "dpo/summary.json").exists() else None,
    "per_constraint": {k: [before["per_constraint"][k]["strict_accuracy"],
                           after["per_constraint"][k]["strict_accuracy"]]
                       for k in before["per_constraint"]},
    "seconds": {s["step"]: s["seconds"] for s in steps},
    "total_seconds": sum(s["seconds"] for s in steps),
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: v for k, v in summary.items() if k not in ("dpo", "per_constraint")},
                 indent=2))
EOF
