"""SentencePiece-style BPE, as llama.cpp runs GGUF ``tokenizer.ggml.model == "llama"``.

SentencePiece vocabularies (Llama 2, Gemma) work on characters rather than bytes, mark a
space with ``▁`` (U+2581) so that a word and its leading space form one token, and carry a
*score* per token (``tokenizer.ggml.scores``) instead of a merge table. Encoding starts from
single characters and repeatedly joins the adjacent pair whose concatenation is a vocabulary
token with the highest score, leftmost first on ties (the merge loop of :mod:`.bpe` with
minus the score as the cost); any two neighbours may join as long as the result is in the
vocabulary, unlike byte-level BPE where only listed pairs merge. When no
pair is left, characters that are not tokens fall back to byte tokens ``<0xXX>`` for each of
their UTF-8 bytes (``token_type == BYTE``), so nothing needs an unknown token.

There is no pre-tokeniser: a whole fragment between special tokens is one merge problem. To
cache and to keep the work near-linear this module cuts the text wherever two neighbouring
characters ``xy`` occur together in no vocabulary token: every merge builds a token, so no
merge can ever cross such a point and the pieces tokenise independently to the same result.
The cheap first cut is before each ``▁`` (a regular expression, with the check on the
character before it); chunks missing from the cache are then cut at every such pair.

The reference is llama.cpp's ``llm_tokenizer_spm_session`` (``src/llama-vocab.cpp``): a
priority queue of bigrams ordered by (score, -left position), spaces escaped to ``▁``, an
optional leading space (``tokenizer.ggml.add_space_prefix``) before text that starts the
input or follows a special token.

Hugging Face's ``tokenizer.json`` describes the same vocabularies as a BPE *with* merges and
``byte_fallback``; :class:`SentencePieceBPE` accepts a merge table too and then merges by rank
(Hugging Face's rule), turning characters missing from the vocabulary into byte tokens first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .bpe import _CACHE_LIMIT, bpe_merge, encode_cached

__all__ = ["SPACE_MARK", "SentencePieceBPE"]

SPACE_MARK = "\u2581"
# Candidate cut points: before each run of space marks that follows other text.
_CHUNK = re.compile(SPACE_MARK + "*[^" + SPACE_MARK + "]+|" + SPACE_MARK + "+")
_MARK_SPLIT = re.compile(SPACE_MARK + "[^" + SPACE_MARK + "]*|[^" + SPACE_MARK + "]+")


class SentencePieceBPE:
    """Encodes raw-text fragments with SentencePiece-style BPE (scores or HF merge ranks)."""

    kind = "SentencePiece BPE"

    def __init__(
        self,
        vocab: Mapping[str, int],
        scores: Sequence[float] | None,
        *,
        unk_id: int | None,
        byte_ids: Mapping[int, int],
        add_space_prefix: bool = False,
        prefix_first_only: bool = False,
        split_on_space_mark: bool = False,
        ranks: Mapping[tuple[str, str], int] | None = None,
        byte_fallback: bool = True,
    ) -> None:
        if scores is None and ranks is None:
            raise ValueError("SentencePiece BPE needs token scores or a merge table")
        self.vocab = dict(vocab)
        self.unk_id = unk_id
        self.byte_ids = dict(byte_ids)
        self.add_space_prefix = add_space_prefix
        self.prefix_first_only = prefix_first_only
        self.split_on_space_mark = split_on_space_mark
        self.ranks = dict(ranks) if ranks is not None else None
        self.byte_fallback = byte_fallback
        # The merge cost of a token is minus its score: :func:`.bpe.bpe_merge` joins the
        # lowest cost first. The vocabulary maps a repeated string to its last id (llama.cpp's
        # token_to_id), and that id's score is the one the merge queue sees.
        self.cost_of: dict[str, float] = {}
        if scores is not None:
            self.cost_of = {text: -float(scores[tid]) for text, tid in self.vocab.items()}
        self._byte_names = {b: f"<0x{b:02X}>" for b in range(256)}
        self._unk_text = next((t for t, i in self.vocab.items() if i == unk_id), None)
        self._cache: dict[str, list[int]] = {}
        self._piece_cache: dict[str, list[int]] = {}
        self._pairs: frozenset[str] | None = None
        self._joins_space: frozenset[str] = frozenset()

    def _vocab_pairs(self) -> frozenset[str]:
        """Every two-character string that occurs inside some token (built on first use).

        Merges only ever build tokens, so two neighbours whose pair is not in this set are
        never joined: the text can be cut there and the pieces encoded on their own.
        """
        if self._pairs is None:
            self._pairs = frozenset({t[i : i + 2] for t in self.vocab for i in range(len(t) - 1)})
            self._joins_space = frozenset(
                p[0] for p in self._pairs if p[1] == SPACE_MARK and p[0] != SPACE_MARK
            )
        return self._pairs

    def encode_fragment(
        self, text: str, after_special: bool = True, at_start: bool = True
    ) -> list[int]:
        """Token ids for a fragment of text that holds no special tokens.

        ``after_special``: the fragment starts the input or follows a special token, where
        llama.cpp adds the prefix space. ``at_start``: it starts the input (Hugging Face's
        ``prepend_scheme="first"``).
        """
        if self.add_space_prefix and (at_start if self.prefix_first_only else after_special):
            text = " " + text
        if not text:
            return []
        chunks = self._chunks(text.replace(" ", SPACE_MARK))
        return encode_cached(chunks, self._cache, self._encode_chunk)

    def _chunks(self, text: str) -> list[str]:
        if self.split_on_space_mark:
            # Hugging Face's Metaspace(split=True): every mark starts a new piece.
            return _MARK_SPLIT.findall(text)
        pieces = _CHUNK.findall(text)
        if len(pieces) < 2:
            return pieces
        self._vocab_pairs()
        joins = self._joins_space
        if not joins:
            return pieces
        out = [pieces[0]]
        for piece in pieces[1:]:
            if piece[0] == SPACE_MARK and out[-1][-1] in joins:
                out[-1] += piece
            else:
                out.append(piece)
        return out

    def _encode_chunk(self, chunk: str) -> list[int]:
        if self.ranks is not None:
            # Not cut further: Hugging Face fuses runs of unknown characters across any cut.
            return self._encode_chunk_ranked(chunk)
        # Cut where no token spans the two neighbours; the pieces repeat far more often than
        # whole chunks (identifiers, punctuation), so the piece cache saves most merging.
        pairs = self._vocab_pairs()
        cache = self._piece_cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        ids: list[int] = []
        start = 0
        prev = chunk[0]
        for i in range(1, len(chunk)):
            cur = chunk[i]
            if prev + cur not in pairs:
                piece = chunk[start:i]
                sub = cache.get(piece)
                if sub is None:
                    sub = cache[piece] = self._encode_piece(piece)
                ids += sub
                start = i
            prev = cur
        piece = chunk[start:]
        sub = cache.get(piece)
        if sub is None:
            sub = cache[piece] = self._encode_piece(piece)
        return ids + sub

    def _encode_piece(self, chunk: str) -> list[int]:
        ids: list[int] = []
        vocab = self.vocab
        for symbol in bpe_merge(list(chunk), self.cost_of, joined=True):
            tid = vocab.get(symbol)
            if tid is not None:
                ids.append(tid)
            else:
                ids += self._bytes_of(symbol)
        return ids

    def _encode_chunk_ranked(self, chunk: str) -> list[int]:
        vocab = self.vocab
        symbols: list[str] = []
        unk = self._unk_text
        for ch in chunk:
            if ch in vocab:
                symbols.append(ch)
            elif self.byte_fallback and all(b in self.byte_ids for b in ch.encode("utf-8")):
                symbols += [self._byte_names[b] for b in ch.encode("utf-8")]
            elif unk is not None and (not symbols or symbols[-1] != unk):
                # Hugging Face fuses neighbouring unknowns into one unknown token.
                symbols.append(unk)
        assert self.ranks is not None
        return [vocab[s] for s in bpe_merge(symbols, self.ranks) if s in vocab]

    def _bytes_of(self, symbol: str) -> list[int]:
        ids = []
        for b in symbol.encode("utf-8"):
            tid = self.byte_ids.get(b)
            if tid is None:
                # llama.cpp's byte_to_token falls back to the one-character token.
                tid = self.vocab.get(chr(b)) if b < 0x80 else None
            if tid is None:
                tid = self.unk_id
            if tid is not None:
                ids.append(tid)
        return ids

    @staticmethod
    def token_bytes(token: str) -> bytes:
        """The bytes a normal token stands for: its text with ``▁`` read as a space."""
        return token.replace(SPACE_MARK, " ").encode("utf-8")
