"""Hand-written AVX2 kernels in C, compiled on first use and loaded with ctypes.

The C sources sit next to this file, one per subject:

    kernels.h      shared SIMD helpers (dot products, exp) and every exported function
    quant.c        int8 / int4 weight-only matrix products and dequantisation (inference)
    decode.c       one decode step's small operations: RMSNorm, RoPE + cache store, attention
                   of one query over the cache, SiLU-gate, adds
    program.c      a whole decode step as one call over a list of bound kernel calls
    attention.c    causal self-attention forward and backward, computing the visible half only
    activations.c  GELU (tanh form) forward and backward with one exp instead of a tanh
    xent.c         softmax cross-entropy and its gradient, in place over the LM head's logits
    delta.c        Gated DeltaNet's gated delta rule: a decoding step and the chunked form's
                   loop over chunks, all heads at once

Python wrappers: `glassformer.inference.native` (inference kernels) and
`glassformer.kernels.autograd` (the differentiable ones); `glassformer.kernels.dispatch` chooses
between those and PyTorch's ops for the core model. `SIGNATURES` names every C function's
arguments.

Every kernel parallelises with OpenMP. The library links the process's libgomp (the one torch
loaded), so it shares torch's thread pool instead of starting a second one.

Built with the system C compiler (`$CC`, else `cc`) into the per-user cache
(`glassformer.cache.cache_dir()`: `$GLASSFORMER_CACHE`, else `~/.cache/glassformer`), keyed by
a hash of the sources, flags and compiler version, and written atomically, so concurrent
processes never load half a file.
`library()` is None when the CPU lacks AVX2/FMA/F16C, the compiler is missing or
`GLASSFORMER_KERNELS=reference`; callers then use PyTorch's own kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from glassformer.cache import cache_dir

SOURCE_DIR = Path(__file__).parent
SOURCES = ("quant.c", "decode.c", "program.c", "attention.c", "activations.c", "xent.c",
           "delta.c")  # fmt: skip
HEADERS = ("kernels.h",)
CFLAGS = (
    "-O3", "-fno-math-errno", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp",
    "-shared", "-fPIC",
)  # fmt: skip
LIBS = ("-lm",)


def _cpu_ok() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    # torch reports the best ISA its own kernels were dispatched to; AVX2 implies FMA and F16C
    # on every CPU that ships it.
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


# Every exported C function's arguments as (name, ctype), in order: the names are the
# parameters' in `kernels.h` (a test holds the two equal). Strides are in elements; `nt` is the
# thread count; `f16` flags a float16 KV cache.
PTR, INT, LONG, INT64, FLOAT = (ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_int64,
                                ctypes.c_float)  # fmt: skip


def _strided(name: str) -> list[tuple[str, type]]:
    """A [B, heads, T, D] tensor passed as its pointer and its first three strides."""
    return [(name, PTR), (f"s{name}b", LONG), (f"s{name}h", LONG), (f"s{name}t", LONG)]


SIGNATURES: dict[str, list[tuple[str, type]]] = {
    # quant.c: y [M, N] = x [M, K] W^T with W int4, int8 or float32 [N, K]; W dequantised
    "q4_mm": [("x", PTR), ("M", INT), ("K", INT), ("q", PTR), ("d", PTR), ("mn", PTR),
              ("N", INT), ("group", INT), ("y", PTR), ("nt", INT)],
    "q8_mm": [("x", PTR), ("M", INT), ("K", INT), ("q", PTR), ("s", PTR), ("N", INT),
              ("group", INT), ("y", PTR), ("nt", INT)],
    "f32_mm": [("x", PTR), ("M", INT), ("K", INT), ("w", PTR), ("N", INT), ("y", PTR),
               ("nt", INT)],
    "q4_dequant": [("q", PTR), ("d", PTR), ("mn", PTR), ("N", INT), ("K", INT), ("group", INT),
                   ("out", PTR), ("nt", INT)],
    "q8_dequant": [("q", PTR), ("s", PTR), ("N", INT), ("K", INT), ("group", INT),
                   ("out", PTR), ("nt", INT)],
    # decode.c: one decode step's small operations
    "rmsnorm": [("x", PTR), ("w", PTR), ("y", PTR), ("M", INT), ("D", INT), ("eps", FLOAT)],
    "rope_store": [("qkv", PTR), ("B", INT), ("H", INT), ("HK", INT), ("D", INT), ("rot", INT),
                   ("interleaved", INT), ("cos", PTR), ("sin", PTR), ("kc", PTR), ("vc", PTR),
                   ("kpos", PTR), ("cap", INT), ("pos", INT), ("f16", INT)],
    "attn_decode": [("q", PTR), ("qstride", INT), ("kc", PTR), ("vc", PTR), ("B", INT),
                    ("H", INT), ("HK", INT), ("D", INT), ("cap", INT), ("L", INT),
                    ("scale", FLOAT), ("out", PTR), ("nt", INT), ("f16", INT)],
    "rope_store_rows": [("qkv", PTR), ("B", INT), ("H", INT), ("HK", INT), ("D", INT),
                        ("rot", INT), ("interleaved", INT), ("cos", PTR), ("sin", PTR),
                        ("cs", INT), ("kt", PTR), ("vt", PTR), ("pt", PTR), ("cap", INT),
                        ("pos", PTR), ("slot", PTR), ("f16", INT)],
    "attn_decode_rows": [("q", PTR), ("qstride", INT), ("kt", PTR), ("vt", PTR), ("B", INT),
                         ("H", INT), ("HK", INT), ("D", INT), ("cap", INT), ("len", PTR),
                         ("slot", PTR), ("scale", FLOAT), ("out", PTR), ("nt", INT),
                         ("f16", INT)],
    "silu_mul": [("gu", PTR), ("out", PTR), ("M", INT), ("F", INT)],
    "add": [("y", PTR), ("x", PTR), ("M", INT), ("N", INT), ("stride", INT)],
    # program.c: a decode step as one call over a list of `gf_op`s
    "run_program": [("ops", PTR), ("n", INT), ("pos", INT)],
    "run_rows": [("ops", PTR), ("n", INT), ("rows", INT), ("pos", PTR), ("slot", PTR)],
    # attention.c: causal attention of q [B, H, T, D] over k, v [B, HK, T, D]
    "attn_prefill": [*_strided("q"), *_strided("k"), *_strided("v"),
                     ("B", INT), ("H", INT), ("HK", INT), ("T", INT), ("D", INT),
                     ("scale", FLOAT), ("out", PTR), ("lse", PTR), ("nt", INT)],
    "attn_backward": [*_strided("q"), *_strided("k"), *_strided("v"),
                      ("o", PTR), ("dout", PTR), ("lse", PTR),
                      ("B", INT), ("H", INT), ("HK", INT), ("T", INT), ("D", INT),
                      ("scale", FLOAT), ("dq", PTR), ("dk", PTR), ("dv", PTR), ("nt", INT)],
    # activations.c
    "gelu_tanh": [("x", PTR), ("y", PTR), ("n", LONG), ("nt", INT)],
    "gelu_tanh_backward": [("x", PTR), ("dy", PTR), ("dx", PTR), ("n", LONG), ("nt", INT)],
    # delta.c: one decoding step of the gated delta rule, the state [B, H, DK, DV] in place
    "delta_step": [("q", PTR), ("k", PTR), ("v", PTR), ("g", PTR), ("beta", PTR),
                   ("state", PTR), ("out", PTR), ("B", INT), ("H", INT), ("HK", INT),
                   ("DK", INT), ("DV", INT), ("nt", INT)],
    # delta.c: the chunked form's loop over chunks, the state [B, H, DK, DV] in place
    "delta_chunks": [("q", PTR), ("k", PTR), ("w", PTR), ("u", PTR), ("qk", PTR),
                     ("gamma", PTR), ("state", PTR), ("out", PTR), ("N", INT), ("B", INT),
                     ("H", INT), ("HK", INT), ("C", INT), ("DK", INT), ("DV", INT),
                     ("nt", INT)],
    "delta_solve": [("kk", PTR), ("gamma", PTR), ("beta", PTR), ("t", PTR), ("te", PTR),
                    ("count", LONG), ("H", INT), ("HK", INT), ("C", INT), ("nt", INT)],
    # xent.c: softmax cross-entropy over rows of logits cut in nb slices of vs columns
    "xent_rows": [("z", PTR), ("rows", LONG), ("nb", LONG), ("vs", LONG), ("bstride", LONG),
                  ("labels", PTR), ("ignore", INT64), ("grad", INT), ("loss", PTR),
                  ("nt", INT)],
}  # fmt: skip


class Library:
    """ctypes bindings of `SIGNATURES`: each C function `gf_<name>` as attribute `<name>`, with
    its argument types declared once so each call converts plain ints and floats."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        for name, args in SIGNATURES.items():
            fn = getattr(lib, f"gf_{name}")
            fn.argtypes, fn.restype = [ctype for _, ctype in args], None
            setattr(self, name, fn)
        self.path = path


