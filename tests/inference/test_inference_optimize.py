"""optimize() on tiny random models: same function, every architecture, every decode path.

Bounds: float32 with fused modules must match the plain model to 1e-5 relative (only the
order of sums differs: fused GEMMs, one-kernel norms, SDPA). Quantised tiny models are only
checked for consistency (decode = full forward); their error against float32 is meaningless on
random Gaussian weights and is bounded on real checkpoints in test_inference_smollm2.py.
"""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
import glassformer.kernels
from glassformer.generation import GenerationConfig, generate
from glassformer.inference import Decoder, InferenceTransformer, native, optimize
from glassformer.inference.modules import FusedAttention, FusedMLP, QuantEmbedding, QuantLinear

PRESETS = ["tiny", "tiny-qwen3", "tiny-gemma3", "tiny-gpt2", "tiny-mixtral"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module", params=PRESETS)
def model(request: pytest.FixtureRequest) -> gf.Transformer:
    torch.manual_seed(0)
    return gf.Transformer(gf.Config.preset(request.param)).eval()


def test_float32_optimized_equals_plain(model: gf.Transformer) -> None:
    fast = optimize(model)
    assert isinstance(fast, InferenceTransformer) and not isinstance(model, InferenceTransformer)
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.inference_mode():
        assert rel(fast(ids), model(ids)) < 1e-5
        assert rel(fast(ids, last_only=True)[:, 0], fast(ids)[:, -1]) < 1e-6


@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
def test_incremental_decoding_equals_full_forward(model: gf.Transformer, quant: str) -> None:
    fast = optimize(model, quant)
    ids = torch.randint(0, model.config.vocab_size, (2, 40))
    with torch.inference_mode():
        full = fast(ids)
        cache = fast.new_cache(2, 64)
        fast(ids[:, :30], cache)
        steps = [fast(ids[:, t : t + 1], cache)[:, 0] for t in range(30, 36)]
        chunk = fast(ids[:, 36:], cache)
    # single-token steps run the matrix-vector kernels (activations rounded to 16 bits),
    # the full forward dequantises and runs a GEMM: 1e-3 covers the rounding
    tol = 1e-5 if quant == "none" else 1e-3
    for i, step in enumerate(steps):
        assert rel(step, full[:, 30 + i]) < tol
    assert rel(chunk, full[:, 36:]) < tol


def test_modules_are_swapped() -> None:
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset("tiny")).eval()
    fast = optimize(model, "int4")
    block = fast.layers[0]
    assert isinstance(block.attn, FusedAttention) and isinstance(block.mlp, FusedMLP)
    assert isinstance(block.attn.qkv_proj, QuantLinear) and block.attn.qkv_proj.quant == "int4"
    assert isinstance(fast.embed, QuantEmbedding) and fast.embed.table.quant == "int8"
    assert fast.num_parameters() == model.num_parameters()
    # the original is untouched unless inplace=True
    assert type(model.layers[0].attn).__name__ == "Attention"


def test_greedy_decoder_equals_generate_float32(model: gf.Transformer) -> None:
    fast = optimize(model)
    prompts = torch.randint(1, model.config.vocab_size, (2, 12)).tolist()
    out = Decoder(fast, batch_size=2, max_seq_len=40).greedy(prompts, 16)
    plain = Decoder(model, batch_size=2, max_seq_len=40).greedy(prompts, 16)
    assert out.tokens == plain.tokens
    cfg = GenerationConfig(max_new_tokens=16, ignore_eos=True, add_special_tokens=False)

    class Ids:  # generate() with token ids needs only eos_ids and decode
        eos_ids = frozenset()

        def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
            return " ".join(map(str, ids))

    results = generate(fast, Ids(), prompts, cfg)
    assert [r.tokens for r in results] == out.tokens


def test_padded_batch_and_eager_impl_take_the_general_path() -> None:
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset("tiny")).eval()
    fast = optimize(model, "int8")
    ids = torch.randint(1, 2048, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.inference_mode():
        a = fast(ids, fast.new_cache(2, 32), attention_mask=mask)
        fast.set_attention_impl("eager")
        b = fast(ids, fast.new_cache(2, 32), attention_mask=mask)
    assert rel(a[1], b[1]) < 1e-5 and rel(a[0, 4:], b[0, 4:]) < 1e-5


def test_reference_fallback_without_native_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset("tiny")).eval()
    ids = torch.randint(0, 2048, (1, 20))
    with torch.inference_mode():
        fast = optimize(model, "int4")
        cache = fast.new_cache(1, 32)
        fast(ids[:, :19], cache)
        with_kernels = fast(ids[:, 19:], cache)
        # no library: what a machine without a C compiler (or GLASSFORMER_KERNELS=reference) has
        monkeypatch.setitem(glassformer.kernels._LOADED, "lib", None)
        slow = optimize(model, "int4")
        cache = slow.new_cache(1, 32)
        slow(ids[:, :19], cache)
        reference = slow(ids[:, 19:], cache)
    assert rel(with_kernels, reference) < 1e-3


def test_rejects_unknown_modes() -> None:
    model = gf.Transformer(gf.Config.preset("tiny"))
    with pytest.raises(ValueError, match="quant"):
        optimize(model, "int3")


@pytest.mark.skipif(not native.available(), reason="native kernels unavailable")
def test_prefill_attention_routes_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefill into an empty cache runs the core's causal kernel up to CAUSAL_MAX_T positions
    and SDPA beyond; both give the plain model's logits."""
    from glassformer.inference import modules
    from glassformer.kernels import autograd

    torch.manual_seed(3)
    model = gf.Transformer(gf.Config.preset("tiny")).eval()
    fast = optimize(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 30))
    calls: list[int] = []
    kernel = modules.causal_attention

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return kernel(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(modules, "causal_attention", counting)
    with torch.inference_mode():
        expect = model(ids)[:, -1]
        native_route = fast(ids, fast.new_cache(2, 40), last_only=True)[:, -1]
        assert len(calls) == model.config.n_layers
        monkeypatch.setattr(autograd, "CAUSAL_MAX_T", 16)
        sdpa_route = fast(ids, fast.new_cache(2, 40), last_only=True)[:, -1]
        assert len(calls) == model.config.n_layers  # no further native calls
    assert rel(native_route, expect) < 1e-5 and rel(sdpa_route, expect) < 1e-5


def test_float16_kv_cache_defaults_and_accuracy() -> None:
    """Quantised models cache keys and values in float16 by default (float32 models keep
    float32); decoding through a float16 cache stays within 2e-3 of the float32 cache, in the
    optimized model and in the core model's own attention."""
    torch.manual_seed(4)
    model = gf.Transformer(gf.Config.preset("tiny")).eval()
    assert optimize(model).kv_dtype == torch.float32
    assert optimize(model, "int8").new_cache(1, 8).layers[0].keys.dtype == torch.float16
    assert optimize(model, "int4", kv_dtype=torch.float32).kv_dtype == torch.float32
    with pytest.raises(ValueError, match="kv_dtype"):
        optimize(model, kv_dtype=torch.bfloat16)
    ids = torch.randint(0, model.config.vocab_size, (2, 30))
    for net in (optimize(model), model):
        steps = {}
        with torch.inference_mode():
            for dtype in (torch.float32, torch.float16):
                cache = net.new_cache(2, 40, dtype=dtype)
                net(ids[:, :20], cache)
                steps[dtype] = torch.stack(
                    [net(ids[:, t : t + 1], cache)[:, 0] for t in range(20, 30)]
                )
        err = rel(steps[torch.float16], steps[torch.float32])
        assert 0 < err < 2e-3, err
