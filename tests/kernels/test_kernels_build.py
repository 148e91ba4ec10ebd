"""Building and loading the C kernels: a failed build says why and leaves PyTorch's kernels in
charge; the opt-out variable is honoured."""

from __future__ import annotations

import ctypes
import re
import shutil

import pytest

import glassformer.kernels as kernels


def test_a_failed_build_warns_and_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: error: this compiler is broken' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    monkeypatch.setenv("GLASSFORMER_CACHE", str(tmp_path / "cache"))  # nothing built there yet
    with pytest.raises(RuntimeError, match="this compiler is broken"):
        kernels._build()
    if kernels._cpu_ok():
        with pytest.warns(RuntimeWarning, match="native kernels unavailable"):
            assert kernels._load_library() is None
    assert not list((tmp_path / "cache").glob("*.so"))  # no half-written library left behind


def test_reference_mode_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLASSFORMER_KERNELS", "reference")
    assert kernels._load_library() is None


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_build_is_cached_by_content(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Same sources and flags, same file: a second build is a lookup."""
    if not kernels.available():
        pytest.skip("native kernels unavailable")
    path = kernels.library().path  # type: ignore[union-attr]
    monkeypatch.setenv("GLASSFORMER_CACHE", str(path.parent))
    assert kernels._build() == path


# C parameter types in `kernels.h` and the ctypes each must be declared as.
C_TYPES = {"int": ctypes.c_int, "long": ctypes.c_long, "int64_t": ctypes.c_int64,
           "float": ctypes.c_float}  # fmt: skip


def header_prototypes() -> dict[str, list[tuple[str, type]]]:
    """Every `void gf_<name>(...)` prototype in kernels.h as [(parameter, ctype name)]."""
    text = (kernels.SOURCE_DIR / "kernels.h").read_text()
    out = {}
    for name, params in re.findall(r"^void gf_(\w+)\(([^)]*)\);", text, flags=re.M):
        args = []
        for param in " ".join(params.split()).split(", "):
            ctype, arg = param.rsplit(" ", 1)
            pointer = arg.startswith("*")
            args.append((arg.lstrip("*"), ctypes.c_void_p if pointer else C_TYPES[ctype]))
        out[name] = args
    return out


def test_the_signatures_are_the_headers() -> None:
    """Each function's named argument list in `kernels.SIGNATURES` is its C prototype's:
    same functions, same parameter names in the same order, matching ctypes (every pointer a
    c_void_p). A wrong type or a missing argument would pass garbage to the kernel."""
    header = header_prototypes()
    assert len(header) == 22 and len(header["attn_backward"]) == 25
    assert header == kernels.SIGNATURES
    if kernels.available():  # the loaded functions carry these argument types
        lib = kernels.library()
        for name, args in kernels.SIGNATURES.items():
            assert getattr(lib, name).argtypes == [ctype for _, ctype in args], name
