"""A pruned model as a model directory, and as a GGUF file llama.cpp runs.

A model directory holds

    glassformer.json    the Config (per-layer sizes included)
    model.safetensors   the weights under glassformer's names
    pruning.json        where it came from: the source model, the method, what was kept
    model.gguf          the same model in GGUF (float32), with the source's tokenizer
    tokenizer.json ...  the tokenizer as HF files, when there is no model.gguf to carry it

and `glassformer.load(DIR)` (and every command taking a MODEL) reads it: `loaders.resolve`
recognises the directory by its glassformer.json.

GGUF: a model of the Llama family whose layers all have the same sizes is written as llama.cpp's
"llama" architecture; one whose head counts or MLP widths differ per layer as "deci", the
architecture llama.cpp keeps for NVIDIA's Nemotron-NAS models (Llama blocks with per-layer
`attention.head_count`, `attention.head_count_kv` and `feed_forward_length` arrays): llama.cpp's
"llama" loader reads those keys as arrays too, but builds every layer with layer 0's sizes.
Other families are refused with the reason (their llama.cpp loaders take one size per model).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glassformer.config import Config

CONFIG_FILE = "glassformer.json"
WEIGHTS_FILE = "model.safetensors"
PROVENANCE_FILE = "pruning.json"
GGUF_FILE = "model.gguf"

# our per-layer names -> llama.cpp's (gguf.constants' MODEL_TENSORS[LLAMA] / [DECI])
_LLAMA_LAYER = {
    "attn_norm.weight": "attn_norm.weight",
    "attn.q_proj.weight": "attn_q.weight",
    "attn.k_proj.weight": "attn_k.weight",
    "attn.v_proj.weight": "attn_v.weight",
    "attn.o_proj.weight": "attn_output.weight",
    "attn.q_proj.bias": "attn_q.bias",
    "attn.k_proj.bias": "attn_k.bias",
    "attn.v_proj.bias": "attn_v.bias",
    "attn.o_proj.bias": "attn_output.bias",
    "mlp_norm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate_proj.bias": "ffn_gate.bias",
    "mlp.up_proj.bias": "ffn_up.bias",
    "mlp.down_proj.bias": "ffn_down.bias",
}
_LLAMA_TOP = {
    "embed.weight": "token_embd.weight",
    "final_norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_refusal(config: Config) -> str | None:
    """Why llama.cpp's llama / deci loaders cannot express this config (None: they can)."""
    same = {
        "position": "rope",
        "norm": "rmsnorm",
        "norm_placement": "pre",
        "norm_unit_offset": False,
        "attention": "mha",
        "mlp": "glu",
        "activation": "silu",
        "qk_norm": False,
        "rope_fraction": 1.0,
        "rope_interleaved": False,
        "rope_scaling": None,
        "n_experts": 0,
        "sliding_window": None,
        "layer_types": None,
        "attn_logit_softcap": None,
        "final_logit_softcap": None,
        "query_pre_attn_scalar": None,
        "embed_scale": False,
        "attn_sinks": False,
        "attn_output_gate": False,
        "nope_layers": (),
        "connections": "residual",  # llama.cpp has one residual stream
    }
    for name, want in same.items():
        value = getattr(config, name)
        if value != want and not (name == "layer_types" and set(value or ()) <= {"full"}):
            return (
                f"{name}={value!r}: the GGUF export writes llama.cpp's llama/deci architectures "
                f"(Llama blocks), which need {name}={want!r}"
            )
    if config.mlp_bias or config.attn_out_bias:
        return "mlp_bias/attn_out_bias: llama.cpp's deci loader reads no such biases"
    return None


