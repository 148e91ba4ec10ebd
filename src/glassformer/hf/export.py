"""Export a model as an HF transformers directory that other tools read correctly.

The directory holds what `AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)` need: `config.json`, `model.safetensors` (or shards and
their index) and the tokenizer (`tokenizer.json`, `tokenizer_config.json` with the chat
template). Two compatibility rules:

- RoPE settings are written twice: `rope_parameters` (how transformers 5 spells them) and the
  legacy `rope_theta` / `rope_scaling` / `rope_local_base_freq` / `partial_rotary_factor` keys
  that transformers 4.x reads. A reader that knows only one spelling would otherwise fall back
  to its default base (10000) and compute different logits without any error.
- A GGUF keeps its tokenizer in metadata; it is converted to `tokenizer.json` with transformers'
  own GGUF converter, and `tokenizer_class` is set to `PreTrainedTokenizerFast`, the class every
  transformers version since 4.0 resolves.

Every file is written to a temporary name and renamed into place (`safetensors_io`), with the
usual permissions (0666 less the umask).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from glassformer.config import Config
from glassformer.loaders.safetensors_io import _atomic_write, write_hf_dir

# Tokenizer files that travel with an HF directory when the source has them.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


# Keys transformers types as int that a Config holds as a float.
_HF_INT_KEYS = ("query_pre_attn_scalar",)


def with_int_keys(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """`hf_config` with the keys transformers types as int written as ints: a Gemma 3 GGUF
    gives query_pre_attn_scalar as 256.0, which transformers 5's strict config refuses."""
    out = dict(hf_config)
    for key in _HF_INT_KEYS:
        value = out.get(key)
        if isinstance(value, float) and value.is_integer():
            out[key] = int(value)
    return out


def _legacy_rope(params: dict[str, Any]) -> tuple[Any, dict[str, Any] | None, Any]:
    """(rope_theta, rope_scaling or None, partial_rotary_factor or None) of one rope dict."""
    rest = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
    scaling = rest if rest.get("rope_type", "default") != "default" else None
    if scaling is not None:
        scaling = {"type": scaling["rope_type"], **scaling}  # 4.x reads either spelling
    return params.get("rope_theta"), scaling, params.get("partial_rotary_factor")


def with_legacy_rope_keys(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """`hf_config` plus the transformers 4.x spelling of its `rope_parameters`."""
    out = dict(hf_config)
    params = out.get("rope_parameters")
    if not isinstance(params, dict):
        return out
    if "full_attention" in params:  # per layer kind (Gemma 3): global and local bases
        theta, scaling, fraction = _legacy_rope(params["full_attention"])
        local = params.get("sliding_attention", {}).get("rope_theta")
        if local is not None:
            out["rope_local_base_freq"] = local
    else:
        theta, scaling, fraction = _legacy_rope(params)
    out["rope_theta"] = theta
    out["rope_scaling"] = scaling
    if fraction is not None:
        out["partial_rotary_factor"] = fraction
    return out


def export_config(config: Config) -> dict[str, Any]:
    """The `config.json` an export writes: `config_to_hf` plus the legacy rope keys, checked to
    read back to the same Config."""
    from glassformer.hf.config import config_from_hf, config_to_hf

    out = with_legacy_rope_keys(with_int_keys(config_to_hf(config)))
    back = config_from_hf(out)
    for name in ("rope_theta", "rope_theta_local", "rope_scaling", "rope_fraction"):
        if getattr(back, name) != getattr(config, name):
            raise ValueError(
                f"export: the legacy rope keys read back {name}={getattr(back, name)!r}, "
                f"expected {getattr(config, name)!r}"
            )
    return out


def _copy(src: Path, dst: Path) -> None:
    _atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _drop_noop_split(path: Path) -> None:
    """The converter gives SentencePiece-style vocabularies (Gemma) a normalizer that turns
    every space into U+2581 and then a pre-tokenizer that splits at spaces: none are left, so
    the split is a no-op. Dropping it changes no token id and leaves the file in the form
    every reader (glassformer's included) knows."""
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    norm, pre = data.get("normalizer") or {}, data.get("pre_tokenizer") or {}
    spaces_gone = norm.get("type") == "Replace" and norm.get("pattern") == {"String": " "}
    space_split = pre.get("type") == "Split" and pre.get("pattern") == {"String": " "}
    if spaces_gone and norm.get("content") == "\u2581" and space_split:
        data["pre_tokenizer"] = None
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def gguf_tokenizer_files(gguf_path: Path, directory: Path) -> list[Path]:
    """Convert a GGUF's tokenizer to tokenizer.json + tokenizer_config.json (with the chat
    template) in `directory`, with transformers' GGUF converter."""
    try:
        from transformers import AutoTokenizer
    except ImportError as err:  # pragma: no cover - transformers is an optional extra
        raise ImportError(
            f"{gguf_path}: writing its tokenizer as tokenizer.json needs HF transformers "
            "(pip install transformers)"
        ) from err
    from glassformer.loaders.gguf import read_header

    header = read_header(gguf_path, decode_arrays=False)
    template = header.metadata.get("tokenizer.chat_template")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=directory))
    try:
        tokenizer.save_pretrained(staging)
        config_path = staging / "tokenizer_config.json"
        tok_config = json.loads(config_path.read_text())
        # "TokenizersBackend" (what transformers 5 writes) is unknown to 4.x; the fast class
        # name resolves in every version and loads tokenizer.json as is.
        tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
        for key in ("backend", "is_local", "local_files_only"):
            tok_config.pop(key, None)
        if isinstance(template, str):
            tok_config["chat_template"] = template
            (staging / "chat_template.jinja").unlink(missing_ok=True)
        config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")
        _drop_noop_split(staging / "tokenizer.json")
        written = []
        for name in TOKENIZER_FILES:
            if (staging / name).is_file():
                _copy(staging / name, directory / name)
                written.append(directory / name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_hf(
    directory: str | os.PathLike[str],
    config: Config,
    state: Mapping[str, torch.Tensor],
    source: Path | None = None,
    max_shard_size: int | str = "5GB",
) -> list[Path]:
    """Write (Config, state under glassformer's names) as an HF directory; the tokenizer comes
    from `source` (an HF directory's files are copied, a GGUF's metadata converted). Returns
    the files written."""
    from glassformer.hf.weights import ours_to_hf

    directory = Path(directory)
    gguf_source = source is not None and source.suffix == ".gguf"
    if gguf_source and importlib.util.find_spec("transformers") is None:
        # refused before anything is written: an export without its tokenizer is half a model
        raise ImportError(
            f"{source}: exporting its tokenizer as tokenizer.json needs HF transformers "
            "(pip install transformers)"
        )
    hf_state = ours_to_hf(config, dict(state))
    written = write_hf_dir(directory, export_config(config), hf_state, max_shard_size)
    if source is not None and source.is_dir():
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                _copy(source / name, directory / name)
                written.append(directory / name)
    elif gguf_source:
        assert source is not None
        written += gguf_tokenizer_files(source, directory)
    return written
