"""Training with cross-layer connections (components/connections/): the checkpoint records the
topology, stop-and-resume equals the straight run, telemetry reads every layer, the export
keeps the topology in glassformer's own format (HF and GGUF cannot express it), and DDP over
two processes equals one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from glassformer.compression.export import gguf_refusal, load_model_dir
from glassformer.config import Config
from glassformer.model import Transformer
from glassformer.training import checkpoint as ckpt
from glassformer.training.trainer import Trainer

from .conftest import read_losses, small_config


def _config(kind: str) -> Config:
    return Config.preset("tiny").replace(d_model=32, n_layers=2, d_ff=48, connections=kind,
                                         hyper_streams=2)  # fmt: skip


@pytest.mark.parametrize("kind", ["mudd", "mhc"])
def test_stop_resume_checkpoint_and_export(tmp_path: Path, tiny_data: Path, kind: str) -> None:
    cfg = _config(kind)
    straight = tmp_path / "straight"
    summary = Trainer(small_config(straight, tiny_data, max_steps=4, telemetry_every=2,
                                   export=True), model_config=cfg).train()  # fmt: skip
    assert summary["status"] == "completed"
    split = tmp_path / "split"
    first = Trainer(small_config(split, tiny_data, max_steps=4, stop_after=2, telemetry_every=2),
                    model_config=cfg).train()  # fmt: skip
    assert first["status"] == "stopped"
    Trainer(small_config(split, tiny_data, max_steps=4, resume=True, telemetry_every=2),
            model_config=cfg).train()  # fmt: skip
    assert read_losses(straight) == read_losses(split)
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(straight, 4))
    assert Config.from_dict(state["config"]).connections == kind
    assert any(k.startswith("connections.") for k in state["model"])
    # the spectral telemetry ran (its probe reads the topology's per-layer hidden states)
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    telemetry = [r for r in rows if r.get("event") == "telemetry"]
    assert [r["step"] for r in telemetry] == [2, 4]
    for r in telemetry:
        assert len(r.get("layers", [None] * cfg.n_layers)) == cfg.n_layers
    # the export: glassformer's own format, the topology and its weights kept
    exported, weights = load_model_dir(straight / "final")
    assert exported.connections == kind
    model = Transformer(exported)
    model.load_state_dict(weights)
    assert torch.equal(weights["embed.weight"], state["model"]["embed.weight"])
    assert not (straight / "final" / "config.json").exists()  # no HF directory
    assert gguf_refusal(exported) is not None and "connections" in gguf_refusal(exported)


def test_cli_connections_option(tmp_path: Path, tiny_data: Path) -> None:
    from typer.testing import CliRunner

    from glassformer.cli import app

    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--out", str(out), "--connections", "hyper",
            "--set", "hyper_streams=2", "--set", "n_layers=2", "--set", "d_model=32",
            "--max-steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0",
            "--eval-batches", "1", "--sample-tokens", "0", "--no-progress", "--no-export",
            "--no-plot", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = Config.load(out / "config.json")
    assert saved.connections == "hyper" and saved.hyper_streams == 2
    bad = CliRunner().invoke(app, [*args[:5], "--connections", "dense", *args[7:]])
    assert bad.exit_code == 2 and "connections: expected one of" in bad.output


@pytest.mark.slow
def test_ddp_two_processes_equal_one(tmp_path: Path, tiny_data: Path) -> None:
    from .test_training_distributed import _args, _launcher, _run

    extra = ["--connections", "mhc", "--set", "hyper_streams=2", "--set", "n_layers=2"]
    single = tmp_path / "single"
    _run([sys.executable, str(_launcher(tmp_path)), *_args(tiny_data, single, 2), *extra])
    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", str(_launcher(tmp_path)), *_args(tiny_data, multi, 2), *extra]  # fmt: skip
    assert _run(cmd)["world_size"] == 2
    a, b = read_losses(single), read_losses(multi)
    assert sorted(a) == sorted(b) and all(abs(a[s] - b[s]) < 1e-5 for s in a)
