"""The per-user cache directory: compiled native kernels and prepared default training data.

`$GLASSFORMER_CACHE`, else `$XDG_CACHE_HOME/glassformer`, else `~/.cache/glassformer`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Where glassformer keeps what it builds once and reuses (an empty variable is unset)."""
    root = os.environ.get("GLASSFORMER_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glassformer"
