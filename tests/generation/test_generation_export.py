"""`glassformer export --hf`: HF transformers loads the directory and gives the same logits."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import glassformer as gf
from glassformer.cli import app

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("preset", ["tiny-mixtral", "tiny-gemma3", "tiny-deepseek-v3"])
def test_export_of_an_hf_directory_round_trips(tmp_path, preset: str) -> None:
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset(preset)).eval()
    src = tmp_path / "src"
    gf.to_hf(model).save_pretrained(src)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["export", str(src), "--hf", str(out), "--max-shard-size", "1MB", "--json"]
    )
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert any(f.endswith("model.safetensors.index.json") for f in files)  # sharded
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 40))
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max() <= 1e-4


@pytest.mark.slow
def test_export_of_the_real_smollm2_gguf(tmp_path) -> None:
    from glassformer.loaders.resolve import ModelNotInstalledError

    try:
        model, _ = gf.load("smollm2-135m-instruct")
    except ModelNotInstalledError as err:
        pytest.skip(str(err))
    result = CliRunner().invoke(app, ["export", "smollm2-135m-instruct", "--hf", str(tmp_path)])
    assert result.exit_code == 0, result.output
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 4093, 198, 19556, 905, 30]])
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max() <= 1e-3
    # the GGUF's tokenizer and chat template travel with it, readable by HF and by us
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0
    tok_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]
    messages = [{"role": "user", "content": "Name three colours."}]
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    hf_ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True)
    hf_ids = list(hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids)
    _, gguf_tok = gf.load("smollm2-135m-instruct")
    ours = gguf_tok.encode(gguf_tok.apply_chat_template(messages, add_generation_prompt=True))
    assert hf_ids == list(ours)
    exported_model, exported_tok = gf.load(tmp_path)
    with torch.no_grad():
        assert (exported_model(ids) - model(ids)).abs().max() <= 1e-4
    assert list(exported_tok.encode("Hello, world! 123")) == list(
        gguf_tok.encode("Hello, world! 123")
    )


# --- what other tools read ------------------------------------------------------------------------


def _perturbed(cfg: gf.Config) -> gf.Transformer:
    """A random model with every parameter moved off its init (norms at 1 and zero biases
    would hide a weight or setting that an HF reader drops)."""
    torch.manual_seed(0)
    model = gf.Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


SCALED_LLAMA = dict(
    rope_theta=100000.0,
    rope_scaling=gf.RopeScaling("llama3", 8.0, 64, low_freq_factor=1.0, high_freq_factor=4.0),
)


def test_export_writes_both_rope_spellings(tmp_path) -> None:
    from glassformer.hf.export import export_config

    cfg = gf.Config.preset("tiny", **SCALED_LLAMA)
    out = export_config(cfg)
    assert out["rope_theta"] == 100000.0 == out["rope_parameters"]["rope_theta"]
    assert out["rope_scaling"]["rope_type"] == out["rope_scaling"]["type"] == "llama3"
    assert out["rope_scaling"]["factor"] == 8.0
    # the legacy keys alone (what transformers 4.x reads) give back the same Config
    legacy = {k: v for k, v in out.items() if k != "rope_parameters"}
    assert gf.Config.from_hf(legacy) == cfg
    gemma = export_config(gf.Config.preset("tiny-gemma3"))
    assert gemma["rope_theta"] == 1e6 and gemma["rope_local_base_freq"] == 1e4
    assert gemma["rope_scaling"] is None
    # a file whose two spellings disagree means two models: refused
    bad = {**out, "rope_theta": 10000.0}
    with pytest.raises(ValueError, match=r"rope_theta.*disagrees"):
        gf.Config.from_hf(bad)


def test_export_of_a_preset_is_random_init_with_the_usual_permissions(tmp_path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", "tiny", "--hf", str(out), "--json"])
    assert result.exit_code == 0, result.output
    files = [Path(f) for f in json.loads(result.stdout)["files"]]
    mask = os.umask(0o022)
    os.umask(mask)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset("tiny")).eval()
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 24))
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max() <= 1e-4


OLDEST_TRANSFORMERS = "4.57.6"  # pyproject.toml: transformers>=4.57
# the versions of its pinned dependencies that 4.57 accepts (newer ones fail its import check)
OLDEST_DEPS = ("tokenizers==0.22.1", "huggingface_hub==0.36.0")

_OLD_READER = """
import json, sys, torch, transformers
from transformers import AutoModelForCausalLM
assert transformers.__version__ == sys.argv[1], transformers.__version__
report = {}
for d in sys.argv[2:]:
    data = torch.load(d + "/expected.pt")
    model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(data["ids"]).logits
    report[d] = float((logits - data["logits"]).abs().max())
