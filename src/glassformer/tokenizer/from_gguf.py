"""Building a :class:`~.core.Tokenizer` from a GGUF file's ``tokenizer.ggml.*`` metadata.

GGUF keeps the whole tokenizer in its key/value metadata: the model kind (``gpt2`` =
byte-level BPE, ``llama`` = SentencePiece BPE), the token strings, their types, merges or
scores, the pre-tokenizer kind and the special ids. This module reproduces how llama.cpp's
``llama_vocab::impl::load`` reads them, including its defaults for missing keys and its
text-based detection of end-of-turn and fill-in-the-middle tokens (which it promotes to
control tokens, changing how they are matched in text).

The file is read by the model loader's header reader
(:func:`glassformer.loaders.gguf.read_header`), so a tokenizer accepts exactly the files
the weights loader accepts. Every field the tokenizer uses is checked before anything is
built from it; a bad one is a ``ValueError`` naming the file and the field.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf

from .bpe import ByteLevelBPE, parse_merges
from .core import TokenAttr, Tokenizer, attrs_from_token_types
from .pretokenize import (
    IGNORE_MERGES_KINDS,
    PRE_TOKENIZER_PATTERNS,
    PreTokenizer,
    known_pre_tokenizers,
)
from .sentencepiece import SentencePieceBPE

__all__ = [
    "EOG_TEXTS",
    "read_gguf_metadata",
    "tokenizer_from_gguf",
    "tokenizer_from_gguf_metadata",
]

K = gguf.Keys.Tokenizer


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """All key/value metadata of a GGUF file (strings, numbers, bools and lists of them).

    Parsed by :func:`glassformer.loaders.gguf.read_header`, which also validates the
    tensor records; numeric arrays come back as Python lists.
    """
    # Imported here: the loader module pulls in PyTorch, which tokenizing does not need.
    from glassformer.loaders.gguf import read_header

    metadata = read_header(path).metadata
    return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in metadata.items()}


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
#: Token texts llama.cpp treats as ending generation (also used for tokenizer.json files).
EOG_TEXTS = frozenset(
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
        if text in EOG_TEXTS:
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


# --- field checks --------------------------------------------------------------------------

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
# gguf.TokenType: 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
_TOKEN_TYPES = range(7)


def _bad(source: str, key: str, what: str) -> ValueError:
    return ValueError(f"{source}: field {key!r} {what}")


def _string_list(meta: Mapping[str, Any], key: str, source: str) -> list[str] | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _bad(source, key, f"must be an array of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _bad(source, key, f"must be an array of strings; entry {i} is {item!r}")
    return value


def _number_list(meta: Mapping[str, Any], key: str, n: int, source: str) -> list[Any] | None:
    value = meta.get(key)
    if value is None:
        return None
    if hasattr(value, "tolist"):  # a NumPy array, as read_header returns long numeric arrays
        value = value.tolist()
    if not isinstance(value, list) or any(isinstance(v, (str, bool)) for v in value[:1]):
        raise _bad(source, key, "must be an array of numbers")
    if len(value) != n:
        raise _bad(source, key, f"has {len(value)} entries for {n} tokens")
    return value


def _flag(meta: Mapping[str, Any], key: str, default: bool, source: str) -> bool:
    value = meta.get(key, default)
    if not isinstance(value, bool):
        raise _bad(source, key, f"must be a bool, got {value!r}")
    return value


def _text(meta: Mapping[str, Any], key: str, source: str) -> str | None:
    value = meta.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(source, key, f"must be a string, got {type(value).__name__}")
    return value


# --- building ------------------------------------------------------------------------------


def tokenizer_from_gguf(path: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer of a GGUF model file, matching llama.cpp's tokenisation exactly."""
    path = Path(path)
    return tokenizer_from_gguf_metadata(read_gguf_metadata(path), source=str(path))


def tokenizer_from_gguf_metadata(meta: Mapping[str, Any], *, source: str = "<gguf>") -> Tokenizer:
    """Build from already-read GGUF metadata (see :func:`read_gguf_metadata`)."""
    kind = meta.get(K.MODEL)
    if kind is None:
        raise ValueError(
            f"{source}: the GGUF file has no tokenizer metadata (field {K.MODEL!r} is missing)"
        )
    if kind not in ("gpt2", "llama"):
        raise ValueError(
            f"{source}: unsupported tokenizer model {kind!r} in field {K.MODEL!r} "
            "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece BPE)"
        )
    tokens = _string_list(meta, K.LIST, source)
    if not tokens:
        raise ValueError(f"{source}: the GGUF file has no token list (field {K.LIST!r})")
    # llama.cpp names empty token strings this way, so that none of them is ever matched.
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    n = len(tokens)
    types = _number_list(meta, K.TOKEN_TYPE, n, source)
    if types is not None:
        for i, t in enumerate(types):
            if t not in _TOKEN_TYPES:
                raise _bad(source, K.TOKEN_TYPE, f"entry {i} is {t!r}, not a token type 0..6")
    attrs = attrs_from_token_types(types) if types is not None else [TokenAttr.NORMAL] * n
    vocab: dict[str, int] = {}
    for i, text in enumerate(tokens):
        vocab[text] = i

    ids: dict[str, int | None] = dict.fromkeys(_ID_KEYS)
    if kind == "gpt2":
        # llama.cpp's defaults for BPE vocabularies, used when the ids are not in the file.
        ids.update(bos=11, eos=11)
        add_bos = False
    else:
        ids.update(bos=1, eos=2, unk=0)
        add_bos = True
    for name, key in _ID_KEYS.items():
        old = _DEPRECATED_ID_KEYS.get(name, "")
        used = key if key in meta else old
        value = meta.get(used)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
            raise _bad(source, used, f"is {value!r}, not a token id in 0..{n - 1}")
        ids[name] = value

    model: ByteLevelBPE | SentencePieceBPE
    strip_leading_space = False
    if kind == "gpt2":
        merges = _string_list(meta, K.MERGES, source)
        if merges is None:
            raise ValueError(f"{source}: byte-level BPE needs merges (field {K.MERGES!r})")
        for i, merge in enumerate(merges):
            if merge.find(" ", 1) < 0:
                raise _bad(source, K.MERGES, f"entry {i} ({merge!r}) is not two tokens 'a b'")
        pre = _text(meta, K.PRE, source)
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
        scores = _number_list(meta, K.SCORES, n, source)
        if scores is None:
            raise ValueError(
                f"{source}: a SentencePiece tokenizer needs token scores "
                f"(field {K.SCORES!r} is missing)"
            )
        for i, score in enumerate(scores):
            # -inf is a valid score (a token the merges never prefer); NaN and +inf are not.
            if math.isnan(score) or score == math.inf:
                raise _bad(source, K.SCORES, f"entry {i} is {score!r}, not a token score")
        add_space_prefix = _flag(meta, K.ADD_PREFIX, True, source)
        byte_ids = {b: vocab[f"<0x{b:02X}>"] for b in range(256) if f"<0x{b:02X}>" in vocab}
        model = SentencePieceBPE(
            vocab,
            scores,
            unk_id=ids["unk"],
            byte_ids=byte_ids,
            add_space_prefix=add_space_prefix,
        )
        strip_leading_space = add_space_prefix
    add_bos = _flag(meta, K.ADD_BOS, add_bos, source)
    add_eos = _flag(meta, K.ADD_EOS, False, source)
    chat_template = _text(meta, K.CHAT_TEMPLATE, source)
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
        chat_template=chat_template,
        strip_leading_space=strip_leading_space,
        source=source,
    )
