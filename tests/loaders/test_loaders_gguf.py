"""GGUF header parsing, metadata -> Config and state dicts of the two embedded models."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as reference

from glassformer.config import Config
from glassformer.loaders.gguf import (
    config_from_gguf,
    expected_shapes,
    gguf_to_ours,
    read_header,
)
from glassformer.model import Transformer


def raw_reference(path: Path, name: str) -> np.ndarray:
    """A tensor as gguf-py decodes it (numpy [out, in] layout)."""
    info = read_header(path, decode_arrays=False).tensors[name]
    data = np.memmap(path, dtype=np.uint8, mode="r")
    raw = np.array(data[info.offset : info.offset + info.nbytes])
    row = raw.size // (info.shape[0] if len(info.shape) > 1 else 1)
    out = reference(raw.reshape(-1, row), GGMLQuantizationType(info.ggml_type))
    return out.reshape(info.shape)


# --- header -------------------------------------------------------------------------------------


def compare_with_gguf_reader(path: Path) -> None:
    from gguf import GGUFReader

    ours = read_header(path)
    theirs = GGUFReader(path)
    assert ours.data_offset == theirs.data_offset
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        info = ours.tensors[t.name]
        assert info.shape == tuple(int(d) for d in reversed(t.shape.tolist()))
        assert info.ggml_type == int(t.tensor_type)
        assert info.offset == t.data_offset
        assert info.nbytes == t.n_bytes
    skip = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    assert set(ours.metadata) == set(theirs.fields) - skip
    for key, field in theirs.fields.items():
        if key in skip:
            continue
        value = ours.metadata[key]
        if isinstance(value, np.ndarray):
            value = value.tolist()
        assert value == field.contents(), key  # floats too: both widen the stored f32


def test_header_matches_gguf_reader_all_value_types(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    w = GGUFWriter(str(tmp_path / "kv.gguf"), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**63)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_array("t.ints", [1, 2, 3])
    w.add_array("t.floats", [0.5] * 100)
    w.add_array("t.strs", ["a", "", "ü"])
    w.add_custom_alignment(64)
    w.add_tensor("a", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("b", np.ones((2, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    compare_with_gguf_reader(tmp_path / "kv.gguf")
    header = read_header(tmp_path / "kv.gguf")
    assert header.alignment == 64 and header.data_offset % 64 == 0
    assert header.metadata["t.f32"] == float(np.float32(0.1)) and header.metadata["t.f64"] == 0.1


@pytest.mark.slow
def test_header_matches_gguf_reader_smollm2(smollm2_path: Path) -> None:
    compare_with_gguf_reader(smollm2_path)  # GGUFReader takes 4-15 s on this file


def test_header_skips_vocabulary_when_asked(gemma3_path: Path) -> None:
    header = read_header(gemma3_path, decode_arrays=False)
    assert header.skipped_arrays == {"tokenizer.ggml.tokens": 262144}
    assert header.metadata["tokenizer.ggml.scores"].shape == (262144,)
    full = read_header(gemma3_path)
    assert len(full.metadata["tokenizer.ggml.tokens"]) == 262144
    assert full.tensors == header.tensors


# --- config -------------------------------------------------------------------------------------


def test_config_smollm2(smollm2_path: Path) -> None:
    t0 = time.perf_counter()
    cfg = config_from_gguf(smollm2_path)
    assert time.perf_counter() - t0 < 2.0  # header only (~0.03 s); generous for busy machines
    assert cfg.hf_model_type == "llama"
    assert (cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads) == (
        30,
        576,
        1536,
        9,
        3,
    )
    assert cfg.head_dim == 64 and cfg.vocab_size == 49152 and cfg.max_seq_len == 8192
    assert cfg.rope_theta == 100000.0 and cfg.rope_fraction == 1.0 and cfg.rope_scaling is None
    assert cfg.norm_eps == pytest.approx(1e-5, rel=1e-6)
    assert cfg.tie_embeddings and not cfg.qkv_bias and not cfg.qk_norm
    assert (cfg.norm, cfg.norm_placement, cfg.mlp, cfg.activation) == (
        "rmsnorm",
        "pre",
        "glu",
        "silu",
    )
    assert (cfg.bos_token_id, cfg.eos_token_id) == (1, 2)


def test_config_gemma3(gemma3_path: Path) -> None:
    cfg = config_from_gguf(gemma3_path)
    assert cfg.hf_model_type == "gemma3_text"
    assert (cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (
        18,
        640,
        2048,
        4,
        1,
        256,
    )
    assert cfg.vocab_size == 262144 and cfg.max_seq_len == 32768
    assert cfg.tie_embeddings and cfg.embed_scale and cfg.norm_unit_offset and cfg.qk_norm
    assert cfg.norm_placement == "sandwich"
    assert (cfg.mlp, cfg.activation) == ("glu", "gelu_tanh")
    assert cfg.query_pre_attn_scalar == 256
    assert cfg.rope_theta == 1e6 and cfg.rope_theta_local == 1e4
    assert cfg.sliding_window == 512
    assert cfg.layer_types is not None
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full"] == [5, 11, 17]
    assert cfg.norm_eps == pytest.approx(1e-6, rel=1e-6)
    assert cfg.attn_logit_softcap is None and cfg.final_logit_softcap is None
    assert (cfg.bos_token_id, cfg.eos_token_id) == (2, 1)


# --- names and shapes ---------------------------------------------------------------------------


def test_name_mapping() -> None:
    assert gguf_to_ours("token_embd.weight") == "embed.weight"
    assert gguf_to_ours("blk.7.attn_q.weight") == "layers.7.attn.q_proj.weight"
    assert gguf_to_ours("blk.0.attn_q.bias") == "layers.0.attn.q_proj.bias"
    assert gguf_to_ours("blk.3.post_ffw_norm.weight") == "layers.3.post_mlp_norm.weight"
    assert gguf_to_ours("blk.3.ffn_norm.weight") == "layers.3.mlp_norm.weight"
    assert gguf_to_ours("rope_freqs.weight") is None
    assert gguf_to_ours("blk.1.something.weight") is None


@pytest.mark.parametrize(
    "cfg",
    [
        Config(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48),
        Config(
            vocab_size=64,
            d_model=32,
            n_layers=2,
            n_heads=4,
            n_kv_heads=1,
            d_ff=48,
            qkv_bias=True,
            tie_embeddings=True,
        ),
        Config(
            vocab_size=64,
            d_model=32,
            n_layers=2,
            n_heads=2,
            head_dim=24,
            d_ff=48,
            qk_norm=True,
            norm_placement="sandwich",
            norm_unit_offset=True,
        ),
    ],
    ids=["gqa", "bias-tied", "gemma-like"],
)
def test_expected_shapes_match_the_model(cfg: Config) -> None:
    with torch.device("meta"):
        model = Transformer(cfg)
    assert expected_shapes(cfg) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --- state dicts of the real files ----------------------------------------------------------------


def test_state_dict_smollm2(smollm2_path: Path, smollm2_loaded) -> None:
    cfg, state = smollm2_loaded
    assert cfg == config_from_gguf(smollm2_path)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(cfg)
    assert "lm_head.weight" not in state
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in state.values())
    # tensors that are not permuted are exactly gguf-py's decoding
    for gguf_name, ours in (
        ("blk.3.attn_v.weight", "layers.3.attn.v_proj.weight"),
        ("blk.3.ffn_norm.weight", "layers.3.mlp_norm.weight"),
    ):
        assert torch.equal(state[ours], torch.from_numpy(raw_reference(smollm2_path, gguf_name)))
    # Q/K: llama.cpp permuted each head's rows (half-split -> interleaved); undoing it must give
    # HF's layout, i.e. re-applying llama.cpp's permutation gives the file's rows back
    from tests.loaders.gguf_builders import llama_cpp_permute

    for gguf_name, ours, heads in (
        ("blk.0.attn_q.weight", "layers.0.attn.q_proj.weight", cfg.n_heads),
        ("blk.0.attn_k.weight", "layers.0.attn.k_proj.weight", cfg.n_kv_heads),
    ):
        back = llama_cpp_permute(state[ours].numpy(), heads)
        assert np.array_equal(back, raw_reference(smollm2_path, gguf_name))
        assert not torch.equal(
            state[ours], torch.from_numpy(raw_reference(smollm2_path, gguf_name))
        )


def test_state_dict_gemma3(gemma3_path: Path, gemma3_loaded) -> None:
    cfg, state = gemma3_loaded
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(cfg)
    assert "lm_head.weight" not in state
    # Gemma norms are stored as 1 + w; we keep w (norm_unit_offset adds the 1 back)
    for gguf_name, ours in (
        ("blk.2.attn_q_norm.weight", "layers.2.attn.q_norm.weight"),
        ("blk.2.post_attention_norm.weight", "layers.2.post_attn_norm.weight"),
        ("blk.2.post_ffw_norm.weight", "layers.2.post_mlp_norm.weight"),
        ("output_norm.weight", "final_norm.weight"),
    ):
        expected = raw_reference(gemma3_path, gguf_name) - np.float32(1)
        assert torch.equal(state[ours], torch.from_numpy(expected)), ours
    # Gemma's Q/K are not permuted
    q = raw_reference(gemma3_path, "blk.2.attn_q.weight")
    assert torch.equal(state["layers.2.attn.q_proj.weight"], torch.from_numpy(q))


def test_load_dtype(tmp_path: Path) -> None:
    from glassformer.loaders.gguf import load_gguf
    from tests.loaders.gguf_builders import write_gguf

    # a dtype request casts after decoding; checked on a small file to keep it quick
    path = write_gguf(
        tmp_path / "t.gguf",
        "llama",
        {
            "context_length": 64,
            "embedding_length": 32,
            "block_count": 1,
            "feed_forward_length": 64,
            "attention.head_count": 4,
            "attention.layer_norm_rms_epsilon": 1e-5,
        },
        _tiny_llama_tensors(),
    )
    _, state = load_gguf(path, torch.bfloat16)
    assert all(v.dtype == torch.bfloat16 for v in state.values())


def _tiny_llama_tensors(d: int = 32, ff: int = 64, vocab: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)

    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "token_embd.weight": r(vocab, d),
        "blk.0.attn_norm.weight": r(d),
        "blk.0.attn_q.weight": r(d, d),
        "blk.0.attn_k.weight": r(d, d),
        "blk.0.attn_v.weight": r(d, d),
        "blk.0.attn_output.weight": r(d, d),
        "blk.0.ffn_norm.weight": r(d),
        "blk.0.ffn_gate.weight": r(ff, d),
        "blk.0.ffn_up.weight": r(ff, d),
        "blk.0.ffn_down.weight": r(d, ff),
        "output_norm.weight": r(d),
    }


def test_rope_scaling_metadata(tmp_path: Path) -> None:
    from tests.loaders.test_loaders_gguf_errors import KV, build

    linear = {**KV, "rope.scaling.type": "linear", "rope.scaling.factor": 8.0}
    cfg = config_from_gguf(build(tmp_path / "lin.gguf", kv=linear))
    assert cfg.rope_scaling is not None
    assert (cfg.rope_scaling.type, cfg.rope_scaling.factor) == ("linear", 8.0)
    yarn = {
        **KV,
        "rope.scaling.type": "yarn",
        "rope.scaling.factor": 4.0,
        "rope.scaling.original_context_length": 32,
    }
    cfg = config_from_gguf(build(tmp_path / "yarn.gguf", kv=yarn))
    assert cfg.rope_scaling is not None
    assert (cfg.rope_scaling.type, cfg.rope_scaling.original_max_seq_len) == ("yarn", 32)
    none = {**KV, "rope.scaling.type": "none", "rope.scaling.factor": 1.0}
    assert config_from_gguf(build(tmp_path / "none.gguf", kv=none)).rope_scaling is None
    odd = {**KV, "rope.scaling.type": "longrope", "rope.scaling.factor": 2.0}
    with pytest.raises(ValueError, match="unsupported rope scaling type 'longrope'"):
        config_from_gguf(build(tmp_path / "odd.gguf", kv=odd))
