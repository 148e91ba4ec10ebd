"""DeepSeek-V3 multi-token prediction, checked against a composition of HF's own layers.

HF transformers has no MTP forward, so the reference is built from the paper's equation with
HF's DeepseekV3DecoderLayer and RMSNorm as the block and norms:
    h'_i = W [RMSNorm(Emb(t_{i+1})) ; RMSNorm(h_i)],  logits = Head(RMSNorm(Block(h')))
"""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.hf.weights import ours_to_hf
from tests.families import VOCAB, perturb

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model() -> gf.Transformer:
    cfg = gf.Config.preset("tiny-deepseek-v3").replace(vocab_size=VOCAB, build_mtp=True)
    torch.manual_seed(0)
    m = gf.Transformer(cfg).eval()
    perturb(m, seed=3)
    return m


def test_mtp_matches_hf_layers_composed_by_the_paper(model: gf.Transformer) -> None:
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    cfg = model.config
    hf_dict = cfg.to_hf()
    hf_dict.pop("model_type")
    hf_cfg = transformers.DeepseekV3Config(**hf_dict)
    hf_cfg._attn_implementation = "eager"
    hf_state = ours_to_hf(cfg, model.state_dict())
    layer = cfg.n_layers  # MTP depth 0 is stored as decoder layer n_layers
    block = ds.DeepseekV3DecoderLayer(hf_cfg, layer_idx=cfg.n_layers - 1).eval()
    prefix = f"model.layers.{layer}."
    block_state = {
        k[len(prefix) :]: v
        for k, v in hf_state.items()
        if k.startswith(prefix)
        and not k[len(prefix) :].startswith(("enorm", "hnorm", "eh_proj", "shared_head", "embed"))
    }
    block.load_state_dict(block_state, strict=True)
    norm = lambda name: ds.DeepseekV3RMSNorm(cfg.d_model, cfg.norm_eps)  # noqa: E731
    enorm, hnorm, head_norm = norm("e"), norm("h"), norm("head")
    enorm.weight.data = hf_state[prefix + "enorm.weight"]
    hnorm.weight.data = hf_state[prefix + "hnorm.weight"]
    head_norm.weight.data = hf_state[prefix + "shared_head.norm.weight"]
    rotary = ds.DeepseekV3RotaryEmbedding(hf_cfg)

    ids = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, (mtp_logits,) = model.forward_mtp(ids)
        hidden, _, _ = model.hidden_states(ids)
        n = ids.shape[1] - 1
        x = torch.cat((enorm(model.embed(ids[:, 1:])), hnorm(hidden[:, :n])), dim=-1)
        x = x @ hf_state[prefix + "eh_proj.weight"].T
        positions = torch.arange(n)[None].expand(2, n)
        mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
        x = block(x, attention_mask=mask, position_embeddings=rotary(x, positions))
        x = x[0] if isinstance(x, tuple) else x
        expected = head_norm(x) @ hf_state[prefix + "shared_head.head.weight"].T
    assert mtp_logits.shape == (2, n, VOCAB)
    assert (mtp_logits - expected).abs().max() <= 1e-4
    assert torch.equal(logits, model(ids))


def test_mtp_is_causal(model: gf.Transformer) -> None:
    """Depth-1 logits at position i see tokens up to i+1 and nothing later."""
    ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(6))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % VOCAB
    with torch.no_grad():
        _, (a,) = model.forward_mtp(ids)
        _, (b,) = model.forward_mtp(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-5)  # expert batching reorders sums
    assert not torch.allclose(a[:, 7], b[:, 7], atol=1e-3)


def test_mtp_weights_round_trip_through_checkpoint_names(model: gf.Transformer) -> None:
    from glassformer.hf.weights import hf_to_ours

    state = model.state_dict()
    back = hf_to_ours(model.config, ours_to_hf(model.config, state))
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    # Loading without MTP skips the MTP layers of the checkpoint.
    main = hf_to_ours(model.config.replace(build_mtp=False), ours_to_hf(model.config, state))
    assert not any(k.startswith("mtp.") for k in main)
