"""Byte-level BPE (GPT-2 style), as llama.cpp runs GGUF ``tokenizer.ggml.model == "gpt2"``.

Byte-pair encoding starts from the smallest units of a pre-token and repeatedly joins one
adjacent pair into a longer unit. The merge table (``tokenizer.ggml.merges``, ``"a b"``
strings) is ordered: a pair's position is its *rank*, and the pair with the lowest rank is
joined first. When the same lowest-ranked pair occurs several times, the leftmost is joined
first, and the new neighbours it creates may outrank the remaining copies. The loop stops
when no adjacent pair is in the table; every remaining unit is then looked up in the
vocabulary.

"Byte-level" means the units are bytes, not characters: every UTF-8 byte of the text is
shown as one printable character (GPT-2's ``bytes_to_unicode`` table, where a space is
``Ġ``), so any string can be encoded without an unknown token, and merges only ever create
tokens from the byte strings of the training data.

The reference is llama.cpp's ``llm_tokenizer_bpe_session::tokenize`` (``src/llama-vocab.cpp``):
a priority queue of bigrams ordered by (rank, left position) with stale entries skipped.
:func:`bpe_merge` chooses the same pair at every step with a linear scan, which is faster in
Python for the short pieces that dominate real text; :func:`bpe_merge_heap` is the queue
version used for long pieces (the two are tested against each other). SentencePiece
vocabularies (:mod:`.sentencepiece`) run the same loop with a different cost: minus the score
of the token that the two neighbours would form.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

__all__ = [
    "ByteLevelBPE",
    "bpe_merge",
    "bpe_merge_heap",
    "byte_decoder",
    "bytes_to_unicode",
]

# Above this many symbols the O(n^2) scan loses to the heap.
_HEAP_THRESHOLD = 256
_NO_RANK = 1 << 62
_NO_COST = float("inf")
# Bounds memory on huge inputs with many distinct pre-tokens; a full cache is simply cleared.
_CACHE_LIMIT = 1 << 18


def encode_cached(
    pieces: Iterable[str], cache: dict[str, list[int]], encode: Callable[[str], list[int]]
) -> list[int]:
    """The ids of each piece in turn, ``encode(piece)`` memoised in ``cache``: text repeats
    its words, so most pieces are looked up rather than merged again."""
    out: list[int] = []
    for piece in pieces:
        ids = cache.get(piece)
        if ids is None:
            ids = encode(piece)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[piece] = ids
        out += ids
    return out


@cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte value to a printable character standing for it."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


@cache
def byte_decoder() -> dict[str, int]:
    """Inverse of :func:`bytes_to_unicode`."""
    return {c: b for b, c in bytes_to_unicode().items()}


# str.translate table: a latin-1 decoded byte string becomes its byte-level spelling in C.
_LATIN1_TO_BYTE_LEVEL = {b: c for b, c in bytes_to_unicode().items()}


def to_byte_level(text: str) -> str:
    """Spell the UTF-8 bytes of ``text`` with GPT-2's byte characters."""
    return text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_BYTE_LEVEL)


def bpe_merge(symbols: list[str], costs: Mapping[Any, float], *, joined: bool = False) -> list[str]:
    """Join the adjacent pair with the lowest cost until no pair has one; ties go leftmost.

    ``costs`` maps a pair ``(a, b)`` to its merge rank (byte-level BPE, Hugging Face BPE);
    with ``joined=True`` it maps the concatenation ``a + b`` to a cost instead, which is how
    SentencePiece vocabularies merge (any two neighbours whose concatenation is a token, with
    the cost minus the token's score). Both are llama.cpp's bigram queue ordered by (cost,
    left position); this linear scan picks the same pair at every step.
    """
    if len(symbols) > _HEAP_THRESHOLD:
        return bpe_merge_heap(symbols, costs, joined=joined)
    parts = list(symbols)
    get = costs.get
    # pair_costs[i] belongs to the pair (parts[i], parts[i + 1]); a huge cost marks "no
    # merge", so min() and list.index() (leftmost) pick the merge in C.
    none = _NO_COST if joined else _NO_RANK
    if joined:
        pair_costs = [get(parts[i] + parts[i + 1], none) for i in range(len(parts) - 1)]
    else:
        pair_costs = [get((parts[i], parts[i + 1]), none) for i in range(len(parts) - 1)]
    while pair_costs:
        best = min(pair_costs)
        if best == none:
            break
        i = pair_costs.index(best)
        merged = parts[i] + parts[i + 1]
        parts[i : i + 2] = [merged]
        del pair_costs[i]
        if i > 0:
            a = parts[i - 1]
            pair_costs[i - 1] = get(a + merged if joined else (a, merged), none)
        if i < len(pair_costs):
            b = parts[i + 1]
            pair_costs[i] = get(merged + b if joined else (merged, b), none)
    return parts


