"""Tokenizer training: glassformer's BPE trainer against HF `tokenizers`' BpeTrainer.

Both learn a byte-level BPE of the same size with the same GPT-2 pre-tokenisation and special
tokens on the same text (by default 10 MB of the embedded default corpus: the standard
library's sources), then both vocabularies encode the same held-out text. Printed: training
time of each, their ratio, and the compression (UTF-8 bytes per token) of each vocabulary.

    python benchmarks/tokenizer_train.py [--mb 10] [--vocab-size 8192] [--json]

HF's trainer is Rust and multi-threaded (RAYON_NUM_THREADS, default: all cores); ours is one
Python thread.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def corpus(train_bytes: int, heldout_bytes: int) -> tuple[list[str], list[str]]:
    from glassformer.training.data import default_corpus_files

    train: list[str] = []
    heldout: list[str] = []
    n = 0
    for path in default_corpus_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        if n < train_bytes:
            train.append(text)
        elif n < train_bytes + heldout_bytes:
            heldout.append(text)
        else:
            break
        n += len(text.encode("utf-8"))
    return train, heldout


def train_ours(texts: list[str], vocab: int, out: Path) -> tuple[float, Path]:
    from glassformer.training.bpe_trainer import train_tokenizer

    start = time.perf_counter()
    path, _ = train_tokenizer(texts, vocab, out)
    return time.perf_counter() - start, path


def train_hf(texts: list[str], vocab: int, out: Path) -> tuple[float, Path]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from glassformer.training.bpe_trainer import DEFAULT_SPECIAL_TOKENS

    start = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        special_tokens=list(DEFAULT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    seconds = time.perf_counter() - start
    path = out / "hf_tokenizer.json"
    tok.save(str(path))
    return seconds, path


def bytes_per_token(path: Path, texts: list[str]) -> float:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts))
    return n_bytes / n_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0, help="training text, in MB")
    parser.add_argument("--heldout-mb", type=float, default=1.0)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    train, heldout = corpus(int(args.mb * 1e6), int(args.heldout_mb * 1e6))
    n_train = sum(len(t.encode("utf-8")) for t in train)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        hf_s, hf_path = train_hf(train, args.vocab_size, out)
        ours_s, ours_path = train_ours(train, args.vocab_size, out / "ours")
        result = {
            "train_mb": n_train / 1e6,
            "vocab_size": args.vocab_size,
            "ours_seconds": ours_s,
            "hf_seconds": hf_s,
            "ours_over_hf_time": ours_s / hf_s,
            "ours_bytes_per_token": bytes_per_token(ours_path, heldout),
            "hf_bytes_per_token": bytes_per_token(hf_path, heldout),
            "heldout_mb": sum(len(t.encode("utf-8")) for t in heldout) / 1e6,
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"training text: {result['train_mb']:.2f} MB, vocab {args.vocab_size}")
    print(f"  glassformer (Python, 1 thread): {ours_s:7.1f} s")
    print(f"  HF tokenizers (Rust):           {hf_s:7.1f} s   (ours / HF = {ours_s / hf_s:.1f}x)")
    print(f"compression on {result['heldout_mb']:.2f} MB held out (bytes/token):")
    ours_c, hf_c = result["ours_bytes_per_token"], result["hf_bytes_per_token"]
    print(f"  glassformer {ours_c:.3f}   HF {hf_c:.3f}")


if __name__ == "__main__":
    main()
