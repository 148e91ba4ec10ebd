"""`glassformer eval ...` and `glassformer data preferences` on a tiny random chat model:
help, JSON output, agreement with the library functions, bad input, and the whole
preference pipeline (self-generated pairs -> DPO -> evaluation) in miniature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glassformer.cli import app
from glassformer.evaluation.ifeval_lite import make_prompts
from glassformer.evaluation.preferences import label_pairs
from tests.training.tiny_chat_model import tiny_chat_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_model(tmp_path_factory.mktemp("tiny_chat"))


def _run(args: str, code: int = 0) -> str:
    result = runner.invoke(app, [*args.split(), "--threads", "1"])
    assert result.exit_code == code, result.output
    return result.stdout


@pytest.mark.parametrize(
    "cmd", ["eval ifeval-lite", "eval perplexity", "eval multiple-choice", "data preferences"]
)
def test_help(cmd: str) -> None:
    result = runner.invoke(app, [*cmd.split(), "--help"])
    assert result.exit_code == 0 and "--json" in result.output and "Usage" in result.output


def test_ifeval_lite_json(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.json"
    summary = json.loads(_run(f"eval ifeval-lite --model {model_dir} --limit 5 "
                              f"--max-new-tokens 6 --json --no-progress --out {out}"))  # fmt: skip
    assert summary["prompts"] == 5 and 0 <= summary["strict_accuracy"] <= 1
    assert summary["loose_accuracy"] >= summary["strict_accuracy"]
    firsts = {it["constraints"][0]["id"] for it in make_prompts("eval")[:5]}
    assert firsts <= set(summary["per_constraint"])
    saved = json.loads(out.read_text())
    assert [r["id"] for r in saved["results"]] == [it["id"] for it in make_prompts("eval")[:5]]


def test_perplexity_and_multiple_choice(model_dir: Path, tmp_path: Path) -> None:
    from glassformer.evaluation.loglik import multiple_choice, perplexity
    from glassformer.generation import load

    text = tmp_path / "held_out.txt"
    text.write_text("the sea is blue and the sky is wide.\n" * 4)
    got = json.loads(_run(f"eval perplexity --model {model_dir} --data {text} --json "
                          "--no-progress --max-len 16"))  # fmt: skip
    model, tok = load(str(model_dir))
    want = perplexity(model, tok, [text.read_text()], max_len=16)
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-6)
    assert got["tokens"] == want["tokens"] and got["perplexity"] > 1

    rows = [{"query": "The sea is", "choices": ["blue", "wide", "a"], "gold": 0}] * 2
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = json.loads(_run(f"eval multiple-choice --model {model_dir} --data {mc} --json "
                          "--no-progress"))  # fmt: skip
    want = multiple_choice(model, tok, rows)
    assert got["acc"] == want["acc"] and got["acc_norm"] == want["acc_norm"]
    assert got["items"] == 2 and len(got["results"][0]["loglikelihoods"]) == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "q", "choices": ["a"], "gold": 0}', "2: 'choices' must list"),
        ('{"query": "q", "choices": ["a", "b"], "gold": 2}', "2: 'gold' must index"),
        ("nope", "2: not valid JSON"),
    ],
)
def test_multiple_choice_bad_rows(model_dir: Path, tmp_path: Path, line: str, message: str):
    mc = tmp_path / "mc.jsonl"
    good = json.dumps({"query": "q", "choices": ["a", "b"], "gold": 1})
    mc.write_text(good + "\n" + line + "\n")
    result = runner.invoke(app, ["eval", "multiple-choice", "--model", str(model_dir),
                                 "--data", str(mc)])  # fmt: skip
    assert result.exit_code == 2 and f"mc.jsonl:{message}" in result.output


def test_label_pairs_prefers_the_checked_answer() -> None:
    both = [{"id": "lowercase", "kwargs": {}}, {"id": "no_commas", "kwargs": {}}]
    item = {"id": "t", "prompt": "p", "constraints": both}
    rows = label_pairs(item, ["All, Wrong", "all right", "half, right", "all right"])
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("all right", "All, Wrong")
    ]
    assert rows[0]["chosen_score"] == 1.0 and rows[0]["rejected_score"] == 0.0
    assert label_pairs(item, ["Same, score", "Also, same"]) == []  # no preference to learn


def test_preferences_then_dpo_then_eval(model_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    counts = json.loads(_run(f"data preferences --model {model_dir} --prompts 8 --samples 4 "
                             f"--max-new-tokens 8 --out {pairs} --json --no-progress"))  # fmt: skip
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    assert counts["pairs"] == len(rows) > 0 and counts["samples"] == 32
    assert counts["prompts_without_pair"] + len({r["prompt_id"] for r in rows}) == 8
    train_ids = {it["id"] for it in make_prompts("train", 8)}
    assert all(r["chosen_score"] > r["rejected_score"] and r["prompt_id"] in train_ids
               for r in rows)  # fmt: skip
    run = tmp_path / "dpo"
    args = f"--out {run} --max-steps 2 --batch-size 2 --json --no-progress"
    summary = json.loads(_run(f"train --task dpo --model {model_dir} --data {pairs} {args}"))
    assert summary["status"] == "completed" and summary["data"]["pairs"] == len(rows)
    after = json.loads(_run(f"eval ifeval-lite --model {run / 'merged'} --limit 2 "
                            "--max-new-tokens 4 --json --no-progress"))  # fmt: skip
    assert after["prompts"] == 2