def bpe_merge_heap(
    symbols: list[str], costs: Mapping[Any, float], *, joined: bool = False
) -> list[str]:
    """Priority-queue version of :func:`bpe_merge`, O(n log n) for long pieces."""
    n = len(symbols)
    if n < 2:
        return list(symbols)
    text = list(symbols)
    prev = list(range(-1, n - 1))
    nxt = [*range(1, n), -1]
    alive = [True] * n
    get = costs.get
    heap: list[tuple[Any, int, int, str]] = []
    for i in range(n - 1):
        pair = text[i] + text[i + 1]
        cost = get(pair if joined else (text[i], text[i + 1]))
        if cost is not None:
            heap.append((cost, i, i + 1, pair))
    heapq.heapify(heap)
    while heap:
        _cost, left, right, pair = heapq.heappop(heap)
        # Entries are never removed when a neighbour changes; a stale one no longer spells
        # the pair it was made for (llama.cpp checks the same way).
        if not (alive[left] and alive[right]) or nxt[left] != right:
            continue
        if text[left] + text[right] != pair:
            continue
        text[left] = pair
        alive[right] = False
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        for a, b in ((prev[left], left), (left, nxt[left])):
            if a >= 0 and b >= 0:
                new = text[a] + text[b]
                cost = get(new if joined else (text[a], text[b]))
                if cost is not None:
                    heapq.heappush(heap, (cost, a, b, new))
    out = []
    i = 0
    while i >= 0:
        out.append(text[i])
        i = nxt[i]
    return out


def parse_merges(merges: Iterable[str | tuple[str, str] | list[str]]) -> dict[tuple[str, str], int]:
    """Merge strings (``"a b"``) or pairs -> rank; the first rank of a repeated pair wins.

    The split point is the first space after the first character, as in llama.cpp, so a merge
    whose left side is itself a space still parses.
    """
    ranks: dict[tuple[str, str], int] = {}
    for rank, merge in enumerate(merges):
        if isinstance(merge, str):
            pos = merge.find(" ", 1)
            pair = (merge[:pos], merge[pos + 1 :]) if pos >= 0 else ("", "")
        else:
            pair = (merge[0], merge[1])
        ranks.setdefault(pair, rank)
    return ranks


class ByteLevelBPE:
    """Encodes raw-text fragments with a pre-tokenizer, byte-level spelling and BPE merges."""

    kind = "byte-level BPE"

    def __init__(
        self,
        vocab: Mapping[str, int],
        ranks: Mapping[tuple[str, str], int],
        pre_tokenizer: object,
        *,
        ignore_merges: bool = False,
        add_prefix_space: bool = False,
    ) -> None:
        self.vocab = dict(vocab)
        self.ranks = dict(ranks)
        self.pre_tokenizer = pre_tokenizer
        self.ignore_merges = ignore_merges
        self.add_prefix_space = add_prefix_space
        self._cache: dict[str, list[int]] = {}
        self._decoder = byte_decoder()

    def encode_fragment(
        self, text: str, after_special: bool = True, at_start: bool = True
    ) -> list[int]:
        """Token ids for a fragment of text that holds no special tokens.

        ``at_start`` (the fragment begins the input) drives Hugging Face's ByteLevel
        ``add_prefix_space``; GGUF byte-level vocabularies never add one.
        """
        if self.add_prefix_space and at_start and not text.startswith(" "):
            text = " " + text
        pieces = self.pre_tokenizer.split(text)  # type: ignore[attr-defined]
        return encode_cached(pieces, self._cache, self._encode_piece)

    def _encode_piece(self, piece: str) -> list[int]:
        word = to_byte_level(piece)
        vocab = self.vocab
        if self.ignore_merges and word in vocab:
            return [vocab[word]]
        ids: list[int] = []
        for symbol in bpe_merge(list(word), self.ranks):
            tid = vocab.get(symbol)
            if tid is not None:
                ids.append(tid)
                continue
            # llama.cpp's last resort: look each byte of the symbol up on its own and drop the
            # ones the vocabulary lacks. Complete byte-level vocabularies never get here.
            for byte in symbol.encode("utf-8"):
                tid = vocab.get(chr(byte)) if byte < 0x80 else None
                if tid is not None:
                    ids.append(tid)
        return ids

    def token_bytes(self, token: str) -> bytes:
        """The bytes a normal token stands for (its characters read through the byte table)."""
        decoder = self._decoder
        try:
            return bytes(decoder[ch] for ch in token)
        except KeyError:
            # Tokens outside the byte alphabet (added words stored verbatim) mean themselves.
            return token.encode("utf-8")