def _build() -> Path:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    texts = [(SOURCE_DIR / name).read_text() for name in (*HEADERS, *SOURCES)]
    key = hashlib.sha256("\0".join((*texts, *CFLAGS, *LIBS, version)).encode()).hexdigest()[:16]
    target = cache_dir() / f"glassformer_kernels_{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        # One compiler per source, all at once (about 6 s in series on 2 cores), then one link.
        objects = [Path(tmp) / f"{name}.o" for name in SOURCES]
        jobs = [
            subprocess.Popen(
                [cc, *CFLAGS, "-c", f"-I{SOURCE_DIR}", str(SOURCE_DIR / name), "-o", str(obj)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, obj in zip(SOURCES, objects, strict=True)
        ]
        stderr = [job.communicate()[1] for job in jobs]  # reads the pipes, then waits
        errors = [err for job, err in zip(jobs, stderr, strict=True) if job.returncode]
        out = Path(tmp) / target.name
        if not errors:
            link = [cc, *CFLAGS, *map(str, objects), "-o", str(out), *LIBS]
            proc = subprocess.run(link, capture_output=True, text=True)
            errors = [proc.stderr] if proc.returncode else []
        if errors:
            raise RuntimeError(f"compiling the kernels failed:\n{''.join(errors)[-2000:]}")
        os.replace(out, target)  # atomic: a concurrent process sees all of the file or none
    return target


# Loaded once per process. A plain dict rather than functools.lru_cache: torch.compile traces
# through these functions and reads a module-level dict as a constant, while it warns about
# (and re-traces) an lru_cache wrapper.
_LOADED: dict[str, Library | None] = {}


def library() -> Library | None:
    """The compiled kernels, or None where they cannot be used (see the module docstring)."""
    if "lib" not in _LOADED:
        _LOADED["lib"] = _load_library()
    return _LOADED["lib"]


def _load_library() -> Library | None:
    choice = os.environ.get("GLASSFORMER_KERNELS", "native").lower()
    if choice == "reference" or not _cpu_ok():
        return None
    try:
        return Library(_build())
    except (RuntimeError, OSError) as err:
        warnings.warn(
            f"glassformer: native kernels unavailable ({err}); using PyTorch's kernels",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def available() -> bool:
    return library() is not None


def threads() -> int:
    return torch.get_num_threads()
