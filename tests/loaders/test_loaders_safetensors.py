"""HF directories: safetensors save/load round trips (single and sharded) and corrupt files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from glassformer.config import Config
from glassformer.loaders import safetensors_io as sio
from glassformer.loaders.safetensors_io import (
    INDEX_FILE,
    load_hf_dir,
    load_safetensors,
    parse_size,
    read_header,
    read_hf_dir,
    save_hf_dir,
    save_safetensors,
    write_hf_dir,
)
from glassformer.model import Transformer


def sample_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(16, 8, generator=g),
        "b.weight": torch.randn(8, generator=g).to(torch.bfloat16),
        "c.weight": torch.randn(4, 4, generator=g).half(),
        "d.index": torch.arange(10),
        "e.weight": torch.randn(32, 8, generator=g).T,  # not contiguous
        "empty": torch.zeros(0, 3),
    }


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_single_file_round_trip(tmp_path: Path) -> None:
    state = sample_state()
    save_safetensors(state, tmp_path / "m.safetensors", metadata={"who": "test"})
    header, meta = read_header(tmp_path / "m.safetensors")
    assert meta == {"format": "pt", "who": "test"} and set(header) == set(state)
    assert_same(load_safetensors(tmp_path / "m.safetensors"), state)
    as_f32 = load_safetensors(tmp_path / "m.safetensors", torch.float32)
    assert as_f32["b.weight"].dtype == torch.float32 and as_f32["d.index"].dtype == torch.int64
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_tied_aliases_are_saved_separately(tmp_path: Path) -> None:
    w = torch.randn(4, 4)
    save_safetensors({"embed": w, "head": w, "view": w[1:]}, tmp_path / "t.safetensors")
    back = load_safetensors(tmp_path / "t.safetensors")
    assert torch.equal(back["embed"], w) and torch.equal(back["head"], w)
    assert torch.equal(back["view"], w[1:])


@pytest.mark.parametrize("shard", ["600B", 600, "1KB"])
def test_sharded_round_trip(tmp_path: Path, shard: str | int) -> None:
    state = sample_state()
    files = write_hf_dir(tmp_path, {"model_type": "test"}, state, max_shard_size=shard)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and set(index["weight_map"]) == set(state)
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in state.values()
    )
    assert {p.name for p in files} == {*shards, INDEX_FILE, "config.json"}
    config, back = read_hf_dir(tmp_path)
    assert config == {"model_type": "test"}
    assert_same(back, state)


def test_resave_removes_stale_weight_files(tmp_path: Path) -> None:
    state = sample_state()
    write_hf_dir(tmp_path, {}, state, max_shard_size=600)
    n_sharded = len(list(tmp_path.glob("model-*.safetensors")))
    assert n_sharded > 2
    write_hf_dir(tmp_path, {}, state)  # now one file: index and shards must go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    write_hf_dir(tmp_path, {}, state, max_shard_size=1100)  # fewer shards than at first
    assert not (tmp_path / "model.safetensors").exists()
    assert_same(read_hf_dir(tmp_path)[1], state)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        INDEX_FILE,
        "config.json",
        *json.loads((tmp_path / INDEX_FILE).read_text())["weight_map"].values(),
    }


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = sample_state()
    save_safetensors(state, tmp_path / "m.safetensors")
    before = (tmp_path / "m.safetensors").read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors({"x": torch.ones(3)}, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_parse_size() -> None:
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5MB") == 1_500_000 and parse_size(123) == 123
    for bad in ("lots", "5XB", 0, "-3MB"):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_size(bad)


# --- corrupt files --------------------------------------------------------------------------------


def _write_raw(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def expect_error(path: Path, match: str, fn=load_safetensors) -> None:
    with pytest.raises(ValueError, match=match) as info:
        fn(path)
    assert str(path) in str(info.value)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    p = tmp_path / "x.safetensors"
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    expect_error(tmp_path / "short.safetensors", "no header length")
    p.write_bytes(struct.pack("<Q", 1000) + b"{}")
    expect_error(p, "truncated safetensors header")
    p.write_bytes(struct.pack("<Q", 2**62))
    expect_error(p, "corrupt safetensors header length")
    expect_error(_write_raw(p, b"{not json"), "not JSON")
    expect_error(_write_raw(p, b"[1, 2]"), "not a JSON object")
    expect_error(_write_raw(p, {"w": {**entry, "dtype": "F17"}}, bytes(16)), "unknown dtype")
    expect_error(_write_raw(p, {"w": {**entry, "shape": [2, -2]}}, bytes(16)), "bad shape")
    expect_error(
        _write_raw(p, {"w": {**entry, "data_offsets": [0, 12]}}, bytes(12)), "needs 16 bytes"
    )
    expect_error(_write_raw(p, {"w": entry}, bytes(10)), "truncated safetensors data")
    expect_error(_write_raw(p, {"w": entry}, bytes(20)), "4 bytes after the last tensor")
    two = {"w": entry, "v": {**entry, "data_offsets": [8, 24]}}
    expect_error(_write_raw(p, two, bytes(24)), "overlaps")
    gap = {"w": entry, "v": {**entry, "data_offsets": [20, 36]}}
    expect_error(_write_raw(p, gap, bytes(36)), "gap")
    expect_error(_write_raw(p, {"w": {"dtype": "F32"}}, b""), "malformed")


def test_truncated_real_file(tmp_path: Path) -> None:
    save_safetensors(sample_state(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    bad = tmp_path / "cut.safetensors"
    for cut in (4, 8, 50, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"truncated|not JSON") as info:
            load_safetensors(bad)
        assert str(bad) in str(info.value)


def test_corrupt_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_hf_dir(tmp_path / "nope")
    expect_error(tmp_path, "no config.json", read_hf_dir)
    (tmp_path / "config.json").write_text("{oops")
    expect_error(tmp_path, "not valid JSON", read_hf_dir)
    (tmp_path / "config.json").write_text("{}")
    expect_error(tmp_path, "no model.safetensors", read_hf_dir)

    write_hf_dir(tmp_path, {}, sample_state(), max_shard_size=600)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    (tmp_path / first).rename(tmp_path / "moved.safetensors")
    expect_error(tmp_path, "shard file\\(s\\) missing", read_hf_dir)
    (tmp_path / "moved.safetensors").rename(tmp_path / first)

    evil = {**index, "weight_map": {**index["weight_map"], "a.weight": "../../etc.safetensors"}}
    (tmp_path / INDEX_FILE).write_text(json.dumps(evil))
    expect_error(tmp_path, "bad shard file name", read_hf_dir)
    moved = {**index, "weight_map": {**index["weight_map"], "a.weight": first.replace("1-", "2-")}}
    (tmp_path / INDEX_FILE).write_text(json.dumps(moved))
    expect_error(tmp_path, "does not match", read_hf_dir)
    (tmp_path / INDEX_FILE).write_text(json.dumps({"weight_map": [1]}))
    expect_error(tmp_path, "no valid 'weight_map'", read_hf_dir)


# --- HF interoperability --------------------------------------------------------------------------


def tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return transformers, transformers.LlamaForCausalLM(config).eval()


def test_reads_hf_save_pretrained(tmp_path: Path) -> None:
    _, hf = tiny_llama()
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / INDEX_FILE).exists()
    config, state = read_hf_dir(tmp_path)
    assert config["model_type"] == "llama"
    assert_same(state, hf.state_dict())
    cfg, ours = load_hf_dir(tmp_path)
    assert cfg.n_layers == 2 and "embed.weight" in ours


def test_hf_loads_what_we_write(tmp_path: Path) -> None:
    transformers, hf = tiny_llama()
    write_hf_dir(tmp_path, hf.config.to_dict(), hf.state_dict(), max_shard_size="20KB")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 96, (1, 7))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, hf(ids).logits)


def test_save_and_load_our_model(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    cfg = Config(
        vocab_size=64,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=48,
        hf_model_type="llama",
    )
    model = Transformer(cfg)
    files = save_hf_dir(tmp_path, cfg, model.state_dict(), max_shard_size="10KB")
    assert len(files) > 3
    cfg2, state = load_hf_dir(tmp_path)
    assert cfg2.replace(name=cfg.name) == cfg
    assert_same(state, model.state_dict())
    from glassformer.loaders.resolve import load_model

    loaded = load_model(tmp_path)  # a directory path resolves to the HF loader
    ids = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model.eval()(ids))


def test_module_has_no_stray_temp_files(tmp_path: Path) -> None:
    write_hf_dir(tmp_path, {}, sample_state(), max_shard_size=600)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert sio.SINGLE_FILE == "model.safetensors"
