"""Training a byte-level BPE tokenizer (Sennrich et al. 2016; GPT-2, Radford et al. 2019).

BPE learns a vocabulary bottom-up. Text is first cut into pre-tokens by GPT-2's regular
expression (words with their leading space, runs of digits, runs of punctuation, whitespace),
and each pre-token is spelled as its UTF-8 bytes, so the starting alphabet is the 256 byte
values and no input is ever out of vocabulary. Then, repeatedly,

    (a, b) = argmax_{pairs} sum_{w} freq(w) * count of (a, b) adjacent in w
    replace every adjacent (a, b) by the new symbol ab,  record the merge a + b

until the vocabulary (special tokens + 256 bytes + merges) reaches the requested size or the
best pair occurs fewer than `min_frequency` times. Merges never cross a pre-token boundary.

The naive loop recounts every pair of the corpus after each merge: O(merges x corpus). This one
is incremental, as in Hugging Face `tokenizers`' BpeTrainer:

- words are the *unique* pre-tokens with their frequencies (a 10 MB corpus has ~2M pre-tokens
  but only ~100k distinct ones);
- `pair_counts[p]` holds the weighted count of every adjacent pair and `where[p]` the words it
  occurs in; a merge rewrites only the words in `where[p]` and corrects the counts of the pairs
  around each rewritten spot (old pairs of the word are subtracted, new ones added);
- the best pair comes from a max-heap with lazy deletion: an entry whose count is stale is
  re-pushed with the current count when it surfaces. Counts only grow for pairs that contain
  the new symbol, so those are the only pushes a merge makes.

The result is written as a Hugging Face `tokenizer.json` (ByteLevel pre-tokenizer, decoder and
post-processor, BPE model with `merges` as pairs, the special tokens as added tokens) plus a
`tokenizer_config.json` with the end-of-text token and a ChatML chat template, so that HF
`tokenizers`, HF `transformers` and `glassformer.tokenizer` all load it and encode alike.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import regex

from glassformer.tokenizer.bpe import bytes_to_unicode
from glassformer.tokenizer.pretokenize import GPT2_PATTERN

__all__ = [
    "CHATML_TEMPLATE",
    "DEFAULT_SPECIAL_TOKENS",
    "BPEResult",
    "chatml_template",
    "count_pretokens",
    "train_bpe",
    "train_tokenizer",
    "write_tokenizer",
]

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# End of text (the document separator), ChatML turn markers, padding.
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (EOS_TOKEN, "<|im_start|>", "<|im_end|>", PAD_TOKEN)


def chatml_template(generation_tags: bool = False) -> str:
    """ChatML (OpenAI; used by Qwen and SmolLM). With `generation_tags`, the assistant's text
    sits in HF's `{% generation %}` block, which `return_assistant_tokens_mask` reports (only
    HF transformers understands the tag; glassformer's SFT finds the same spans itself)."""
    body = "{{ message['content'] + '<|im_end|>' }}"
    assistant = "{% generation %}" + body + "{% endgeneration %}" if generation_tags else body
    return (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['role'] == 'assistant' %}" + assistant + "{% else %}" + body + "{% endif %}"
        "{{ '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


CHATML_TEMPLATE = chatml_template()


@dataclass
class BPEResult:
    """A trained vocabulary: token string (byte-level spelling) -> id, and the ordered merges."""

    vocab: dict[str, int]
    merges: list[tuple[str, str]]
    special_tokens: list[str]
    stats: dict[str, float] = field(default_factory=dict)


def count_pretokens(
    texts: Iterable[str],
    pattern: str = GPT2_PATTERN,
    special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
) -> Counter[str]:
    """Frequency of every distinct pre-token in `texts`.

    Special-token strings found in the text are cut out first (they become their own token at
    encoding time, so they must not feed merges).
    """
    split = regex.compile(pattern).findall
    specials = [s for s in special_tokens if s]
    cutter = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
    counts: Counter[str] = Counter()
    for text in texts:
        pieces = cutter.split(text) if cutter is not None else [text]
        for piece in pieces:
            if piece:
                counts.update(split(piece))  # Counter.update(list) counts in C
    return counts


