"""The :class:`Tokenizer`: special tokens, BOS/EOS and decoding around a BPE model.

Encoding follows llama.cpp's ``llama_vocab::impl::tokenize`` (``src/llama-vocab.cpp``):

1. *Special-token partition* (``tokenizer_st_partition``). Every control, user-defined and
   unknown token is searched in the text as a literal string, longest token first (by UTF-8
   length), each one splitting the remaining raw-text fragments at its leftmost
   non-overlapping occurrences. Control and unknown tokens are searched unless the caller
   turns special parsing off (``parse_special=False``, Hugging Face's
   ``split_special_tokens=True``); user-defined tokens (Gemma's ``"\\n\\n"``,
   ``"<table>"``) always are.
2. Each remaining raw fragment is encoded by the model (:mod:`.bpe` or :mod:`.sentencepiece`),
   which never sees text from two sides of a special token at once.
3. BOS/EOS are added when the caller asks for them (``add_special_tokens``) and the
   vocabulary says so (``tokenizer.ggml.add_bos_token``).

Searching thousands of special strings one after another is slow in Python, so the
partition first finds, with one trie-shaped regular expression, which special strings occur
at all, then applies only those, in llama.cpp's order, with ``str.split`` on a copy of the
text where already-found tokens are replaced by private-use sentinel characters (which no
special string contains, so no later search can match across them).

Decoding maps each id back to bytes: byte tokens to their byte, normal tokens through the
model's spelling (byte-level table or ``▁`` -> space), control tokens to their text unless
``skip_special_tokens``, and joins the bytes before decoding UTF-8, so a character split over
several tokens comes back whole.
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from .chat import render_chat_template

__all__ = ["TokenAttr", "TokenIdError", "Tokenizer", "TokenizerModel", "attrs_from_token_types"]


class TokenIdError(ValueError, IndexError):
    """A token id outside the vocabulary (a ``ValueError``, and an ``IndexError`` as well)."""


class TokenAttr(enum.IntFlag):
    """llama.cpp's token attributes (``llama_token_attr``)."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


# GGUF tokenizer.ggml.token_type values (gguf.TokenType) -> attributes.
_TYPE_TO_ATTR = {
    1: TokenAttr.NORMAL,
    2: TokenAttr.UNKNOWN,
    3: TokenAttr.CONTROL,
    4: TokenAttr.USER_DEFINED,
    5: TokenAttr.UNUSED,
    6: TokenAttr.BYTE,
}
_SPECIAL = TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN
# C isspace(), which llama.cpp's lstrip/rstrip use; narrower than Python's str.isspace.
_C_SPACE = " \t\n\x0b\x0c\r"


def attrs_from_token_types(token_types: Iterable[int]) -> list[TokenAttr]:
    """GGUF token types -> attributes; unknown type codes become ``UNDEFINED``."""
    return [_TYPE_TO_ATTR.get(int(t), TokenAttr.UNDEFINED) for t in token_types]


class TokenizerModel(Protocol):
    """What :class:`Tokenizer` needs from a BPE implementation."""

    kind: str

    def encode_fragment(
        self, text: str, after_special: bool = True, at_start: bool = True
    ) -> list[int]: ...

    def token_bytes(self, token: str) -> bytes: ...


_END = ""  # trie key marking "a special string ends here" (no real character is empty)


def _trie_pattern(node: dict[str, Any]) -> str:
    alts = [re.escape(ch) + _trie_pattern(child) for ch, child in sorted(node.items()) if ch]
    if not alts:
        return ""
    body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
    # A greedy optional tail makes the longest special string at a position win.
    return "(?:" + body + ")?" if _END in node else body


def _split_stripped(
    text: str, token: str, tid: int, lstrip: bool, rstrip: bool, out: list[str | int]
) -> int:
    """llama.cpp's per-fragment loop: leftmost match, strip its neighbours, search on."""
    start = 0
    count = 0
    while True:
        pos = text.find(token, start)
        if pos < 0:
            break
        left = text[start:pos]
        if lstrip:
            left = left.rstrip(_C_SPACE)
        if left:
            out.append(left)
        out.append(tid)
        count += 1
        start = pos + len(token)
        if rstrip:
            while start < len(text) and text[start] in _C_SPACE:
                start += 1
    if start < len(text):
        out.append(text[start:])
    return count


