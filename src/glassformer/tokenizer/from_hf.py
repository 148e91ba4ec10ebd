"""Building a :class:`~.core.Tokenizer` from a Hugging Face ``tokenizer.json``.

``tokenizer.json`` describes BPE with a merge table, a pre-tokenizer pipeline and
``added_tokens``; ``tokenizer_config.json`` adds the BOS/EOS strings, ``add_bos_token`` and
the chat template. Byte-level vocabularies (GPT-2, Llama 3, Qwen, SmolLM) become a
:class:`~.bpe.ByteLevelBPE`, ``▁``-marked ones (Llama 2, Gemma) a
:class:`~.sentencepiece.SentencePieceBPE` that merges by rank.

Every field used is checked before anything is built from it: a bad one is a
``ValueError`` naming the file and the field (``model.vocab``,
``pre_tokenizer.pretokenizers[1].pattern.Regex``, ...). Split patterns are compiled at load
and run under a time limit (see :class:`~.pretokenize.PreTokenizer`), so a pattern with
catastrophic backtracking fails with an error instead of hanging.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import regex

from .bpe import ByteLevelBPE, parse_merges
from .core import TokenAttr, Tokenizer
from .from_gguf import EOG_TEXTS
from .pretokenize import GPT2_PATTERN, PreTokenizer
from .sentencepiece import SPACE_MARK, SentencePieceBPE

__all__ = ["tokenizer_from_hf_dir", "tokenizer_from_tokenizer_json"]

# Far above any real vocabulary (the largest have about a million entries); a larger id is a
# corrupt file, refused before a token table of that size is allocated.
MAX_TOKEN_ID = (1 << 24) - 1


def _read_json(path: Path, what: str = "file") -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None


def _bad(source: str, field: str, what: str) -> ValueError:
    return ValueError(f"{source}: field {field!r} {what}")


def _object(value: Any, source: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(source, field, f"must be an object, got {type(value).__name__}")
    return value


def _token_id(value: Any, source: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_ID:
        raise _bad(source, field, f"is {value!r}, not a token id in 0..{MAX_TOKEN_ID}")
    return value


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
        subs = cfg.get(key)
        for sub in subs if isinstance(subs, list) else []:
            found += _walk(sub, kind)
    return found


def _members(cfg: Mapping[str, Any], key: str, source: str, field: str) -> list[tuple[Any, str]]:
    """A Sequence component's members under ``key``, each with its field path for errors."""
    subs = cfg.get(key, [])
    if not isinstance(subs, list):
        raise _bad(source, f"{field}.{key}", "must be a list")
    return [(sub, f"{field}.{key}[{i}]") for i, sub in enumerate(subs)]


def _hf_pre_patterns(cfg: Any, source: str, field: str) -> tuple[list[tuple[str, str]], bool]:
    """(pattern, field) pairs and ``add_prefix_space`` for a byte-level pre-tokenizer."""
    if cfg is None:
        return [], False
    cfg = _object(cfg, source, field)
    kind = cfg.get("type")
    if kind == "Sequence":
        patterns: list[tuple[str, str]] = []
        prefix = False
        for sub, where in _members(cfg, "pretokenizers", source, field):
            sub_patterns, sub_prefix = _hf_pre_patterns(sub, source, where)
            patterns += sub_patterns
            prefix = prefix or sub_prefix
        return patterns, prefix
    if kind == "ByteLevel":
        patterns = [(GPT2_PATTERN, field)] if cfg.get("use_regex", True) else []
        return patterns, bool(cfg.get("add_prefix_space", False))
    if kind == "Digits":
        return [(r"\p{N}" if cfg.get("individual_digits", False) else r"\p{N}+", field)], False
    if kind == "Split":
        pattern = _object(cfg.get("pattern"), source, f"{field}.pattern")
        if "Regex" in pattern:
            where = f"{field}.pattern.Regex"
            regex_text = pattern["Regex"]
        else:
            where = f"{field}.pattern.String"
            regex_text = pattern.get("String")
            if isinstance(regex_text, str):
                regex_text = regex.escape(regex_text)
        if not isinstance(regex_text, str) or not regex_text:
            raise _bad(source, where, f"must be a non-empty string, got {regex_text!r}")
        try:
            regex.compile(regex_text)
        except regex.error as exc:
            raise _bad(source, where, f"is not a valid regular expression ({exc})") from None
        if cfg.get("behavior", "Isolated") != "Isolated" or cfg.get("invert", False):
            raise ValueError(
                f"{source}: unsupported Split behaviour {cfg.get('behavior')!r} "
                f"in field {field!r} (only 'Isolated' without invert)"
            )
        return [(regex_text, where)], False
    raise ValueError(f"{source}: unsupported pre-tokenizer {kind!r} in field {field!r}")


def _hf_normalizer(cfg: Any, source: str, field: str = "normalizer") -> Callable[[str], str] | None:
    if cfg is None:
        return None
    cfg = _object(cfg, source, field)
    kind = cfg.get("type")
    if kind == "Sequence":
        steps = [
            _hf_normalizer(s, source, where)
            for s, where in _members(cfg, "normalizers", source, field)
        ]
        funcs = [f for f in steps if f is not None]

        def chain(text: str) -> str:
            for f in funcs:
                text = f(text)
            return text

        return chain if funcs else None
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        form = kind
        return lambda text: unicodedata.normalize(form, text)
    raise ValueError(f"{source}: unsupported normalizer {kind!r} in field {field!r}")


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
    if not isinstance(item, Mapping) or "SpecialToken" not in item:
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


