"""Training data: documents -> token shards on disk -> deterministic batches.

`prepare_data` reads documents (text files, directories, JSONL, HF datasets, or the embedded
default corpus), encodes each with the tokenizer, appends the end-of-text token as a document
separator (GPT-2's convention) and streams the ids into flat binary shards:

    OUT/train_0000.bin, ...   uint16 ids when the vocabulary fits in 16 bits, else uint32
    OUT/val_0000.bin, ...     held-out documents (a seeded fraction, at least one document)
    OUT/tokenizer.json (+ tokenizer_config.json)   the tokenizer the ids belong to
    OUT/manifest.json         dtype, vocab size, the tokenizer's SHA-256, token counts per shard

The manifest is written last, atomically, so a directory without one is an unfinished
preparation and is never read.

`TokenSplit` memory-maps a split's shards as one long array. `WindowSampler` cuts it into
non-overlapping windows of seq_len + 1 tokens (inputs and next-token targets) and visits them
in a seeded random order, a fresh permutation per epoch. Sample k of the run is a pure
function of (seed, k), so a resumed run (which only needs the count of samples consumed) and a
run split over several processes (each takes its slice of every global batch) see exactly the
batches of a straight single-process run.

The default corpus, used when no data is given, is found at run time: the running Python's
standard library sources (`sysconfig.get_paths()["stdlib"]`, *.py, without its test suite and
site-packages) and its bundled documentation text (the `pydoc_data.topics` strings).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glassformer.jsonl import jsonl_rows

__all__ = [
    "MANIFEST",
    "Document",
    "TokenSplit",
    "WindowSampler",
    "default_corpus",
    "iter_documents",
    "load_manifest",
    "prepare_data",
    "tokenizer_sha256",
]

MANIFEST = "manifest.json"
FORMAT = "glassformer-tokens"
TEXT_SUFFIXES = frozenset({".txt", ".md", ".rst", ".py", ".text", ".html", ".tex", ".c", ".h"})
DEFAULT_SHARD_TOKENS = 1 << 26  # 64M ids = 128 MiB of uint16 per shard


class EpochOrder:
    """Which item the k-th sample of an endless run over `n` items is: each epoch a fresh
    permutation seeded by (seed, epoch), so any position can be recomputed on resume from k
    alone. Used by the fine-tuning tasks (SFT, classification)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._perm: tuple[int, list[int]] | None = None

    def __getitem__(self, k: int) -> int:
        epoch, i = divmod(k, self.n)
        if self._perm is None or self._perm[0] != epoch:
            order = list(range(self.n))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._perm = (epoch, order)
        return self._perm[1][i]


class ExampleBatches:
    """Batches of a fine-tuning task over a list of examples: `train` in `EpochOrder`, `val`
    cycled in order. A task sets `train`, `val` and `order` and defines `_collate(rows)`."""

    train: list
    val: list
    order: EpochOrder
    _collate: Callable[[list], dict[str, torch.Tensor]]  # each task pads and labels its rows

    def train_samples(self) -> int:
        return len(self.train)

    def eval_samples(self) -> int:
        return len(self.val)

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        return self._collate([self.train[self.order[k]] for k in range(first, first + count)])

    def eval_batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        n = len(self.val)
        return self._collate([self.val[(first + k) % n] for k in range(count)])


@dataclass(frozen=True)
class Document:
    source: str  # where it came from (file path, "jsonl:line", "hf:name#i")
    text: str


# --- sources --------------------------------------------------------------------------------------
def default_corpus_files() -> list[Path]:
    """The standard library's *.py files (no test suite, no site-packages), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))


def default_corpus() -> Iterator[Document]:
    """The embedded corpus: pydoc's topic texts first, then the standard library sources."""
    try:
        from pydoc_data import topics  # the text `help("TOPIC")` shows

        for name in sorted(topics.topics):
            yield Document(f"pydoc_data:{name}", topics.topics[name])
    except ImportError:  # some distributions strip pydoc_data
        pass
    for path in default_corpus_files():
        text = _read_text(path)
        if text:
            yield Document(str(path), text)


