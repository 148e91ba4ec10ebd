"""The cost model against glassformer's own modules, for every supported family.

FlopCounterMode counts the matrix products our eager model really executes (prefill, one
decode step against a static cache, and a training step's forward + backward); the explorer's
`flops_matmul` must match within 0.5% (it is exact in practice). The KV-cache bytes must equal
the bytes of the cache tensors the model allocates, and the parameter counts must be exact.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassformer.config import Config
from glassformer.explorer import analyze
from glassformer.model import Transformer
from tests.explorer.flop_counting import counted  # FlopCounterMode, grouped convs corrected
from tests.families import TINY_HF_CONFIGS as FAMILIES
from tests.families import our_config

B, T = 2, 12  # T exceeds every window in FAMILIES
TOL = 0.005


def build(cfg: Config) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(cfg)
    model.set_attention_impl("eager")  # the CPU SDPA kernel is invisible to FlopCounterMode
    return model




def rel(a: float, b: float) -> float:
    return abs(a - b) / b


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[str, Config]:
    return request.param, our_config(request.param)


def test_parameters_exact(family: tuple[str, Config]) -> None:
    _, cfg = family
    model = build(cfg)
    a = analyze(cfg)
    assert a["params_total"] == sum(p.numel() for p in model.parameters())
    assert a["params_embedding"] == model.embed.weight.numel() + (
        model.pos_embed.weight.numel() if model.pos_embed is not None else 0
    )


def test_prefill_flops(family: tuple[str, Config]) -> None:
    _, cfg = family
    model = build(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad():
        measured = counted(lambda: model(ids))
    a = analyze(cfg, "prefill", B, T, attention="eager")
    assert rel(a["flops_matmul"], measured) <= TOL
    # a causal kernel does strictly less; the difference is exactly the masked pairs
    assert a["flops_matmul_causal"] < a["flops_matmul"]
    assert a["flops_other"] > 0


@pytest.mark.parametrize("context", [5, 12])
def test_decode_flops_and_cache(family: tuple[str, Config], context: int) -> None:
    """One new token against a cache holding `context` positions (ring for sliding layers
    when the window is shorter)."""
    _, cfg = family
    model = build(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, context))
    cache = model.new_cache(B, context, torch.float32)
    with torch.no_grad():
        model(ids[:, :-1], cache=cache)
        measured = counted(lambda: model(ids[:, -1:], cache=cache))
    # glassformer's MLA module computes the plain order
    a = analyze(cfg, "decode", B, context, dtype="fp32", attention="eager", mla_order="plain")
    assert rel(a["flops_matmul"], measured) <= TOL
    assert a["kv_cache_bytes"] == cache.nbytes()
    half = model.new_cache(B, context, torch.bfloat16)
    assert analyze(cfg, "decode", B, context, dtype="bf16")["kv_cache_bytes"] == half.nbytes()


def test_prefill_cache_bytes(family: tuple[str, Config]) -> None:
    _, cfg = family
    model = build(cfg)
    cache = model.new_cache(B, T, torch.bfloat16)
    assert analyze(cfg, "prefill", B, T, dtype="bf16")["kv_cache_bytes"] == cache.nbytes()


def check_train_flops(cfg: Config) -> None:
    model = build(cfg).train()
    ids = torch.randint(0, cfg.vocab_size, (B, T))

    def step() -> None:
        logits = model(ids)
        F.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()

    measured = counted(step)
    a = analyze(cfg, "train", B, T, attention="eager", mtp=False)
    assert rel(a["flops_matmul"], measured) <= TOL
    # the step's forward is a prefill of the same tokens (a step may cost more than 3x it: the
    # delta rule's triangular solve has a backward product of its own)
    forward = analyze(cfg, "prefill", B, T, attention="eager", mtp=False)["flops_matmul"]
    assert a["train"]["flops_matmul_forward"] == pytest.approx(forward, rel=1e-12)


def test_train_flops_llama() -> None:
    check_train_flops(our_config("llama"))


@pytest.mark.slow
def test_train_flops(family: tuple[str, Config]) -> None:
    check_train_flops(family[1])


@pytest.mark.slow
def test_mtp_flops_and_params() -> None:
    cfg = our_config("deepseek_v3").replace(n_mtp_modules=2, build_mtp=True)
    model = build(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad():
        measured = counted(lambda: model.forward_mtp(ids))
    a = analyze(cfg, "prefill", B, T, attention="eager", mtp=True)
    assert rel(a["flops_matmul"], measured) <= TOL
    assert a["params_total"] == sum(p.numel() for p in model.parameters())
    assert a["params_mtp"] == sum(p.numel() for p in model.mtp.parameters())  # type: ignore[union-attr]


def test_post_norm_relu_variant() -> None:
    """A combination no published family uses, to exercise the general paths."""
    cfg = Config(
        vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
        norm="layernorm", norm_placement="post", mlp="mlp", activation="relu",
        position="none", max_seq_len=64,
    )  # fmt: skip
    model = build(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad():
        measured = counted(lambda: model(ids))
    a = analyze(cfg, "prefill", B, T, attention="eager")
    assert rel(a["flops_matmul"], measured) <= TOL
    assert a["params_total"] == sum(p.numel() for p in model.parameters())


def test_mla_absorbed_order_matches_explicit_computation() -> None:
    """The absorbed order's matrix products, spelt out with einsum and counted."""
    cfg = our_config("deepseek_v3")
    h, nope, rope = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
    r, vd, s = cfg.kv_lora_rank, cfg.v_head_dim, 20
    q_nope, q_rope = torch.randn(B, h, 1, nope), torch.randn(B, h, 1, rope)
    w_uk, w_uv = torch.randn(h, nope, r), torch.randn(h, r, vd)
    c_kv, k_rope = torch.randn(B, s, r), torch.randn(B, s, rope)

    def absorbed() -> None:
        q_lat = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)
        scores = q_lat @ c_kv[:, None].transpose(-1, -2) + q_rope @ k_rope[:, None].transpose(
            -1, -2
        )
        out = scores.softmax(-1) @ c_kv[:, None]
        torch.einsum("bhtr,hrv->bhtv", out, w_uv)

    measured = counted(absorbed)
    a = analyze(cfg, "decode", B, s, attention="eager", mla_order="absorbed")
    block = next(sec for sec in a["sections"] if sec["kind"] == "block")
    ops = [
        o for o in a["ops"]
        if o["section"] == block["key"]
        and o["name"] in ("attn.q_absorb", "attn.scores", "attn.value", "attn.v_up")
    ]  # fmt: skip
    assert len(ops) == 4
    assert sum(o["flops_matmul"] for o in ops) == measured
