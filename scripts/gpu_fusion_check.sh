#!/usr/bin/env bash
# The GPU checks of the GEMM-epilogue fusion, in one run of at most 11 minutes on one H100/H200:
#   1. the fusion tests on the GPU (the Triton kernels compiled, not interpreted);
#   2. Llama-3-8B- and Qwen3-30B-A3B-shaped blocks, bf16, 8 x 2048 tokens, forward + backward:
#      fused vs unfused eager vs torch.compile(mode="max-autotune") (and Liger where it has the
#      same fusions);
#   3. the LM-head loss at both models' vocabularies: time and peak memory of the Triton kernel
#      against F.cross_entropy(F.linear(h, W)).
# It writes $OUT/gpu_fusion_check.json (every figure, from benchmarks/epilogue.py) and
# $OUT/gpu_fusion_verdict.json (each criterion, its measured value, pass or fail).
#
#   scripts/gpu_fusion_check.sh                 # on the GPU machine; OUT defaults to ./gpu_out
#   scripts/gpu_fusion_check.sh --cpu-dry-run   # the same Python path on the CPU, tiny shapes
#
# Criteria: fused >= 1.3x eager and >= 1.0x torch.compile per block (fwd+bwd); the LM-head
# loss's peak memory <= 1/4 of the unfused one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
if [[ "${1:-}" == "--cpu-dry-run" ]]; then
    BENCH=(--device cpu --batch 1 --seq 32 --rounds 2 --no-peak --no-compile)
else
    # 10 rounds: each block step is tens of milliseconds; most of the time is torch.compile's
    # max-autotune search (a few minutes for the two blocks and the two heads).
    BENCH=(--device cuda --rounds 10)
    python - <<'EOF'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu_fusion_check.sh: no CUDA device (use --cpu-dry-run to try the script on a CPU)")
print(torch.cuda.get_device_name(), "torch", torch.__version__)
EOF
    timeout 180 python -m pytest -q -p no:cacheprovider -m "not slow" tests/fusion \
        | tee "$OUT/gpu_fusion_tests.txt" || echo "gpu_fusion_check.sh: tests failed (see above)"
fi
# The JSON grows after every workload: a run cut short still gets a verdict on what it measured.
timeout 480 python benchmarks/epilogue.py "${BENCH[@]}" --only block --only head \
    --json "$OUT/gpu_fusion_check.json" | tee "$OUT/gpu_fusion_check.txt" \
    || echo "gpu_fusion_check.sh: the benchmark stopped early; the verdict covers what it measured"
python - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
report = json.load(open(os.path.join(out, "gpu_fusion_check.json")))
checks = []
for w in report["report"]:
    v = w["variants"]
    if w["workload"].startswith("block"):
        fused = v.get("fused")
        checks.append({"check": f"{w['workload']}: fused >= 1.3x eager",
                       "value": fused and fused["vs_eager"], "pass": bool(fused and fused["vs_eager"] >= 1.3)})
        if "compile" in v:
            ratio = fused and fused["vs_eager"] / v["compile"]["vs_eager"]
            checks.append({"check": f"{w['workload']}: fused >= 1.0x torch.compile",
                           "value": ratio, "pass": bool(ratio and ratio >= 1.0)})
    else:
        fused = v.get("fused", {})
        ratio = fused.get("peak_vs_eager")
        checks.append({"check": f"{w['workload']}: peak memory <= 1/4 of unfused",
                       "value": ratio, "pass": bool(ratio is not None and ratio <= 0.25)})
verdict = {"device": report["device"], "checks": checks,
           "not_run": {w["workload"]: w.get("not_run", {}) for w in report["report"]}}
tmp = os.path.join(out, "gpu_fusion_verdict.json.tmp")
json.dump(verdict, open(tmp, "w"), indent=2)
os.replace(tmp, os.path.join(out, "gpu_fusion_verdict.json"))
for c in checks:
    value = "not measured" if c["value"] is None else f"{c['value']:.3f}"
    print(("PASS " if c["pass"] else "FAIL ") + c["check"] + ": " + value)
EOF