print(json.dumps(report))
"""


@pytest.mark.slow
def test_the_oldest_supported_transformers_reads_the_export(tmp_path) -> None:
    """Exports load in transformers 4.57 (the floor in pyproject.toml) with the same logits:
    4.57 reads only the legacy rope keys, so a rope base of 1e5, llama3 and YaRN scaling and
    Gemma 3's two bases all depend on them."""
    from glassformer.hf.export import export_hf

    target = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         f"transformers=={OLDEST_TRANSFORMERS}", *OLDEST_DEPS],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if pip.returncode:
        pytest.skip(f"cannot install transformers {OLDEST_TRANSFORMERS}: {pip.stderr[-300:]}")
    yarn = gf.RopeScaling("yarn", 4.0, 32, beta_fast=32.0, beta_slow=1.0)
    configs = {
        "llama": gf.Config.preset("tiny", **SCALED_LLAMA),
        "qwen3": gf.Config.preset("tiny-qwen3", rope_theta=1e6, rope_scaling=yarn),
        "gemma3": gf.Config.preset("tiny-gemma3"),
    }
    dirs = []
    for name, cfg in configs.items():
        model = _perturbed(cfg)
        d = tmp_path / name
        export_hf(d, cfg, model.state_dict())
        ids = torch.randint(0, cfg.vocab_size, (1, 40), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.save({"ids": ids, "logits": model(ids)}, d / "expected.pt")
        dirs.append(str(d))
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-c", _OLD_READER, OLDEST_TRANSFORMERS, *dirs],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    diffs = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(v <= 1e-4 for v in diffs.values()), diffs


def test_a_gguf_export_without_transformers_writes_nothing(tmp_path, monkeypatch) -> None:
    """A GGUF's tokenizer is converted with transformers: without it the export is refused
    before any file is written (weights without their tokenizer are half a model)."""
    import importlib.util

    from glassformer.hf import export

    real = importlib.util.find_spec
    monkeypatch.setattr(
        export.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    cfg = gf.Config.preset("tiny")
    state = gf.Transformer(cfg).state_dict()
    with pytest.raises(ImportError, match="pip install transformers"):
        export.export_hf(tmp_path / "out", cfg, state, source=tmp_path / "model.gguf")
    assert not (tmp_path / "out").exists()


def test_gemma_export_config_passes_transformers_strict_types(tmp_path) -> None:
    """A Gemma 3 GGUF gives query_pre_attn_scalar as a float (256.0); transformers 5 types
    the key as int and refuses the float when loading the directory."""
    from glassformer.hf.export import export_hf

    cfg = gf.Config.preset("tiny-gemma3", query_pre_attn_scalar=16.0)
    export_hf(tmp_path, cfg, _perturbed(cfg).state_dict())
    assert json.loads((tmp_path / "config.json").read_text())["query_pre_attn_scalar"] == 16
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert hf.config.query_pre_attn_scalar == 16
    model = _perturbed(cfg)
    ids = torch.randint(0, cfg.vocab_size, (1, 20))
    with torch.no_grad():  # to_hf builds the HF model in memory from the same dict
        assert (gf.to_hf(model)(ids).logits - model(ids)).abs().max() <= 1e-4


def test_the_noop_space_split_is_dropped_without_changing_ids(tmp_path) -> None:
    """HF's GGUF converter writes SentencePiece vocabularies with a space -> U+2581 normalizer
    and then a split at spaces (a no-op); the export drops the split, ids unchanged."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from glassformer.hf.export import _drop_noop_split

    vocab = {"<unk>": 0, "\u2581": 1, "a": 2, "b": 3, "\u2581a": 4, "ab": 5, "\u2581ab": 6}
    merges = [("\u2581", "a"), ("a", "b"), ("\u2581a", "b")]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=False))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    texts = ["ab ab", " ab  a b", "abab ", "  "]
    before = [tok.encode(t).ids for t in texts]
    _drop_noop_split(path)
    assert json.loads(path.read_text())["pre_tokenizer"] is None
    after = Tokenizer.from_file(str(path))
    assert [after.encode(t).ids for t in texts] == before
