"""HF model directories: `config.json` plus safetensors weights, one file or sharded.

safetensors file layout (https://github.com/huggingface/safetensors):

    N       u64, little-endian: length of the JSON header
    header  N bytes of UTF-8 JSON (padded with spaces):
              {"__metadata__": {str: str},                           (optional)
               "<tensor name>": {"dtype": "F32" | "F16" | "BF16" | "I64" | ...,
                                 "shape": [d0, d1, ...],
                                 "data_offsets": [begin, end]}, ...}
    data    the raw little-endian, C-order bytes of every tensor; offsets are relative to the
            start of this section and the tensors tile it exactly (no gaps, no overlaps)

A sharded checkpoint splits the tensors over `model-00001-of-0000K.safetensors` files and adds
`model.safetensors.index.json`:

    {"metadata": {"total_size": <bytes of tensor data>},
     "weight_map": {"<tensor name>": "model-00001-of-0000K.safetensors", ...}}

Reading validates each header against the file size *before* any tensor is allocated, so a
truncated or corrupt file gives a ValueError naming the file and the problem. Writing goes to a
temporary file in the same directory and is moved into place with `os.replace` (atomic on POSIX
and Windows), so a crash never leaves a half-written `model.safetensors` behind; the index and
`config.json` are replaced last, after every shard they name exists.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from glassformer.config import Config

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
MAX_HEADER_BYTES = 100 * 1000 * 1000  # the safetensors library's own limit

DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_SHARD_RE = re.compile(r"[A-Za-z0-9_.\-]+\.safetensors")


# --- reading --------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Validate a safetensors file's header against its size; returns (tensors, metadata).

    `tensors` maps each name to {"dtype", "shape", "data_offsets"}. Reads only the header.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise ValueError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: corrupt safetensors header length {n}")
        if 8 + n > size:
            raise ValueError(
                f"{path}: truncated safetensors header: it claims {n} bytes but the file has "
                f"only {size - 8} after the length"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupt safetensors header (not JSON: {err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: corrupt safetensors header (__metadata__ is not an object)")

    data_size = size - 8 - n
    spans = []
    for name, entry in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{where}: malformed header entry {entry!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise ValueError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ValueError(f"{where}: bad shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ValueError(f"{where}: bad data_offsets {offsets!r}")
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise ValueError(
                f"{where}: {dtype}{shape} needs {nbytes} bytes but data_offsets {offsets} span "
                f"{offsets[1] - offsets[0]}"
            )
        if offsets[1] > data_size:
            raise ValueError(
                f"{path}: truncated safetensors data: tensor {name!r} ends at byte "
                f"{offsets[1]} of the data section, which has only {data_size} bytes"
            )
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            problem = "overlaps the previous tensor" if begin < end else "leaves a gap before it"
            raise ValueError(f"{path}: corrupt safetensors layout: tensor {name!r} {problem}")
        end = stop
    if end != data_size:
        raise ValueError(
            f"{path}: corrupt safetensors file: {data_size - end} bytes after the last tensor"
        )
    return header, {str(k): str(v) for k, v in metadata.items()}


def load_safetensors(
    path: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """All tensors of one file (validated first); floating ones cast to `dtype` if given."""
    from safetensors.torch import load_file

    path = Path(path)
    read_header(path)
    try:
        state = load_file(path)
    except Exception as err:  # safetensors raises its own (Rust) error types
        raise ValueError(f"{path}: cannot read safetensors file ({err})") from err
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return state


def _read_index(path: Path) -> dict[str, str]:
    try:
        index = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise ValueError(f"{path}: no valid 'weight_map' (tensor name -> shard file)")
    for shard in set(weight_map.values()):
        # shard names are plain file names: never follow a path out of the model directory
        if not _SHARD_RE.fullmatch(shard) or shard.startswith("."):
            raise ValueError(f"{path}: bad shard file name {shard!r}")
    return weight_map


def weight_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The safetensors files of a model directory (index first, as HF does for sharded ones)."""
    directory = Path(directory)
    if (directory / INDEX_FILE).exists():
        shards = sorted(set(_read_index(directory / INDEX_FILE).values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise ValueError(f"{directory / INDEX_FILE}: shard file(s) missing: {missing}")
        return [directory / s for s in shards]
    if (directory / SINGLE_FILE).exists():
        return [directory / SINGLE_FILE]
    raise ValueError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}")


def _read_dir_headers(
    directory: Path,
) -> tuple[dict[str, Any], list[Path], dict[Path, dict[str, dict[str, Any]]]]:
    """(config.json, weight files, each file's validated header): everything but the data."""
    from glassformer.hf.config import read_json_object

    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model directory")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"{directory}: not an HF model directory (no {CONFIG_FILE})")
    hf_config = read_json_object(config_path)

    files = weight_files(directory)
    headers = {f: read_header(f)[0] for f in files}  # all validated before any allocation
    if (directory / INDEX_FILE).exists():
        weight_map = _read_index(directory / INDEX_FILE)
        for f, header in headers.items():
            listed = {k for k, v in weight_map.items() if v == f.name}
            if listed != set(header):
                extra, absent = sorted(set(header) - listed), sorted(listed - set(header))
                raise ValueError(
                    f"{f}: does not match {INDEX_FILE} (in the file only: {extra[:5]}, in the "
                    f"index only: {absent[:5]})"
                )
    seen: dict[str, Path] = {}
    for f, header in headers.items():
        for name in header:
            if name in seen:
                raise ValueError(f"{directory}: tensor {name!r} is in both {seen[name]} and {f}")
            seen[name] = f
    return hf_config, files, headers


def read_hf_dir(
    directory: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json as a dict, every tensor under its HF name) of a `save_pretrained` dir.

    Every shard's header is validated (and checked against the index) before any tensor is
    read.
    """
    hf_config, files, _ = _read_dir_headers(Path(directory))
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_safetensors(f, dtype))
    return hf_config, state


_LAYER_INDEX_RE = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")


def check_layer_count(config: Config, names: Iterable[str], where: str | Path) -> None:
    """The config's layer count against the layers the weight files hold, before anything per
    layer is built: a config.json claiming 10**9 layers beside a few tensors is refused at once
    (the weight-name table alone would take gigabytes)."""
    names = list(names)
    if config.n_layers > len(names):
        raise ValueError(
            f"{where}: num_hidden_layers = {config.n_layers}, but the weights hold only "
            f"{len(names)} tensors"
        )
    found = {int(m.group(1)) for n in names if (m := _LAYER_INDEX_RE.search(n))}
    absent = next((i for i in range(config.n_layers) if i not in found), None)
    if absent is not None:
        raise ValueError(
            f"{where}: num_hidden_layers = {config.n_layers}, but the weights have no tensors "
            f"for layer {absent}"
        )


def load_hf_dir(
    directory: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
    *,
    check_finite: bool = True,
) -> tuple[Config, dict[str, torch.Tensor]]:
    """(Config, state dict under glassformer's names) of an HF model directory.

    The config is read and checked against the weight files' headers (the layer count against
    the tensors they hold) before any tensor is read or anything per layer is built. With
    `check_finite`, a weight holding inf/NaN raises a ValueError naming it (as for GGUF)."""
    from glassformer.hf.config import config_from_hf
    from glassformer.hf.weights import hf_to_ours

    directory = Path(directory)
    hf_config, files, headers = _read_dir_headers(directory)
    config_path = directory / CONFIG_FILE
    try:
        config = config_from_hf(hf_config)
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from None
    check_layer_count(config, (n for h in headers.values() for n in h), config_path)
    hf_state: dict[str, torch.Tensor] = {}
    for f in files:
        tensors = load_safetensors(f, dtype)
        for name, t in tensors.items():
            # a sum propagates inf/NaN and is cheaper than isfinite().all(); only a sum that
            # is not finite (or overflowed) needs the exact test
            if (
                check_finite
                and t.is_floating_point()
                and not torch.isfinite(t.sum())
                and not bool(torch.isfinite(t).all())
            ):
                raise ValueError(f"{f}: tensor {name!r} holds inf/NaN values")
        hf_state.update(tensors)
    try:
        state = hf_to_ours(config, hf_state)
    except RuntimeError as err:  # a split or reshape of a tensor whose size is not the config's
        msg = " ".join(str(err).split())
        raise ValueError(f"{directory}: the weights do not match {CONFIG_FILE} ({msg})") from None
    check_shapes(config, state, directory)
    return config, state


def check_shapes(config: Config, state: Mapping[str, torch.Tensor], where: str | Path) -> None:
    """Every tensor has the shape the config implies (read off a model built on the meta
    device, which allocates nothing), so a config.json that disagrees with its weights is
    refused by name instead of failing inside load_state_dict."""
    from glassformer.model import Transformer

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Transformer(config).state_dict().items()}
    for name, t in state.items():
        want = shapes.get(name)
        if want is not None and tuple(t.shape) != want:
            raise ValueError(
                f"{where}: tensor {name} has shape {list(t.shape)}, but {CONFIG_FILE} implies "
                f"{list(want)}"
            )


# --- writing --------------------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20}
_UNITS["GIB"] = 2**30


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int or a string like "500MB", "5GB", "2GiB" (HF's convention)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        if not m or m.group(2).upper() not in _UNITS:
            raise ValueError(f"max_shard_size: cannot parse {size!r} (e.g. 500MB, 5GB, 2GiB)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ValueError(f"max_shard_size: must be positive, got {size!r}")
    return value


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Any) -> None:
    """Run `write(tmp_path)` for a temporary file beside `path`, then move it into place.

    mkstemp creates the file 0600 (private); the result gets the mode any new file would
    (0666 less the umask), so other users and tools can read an export as usual."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # after: a writer may have made the file anew
        with open(tmp, "rb+") as f:  # the data must be on disk before the rename is
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def _prepare(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors with no two sharing memory (safetensors refuses
    aliases, e.g. a tied head that is the embedding)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state[{name!r}]: expected a tensor, got {type(t).__name__}")
        t = t.detach().to("cpu").contiguous()
        storage = t.untyped_storage().data_ptr()
        if t.numel() and storage in seen:
            t = t.clone()  # shares memory with an earlier tensor (tied weights, views)
        elif t.numel():
            seen.add(storage)
        out[name] = t
    return out


def _shards(state: dict[str, torch.Tensor], limit: int) -> list[list[str]]:
    """Greedy split in order: a new shard starts when the next tensor would pass `limit`
    (a tensor larger than `limit` gets a shard of its own)."""
    groups: list[list[str]] = [[]]
    used = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if groups[-1] and used + n > limit:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += n
    return groups


def save_safetensors(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write one safetensors file atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = _prepare(state)
    meta = {"format": "pt", **(metadata or {})}
    _atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def write_hf_dir(
    directory: str | os.PathLike[str],
    hf_config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    max_shard_size: int | str = "5GB",
) -> list[Path]:
    """Write config.json and the weights of an HF model directory; returns the files written.

    One `model.safetensors` when the weights fit in `max_shard_size`, otherwise numbered
    shards plus `model.safetensors.index.json`. Weight files left over from an earlier save in
    the same directory (another shard count, sharded vs single) are removed afterwards.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = _prepare(state)
    groups = _shards(tensors, parse_size(max_shard_size))
    old = _existing_weight_files(directory)

    written: list[Path] = []
    if len(groups) == 1:
        save_safetensors(tensors, directory / SINGLE_FILE)
        written.append(directory / SINGLE_FILE)
    else:
        weight_map: dict[str, str] = {}
        for i, names in enumerate(groups, start=1):
            shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
            save_safetensors({n: tensors[n] for n in names}, directory / shard)
            weight_map.update(dict.fromkeys(names, shard))
            written.append(directory / shard)
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _atomic_write_text(directory / INDEX_FILE, json.dumps(index, indent=2) + "\n")
        written.append(directory / INDEX_FILE)
    _atomic_write_text(directory / CONFIG_FILE, json.dumps(dict(hf_config), indent=2) + "\n")
    written.append(directory / CONFIG_FILE)
    for stale in old - set(written):
        stale.unlink(missing_ok=True)
    return written


def _existing_weight_files(directory: Path) -> set[Path]:
    found: set[Path] = set()
    if (directory / SINGLE_FILE).exists():
        found.add(directory / SINGLE_FILE)
    if (directory / INDEX_FILE).exists():
        found.add(directory / INDEX_FILE)
        # a broken old index: its shards cannot be identified, so they are left alone
        with contextlib.suppress(ValueError):
            found |= {directory / s for s in _read_index(directory / INDEX_FILE).values()}
    return found


def save_hf_dir(
    directory: str | os.PathLike[str],
    config: Config,
    state: Mapping[str, torch.Tensor],
    max_shard_size: int | str = "5GB",
) -> list[Path]:
    """Save (Config, state dict under glassformer's names) as an HF model directory."""
    from glassformer.hf.config import config_to_hf
    from glassformer.hf.weights import ours_to_hf

    return write_hf_dir(
        directory, config_to_hf(config), ours_to_hf(config, dict(state)), max_shard_size
    )


def tensor_names(files: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Names of the tensors in some safetensors files (headers only)."""
    return [name for f in files for name in read_header(f)[0]]