def _uniform(config: Config) -> bool:
    n = config.n_layers
    return (
        len({config.layer_n_heads(i) for i in range(n)}) == 1
        and len({config.layer_n_kv_heads(i) for i in range(n)}) == 1
        and len({config.layer_d_ff(i) for i in range(n)}) == 1
    )


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter's Q/K row order (per head: half-split -> interleaved pairs), the
    inverse of `loaders.gguf._unpermute_rope`."""
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_gguf(
    path: str | os.PathLike[str],
    config: Config,
    state: Mapping[str, torch.Tensor],
    source_gguf: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Path:
    """Write (config, state) as a float32 GGUF of llama.cpp's "llama" or "deci" architecture,
    with the tokenizer metadata of `source_gguf` (when given). Atomic: a temporary file renamed
    into place. ValueError (with the reason) for a config those loaders cannot express."""
    import gguf

    why = gguf_refusal(config)
    if why is not None:
        raise ValueError(why)
    path = Path(path)
    arch = "llama" if _uniform(config) else "deci"
    n = config.n_layers
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(tmp, arch)
    writer.add_name(name or config.name)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(n)
    heads = [config.layer_n_heads(i) for i in range(n)]
    kv = [config.layer_n_kv_heads(i) for i in range(n)]
    ff = [config.layer_d_ff(i) for i in range(n)]
    if arch == "llama":
        writer.add_feed_forward_length(ff[0])
        writer.add_head_count(heads[0])
        writer.add_head_count_kv(kv[0])
    else:
        writer.add_feed_forward_length(ff)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv)
    assert config.head_dim is not None
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if source_gguf is not None:
        _copy_tokenizer(writer, Path(source_gguf))
    else:
        if config.bos_token_id is not None:
            writer.add_bos_token_id(config.bos_token_id)
        if isinstance(config.eos_token_id, int):
            writer.add_eos_token_id(config.eos_token_id)
    for ours, tensor in state.items():
        w = tensor.detach().to(torch.float32).cpu().numpy()
        if ours.startswith("layers."):
            _, idx, rest = ours.split(".", 2)
            i = int(idx)
            if rest not in _LLAMA_LAYER:
                raise ValueError(f"{ours}: no llama.cpp tensor for this weight")
            if rest.startswith("attn.q_proj."):
                w = _permute(w, heads[i])
            elif rest.startswith("attn.k_proj."):
                w = _permute(w, kv[i])
            writer.add_tensor(f"blk.{i}.{_LLAMA_LAYER[rest]}", np.ascontiguousarray(w))
        elif ours in _LLAMA_TOP:
            writer.add_tensor(_LLAMA_TOP[ours], np.ascontiguousarray(w))
        else:
            raise ValueError(f"{ours}: no llama.cpp tensor for this weight")
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _copy_tokenizer(writer: Any, source: Path) -> None:
    """Every tokenizer.* key of the source GGUF, with its GGUF value type."""
    import gguf

    reader = gguf.GGUFReader(source)
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(field.name, value, vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(field.name, value, vtype)


# --- model directories ---------------------------------------------------------------------------
def save_model_dir(
    directory: str | os.PathLike[str],
    config: Config,
    state: Mapping[str, torch.Tensor],
    source: str | os.PathLike[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
    gguf: bool = True,
) -> dict[str, Any]:
    """Write a model directory (see the module docstring); `source` (a .gguf file or an HF
    directory) supplies the tokenizer. Returns {"files": [...], "gguf": path or None,
    "gguf_refused": reason or None}. Each file is written beside its final name and renamed."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    src = Path(source) if source is not None else None
    written: list[Path] = []

    def atomic_text(name: str, text: str) -> None:
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, directory / name)
        written.append(directory / name)

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    tmp = directory / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "writer": "glassformer"})
    os.replace(tmp, directory / WEIGHTS_FILE)
    written.append(directory / WEIGHTS_FILE)
    atomic_text(CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    if provenance is not None:
        atomic_text(PROVENANCE_FILE, json.dumps(provenance, indent=2) + "\n")
    refused = gguf_refusal(config) if gguf else "not requested"
    gguf_path = None
    gguf_source = src if src is not None and src.suffix == ".gguf" else None
    if refused is None:
        gguf_path = write_gguf(directory / GGUF_FILE, config, tensors, gguf_source)
        written.append(gguf_path)
    else:  # a model.gguf of an earlier run here would describe another model
        (directory / GGUF_FILE).unlink(missing_ok=True)
    if src is not None and src.is_dir():
        from glassformer.hf.export import TOKENIZER_FILES

        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, directory / name)
                written.append(directory / name)
    elif gguf_source is not None and gguf_path is None:
        from glassformer.hf.export import gguf_tokenizer_files

        written += gguf_tokenizer_files(gguf_source, directory)
    return {
        "files": [str(p) for p in written],
        "gguf": None if gguf_path is None else str(gguf_path),
        "gguf_refused": refused,
    }


def is_model_dir(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def load_model_dir(
    directory: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> tuple[Config, dict[str, torch.Tensor]]:
    """(Config, state dict) of a model directory, every tensor's shape checked against the
    Config before anything is built."""
    from glassformer.loaders.safetensors_io import check_shapes, load_safetensors

    directory = Path(directory)
    config = Config.load(directory / CONFIG_FILE)
    state = load_safetensors(directory / WEIGHTS_FILE, dtype)
    check_shapes(config, state, directory)
    return config, state
