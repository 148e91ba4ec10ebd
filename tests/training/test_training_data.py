"""Data preparation: shards + manifest from files, directories and JSONL; deterministic
windows; the default corpus is found at run time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glassformer.training.data import (
    TokenSplit,
    WindowSampler,
    default_corpus_files,
    iter_documents,
    load_manifest,
    prepare_data,
    token_dtype,
    tokenizer_sha256,
)


def _write_inputs(root: Path) -> list[str]:
    (root / "docs").mkdir()
    for i in range(12):
        (root / "docs" / f"d{i:02d}.txt").write_text(f"document number {i}\n" + "word " * (20 + i))
    rows = [{"text": f"json line {i} " + "abc " * i} for i in range(8)]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "single.md").write_text("# A heading\n\nSome *markdown* text.\n")
    return [str(root / "docs"), str(root / "rows.jsonl"), str(root / "single.md")]


def test_prepare_round_trips_every_document(tmp_path: Path, tiny_data: Path) -> None:
    from glassformer.tokenizer import load_tokenizer

    inputs = _write_inputs(tmp_path)
    out = tmp_path / "prepared"
    manifest = prepare_data(inputs, out, tiny_data / "tokenizer.json", val_fraction=0.2, seed=3)
    assert manifest == load_manifest(out)
    assert manifest["dtype"] == "uint16"
    assert manifest["tokenizer_sha256"] == tokenizer_sha256(tiny_data / "tokenizer.json")
    splits = manifest["splits"]
    assert splits["train"]["documents"] + splits["val"]["documents"] == 21 == manifest["documents"]
    assert splits["val"]["documents"] >= 1
    tok = load_tokenizer(out / "tokenizer.json")
    texts = []
    for split in ("train", "val"):
        ids = TokenSplit(out, split).read(0, splits[split]["tokens"])
        assert len(ids) == sum(s["tokens"] for s in splits[split]["shards"])
        docs = np.split(ids, np.flatnonzero(ids == tok.eos_id) + 1)
        texts += [tok.decode(d[:-1].tolist()) for d in docs if len(d)]
    expected = [d.text for d in iter_documents(inputs)]
    assert sorted(texts) == sorted(expected)


def test_small_shards_and_reads_across_boundaries(tmp_path: Path, tiny_data: Path) -> None:
    inputs = _write_inputs(tmp_path)
    one = prepare_data(inputs, tmp_path / "one", tiny_data, val_fraction=0.0)
    many = prepare_data(inputs, tmp_path / "many", tiny_data, val_fraction=0.0, shard_tokens=37)
    assert len(many["splits"]["train"]["shards"]) > 3
    a, b = TokenSplit(tmp_path / "one"), TokenSplit(tmp_path / "many")
    assert len(a) == len(b) == one["splits"]["train"]["tokens"]
    assert np.array_equal(a.read(0, len(a)), b.read(0, len(b)))
    assert np.array_equal(a.read(30, 120), b.read(30, 120))


def test_unfinished_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest"):
        TokenSplit(tmp_path)


def test_window_sampler_is_a_seeded_permutation(tiny_data: Path) -> None:
    split = TokenSplit(tiny_data, "train")
    s = WindowSampler(split, 32, seed=1)
    seen = [s.window(k) for k in range(s.n_windows)]
    assert sorted(seen) == list(range(s.n_windows))  # one epoch visits every window once
    again = WindowSampler(split, 32, seed=1)
    assert np.array_equal(s.batch(5, 3).numpy(), again.batch(5, 3).numpy())
    assert not np.array_equal(
        s.batch(0, 4).numpy(), WindowSampler(split, 32, seed=2).batch(0, 4).numpy()
    )
    rows = s.batch(0, 2)
    w = s.window(0)
    assert rows.shape == (2, 33)
    assert rows[0].tolist() == split.read(32 * w, 32 * w + 33).tolist()


def test_token_dtype_widens_for_big_vocabularies() -> None:
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_default_corpus_is_the_running_stdlib() -> None:
    import sysconfig

    files = default_corpus_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    assert len(files) > 100 and all(f.suffix == ".py" for f in files)
    assert root / "json" / "__init__.py" in files
    assert not any("site-packages" in f.parts or "test" in f.parts for f in files)
    first = next(iter_documents(["default"]))
    assert first.source.startswith("pydoc_data:")  # the bundled documentation text


def test_bad_jsonl_line_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        list(iter_documents([bad]))
