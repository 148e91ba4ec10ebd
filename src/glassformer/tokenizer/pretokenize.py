"""Pre-tokenisation: cutting text into the pieces that BPE merges inside of.

Byte-level BPE never merges across a pre-token boundary, so the boundaries decide a large part
of the final tokenisation. GGUF names the pre-tokeniser by a kind string in
``tokenizer.ggml.pre``; llama.cpp (``src/llama-vocab.cpp``, ``llm_tokenizer_bpe``) maps every
kind to a list of regular expressions that are applied one after the other: each expression
splits every piece produced by the previous one into its matches *and* the unmatched gaps
between them (``unicode_regex_split`` in ``src/unicode.cpp``). A later expression never sees
across an earlier boundary, which matters for look-aheads such as ``\\s+(?!\\S)``: in SmolLM's
``"a   1"`` the digit rule cuts first, so the spaces end their piece and stay together.

The patterns below are llama.cpp's, written for the ``regex`` module (which has ``\\p{L}``
classes and the same ``\\s`` set as llama.cpp's table). Two adaptations keep them equal to
llama.cpp's hand-written splitters: ``|\\s+`` is appended to the GPT-2 pattern (the C++
splitter emits lone whitespace that the bare pattern would leave as a gap, which is the same
piece), and the Llama 3 contraction group spells the case variants out (``'[sS]``) exactly as
llama.cpp does instead of using ``(?i:...)``, whose case folding would also accept ``'ſ``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import regex

__all__ = [
    "GPT2_PATTERN",
    "HF_LLAMA3_PATTERN",
    "HF_QWEN2_PATTERN",
    "LLAMA3_PATTERN",
    "PRE_TOKENIZER_PATTERNS",
    "QWEN2_PATTERN",
    "SMOLLM_FUSED_PATTERN",
    "PreTokenizer",
    "known_pre_tokenizers",
    "pre_tokenizer_for",
]

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3_PATTERN = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp's fallback for BPE vocabularies whose kind is "default" (or missing).
_DEFAULT_PATTERNS = (
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2_PATTERN,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
)
_DIGIT_THEN_GPT2 = (r"\p{N}", GPT2_PATTERN)

# One pattern that splits exactly like the digit-then-GPT-2 chain, in a single pass: digits
# stand alone (no other alternative can start at one), and whitespace before a digit keeps
# all of its run, as it does when the digit cut ends the piece in the chain.
SMOLLM_FUSED_PATTERN = (
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+|\p{N}"
)
_FUSED = {_DIGIT_THEN_GPT2: (SMOLLM_FUSED_PATTERN,)}

# The forms found in Hugging Face tokenizer.json files (case-insensitive contractions).
HF_LLAMA3_PATTERN = LLAMA3_PATTERN.replace(_CONTRACTIONS, r"(?i:'s|'t|'re|'ve|'m|'ll|'d)")
HF_QWEN2_PATTERN = QWEN2_PATTERN.replace(_CONTRACTIONS, r"(?i:'s|'t|'re|'ve|'m|'ll|'d)")

# Patterns whose alternatives together match every character: splitting with them leaves no
# gaps, so ``findall`` alone returns the pieces (much faster than a capturing ``split``).
_TOTAL_PATTERNS = frozenset(
    {
        GPT2_PATTERN,
        LLAMA3_PATTERN,
        QWEN2_PATTERN,
        HF_LLAMA3_PATTERN,
        HF_QWEN2_PATTERN,
        SMOLLM_FUSED_PATTERN,
    }
)

#: ``tokenizer.ggml.pre`` kind -> the chain of split patterns llama.cpp applies.
PRE_TOKENIZER_PATTERNS: dict[str, tuple[str, ...]] = {
    "default": _DEFAULT_PATTERNS,
    "gpt2": (GPT2_PATTERN,),
    "gpt-2": (GPT2_PATTERN,),
    "phi-2": (GPT2_PATTERN,),
    "mpt": (GPT2_PATTERN,),
    "olmo": (GPT2_PATTERN,),
    "smollm": _DIGIT_THEN_GPT2,
    "starcoder": _DIGIT_THEN_GPT2,
    "refact": _DIGIT_THEN_GPT2,
    "command-r": _DIGIT_THEN_GPT2,
    "codeshell": _DIGIT_THEN_GPT2,
    "exaone": _DIGIT_THEN_GPT2,
    "llama3": (LLAMA3_PATTERN,),
    "llama-v3": (LLAMA3_PATTERN,),
    "llama-bpe": (LLAMA3_PATTERN,),
    "falcon3": (LLAMA3_PATTERN,),
    "pixtral": (LLAMA3_PATTERN,),
    "qwen2": (QWEN2_PATTERN,),
    "deepseek-r1-qwen": (QWEN2_PATTERN,),
}

# Kinds for which llama.cpp looks a whole pre-token up in the vocabulary before merging
# (``ignore_merges``), as Llama 3's tokenizer.json asks for.
IGNORE_MERGES_KINDS = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"})


def known_pre_tokenizers() -> list[str]:
    """The ``tokenizer.ggml.pre`` kinds this package can reproduce."""
    return sorted(PRE_TOKENIZER_PATTERNS)


# Patterns written here (llama.cpp's, and the Digits pre-tokenizer's): all run in linear time.
_TRUSTED_PATTERNS = frozenset(
    {p for chain in PRE_TOKENIZER_PATTERNS.values() for p in chain}
    | _TOTAL_PATTERNS
    | {r"\p{N}", r"\p{N}+"}
)
#: Time limit for one search of a pattern from a file: this many seconds of CPU time (what
#: the ``regex`` module's ``timeout`` counts) plus :data:`SPLIT_TIMEOUT_PER_CHAR` per
#: character searched. A backtracking pattern such as
#: ``(a|aa)+b`` grows exponentially with the text and would otherwise never return.
SPLIT_TIMEOUT_S = 1.0
SPLIT_TIMEOUT_PER_CHAR = 1e-6


@dataclass(frozen=True)
class _Stage:
    pattern: regex.Pattern[str]
    total: bool
    guarded: bool  # a pattern from a file: searched under a time limit
    where: str  # the file and field it came from, for the error message


class PreTokenizer:
    """Applies a chain of split patterns the way llama.cpp's ``unicode_regex_split`` does.

    With no patterns the whole text is one piece. ``fields`` names where each pattern came
    from (``"tokenizer.json: field 'pre_tokenizer.pattern.Regex'"``); patterns that are not
    llama.cpp's own are searched with the ``regex`` module's time limit, and running out of
    time raises a ``ValueError`` naming that field.
    """

    def __init__(
        self, patterns: Sequence[str], *, name: str = "custom", fields: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.patterns = tuple(patterns)
        where = dict(zip(self.patterns, fields, strict=False))
        self._stages = [
            _Stage(regex.compile(p), True, False, "")
            if p in _TOTAL_PATTERNS
            else _Stage(
                regex.compile(f"({p})"),
                False,
                p not in _TRUSTED_PATTERNS,
                where.get(p, f"pre-tokenizer {name!r}"),
            )
            for p in _FUSED.get(self.patterns, self.patterns)
        ]

    def split(self, text: str) -> list[str]:
        """Cut ``text`` into pre-tokens whose concatenation is ``text``."""
        if not text:
            return []
        pieces = [text]
        for stage in self._stages:
            pattern = stage.pattern
            out: list[str] = []
            if stage.total:
                for piece in pieces:
                    out += pattern.findall(piece)
            elif stage.guarded:
                for piece in pieces:
                    out += [part for part in _guarded_split(stage, piece) if part]
            else:
                # A capturing split returns gaps and matches interleaved; both are pieces.
                for piece in pieces:
                    out += [part for part in pattern.split(piece) if part]
            pieces = out
        return pieces

    def __repr__(self) -> str:
        return f"PreTokenizer(name={self.name!r}, patterns={self.patterns!r})"


def _guarded_split(stage: _Stage, piece: str) -> list[str]:
    limit = SPLIT_TIMEOUT_S + SPLIT_TIMEOUT_PER_CHAR * len(piece)
    try:
        return stage.pattern.split(piece, timeout=limit)
    except TimeoutError:
        raise ValueError(
            f"{stage.where}: split pattern {stage.pattern.pattern[1:-1]!r} ran for more than "
            f"{limit:.1f} s of CPU time on {len(piece)} characters (catastrophic backtracking); "
            "rewrite the pattern"
        ) from None


def pre_tokenizer_for(kind: str) -> PreTokenizer:
    """The pre-tokenizer for a GGUF ``tokenizer.ggml.pre`` kind; ``KeyError`` if unknown."""
    return PreTokenizer(PRE_TOKENIZER_PATTERNS[kind], name=kind)
