"""Building a :class:`~.core.Tokenizer` from a GGUF file or a Hugging Face tokenizer.json.

GGUF keeps the whole tokenizer in its key/value metadata (``tokenizer.ggml.*``): the model
kind (``gpt2`` = byte-level BPE, ``llama`` = SentencePiece BPE), the token strings, their
types, merges or scores, the pre-tokenizer kind and the special ids. This module reproduces
how llama.cpp's ``llama_vocab::impl::load`` reads them, including its defaults for missing
keys and its text-based detection of end-of-turn and fill-in-the-middle tokens (which it
promotes to control tokens, changing how they are matched in text).

Reading the metadata: :func:`read_gguf_metadata` parses only the key/value section, using
``gguf``'s value-type constants. ``gguf.GGUFReader`` gives the same values (pass
``use_gguf_reader=True``) but maps every tensor and wraps every array element in a numpy
view, which takes 10-40 s for a vocabulary of 262k tokens instead of about one second.

Hugging Face's ``tokenizer.json`` describes BPE with a merge table, a pre-tokenizer pipeline
and ``added_tokens``; ``tokenizer_config.json`` adds the BOS/EOS strings, ``add_bos_token``
and the chat template.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .bpe import ByteLevelBPE, parse_merges
from .core import TokenAttr, Tokenizer, attrs_from_token_types
from .pretokenize import (
    GPT2_PATTERN,
    IGNORE_MERGES_KINDS,
    PRE_TOKENIZER_PATTERNS,
    PreTokenizer,
    known_pre_tokenizers,
)
from .sentencepiece import SPACE_MARK, SentencePieceBPE

__all__ = [
    "read_gguf_metadata",
    "tokenizer_from_gguf",
    "tokenizer_from_hf_dir",
    "tokenizer_from_tokenizer_json",
]

K = gguf.Keys.Tokenizer

_SCALAR_FORMATS = {
    gguf.GGUFValueType.UINT8: "B",
    gguf.GGUFValueType.INT8: "b",
    gguf.GGUFValueType.UINT16: "H",
    gguf.GGUFValueType.INT16: "h",
    gguf.GGUFValueType.UINT32: "I",
    gguf.GGUFValueType.INT32: "i",
    gguf.GGUFValueType.FLOAT32: "f",
    gguf.GGUFValueType.BOOL: "?",
    gguf.GGUFValueType.UINT64: "Q",
    gguf.GGUFValueType.INT64: "q",
    gguf.GGUFValueType.FLOAT64: "d",
}


def read_gguf_metadata(path: str | os.PathLike[str], *, use_gguf_reader: bool = False) -> dict:
    """All key/value metadata of a GGUF file (strings, numbers, bools and lists of them)."""
    path = Path(path)
    if use_gguf_reader:
        reader = gguf.GGUFReader(path)
        return {
            key: field.contents()
            for key, field in reader.fields.items()
            if not key.startswith("GGUF.")
        }
    if path.stat().st_size < 24:
        raise ValueError(f"{path}: not a readable GGUF file (too short for a GGUF header)")
    problem = ""
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        try:
            return _parse_kv(memoryview(mm))
        except (struct.error, ValueError, IndexError, KeyError) as exc:
            # Only the message leaves this block: the traceback's frames hold views of the
            # mapping, which could then not be closed.
            problem = f"{type(exc).__name__}: {exc}"
    raise ValueError(f"{path}: not a readable GGUF file ({problem})")


def _parse_kv(buf: memoryview) -> dict[str, Any]:
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("bad magic, expected b'GGUF'")
    (version,) = struct.unpack_from("<I", buf, 4)
    # A big-endian file shows its version byte-swapped when read as little-endian.
    endian = ">" if version & 0xFFFF == 0 else "<"
    (version,) = struct.unpack_from(endian + "I", buf, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported (need 2 or later)")
    _n_tensors, n_kv = struct.unpack_from(endian + "QQ", buf, 8)
    off = 24
    u64 = struct.Struct(endian + "Q")
    u32 = struct.Struct(endian + "I")

    def read_str(off: int) -> tuple[str, int]:
        (n,) = u64.unpack_from(buf, off)
        end = off + 8 + n
        return str(buf[off + 8 : end], "utf-8", "replace"), end

    out: dict[str, Any] = {}
    for _ in range(n_kv):
        key, off = read_str(off)
        (vtype,) = u32.unpack_from(buf, off)
        off += 4
        if vtype == gguf.GGUFValueType.ARRAY:
            (etype,) = u32.unpack_from(buf, off)
            (count,) = u64.unpack_from(buf, off + 4)
            off += 12
            if etype == gguf.GGUFValueType.STRING:
                items = []
                for _ in range(count):
                    item, off = read_str(off)
                    items.append(item)
                out[key] = items
            else:
                fmt = _SCALAR_FORMATS[gguf.GGUFValueType(etype)]
                size = struct.calcsize(fmt) * count
                arr = np.frombuffer(buf[off : off + size], dtype=np.dtype(endian + fmt))
                out[key] = arr.tolist()
                off += size
        elif vtype == gguf.GGUFValueType.STRING:
            out[key], off = read_str(off)
        else:
            fmt = endian + _SCALAR_FORMATS[gguf.GGUFValueType(vtype)]
            (out[key],) = struct.unpack_from(fmt, buf, off)
            off += struct.calcsize(fmt)
    return out


# --- llama.cpp's special-token detection by text (llama_vocab::impl::load) ---------------

_EOT_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "<end_of_utterance>",
    }
)
_DETECTED: dict[str, frozenset[str]] = {
    "eot": _EOT_TEXTS,
    "eom": frozenset({"<|eom_id|>"}),
    "fim_pre": frozenset(
        {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "<|code_prefix|>", "<|prefix|>"}
    ),
    "fim_suf": frozenset(
        {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "<|code_suffix|>", "<|suffix|>"}
    ),
    "fim_mid": frozenset(
        {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "<|code_middle|>", "<|middle|>"}
    ),
    "fim_pad": frozenset({"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}),
    "fim_rep": frozenset({"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}),
    "fim_sep": frozenset({"<|file_sep|>"}),
}
_EOG_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
    }
)
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


def _llama_cpp_end_of_generation(
    vocab: Mapping[str, int], attrs: list[TokenAttr], ids: dict[str, int | None]
) -> set[int]:
    """llama.cpp's EOG set; promotes the tokens it detects to CONTROL in ``attrs``."""
    for text, tid in vocab.items():
        for key, texts in _DETECTED.items():
            if ids.get(key) is None and text in texts:
                ids[key] = tid
                attrs[tid] |= TokenAttr.CONTROL
    eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if ids.get(k) is not None}
    for text, tid in vocab.items():
        if text in _EOG_TEXTS:
            eog.add(tid)
            attrs[tid] |= TokenAttr.CONTROL
    for text in _ALWAYS_RENDERED:
        if text in vocab:
            attrs[vocab[text]] = TokenAttr.USER_DEFINED
    eog |= {ids[k] for k in ("eos", "eot", "eom") if ids.get(k) is not None}  # type: ignore[misc]
    by_text = {t: i for t, i in vocab.items() if i in eog}
    # Harmony-style vocabularies end turns with <|return|>/<|call|>, and <|end|> is not final.
    if "<|end|>" in by_text and (
        ("<|return|>" in by_text and "<|call|>" in by_text)
        or ("<|calls|>" in by_text and "<|flush|>" in by_text)
    ):
        eog.discard(by_text["<|end|>"])
        attrs[by_text["<|end|>"]] = TokenAttr.USER_DEFINED
    if "<|tool_response>" in by_text and "</s>" in by_text:
        eog.discard(by_text["</s>"])
        attrs[by_text["</s>"]] = TokenAttr.NORMAL
    return eog