class _SpecialSplitter:
    """Partitions text at special tokens exactly like llama.cpp's ``tokenizer_st_partition``."""

    def __init__(self, specials: Sequence[tuple[str, int, TokenAttr]]) -> None:
        # ``specials`` is already in llama.cpp's search order (longest UTF-8 first).
        self._ids: dict[str, int] = {}
        self._strip: dict[str, tuple[bool, bool]] = {}
        for text, tid, attr in specials:
            if text and text not in self._ids:
                self._ids[text] = tid
                self._strip[text] = (bool(attr & TokenAttr.LSTRIP), bool(attr & TokenAttr.RSTRIP))
        self._rank = {text: i for i, text in enumerate(self._ids)}
        self._trie: dict[str, Any] = {}
        for text in self._ids:
            node = self._trie
            for ch in text:
                node = node.setdefault(ch, {})
            node[_END] = {}
        self._scan = re.compile(_trie_pattern(self._trie)) if self._ids else None
        self._overlaps: dict[str, tuple[str, ...]] = {}
        self._special_chars = frozenset("".join(self._ids))

    def __bool__(self) -> bool:
        return self._scan is not None

    def split(self, text: str) -> list[str | int]:
        """Raw-text fragments (``str``) and special token ids (``int``), in order."""
        if self._scan is None or not text:
            return [text] if text else []
        found = set(self._scan.findall(text))
        if not found:
            return [text]
        present = set(found)
        # The scan reports the longest special string at each position it stops at; strings
        # that start inside one of those matches (or are its prefixes) need their own check.
        for match in found:
            for other in self._overlapping(match):
                if other not in present and other in text:
                    present.add(other)
        ordered = sorted(present, key=self._rank.__getitem__)
        marks = self._sentinels(text, len(ordered))
        if marks is None:
            return self.split_reference(text, ordered)
        s = text
        mark_to_id: dict[str, int] = {}
        for token, mark in zip(ordered, marks, strict=False):
            lstrip, rstrip = self._strip[token]
            if lstrip or rstrip:
                # Sentinels are not whitespace, so stripping stops at fragment edges.
                pieces: list[str | int] = []
                n = _split_stripped(s, token, 0, lstrip, rstrip, pieces)
                s = "".join(mark if isinstance(p, int) else p for p in pieces)
            else:
                parts = s.split(token)
                n = len(parts) - 1
                s = mark.join(parts)
            if n:
                mark_to_id[mark] = self._ids[token]
        if not mark_to_id:
            return [text]
        out: list[str | int] = []
        cls = "([" + "".join(re.escape(m) for m in mark_to_id) + "])"
        for piece in re.split(cls, s):
            if piece:
                tid = mark_to_id.get(piece)
                out.append(piece if tid is None else tid)
        return out

    def split_reference(self, text: str, tokens: Iterable[str] | None = None) -> list[str | int]:
        """The direct fragment-list algorithm (slow; a fallback and a test oracle)."""
        frags: list[str | int] = [text] if text else []
        for token in self._ids if tokens is None else tokens:
            lstrip, rstrip = self._strip[token]
            tid = self._ids[token]
            new: list[str | int] = []
            for frag in frags:
                if isinstance(frag, int):
                    new.append(frag)
                else:
                    _split_stripped(frag, token, tid, lstrip, rstrip, new)
            frags = new
        return frags

    def _overlapping(self, match: str) -> tuple[str, ...]:
        cached = self._overlaps.get(match)
        if cached is not None:
            return cached
        out: list[str] = []
        for i in range(len(match)):
            node = self._trie
            k = i
            while k < len(match) and match[k] in node:
                node = node[match[k]]
                k += 1
                if _END in node and not (i == 0 and k == len(match)):
                    out.append(match[i:k])
            if i > 0 and k == len(match):
                # Special strings that start inside ``match`` and run past its end.
                stack = [(match[i:], node)]
                while stack:
                    prefix, sub = stack.pop()
                    for ch, child in sub.items():
                        if ch:
                            if _END in child:
                                out.append(prefix + ch)
                            stack.append((prefix + ch, child))
        result = tuple(dict.fromkeys(out))
        self._overlaps[match] = result
        return result

    def _sentinels(self, text: str, count: int) -> list[str] | None:
        # Private-use characters that neither the text nor any special string contains.
        banned = self._special_chars
        if re.search("[\ue000-\uf8ff]", text):
            banned = banned | set(text)
        marks = []
        for cp in range(0xE000, 0xF900):
            ch = chr(cp)
            if ch not in banned:
                marks.append(ch)
                if len(marks) == count:
                    return marks
        return None


