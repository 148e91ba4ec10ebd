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

Python wrappers: `glassformer.inference.native` (inference kernels) and
`glassformer.kernels.autograd` (the differentiable ones the core model and the trainer use).

Every kernel parallelises with OpenMP. The library links the process's libgomp (the one torch
loaded), so it shares torch's thread pool instead of starting a second one.

Built with the system C compiler (`$CC`, else `cc`) into a per-user cache
(`$GLASSFORMER_CACHE`, else `~/.cache/glassformer`), keyed by a hash of the sources, flags and
compiler version, and written atomically, so concurrent processes never load half a file.
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

SOURCE_DIR = Path(__file__).parent
SOURCES = ("quant.c", "decode.c", "program.c", "attention.c", "activations.c", "xent.c")
HEADERS = ("kernels.h",)
CFLAGS = (
    "-O3", "-fno-math-errno", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp",
    "-shared", "-fPIC",
)  # fmt: skip
LIBS = ("-lm",)


def _cache_dir() -> Path:
    root = os.environ.get("GLASSFORMER_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glassformer"


def _cpu_ok() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    # torch reports the best ISA its own kernels were dispatched to; AVX2 implies FMA and F16C
    # on every CPU that ships it.
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


class Library:
    """ctypes bindings; argument types declared once so each call converts plain ints."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        p, i, f, n = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_long
        signatures = {
            "q4_mm": [p, i, i, p, p, p, i, i, p, i],
            "q8_mm": [p, i, i, p, p, i, i, p, i],
            "f32_mm": [p, i, i, p, i, p, i],
            "q4_dequant": [p, p, p, i, i, i, p, i],
            "q8_dequant": [p, p, i, i, i, p, i],
            "rmsnorm": [p, p, p, i, i, f],
            "rope_store": [p, i, i, i, i, i, i, p, p, p, p, p, i, i, i],
            "attn_decode": [p, i, p, p, i, i, i, i, i, i, f, p, i, i],
            "attn_prefill": [p, n, n, n, p, n, n, n, p, n, n, n, i, i, i, i, i, f, p, p, i],
            "attn_backward": [p, n, n, n, p, n, n, n, p, n, n, n, p, p, p, *[i] * 5, f, p, p, p, i],
            "gelu_tanh": [p, p, n, i],
            "gelu_tanh_backward": [p, p, p, n, i],
            "xent_rows": [p, n, n, n, n, p, ctypes.c_int64, i, p, i],
            "run_program": [p, i, i],
            "silu_mul": [p, p, i, i],
            "add": [p, p, i, i, i],
        }
        for name, argtypes in signatures.items():
            fn = getattr(lib, f"gf_{name}")
            fn.argtypes, fn.restype = argtypes, None
            setattr(self, name, fn)
        self.path = path


def _build() -> Path:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    texts = [(SOURCE_DIR / name).read_text() for name in (*HEADERS, *SOURCES)]
    key = hashlib.sha256("\0".join((*texts, *CFLAGS, *LIBS, version)).encode()).hexdigest()[:16]
    target = _cache_dir() / f"glassformer_kernels_{key}.so"
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
