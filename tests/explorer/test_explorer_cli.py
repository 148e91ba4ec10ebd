"""`glassformer explore` / `glassformer compare`: options, JSON, model sources, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from glassformer.cli import app
from glassformer.explorer import analyze
from glassformer.presets import get_preset

runner = CliRunner()
REQUIRED = {
    "params_total",
    "params_active",
    "flops_matmul",
    "flops_matmul_causal",
    "flops_other",
    "weights_bytes",
    "kv_cache_bytes",
    "ops",
    "roofline",
}


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["explore", "compare"])
def test_help(command: str) -> None:
    code, out = invoke(command, "--help")
    assert code == 0
    for option in ("--mode", "--batch", "--seq", "--dtype", "--hardware", "--json", "--html"):
        assert option in out


def test_explore_json_has_the_documented_fields() -> None:
    code, out = invoke("explore", "llama-3-8b", "--mode", "decode", "--batch", "4", "--seq",
                       "8192", "--dtype", "fp8", "--hardware", "h200", "--json")  # fmt: skip
    assert code == 0, out
    data = json.loads(out)
    assert set(data) >= REQUIRED
    for key in ("time_s", "bound", "peak_flops", "bandwidth", "intensity", "tokens_per_s"):
        assert key in data["roofline"]
    expected = analyze(get_preset("llama-3-8b"), "decode", 4, 8192, "fp8", "h200")
    assert data["flops_matmul"] == expected["flops_matmul"]
    assert data["kv_cache_bytes"] == 4 * 8192 * 32 * 2 * 8 * 128 * 1  # fp8 cache
    op = data["ops"][0]
    for key in ("name", "inputs", "output_shape", "params", "flops_matmul", "bytes", "intensity",
                "time_s", "bound"):  # fmt: skip
        assert key in op


@pytest.mark.parametrize("mode", ["prefill", "decode", "train"])
def test_explore_table_all_modes(mode: str) -> None:
    code, out = invoke("explore", "tiny-deepseek-v3", "--mode", mode, "--seq", "256", "--per-op")
    assert code == 0, out
    assert "flops_matmul" in out and "attn.kv_a_proj" in out
    assert "multi-head latent attention" in out and "mixture of experts" in out
    if mode == "train":
        assert "AdamW" in out and "checkpointed" in out


def test_compare_side_by_side() -> None:
    code, out = invoke("compare", "gpt2", "llama-3-8b", "deepseek-v3", "--mode", "decode",
                       "--seq", "32768")  # fmt: skip
    assert code == 0, out
    for name in ("gpt2", "llama-3-8b", "deepseek-v3", "params active", "KV cache"):
        assert name in out
    code, out = invoke("compare", "gpt2", "tiny", "--json")
    assert code == 0
    models = json.loads(out)["models"]
    assert [m["model"] for m in models] == ["gpt2", "tiny"]


def test_unknown_model_suggests_presets() -> None:
    code, out = invoke("explore", "llama-3-8bb")
    assert code == 2
    assert "llama-3-8b" in out and "did you mean" in out


def test_unknown_hardware_suggests() -> None:
    code, out = invoke("explore", "gpt2", "--hardware", "h100sxm")
    assert code == 2
    assert "h100-sxm" in out


def test_bad_dtype_is_refused() -> None:
    code, out = invoke("explore", "gpt2", "--dtype", "fp4")
    assert code != 0
    assert "bf16" in out


def test_hf_config_json_and_model_dir(tmp_path: Path) -> None:
    spec = get_preset("qwen3-0.6b").to_hf()
    (tmp_path / "config.json").write_text(json.dumps(spec))
    for source in (tmp_path / "config.json", tmp_path):
        code, out = invoke("explore", str(source), "--json")
        assert code == 0, out
        assert json.loads(out)["params_total"] == analyze(get_preset("qwen3-0.6b"))["params_total"]


def test_unsupported_config_field_is_named(tmp_path: Path) -> None:
    spec = get_preset("llama-3-8b").to_hf()
    spec["attention_chunk_size"] = 8192  # Llama 4's chunked attention: not supported
    path = tmp_path / "config.json"
    path.write_text(json.dumps(spec))
    code, out = invoke("explore", str(path))
    assert code == 2
    assert "attention_chunk_size" in out


def write_tiny_gguf(path: Path) -> int:
    """A 2-layer Llama GGUF (zero weights); returns its parameter count."""
    import gguf

    d, layers, heads, kv, ff, vocab = 32, 2, 4, 2, 64, 97
    hd = d // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-gguf-llama")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    total = 0

    def tensor(name: str, *shape: int) -> None:
        nonlocal total
        writer.add_tensor(name, np.zeros(shape, np.float32))
        total += int(np.prod(shape))

    tensor("token_embd.weight", vocab, d)
    tensor("output_norm.weight", d)
    tensor("output.weight", vocab, d)
    for i in range(layers):
        p = f"blk.{i}."
        tensor(p + "attn_norm.weight", d)
        tensor(p + "attn_q.weight", heads * hd, d)
        tensor(p + "attn_k.weight", kv * hd, d)
        tensor(p + "attn_v.weight", kv * hd, d)
        tensor(p + "attn_output.weight", d, heads * hd)
        tensor(p + "ffn_norm.weight", d)
        tensor(p + "ffn_gate.weight", ff, d)
        tensor(p + "ffn_up.weight", ff, d)
        tensor(p + "ffn_down.weight", d, ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return total


def test_gguf_metadata(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    n = write_tiny_gguf(path)
    code, out = invoke("explore", str(path), "--json", "--mode", "decode", "--seq", "64")
    assert code == 0, out
    data = json.loads(out)
    assert data["model"] == "tiny-gguf-llama"
    assert data["params_total"] == n


def test_missing_gguf_is_reported(tmp_path: Path) -> None:
    code, out = invoke("explore", str(tmp_path / "nope.gguf"))
    assert code == 2
    assert "nope.gguf" in out


def test_html_option_writes_a_page(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    code, out = invoke("explore", "tiny-gemma3", "--mode", "decode", "--html", str(page))
    assert code == 0, out
    text = page.read_text()
    assert "explorer-data" in text and "tiny-gemma3" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # no network
    assert "https://" not in text


def test_compare_cross_layer_connections() -> None:
    """MODEL+CONNECTIONS switches the topology; the table shows what each costs."""
    models = ["tiny", "tiny+denseformer", "tiny+mudd", "tiny+hyper", "tiny+mhc"]
    code, out = invoke("compare", *models, "--mode", "train", "--json")
    assert code == 0, out
    results = json.loads(out)["models"]
    assert [m["connections"]["kind"] for m in results] == [
        "residual", "denseformer", "mudd", "hyper", "mhc"
    ]  # fmt: skip
    base = results[0]
    for m in results[1:]:
        assert m["params_total"] == base["params_total"] + m["connections"]["params"]
        assert m["memory"]["total_bytes"] > base["memory"]["total_bytes"]
    code, out = invoke("compare", *models, "--mode", "train")
    assert code == 0 and "saved for backward" in out and "tiny+mhc" in out
    code, out = invoke("explore", "tiny+hyperr")
    assert code == 2