# --- GGUF ----------------------------------------------------------------------------------

_ID_KEYS = {
    "bos": K.BOS_ID,
    "eos": K.EOS_ID,
    "eot": K.EOT_ID,
    "eom": K.EOM_ID,
    "unk": K.UNK_ID,
    "sep": K.SEP_ID,
    "pad": K.PAD_ID,
    "mask": K.MASK_ID,
    "fim_pre": K.FIM_PRE_ID,
    "fim_suf": K.FIM_SUF_ID,
    "fim_mid": K.FIM_MID_ID,
    "fim_pad": K.FIM_PAD_ID,
    "fim_rep": K.FIM_REP_ID,
    "fim_sep": K.FIM_SEP_ID,
}
_DEPRECATED_ID_KEYS = {"fim_pre": K.PREFIX_ID, "fim_suf": K.SUFFIX_ID, "fim_mid": K.MIDDLE_ID}


def tokenizer_from_gguf(
    path: str | os.PathLike[str], *, use_gguf_reader: bool = False
) -> Tokenizer:
    """The tokenizer of a GGUF model file, matching llama.cpp's tokenisation exactly."""
    path = Path(path)
    meta = read_gguf_metadata(path, use_gguf_reader=use_gguf_reader)
    return tokenizer_from_gguf_metadata(meta, source=str(path))