def _merge_list(value: Any, source: str) -> list[str | tuple[str, str]]:
    """``model.merges``: ``"a b"`` strings or ``[a, b]`` pairs, each checked."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(source, "model.merges", f"must be a list, got {type(value).__name__}")
    for i, merge in enumerate(value):
        if isinstance(merge, str):
            ok = merge.find(" ", 1) >= 0
        else:
            ok = (
                isinstance(merge, list)
                and len(merge) == 2
                and all(isinstance(m, str) and m for m in merge)
            )
        if not ok:
            raise _bad(source, "model.merges", f"entry {i} ({merge!r}) is not a pair 'a b'")
    return value


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
    data = _object(_read_json(path), source, "(top level)")
    config: Mapping[str, Any] = {}
    if config_path is not None and Path(config_path).exists():
        config = _object(_read_json(Path(config_path)), str(config_path), "(top level)")
    model_cfg = _object(data.get("model"), source, "model")
    if model_cfg.get("type", "BPE") != "BPE" or "vocab" not in model_cfg:
        raise ValueError(
            f"{source}: unsupported tokenizer model {model_cfg.get('type')!r} in field "
            "'model.type' (only BPE is implemented)"
        )
    if model_cfg.get("continuing_subword_prefix") or model_cfg.get("end_of_word_suffix"):
        raise ValueError(f"{source}: BPE subword prefixes/suffixes are not supported ('model')")
    model_vocab: dict[str, int] = dict(_object(model_cfg["vocab"], source, "model.vocab"))
    seen: dict[int, str] = {}
    for text, tid in model_vocab.items():
        if type(tid) is not int or not 0 <= tid <= MAX_TOKEN_ID:
            _token_id(tid, source, f"model.vocab[{text!r}]")  # raises, naming the entry
        if tid in seen:
            raise _bad(source, "model.vocab", f"gives id {tid} to both {seen[tid]!r} and {text!r}")
        seen[tid] = text
    added = data.get("added_tokens")
    added = [] if added is None else added
    if not isinstance(added, list):
        raise _bad(source, "added_tokens", f"must be a list, got {type(added).__name__}")
    for i, tok in enumerate(added):
        _object(tok, source, f"added_tokens[{i}]")
        _token_id(tok.get("id"), source, f"added_tokens[{i}].id")
        if not isinstance(tok.get("content"), str) or not tok["content"]:
            raise _bad(source, f"added_tokens[{i}].content", "must be a non-empty string")
    n = 1 + max([*model_vocab.values(), *(t["id"] for t in added), -1])
    if n == 0:
        raise _bad(source, "model.vocab", "is empty (and there are no added_tokens)")
    tokens = [f"[EMPTY_{i}]" for i in range(n)]
    attrs = [TokenAttr.UNDEFINED] * n
    for text, tid in model_vocab.items():
        tokens[tid] = text
        attrs[tid] = TokenAttr.NORMAL
    unk_text = model_cfg.get("unk_token")
    for tok in added:
        tid = tok["id"]
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
    ranks = parse_merges(_merge_list(model_cfg.get("merges"), source))
    if byte_level:
        patterns, prefix = _hf_pre_patterns(pre_cfg, source, "pre_tokenizer")
        normalizer = _hf_normalizer(data.get("normalizer"), source)
        model = ByteLevelBPE(
            model_vocab,
            ranks,
            PreTokenizer(
                [p for p, _ in patterns],
                name="tokenizer.json",
                fields=[f"{source}: field {f!r}" for _, f in patterns],
            ),
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
        gen = _read_json(Path(generation_config_path))
        value = gen.get("eos_token_id") if isinstance(gen, Mapping) else None
        eos_ids |= set(value if isinstance(value, list) else [value] if value is not None else [])
    # End-of-turn tokens by llama.cpp's text list, but only real special tokens: promoting
    # added words (Gemma's "</s>" HTML tag) would change how Hugging Face splits text.
    eos_ids |= {
        vocab[text]
        for text in EOG_TEXTS
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
        eos_ids={i for i in eos_ids if isinstance(i, int) and 0 <= i < n},
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
    if norm is not None and _object(norm, source, "normalizer").get("type") not in (
        "Sequence",
        "Replace",
        "Prepend",
    ):
        raise ValueError(f"{source}: unsupported normalizer {norm.get('type')!r} in 'normalizer'")
    prepend = "Prepend" in kinds
    for meta in _walk(data.get("pre_tokenizer"), "Metaspace"):
        scheme = meta.get("prepend_scheme", "always" if meta.get("add_prefix_space") else "never")
        return scheme != "never", scheme == "first", bool(meta.get("split", True))
    pre = data.get("pre_tokenizer")
    if pre is not None:
        kind = pre.get("type") if isinstance(pre, Mapping) else type(pre).__name__
        raise ValueError(
            f"{source}: unsupported pre-tokenizer {kind!r} "
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
        data = _read_json(root / "chat_template.json")
        template = data.get("chat_template") if isinstance(data, Mapping) else None
    return tokenizer_from_tokenizer_json(
        tokenizer_json,
        root / "tokenizer_config.json",
        generation_config_path=root / "generation_config.json",
        chat_template=template,
    )