class Tokenizer:
    """A BPE tokenizer built from GGUF metadata or a Hugging Face ``tokenizer.json``.

    Use :meth:`from_gguf`, :meth:`from_hf_dir` or :meth:`from_tokenizer_json` (or
    :func:`glassformer.tokenizer.load_tokenizer`) rather than the constructor.
    """

    def __init__(
        self,
        model: TokenizerModel,
        tokens: Sequence[str],
        attrs: Sequence[TokenAttr],
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        unk_id: int | None = None,
        pad_id: int | None = None,
        add_bos: bool = False,
        add_eos: bool = False,
        eos_ids: Iterable[int] = (),
        chat_template: str | None = None,
        strip_leading_space: bool = False,
        normalizer: Callable[[str], str] | None = None,
        source: str | None = None,
    ) -> None:
        if len(tokens) != len(attrs):
            raise ValueError(f"{len(tokens)} tokens but {len(attrs)} token attributes")
        self.model = model
        self._tokens = list(tokens)
        self._attrs = list(attrs)
        self._vocab: dict[str, int] = {}
        for i, text in enumerate(self._tokens):
            self._vocab[text] = i  # a repeated string maps to its last id, as in llama.cpp
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.unk_id = unk_id
        self.pad_id = pad_id
        self.add_bos = add_bos
        self.add_eos = add_eos
        self._eos_ids = frozenset(i for i in (*eos_ids, eos_id) if i is not None)
        self.chat_template = chat_template
        self.strip_leading_space = strip_leading_space
        self.normalizer = normalizer
        self.source = source
        self._splitters: dict[bool, _SpecialSplitter] = {}
        self._piece_cache: dict[int, bytes] = {}

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, path: str | Any) -> Tokenizer:
        """Build the tokenizer described by a GGUF file's ``tokenizer.*`` metadata."""
        from .from_gguf import tokenizer_from_gguf

        return tokenizer_from_gguf(path)

    @classmethod
    def from_tokenizer_json(
        cls, path: str | Any, config_path: str | Any | None = None
    ) -> Tokenizer:
        """Build from a Hugging Face ``tokenizer.json`` (+ optional ``tokenizer_config.json``)."""
        from .from_hf import tokenizer_from_tokenizer_json

        return tokenizer_from_tokenizer_json(path, config_path)

    @classmethod
    def from_hf_dir(cls, path: str | Any) -> Tokenizer:
        """Build from a Hugging Face model directory holding ``tokenizer.json``."""
        from .from_hf import tokenizer_from_hf_dir

        return tokenizer_from_hf_dir(path)

    # -- vocabulary ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids (the rows a model's embedding needs at least)."""
        return len(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def eos_ids(self) -> set[int]:
        """Every id that ends generation: EOS plus end-of-turn tokens such as ``<|im_end|>``."""
        return set(self._eos_ids)

    def token_to_id(self, token: str) -> int | None:
        """The id of a token string, or ``None`` when it is not in the vocabulary."""
        return self._vocab.get(token)

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary string of an id (byte-level spelling, ``▁`` for spaces, ...)."""
        return self._tokens[self.check_id(token_id)]

    def token_attr(self, token_id: int) -> TokenAttr:
        return self._attrs[self.check_id(token_id)]

    def is_special(self, token_id: int) -> bool:
        """Control or unknown tokens (the ones ``skip_special_tokens`` drops)."""
        return bool(self._attrs[self.check_id(token_id)] & (TokenAttr.CONTROL | TokenAttr.UNKNOWN))

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """``bos_token``/``eos_token``/``unk_token``/``pad_token`` strings, for templates."""
        out = {}
        for name, tid in (
            ("bos_token", self.bos_id),
            ("eos_token", self.eos_id),
            ("unk_token", self.unk_id),
            ("pad_token", self.pad_id),
        ):
            if tid is not None and 0 <= tid < len(self._tokens):
                out[name] = self._tokens[tid]
        return out

    # -- encoding -----------------------------------------------------------------------

    def _splitter(self, parse_special: bool) -> _SpecialSplitter:
        splitter = self._splitters.get(parse_special)
        if splitter is None:
            wanted = int(_SPECIAL if parse_special else TokenAttr.USER_DEFINED)
            skip = 0 if parse_special else int(TokenAttr.CONTROL | TokenAttr.UNKNOWN)
            # Plain ints: IntFlag arithmetic is slow over a 262k-token vocabulary.
            ids = [
                i
                for i, attr in enumerate(map(int, self._attrs))
                if attr & wanted and not attr & skip and self._tokens[i]
            ]
            ids.sort(key=lambda i: -len(self._tokens[i].encode("utf-8")))
            splitter = _SpecialSplitter([(self._tokens[i], i, self._attrs[i]) for i in ids])
            self._splitters[parse_special] = splitter
        return splitter

    def split_special(self, text: str, parse_special: bool = True) -> list[str | int]:
        """The special-token partition of ``text``: raw fragments and special token ids."""
        return self._splitter(parse_special).split(text)

    def encode(
        self, text: str, add_special_tokens: bool = True, *, parse_special: bool = True
    ) -> list[int]:
        """Token ids for ``text``.

        ``add_special_tokens`` adds BOS/EOS as the vocabulary asks, and nothing else.
        ``parse_special`` turns special-token strings in the text (such as ``<|im_start|>``)
        into their ids, as Hugging Face ``tokenizers`` and llama.cpp's ``special=True`` do;
        ``parse_special=False`` (Hugging Face's ``split_special_tokens=True``) encodes them
        as ordinary text, which is what text from an untrusted source needs. User-defined
        tokens are matched either way, as in llama.cpp.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() needs a str, got {type(text).__name__}")
        out: list[int] = []
        if add_special_tokens and self.add_bos and self.bos_id is not None:
            out.append(self.bos_id)
        if text:
            encode_fragment = self.model.encode_fragment
            normalize = self.normalizer
            after_special = True
            for index, frag in enumerate(self._splitter(parse_special).split(text)):
                if isinstance(frag, int):
                    out.append(frag)
                    after_special = True
                else:
                    if normalize is not None:
                        frag = normalize(frag)
                    out += encode_fragment(frag, after_special, index == 0)
                    after_special = False
        if add_special_tokens and self.add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def encode_batch(
        self, texts: Iterable[str], add_special_tokens: bool = True, *, parse_special: bool = True
    ) -> list[list[int]]:
        return [self.encode(t, add_special_tokens, parse_special=parse_special) for t in texts]

    # -- decoding -----------------------------------------------------------------------

    def check_id(self, token_id: Any, where: str = "") -> int:
        """``token_id`` as an ``int``, or a clear error when it is not an id of this vocabulary.

        Python ints, NumPy integers and one-element integer tensors are ids; floats, bools
        and values outside ``0 .. vocab_size - 1`` are not.
        """
        if type(token_id) is not int:
            try:
                if isinstance(token_id, bool):
                    raise TypeError
                token_id = operator.index(token_id)
            except TypeError:
                raise TypeError(
                    f"token id {token_id!r}{where} is not an integer ({type(token_id).__name__})"
                ) from None
        if not 0 <= token_id < len(self._tokens):
            raise TokenIdError(
                f"token id {token_id}{where} is outside the vocabulary (0..{len(self._tokens) - 1})"
            )
        return token_id

    def token_bytes(self, token_id: int, skip_special_tokens: bool = False) -> bytes:
        """The bytes one token contributes to decoded text (may be part of a character)."""
        return self._token_bytes(self.check_id(token_id), skip_special_tokens)

    def _token_bytes(self, token_id: int, skip_special_tokens: bool) -> bytes:
        attr = self._attrs[token_id]
        if attr & (TokenAttr.CONTROL | TokenAttr.UNKNOWN) and not attr & TokenAttr.BYTE:
            return b"" if skip_special_tokens else self._tokens[token_id].encode("utf-8")
        cached = self._piece_cache.get(token_id)
        if cached is not None:
            return cached
        text = self._tokens[token_id]
        if attr & TokenAttr.BYTE:
            piece = bytes([int(text[3:5], 16)])
        elif attr & TokenAttr.USER_DEFINED:
            piece = text.encode("utf-8")
        elif attr & TokenAttr.NORMAL:
            piece = self.model.token_bytes(text)
        else:
            piece = b""  # llama.cpp prints nothing for unused/undefined tokens
        self._piece_cache[token_id] = piece
        return piece

    def decode_bytes(self, ids: Iterable[int], skip_special_tokens: bool = False) -> bytes:
        out = bytearray()
        first = True
        n = len(self._tokens)
        for pos, tid in enumerate(ids):
            if type(tid) is not int or not 0 <= tid < n:
                tid = self.check_id(tid, f" at position {pos}")
            piece = self._token_bytes(tid, skip_special_tokens)
            if first:
                if skip_special_tokens and self.is_special(tid):
                    continue
                # Only the very first token can carry the space the encoder put in front
                # (llama.cpp's remove_space, Hugging Face's Strip decoder).
                if self.strip_leading_space and piece[:1] == b" " and not self.is_special(tid):
                    piece = piece[1:]
                first = False
            out += piece
        return bytes(out)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text for ``ids``; invalid UTF-8 (a cut-off character) becomes U+FFFD."""
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", errors="replace")

    # -- chat ---------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        chat_template: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        continue_final_message: bool = False,
        **kwargs: Any,
    ) -> str:
        """Render ``messages`` with the model's Jinja chat template (as Hugging Face does).

        The special-token strings (``bos_token``, ``eos_token``, ...) are available to the
        template; extra keyword arguments are passed through and override them.
        """
        template = chat_template if chat_template is not None else self.chat_template
        if template is None:
            raise ValueError(
                f"{self.source or 'this tokenizer'} has no chat template; pass chat_template="
            )
        return render_chat_template(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            documents=documents,
            continue_final_message=continue_final_message,
            template_source=(
                "the chat_template argument"
                if chat_template is not None
                else f"the chat template of {self.source or 'this tokenizer'}"
            ),
            **{**self.special_tokens_map, **kwargs},
        )

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.model.kind}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_ids={sorted(self._eos_ids)}, source={self.source!r})"
        )
