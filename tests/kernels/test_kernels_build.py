"""Building and loading the C kernels: a failed build says why and leaves PyTorch's kernels in
charge; the opt-out variable is honoured."""

from __future__ import annotations

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