def tokenizer_from_gguf_metadata(meta: Mapping[str, Any], *, source: str = "<gguf>") -> Tokenizer:
    """Build from already-read GGUF metadata (see :func:`read_gguf_metadata`)."""
    kind = meta.get(K.MODEL)
    if kind is None:
        raise ValueError(
            f"{source}: the GGUF file has no tokenizer metadata (field {K.MODEL!r} is missing)"
        )
    tokens = meta.get(K.LIST)
    if not tokens:
        raise ValueError(f"{source}: the GGUF file has no token list (field {K.LIST!r})")
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    n = len(tokens)
    types = meta.get(K.TOKEN_TYPE)
    attrs = attrs_from_token_types(types) if types is not None else [TokenAttr.NORMAL] * n
    if len(attrs) != n:
        raise ValueError(f"{source}: {K.TOKEN_TYPE!r} has {len(attrs)} entries for {n} tokens")
    vocab: dict[str, int] = {}
    for i, text in enumerate(tokens):
        vocab[text] = i

    ids: dict[str, int | None] = dict.fromkeys(_ID_KEYS)
    if kind == "gpt2":
        # llama.cpp's defaults for BPE vocabularies, used when the ids are not in the file.
        ids.update(bos=11, eos=11)
        add_bos = False
    elif kind == "llama":
        ids.update(bos=1, eos=2, unk=0)
        add_bos = True
    else:
        raise ValueError(
            f"{source}: unsupported tokenizer model {kind!r} in field {K.MODEL!r} "
            "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece BPE)"
        )
    for name, key in _ID_KEYS.items():
        value = meta.get(key, meta.get(_DEPRECATED_ID_KEYS.get(name, ""), None))
        if value is not None and 0 <= int(value) < n:
            ids[name] = int(value)

    model: ByteLevelBPE | SentencePieceBPE
    strip_leading_space = False
    if kind == "gpt2":
        merges = meta.get(K.MERGES)
        if merges is None:
            raise ValueError(f"{source}: byte-level BPE needs merges (field {K.MERGES!r})")
        pre = meta.get(K.PRE)
        if pre is None:
            warnings.warn(
                f"{source}: no {K.PRE!r}; using llama.cpp's 'default' pre-tokenizer", stacklevel=2
            )
            pre = "default"
        if pre not in PRE_TOKENIZER_PATTERNS:
            raise ValueError(
                f"{source}: unknown pre-tokenizer kind {pre!r} in field {K.PRE!r} "
                f"(known: {', '.join(known_pre_tokenizers())})"
            )
        if pre in IGNORE_MERGES_KINDS:
            add_bos = True
        model = ByteLevelBPE(
            vocab,
            parse_merges(merges),
            PreTokenizer(PRE_TOKENIZER_PATTERNS[pre], name=pre),
            ignore_merges=pre in IGNORE_MERGES_KINDS,
        )
    else:
        scores = meta.get(K.SCORES) or [0.0] * n
        add_space_prefix = bool(meta.get(K.ADD_PREFIX, True))
        byte_ids = {b: vocab[f"<0x{b:02X}>"] for b in range(256) if f"<0x{b:02X}>" in vocab}
        model = SentencePieceBPE(
            vocab,
            scores,
            unk_id=ids["unk"],
            byte_ids=byte_ids,
            add_space_prefix=add_space_prefix,
        )
        strip_leading_space = add_space_prefix
    add_bos = bool(meta.get(K.ADD_BOS, add_bos))
    add_eos = bool(meta.get(K.ADD_EOS, False))
    eog = _llama_cpp_end_of_generation(vocab, attrs, ids)
    return Tokenizer(
        model,
        tokens,
        attrs,
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        unk_id=ids["unk"],
        pad_id=ids["pad"],
        add_bos=add_bos,
        add_eos=add_eos,
        eos_ids=eog,
        chat_template=meta.get(K.CHAT_TEMPLATE),
        strip_leading_space=strip_leading_space,
        source=source,
    )


