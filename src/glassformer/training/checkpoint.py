"""Crash-safe checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint holds the model and optimizer state, the LR scheduler state, the data position
(samples consumed), the random-number generators of every rank (Python, NumPy, torch CPU and
CUDA), the model and training configs, and the run's counters. It is written atomically:

    write OUT/checkpoints/.step_00000100.pt.tmp  ->  flush + fsync  ->  os.replace to
    OUT/checkpoints/step_00000100.pt  ->  fsync the directory

`os.replace` is atomic on POSIX, so at every instant the final name either does not exist or
names a complete file. A run killed mid-write (SIGKILL, power loss) leaves only a temp file,
which `latest_checkpoint` ignores (and the next save overwrites), so resuming picks the
previous good checkpoint. Older checkpoints are deleted only after the new one is in place.

Files are loaded with `torch.load(weights_only=True)`: a checkpoint holds tensors and plain
Python data only, never pickled objects, so loading one cannot run code.

Fault injection for tests: with `GLASSFORMER_CHECKPOINT_WRITE_DELAY=<seconds>[@<step>]` in
the environment, the writer stops for that long halfway through the temp file (of every
checkpoint, or only of the one for <step>), which gives a test a window to kill the process
mid-write.
"""

from __future__ import annotations

import io
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "restore_rng",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(out_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Atomically write `state` to `path` (temp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    delay = _write_delay(path)
    with open(tmp, "wb") as fh:
        if delay > 0:
            buf = io.BytesIO()
            torch.save(state, buf)
            data = buf.getbuffer()
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            time.sleep(delay)
            fh.write(data[half:])
        else:
            torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _write_delay(path: Path) -> float:
    spec = os.environ.get("GLASSFORMER_CHECKPOINT_WRITE_DELAY", "")
    if not spec:
        return 0.0
    seconds, _, step = spec.partition("@")
    m = _NAME.match(path.name)
    if step and (m is None or int(m.group(1)) != int(step)):
        return 0.0
    return float(seconds)


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as (step, path)."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def latest_checkpoint(
    out_dir: str | os.PathLike[str],
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, or None. A damaged newest file (which atomic writes
    prevent, but disks fail) falls back to the one before, with a warning."""
    import warnings

    for _step, path in reversed(list_checkpoints(out_dir)):
        try:
            return path, load_checkpoint(path)
        except Exception as err:  # truncated or corrupt: try the previous one
            warnings.warn(f"{path}: unreadable ({err}); trying an older one", stacklevel=2)
    return None


def prune_checkpoints(out_dir: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0: keep everything)."""
    if keep <= 0:
        return
    for _step, path in list_checkpoints(out_dir)[:-keep]:
        path.unlink(missing_ok=True)


# --- random number generators ---------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors and plain data (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