def default_corpus_id() -> str:
    """Names the default corpus of this Python (cache key for prepared data)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    digest = hashlib.sha256(stdlib.encode()).hexdigest()[:8]
    return f"stdlib-py{sysconfig.get_python_version()}-{digest}"


def _read_text(path: Path) -> str:
    # Sources are mostly UTF-8; a stray byte must not abort a long preparation.
    return path.read_bytes().decode("utf-8", errors="replace")


def _jsonl_documents(path: Path, text_field: str) -> Iterator[Document]:
    for _, where, row in jsonl_rows(path):
        text = _row_text(row, text_field)
        if text is None:
            raise ValueError(f"{where}: no {text_field!r} field (or 'messages') in the object")
        if text:
            yield Document(where, text)


def _row_text(row: Any, text_field: str) -> str | None:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return None
    value = row.get(text_field)
    if isinstance(value, str):
        return value
    messages = row.get("messages")
    if isinstance(messages, list):  # chat rows: their text, one turn a paragraph
        return "\n\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return None


def _hf_documents(spec: str, text_field: str) -> Iterator[Document]:
    """`hf:NAME[:CONFIG][:SPLIT]` through the `datasets` library (needs network or cache)."""
    parts = spec[3:].split(":")
    name, config = parts[0], parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 else "train"
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as err:
        raise ValueError(f"{spec}: HF datasets need `pip install datasets`") from err
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as err:  # offline, unknown name, ...: one readable message
        raise ValueError(f"{spec}: could not load the dataset ({err})") from err
    for i, row in enumerate(ds):
        text = _row_text(row, text_field)
        if text:
            yield Document(f"{spec}#{i}", text)


def iter_documents(
    inputs: Sequence[str | os.PathLike[str]], text_field: str = "text"
) -> Iterator[Document]:
    """Documents from files, directories (recursively: text files and *.jsonl), JSONL files,
    `hf:` dataset specs, or `default` for the embedded corpus; in the order given."""
    for item in inputs:
        spec = os.fspath(item)
        if spec == "default":
            yield from default_corpus()
            continue
        if spec.startswith("hf:"):
            yield from _hf_documents(spec, text_field)
            continue
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.suffix == ".jsonl")
            )
            if not files:
                raise ValueError(f"{path}: no text or .jsonl files in this directory")
            for f in files:
                yield from _file_documents(f, text_field)
        elif path.is_file():
            yield from _file_documents(path, text_field)
        else:
            raise FileNotFoundError(f"{spec}: no such file or directory")


def _file_documents(path: Path, text_field: str) -> Iterator[Document]:
    if path.suffix == ".jsonl":
        yield from _jsonl_documents(path, text_field)
    else:
        text = _read_text(path)
        if text:
            yield Document(str(path), text)


# --- writing shards -------------------------------------------------------------------------------
def tokenizer_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class _ShardWriter:
    """Appends ids to `{split}_NNNN.bin` files of at most `shard_tokens` ids each."""

    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.documents = 0

    def add(self, ids: np.ndarray) -> None:
        self.documents += 1
        while ids.size:
            room = self.shard_tokens - self.buffered
            take = ids[:room]
            self.buffer.append(take)
            self.buffered += take.size
            ids = ids[room:]
            if self.buffered >= self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        name = f"{self.split}_{len(self.shards):04d}.bin"
        tmp = self.out / f".{name}.tmp"
        np.concatenate(self.buffer).astype(self.dtype).tofile(tmp)
        os.replace(tmp, self.out / name)
        self.shards.append({"file": name, "tokens": int(self.buffered)})
        self.buffer, self.buffered = [], 0

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards) + self.buffered

    def summary(self) -> dict[str, Any]:
        self.flush()
        return {"tokens": self.tokens, "documents": self.documents, "shards": self.shards}


def prepare_data(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    tokenizer: str | os.PathLike[str] | None = None,
    *,
    vocab_size: int = 8192,
    val_fraction: float = 0.01,
    seed: int = 0,
    text_field: str = "text",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    max_bytes: int | None = None,
    tokenizer_train_bytes: int = 16_000_000,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Encode `inputs` into token shards in `out_dir`; returns the manifest.

    `tokenizer`: a tokenizer.json (or a directory holding one); when None, a byte-level BPE of
    `vocab_size` is trained on the first `tokenizer_train_bytes` of the data first.
    `max_bytes` stops reading after that much text (useful for quick runs).
    """
    from glassformer.tokenizer import Tokenizer

    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: must be in [0, 1), got {val_fraction}")
    inputs = list(inputs) or ["default"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # the directory is unfinished until the end
    for split in ("train", "val"):  # shards of an earlier preparation (only our names)
        for stale in out.glob(f"{split}_[0-9][0-9][0-9][0-9].bin"):
            stale.unlink()
    start = time.perf_counter()

    tok_json = out / "tokenizer.json"
    if tokenizer is None:
        from glassformer.training.bpe_trainer import train_tokenizer

        sample = _take_bytes(iter_documents(inputs, text_field), tokenizer_train_bytes)
        train_tokenizer((d.text for d in sample), vocab_size, out)
    else:
        src = Path(tokenizer)
        src_json = src / "tokenizer.json" if src.is_dir() else src
        if not src_json.is_file():
            raise FileNotFoundError(f"{tokenizer}: no tokenizer.json there")
        if src_json.resolve() != tok_json.resolve():
            shutil.copyfile(src_json, tok_json)
            cfg = src_json.with_name("tokenizer_config.json")
            if cfg.is_file():
                shutil.copyfile(cfg, out / "tokenizer_config.json")
    tok_cfg = out / "tokenizer_config.json"
    tok = Tokenizer.from_tokenizer_json(tok_json, tok_cfg if tok_cfg.exists() else None)
    eos = tok.eos_id
    dtype = token_dtype(tok.vocab_size)
    writers = {s: _ShardWriter(out, s, dtype, shard_tokens) for s in ("train", "val")}
    rng = random.Random(seed)
    n_bytes = 0
    n_docs = 0
    pending: np.ndarray | None = None  # the last document, held back so val is never empty
    pending_split = "train"
    last_report = time.perf_counter()
    for doc in iter_documents(inputs, text_field):
        if max_bytes is not None and n_bytes >= max_bytes:
            break
        text = doc.text
        n_bytes += len(text.encode("utf-8"))
        # parse_special=False: a corpus that happens to contain "<|endoftext|>" as text must
        # not inject control tokens.
        ids = tok.encode(text, add_special_tokens=False, parse_special=False)
        if eos is not None:
            ids.append(eos)
        arr = np.asarray(ids, dtype=np.int64)
        if pending is not None:
            writers[pending_split].add(pending)
        pending = arr
        pending_split = "val" if val_fraction > 0 and rng.random() < val_fraction else "train"
        n_docs += 1
        if progress is not None and time.perf_counter() - last_report > 1.0:
            last_report = time.perf_counter()
            progress({"documents": n_docs, "bytes": n_bytes, "tokens": _count(writers)})
    if pending is not None:
        if val_fraction > 0 and writers["val"].documents == 0:
            pending_split = "val"
        if pending_split == "val" and writers["train"].documents == 0:
            pending_split = "train"  # a one-document corpus trains; no validation then
        writers[pending_split].add(pending)
    if n_docs == 0:
        raise ValueError("no documents found in the inputs")
    splits = {s: w.summary() for s, w in writers.items()}
    manifest = {
        "format": FORMAT,
        "version": 1,
        "dtype": dtype.name,
        "vocab_size": tok.vocab_size,
        "eos_id": eos,
        "tokenizer": "tokenizer.json",
        "tokenizer_sha256": tokenizer_sha256(tok_json),
        "splits": splits,
        "documents": n_docs,
        "bytes": n_bytes,
        "bytes_per_token": n_bytes / max(1, splits["train"]["tokens"] + splits["val"]["tokens"]),
        "sources": [os.fspath(i) for i in inputs],
        "val_fraction": val_fraction,
        "seed": seed,
        "seconds": time.perf_counter() - start,
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def _count(writers: dict[str, _ShardWriter]) -> int:
    return sum(w.tokens for w in writers.values())


def _take_bytes(docs: Iterable[Document], limit: int) -> list[Document]:
    out, n = [], 0
    for doc in docs:
        out.append(doc)
        n += len(doc.text.encode("utf-8"))
        if n >= limit:
            break
    return out


def load_manifest(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{data_dir}: no {MANIFEST} (not a prepared data directory, or preparation did not "
            "finish; run `glassformer data prepare`)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a glassformer token manifest")
    return manifest


# --- reading --------------------------------------------------------------------------------------
class TokenSplit:
    """The shards of one split, memory-mapped, read as one flat array of ids."""

    def __init__(self, data_dir: str | os.PathLike[str], split: str = "train") -> None:
        self.dir = Path(data_dir)
        self.manifest = load_manifest(self.dir)
        if split not in self.manifest["splits"]:
            raise ValueError(f"{data_dir}: no split {split!r}")
        info = self.manifest["splits"][split]
        dtype = np.dtype(self.manifest["dtype"])
        self.arrays: list[np.ndarray] = []
        for shard in info["shards"]:
            path = self.dir / shard["file"]
            expected = shard["tokens"] * dtype.itemsize
            if not path.is_file() or path.stat().st_size != expected:
                raise ValueError(f"{path}: missing or not {expected} bytes as the manifest says")
            self.arrays.append(np.memmap(path, dtype=dtype, mode="r"))
        sizes = [a.size for a in self.arrays]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Ids [start, stop) as int64, across shard boundaries."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"read [{start}, {stop}) outside [0, {len(self)})")
        out = np.empty(stop - start, dtype=np.int64)
        pos = start
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while pos < stop:
            base = int(self.offsets[shard])
            end = min(stop, int(self.offsets[shard + 1]))
            out[pos - start : end - start] = self.arrays[shard][pos - base : end - base]
            pos = end
            shard += 1
        return out


class WindowSampler:
    """Seeded, epoch-wise shuffled windows of `seq_len + 1` consecutive ids.

    Window w covers ids [w * seq_len, w * seq_len + seq_len + 1): inputs are the first seq_len,
    targets the last seq_len. Sample k of the run is window perm_e[k mod n] with
    e = k div n and perm_e a permutation drawn from (seed, e).
    """

    def __init__(self, split: TokenSplit, seq_len: int, seed: int = 0, shuffle: bool = True):
        self.split, self.seq_len, self.seed, self.shuffle = split, seq_len, seed, shuffle
        self.n_windows = (len(split) - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(
                f"{split.dir}: {len(split)} tokens are too few for one window of "
                f"{seq_len + 1}; lower --seq-len or add data"
            )
        self._perm: tuple[int, np.ndarray] | None = None

    def window(self, sample: int) -> int:
        epoch, k = divmod(sample, self.n_windows)
        if not self.shuffle:
            return k
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = (epoch, rng.permutation(self.n_windows))
        return int(self._perm[1][k])

    def batch(self, first: int, count: int) -> torch.Tensor:
        """Samples first .. first + count - 1 as a [count, seq_len + 1] int64 tensor."""
        rows = []
        for k in range(first, first + count):
            w = self.window(k)
            rows.append(self.split.read(w * self.seq_len, w * self.seq_len + self.seq_len + 1))
        return torch.from_numpy(np.stack(rows))