# --- Hugging Face --------------------------------------------------------------------------


def _token_content(value: Any) -> str | None:
    # tokenizer_config.json stores special tokens as strings or AddedToken dicts.
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _walk(cfg: Any, kind: str) -> list[Mapping[str, Any]]:
    """Every component of type ``kind`` in a (possibly nested Sequence) pipeline."""
    if not isinstance(cfg, Mapping):
        return []
    if cfg.get("type") == kind:
        return [cfg]
    found: list[Mapping[str, Any]] = []
    for key in ("pretokenizers", "normalizers", "processors", "decoders"):
        for sub in cfg.get(key) or []:
            found += _walk(sub, kind)
    return found


def _hf_pre_patterns(cfg: Any, source: str) -> tuple[list[str], bool]:
    """Split patterns and ``add_prefix_space`` for a byte-level pre-tokenizer pipeline."""
    if cfg is None:
        return [], False
    kind = cfg.get("type")
    if kind == "Sequence":
        patterns: list[str] = []
        prefix = False
        for sub in cfg.get("pretokenizers", []):
            sub_patterns, sub_prefix = _hf_pre_patterns(sub, source)
            patterns += sub_patterns
            prefix = prefix or sub_prefix
        return patterns, prefix
    if kind == "ByteLevel":
        return ([GPT2_PATTERN] if cfg.get("use_regex", True) else []), bool(
            cfg.get("add_prefix_space", False)
        )
    if kind == "Digits":
        return [r"\p{N}" if cfg.get("individual_digits", False) else r"\p{N}+"], False
    if kind == "Split":
        pattern = cfg.get("pattern", {})
        if "Regex" in pattern:
            regex_text = pattern["Regex"]
        else:
            import regex

            regex_text = regex.escape(pattern.get("String", ""))
        if cfg.get("behavior", "Isolated") != "Isolated" or cfg.get("invert", False):
            raise ValueError(
                f"{source}: unsupported Split behaviour {cfg.get('behavior')!r} "
                "in field 'pre_tokenizer' (only 'Isolated' without invert)"
            )
        return [regex_text], False
    raise ValueError(f"{source}: unsupported pre-tokenizer {kind!r} in field 'pre_tokenizer'")


def _hf_normalizer(cfg: Any, source: str) -> Callable[[str], str] | None:
    if cfg is None:
        return None
    kind = cfg.get("type")
    if kind == "Sequence":
        steps = [_hf_normalizer(sub, source) for sub in cfg.get("normalizers", [])]
        funcs = [f for f in steps if f is not None]

        def chain(text: str) -> str:
            for f in funcs:
                text = f(text)
            return text

        return chain if funcs else None
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        form = kind
        return lambda text: unicodedata.normalize(form, text)
    raise ValueError(f"{source}: unsupported normalizer {kind!r} in field 'normalizer'")


def _hf_added_flags(tok: Mapping[str, Any]) -> TokenAttr:
    attr = TokenAttr.CONTROL if tok.get("special") else TokenAttr.USER_DEFINED
    if tok.get("lstrip"):
        attr |= TokenAttr.LSTRIP
    if tok.get("rstrip"):
        attr |= TokenAttr.RSTRIP
    return attr


def _special_item_id(
    item: Mapping[str, Any], specials: Mapping[str, Any], vocab: Mapping[str, int]
) -> int | None:
    if "SpecialToken" not in item:
        return None
    name = item["SpecialToken"]["id"]
    ids = (specials.get(name) or {}).get("ids") or []
    return ids[0] if ids else vocab.get(name)


