#!/usr/bin/env bash
# The tiny encoder-free VLM of docs/multimodal.md, trained from scratch on the CPU, one command:
#
#   scripts/vlm.sh [OUT]            (default OUT: runs/vlm)
#
# tiny-vlm (Gemma 4's unified layout, width 128) on the synthetic colour / shape / count
# questions -> a checkpoint every STEPS/3 steps -> exact match of the last one on 500 held-out
# questions, overall and per type, in OUT/eval.json.
# Sizes are variables: STEPS=5000 THREADS=2 scripts/vlm.sh runs/longer
set -euo pipefail

OUT=${1:-runs/vlm}
STEPS=${STEPS:-3000}
THREADS=${THREADS:-1}
SEED=${SEED:-0}
EVERY=$(( STEPS / 3 ))

glassformer train --task vlm --preset tiny-vlm --out "$OUT" --max-steps "$STEPS" \
    --batch-size 32 --lr 1e-3 --warmup-steps 100 --weight-decay 0 \
    --questions colour,shape,count --eval-every "$EVERY" --eval-batches 4 \
    --checkpoint-every "$EVERY" --keep-checkpoints 0 --seed "$SEED" --threads "$THREADS" \
    --no-progress --no-plot --no-export --force
glassformer eval vlm "$OUT" --examples 500 --threads "$THREADS" --no-progress --json | tee "$OUT/eval.json"