def train_bpe(
    word_counts: Mapping[str, int],
    vocab_size: int,
    special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
    min_frequency: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> BPEResult:
    """Learn merges from pre-token frequencies until the vocabulary has `vocab_size` entries.

    Ids: special tokens first, then the 256 bytes in byte order, then one per new string.
    """
    specials = list(dict.fromkeys(special_tokens))
    base = len(specials) + 256
    if vocab_size < base:
        raise ValueError(
            f"vocab_size: {vocab_size} is too small; the {len(specials)} special tokens and "
            f"256 byte tokens need at least {base}"
        )
    start = time.perf_counter()
    byte_char = bytes_to_unicode()
    # Symbol ids inside the trainer: 0..255 are bytes, 256+k is merge k.
    symbol_text = [byte_char[b] for b in range(256)]

    words: list[list[int]] = []
    freqs: list[int] = []
    for word, freq in word_counts.items():
        if freq <= 0:
            continue
        words.append(list(word.encode("utf-8")))
        freqs.append(freq)

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for wi, symbols in enumerate(words):
        f = freqs[wi]
        for pair in pairwise(symbols):
            pair_counts[pair] = pair_counts.get(pair, 0) + f
            s = where.get(pair)
            if s is None:
                where[pair] = {wi}
            else:
                s.add(wi)
    # Max-heap through negated counts; ties go to the smaller pair ids (deterministic).
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    # Two merge paths can spell the same bytes ("ab"+"c", "a"+"bc"); such a merge reuses the
    # existing symbol, so the vocabulary grows by unique strings, as in HF's BpeTrainer.
    symbol_id = {text: i for i, text in enumerate(symbol_text)}
    n_symbols = vocab_size - len(specials)
    n_merges = n_symbols - 256
    while len(symbol_text) < n_symbols and heap:
        neg, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg:  # stale entry: the count fell since it was pushed
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        if count < min_frequency:
            break
        merges.append(pair)
        joined = symbol_text[pair[0]] + symbol_text[pair[1]]
        new = symbol_id.get(joined, -1)
        if new < 0:
            new = symbol_id[joined] = len(symbol_text)
            symbol_text.append(joined)
        a, b = pair
        grown: set[tuple[int, int]] = set()
        for wi in where.pop(pair, ()):
            old = words[wi]
            n = len(old)
            out: list[int] = []
            i = 0
            changed = False
            while i < n:
                if i + 1 < n and old[i] == a and old[i + 1] == b:
                    out.append(new)
                    i += 2
                    changed = True
                else:
                    out.append(old[i])
                    i += 1
            if not changed:  # `where` keeps words whose pair was merged away (lazy)
                continue
            f = freqs[wi]
            for p in pairwise(old):
                pair_counts[p] -= f
            for p in pairwise(out):
                pair_counts[p] = pair_counts.get(p, 0) + f
                if p[0] == new or p[1] == new:
                    grown.add(p)
                    s = where.get(p)
                    if s is None:
                        where[p] = {wi}
                    else:
                        s.add(wi)
            words[wi] = out
        pair_counts.pop(pair, None)
        for p in grown:
            c = pair_counts[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
        if progress is not None and len(merges) % 256 == 0:
            progress(len(symbol_text) - 256, n_merges)

    vocab: dict[str, int] = {}
    for tok in specials:
        vocab[tok] = len(vocab)
    for sym in symbol_text:
        vocab.setdefault(sym, len(vocab))
    merge_pairs = [(symbol_text[x], symbol_text[y]) for x, y in merges]
    stats = {
        "seconds": time.perf_counter() - start,
        "unique_pretokens": float(len(words)),
        "merges": float(len(merges)),
    }
    return BPEResult(vocab, merge_pairs, specials, stats)


def tokenizer_json(result: BPEResult) -> dict:
    """The Hugging Face `tokenizer.json` document for a trained vocabulary."""
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": result.vocab[tok],
                "content": tok,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for tok in result.special_tokens
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": {"type": "ByteLevel", **byte_level, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": result.vocab,
            "merges": [list(m) for m in result.merges],
        },
    }


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_tokenizer(
    result: BPEResult,
    out_dir: str | os.PathLike[str],
    chat_template: str | None = CHATML_TEMPLATE,
    model_max_length: int = 1 << 20,
) -> Path:
    """Write `tokenizer.json` and `tokenizer_config.json` into `out_dir`; returns the former."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tokenizer.json"
    _atomic_write_text(path, json.dumps(tokenizer_json(result), ensure_ascii=False) + "\n")
    eos = EOS_TOKEN if EOS_TOKEN in result.vocab else None
    pad = PAD_TOKEN if PAD_TOKEN in result.vocab else None
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": None,
        "eos_token": eos,
        "pad_token": pad,
        "unk_token": None,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    }
    if chat_template:
        config["chat_template"] = chat_template
    _atomic_write_text(out / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    return path


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | os.PathLike[str],
    *,
    special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
    min_frequency: int = 2,
    chat_template: str | None = CHATML_TEMPLATE,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, BPEResult]:
    """Count pre-tokens, learn merges and write the tokenizer files; returns the json path."""
    specials = list(special_tokens)
    t0 = time.perf_counter()
    counts = count_pretokens(texts, special_tokens=specials)
    t1 = time.perf_counter()
    result = train_bpe(counts, vocab_size, specials, min_frequency, progress)
    result.stats["pretokenize_seconds"] = t1 - t0
    path = write_tokenizer(result, out_dir, chat_template)
    result.stats["total_seconds"] = time.perf_counter() - t0
    return path, result
