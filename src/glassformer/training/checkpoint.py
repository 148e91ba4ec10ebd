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

Runs. Each checkpoint records the identity of the run that wrote it (`run_identity`: the
seed, a hash of the model and training configs, the start time, and an id made of the three);
a resumed run keeps its identity. A run directory holds one run's checkpoints:
`latest_checkpoint` continues the most recently started run it finds (not merely the highest
step number), `prune_checkpoints` deletes only older checkpoints of the given run, and files
whose run cannot be read (damaged, or written without an identity) are never deleted.
`move_aside` makes room for a new run (the trainer's `--force`) by moving the previous one's
checkpoints and logs into OUT/previous/<time>/, laid out as a run directory.

Fault injection for tests: with `GLASSFORMER_CHECKPOINT_WRITE_DELAY=<seconds>[@<step>]` in
the environment, the writer stops for that long halfway through the temp file (of every
checkpoint, or only of the one for <step>), which gives a test a window to kill the process
mid-write.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng",
    "checkpoint_path",
    "config_hash",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "move_aside",
    "prune_checkpoints",
    "restore_rng",
    "run_identity",
    "run_of",
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


# --- runs -----------------------------------------------------------------------------------------
def config_hash(*parts: Any) -> str:
    """A short hash of JSON-serialisable configuration (key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_identity(seed: int, configs_hash: str, started: str | None = None) -> dict[str, Any]:
    """{"id", "seed", "config_hash", "started"}: a new run's identity (started: now, UTC)."""
    started = started or datetime.now(UTC).isoformat(timespec="microseconds")
    run_id = config_hash(seed, configs_hash, started)
    return {"id": run_id, "seed": seed, "config_hash": configs_hash, "started": started}


_RUNS: dict[tuple[str, int, int], dict[str, Any] | None] = {}


def run_of(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The identity recorded in a checkpoint (None: written without one); raises when the
    file does not load. Cheap: the tensors are memory-mapped, not read, and the answer is
    remembered per file version."""
    p = Path(path)
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    if key not in _RUNS:
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        run = state.get("run") if isinstance(state, dict) else None
        _RUNS[key] = dict(run) if isinstance(run, dict) else None
    return _RUNS[key]


def _readable(
    out_dir: str | os.PathLike[str], warn: bool = True
) -> list[tuple[int, Path, dict[str, Any] | None]]:
    """(step, path, run) of the checkpoints that load, oldest first; a warning for each other."""
    found = []
    for step, path in list_checkpoints(out_dir):
        try:
            found.append((step, path, run_of(path)))
        except Exception as err:  # truncated or corrupt
            if warn:
                warnings.warn(f"{path}: unreadable ({err}); skipped", stacklevel=3)
    return found


def latest_checkpoint(
    out_dir: str | os.PathLike[str],
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from, loaded, or None when none loads: the newest step of the
    most recently started run (checkpoints without an identity count as the oldest run). A
    damaged file (which atomic writes prevent, but disks fail) is skipped with a warning."""
    found = _readable(out_dir)
    found.sort(key=lambda f: ((f[2] or {}).get("started", ""), f[0]), reverse=True)
    for _step, path, _run in found:
        try:
            return path, load_checkpoint(path)
        except Exception as err:  # the tensors themselves are damaged
            warnings.warn(f"{path}: unreadable ({err}); trying an older one", stacklevel=2)
    return None


def prune_checkpoints(out_dir: str | os.PathLike[str], keep: int, run_id: str) -> list[Path]:
    """Delete the checkpoints of run `run_id` but its newest `keep` readable ones (keep <= 0:
    keep everything); other runs' checkpoints and unreadable files stay. Returns the deleted."""
    if keep <= 0:
        return []
    readable = _readable(out_dir, warn=False)
    own = [(step, path) for step, path, run in readable if (run or {}).get("id") == run_id]
    deleted = []
    for _step, path in own[:-keep]:
        path.unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def move_aside(out_dir: str | os.PathLike[str], names: tuple[str, ...] = ()) -> Path | None:
    """Move OUT's checkpoints (complete or partial) and the files `names` into
    OUT/previous/<UTC time>/, keeping their layout; returns that directory (None: nothing
    to move)."""
    out = Path(out_dir)
    root = out / CHECKPOINT_DIR
    # complete checkpoints and the temp files of interrupted writes (.step_*.pt.tmp)
    files = [
        p
        for p in (root.iterdir() if root.is_dir() else [])
        if p.is_file() and _NAME.match(p.name.lstrip(".").removesuffix(".tmp"))
    ]
    others = [out / n for n in names if (out / n).is_file()]
    if not files and not others:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = out / "previous" / stamp
    (dest / CHECKPOINT_DIR).mkdir(parents=True)
    for p in files:
        os.replace(p, dest / CHECKPOINT_DIR / p.name)
    for p in others:
        shutil.move(str(p), dest / p.name)
    _fsync_dir(root)
    return dest


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