def _template_specials(post: Any, vocab: Mapping[str, int]) -> tuple[int | None, int | None]:
    """Ids the post-processor puts before and after a single sequence."""
    for proc in _walk(post, "TemplateProcessing"):
        single = proc.get("single") or []
        specials = proc.get("special_tokens") or {}

        first = _special_item_id(single[0], specials, vocab) if single else None
        last = _special_item_id(single[-1], specials, vocab) if len(single) > 1 else None
        return first, last
    return None, None


def tokenizer_from_tokenizer_json(
    path: str | os.PathLike[str],
    config_path: str | os.PathLike[str] | None = None,
    *,
    generation_config_path: str | os.PathLike[str] | None = None,
    chat_template: str | None = None,
) -> Tokenizer:
    """A tokenizer from Hugging Face ``tokenizer.json`` (BPE models only)."""
    path = Path(path)
    source = str(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    config: dict[str, Any] = {}
    if config_path is not None and Path(config_path).exists():
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    model_cfg = data.get("model") or {}
    if model_cfg.get("type", "BPE") != "BPE" or "vocab" not in model_cfg:
        raise ValueError(
            f"{source}: unsupported tokenizer model {model_cfg.get('type')!r} in field "
            "'model.type' (only BPE is implemented)"
        )
    if model_cfg.get("continuing_subword_prefix") or model_cfg.get("end_of_word_suffix"):
        raise ValueError(f"{source}: BPE subword prefixes/suffixes are not supported ('model')")
    model_vocab: dict[str, int] = dict(model_cfg["vocab"])
    added = data.get("added_tokens") or []
    n = 1 + max([*model_vocab.values(), *(int(t["id"]) for t in added), -1])
    tokens = [f"[EMPTY_{i}]" for i in range(n)]
    attrs = [TokenAttr.UNDEFINED] * n
    for text, tid in model_vocab.items():
        tokens[tid] = text
        attrs[tid] = TokenAttr.NORMAL
    unk_text = model_cfg.get("unk_token")
    for tok in added:
        tid = int(tok["id"])
        tokens[tid] = tok["content"]
        attrs[tid] = _hf_added_flags(tok)
    byte_fallback = bool(model_cfg.get("byte_fallback", False))
    if byte_fallback:
        # Byte tokens decode to their byte even when also listed as added tokens.
        for b in range(256):
            tid = model_vocab.get(f"<0x{b:02X}>")
            if tid is not None:
                attrs[tid] = (attrs[tid] & ~TokenAttr.NORMAL) | TokenAttr.BYTE
    vocab = {text: i for i, text in enumerate(tokens)}
    if unk_text in vocab:
        attrs[vocab[unk_text]] |= TokenAttr.UNKNOWN

    pre_cfg = data.get("pre_tokenizer")
    byte_level = bool(_walk(pre_cfg, "ByteLevel") or _walk(data.get("decoder"), "ByteLevel"))
    model: ByteLevelBPE | SentencePieceBPE
    normalizer = None
    strip_leading_space = False
    ranks = parse_merges(model_cfg.get("merges") or [])
    if byte_level:
        patterns, prefix = _hf_pre_patterns(pre_cfg, source)
        normalizer = _hf_normalizer(data.get("normalizer"), source)
        model = ByteLevelBPE(
            model_vocab,
            ranks,
            PreTokenizer(patterns, name="tokenizer.json"),
            ignore_merges=bool(model_cfg.get("ignore_merges", False)),
            add_prefix_space=prefix,
        )
    else:
        add_prefix, first_only, split = _hf_metaspace(data, source)
        byte_ids = {
            b: model_vocab[f"<0x{b:02X}>"]
            for b in range(256)
            if byte_fallback and f"<0x{b:02X}>" in model_vocab
        }
        model = SentencePieceBPE(
            model_vocab,
            None,
            unk_id=vocab.get(unk_text) if unk_text else None,
            byte_ids=byte_ids,
            add_space_prefix=add_prefix,
            prefix_first_only=first_only,
            split_on_space_mark=split,
            ranks=ranks,
            byte_fallback=byte_fallback,
        )
        strip_leading_space = add_prefix

    def special_id(name: str) -> int | None:
        text = _token_content(config.get(name))
        return vocab.get(text) if text is not None else None

    bos_id, eos_id = special_id("bos_token"), special_id("eos_token")
    first, last = _template_specials(data.get("post_processor"), vocab)
    add_bos = config.get("add_bos_token", first is not None and first == bos_id)
    add_eos = config.get("add_eos_token", last is not None and last == eos_id)
    if bos_id is None and first is not None:
        bos_id = first
    eos_ids: set[int] = set()
    if generation_config_path is not None and Path(generation_config_path).exists():
        gen = json.loads(Path(generation_config_path).read_text(encoding="utf-8"))
        value = gen.get("eos_token_id")
        eos_ids |= set(value if isinstance(value, list) else [value] if value is not None else [])
    # End-of-turn tokens by llama.cpp's text list, but only real special tokens: promoting
    # added words (Gemma's "</s>" HTML tag) would change how Hugging Face splits text.
    eos_ids |= {
        vocab[text]
        for text in _EOG_TEXTS
        if text in vocab and attrs[vocab[text]] & TokenAttr.CONTROL
    }
    if eos_id is not None:
        eos_ids.add(eos_id)
    template = chat_template
    if template is None:
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default") or next(iter(named.values()), None)
    return Tokenizer(
        model,
        tokens,
        attrs,
        bos_id=bos_id,
        eos_id=eos_id,
        unk_id=vocab.get(unk_text) if unk_text else special_id("unk_token"),
        pad_id=special_id("pad_token"),
        add_bos=bool(add_bos) and bos_id is not None,
        add_eos=bool(add_eos) and eos_id is not None,
        eos_ids={i for i in eos_ids if isinstance(i, int)},
        chat_template=template,
        strip_leading_space=strip_leading_space,
        normalizer=normalizer,
        source=source,
    )


def _hf_metaspace(data: Mapping[str, Any], source: str) -> tuple[bool, bool, bool]:
    """(prefix a space, only at the start, split at every mark) for SentencePiece-like BPE."""
    norm = data.get("normalizer")
    for sub in _walk(norm, "Replace"):
        if sub.get("pattern", {}).get("String") != " " or sub.get("content") != SPACE_MARK:
            raise ValueError(f"{source}: unsupported Replace normalizer in field 'normalizer'")
    kinds = {sub.get("type") for sub in _walk(norm, "Prepend") + _walk(norm, "Replace")}
    if norm is not None and norm.get("type") not in ("Sequence", "Replace", "Prepend"):
        raise ValueError(f"{source}: unsupported normalizer {norm.get('type')!r} in 'normalizer'")
    prepend = "Prepend" in kinds
    for meta in _walk(data.get("pre_tokenizer"), "Metaspace"):
        scheme = meta.get("prepend_scheme", "always" if meta.get("add_prefix_space") else "never")
        return scheme != "never", scheme == "first", bool(meta.get("split", True))
    if data.get("pre_tokenizer") is not None:
        raise ValueError(
            f"{source}: unsupported pre-tokenizer {data['pre_tokenizer'].get('type')!r} "
            "in field 'pre_tokenizer' for a SentencePiece-style BPE"
        )
    return prepend, False, False


def tokenizer_from_hf_dir(path: str | os.PathLike[str]) -> Tokenizer:
    """A tokenizer from a Hugging Face model directory (``tokenizer.json`` and friends)."""
    root = Path(path)
    tokenizer_json = root / "tokenizer.json"
    if not tokenizer_json.exists():
        raise ValueError(f"{root}: no tokenizer.json in this directory")
    template = None
    jinja = root / "chat_template.jinja"
    if jinja.exists():
        template = jinja.read_text(encoding="utf-8")
    elif (root / "chat_template.json").exists():
        data = json.loads((root / "chat_template.json").read_text(encoding="utf-8"))
        template = data.get("chat_template")
    return tokenizer_from_tokenizer_json(
        tokenizer_json,
        root / "tokenizer_config.json",
        generation_config_path=root / "generation_config.json",
        chat_template=template,
    )
