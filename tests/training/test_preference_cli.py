"""Preference tuning from the command line on a tiny random chat model: the run, its curves,
its exports, and what bad preference files produce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glassformer.cli import app
from glassformer.training.preference import PreferenceTask, load_preference_jsonl

from .tiny_chat_model import tiny_chat_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_model(tmp_path_factory.mktemp("tiny_chat"))


def _chat_rows(n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Write about the sea {i}. Use lowercase only."}]
        rows.append({
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": f"the sea is blue {i}"}],
            "rejected": [{"role": "assistant", "content": f"The Sea Is Blue {i}"}],
        })  # fmt: skip
    return rows


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _train(tmp_path: Path, model_dir: Path, task: str, lr: float, lora_rank: int) -> dict:
    """`glassformer train --task TASK`, 6 steps on `_chat_rows()` into tmp_path/run: the summary."""
    data = _write(tmp_path / "pairs.jsonl", _chat_rows())
    args = (
        f"train --task {task} --model {model_dir} --data {data} --out {tmp_path / 'run'} "
        f"--max-steps 6 --batch-size 2 --lr {lr} --no-progress --json --lora-rank {lora_rank}"
    )
    result = runner.invoke(app, args.split())
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("task", ["dpo", "simpo"])
def test_train_task_preference_runs_and_learns(tmp_path: Path, model_dir: Path, task: str) -> None:
    summary = _train(tmp_path, model_dir, task, lr=0.02, lora_rank=4)
    out = tmp_path / "run"
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert summary["data"]["pairs"] == 6 and summary["data"]["skipped_identical"] == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "reward_margin" in r]
    assert len(train) == 6
    # pairs differ only in case: the policy learns to prefer the lowercase answers
    assert train[-1]["reward_margin"] > train[0]["reward_margin"]
    assert Path(summary["plot"]).is_file() and (out / "adapter").is_dir()
    assert (out / "merged" / "model.safetensors").is_file()
    assert (out / "reference_logps.pt").is_file() == (task == "dpo")


def test_dpo_full_fine_tuning_trains_every_parameter(tmp_path: Path, model_dir: Path) -> None:
    """--lora-rank 0: DPO updates the whole model (no adapter) and still learns the preference."""
    summary = _train(tmp_path, model_dir, "dpo", lr=0.002, lora_rank=0)
    out = tmp_path / "run"
    assert summary["status"] == "completed"
    assert summary["trainable_params"] == summary["params"]
    assert summary["val_reward_margin"] > 0 and summary["val_loss"] < summary["start_val_loss"]
    assert not (out / "adapter").exists() and (out / "merged" / "model.safetensors").is_file()
    # exp of a DPO loss is no perplexity: neither the summary nor the step log report one
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in records)
    assert "val_ppl" not in summary and not any("val_ppl" in r for r in records)


def test_plain_text_pairs_get_eos(model_dir: Path) -> None:
    from glassformer.tokenizer import load_tokenizer

    tok = load_tokenizer(model_dir)
    rows = [{"prompt": "the sea is", "chosen": " blue", "rejected": " Blue"}]
    pairs, _ = load_preference_jsonl(_write(model_dir.parent / "plain.jsonl", rows))
    task = PreferenceTask(tok, pairs, "orpo", val_fraction=0.0)
    prompt, chosen, *_ = task.train[0]
    assert prompt == tok.encode("the sea is")
    assert chosen == [*tok.encode(" blue", add_special_tokens=False), tok.eos_id]
    batch = task.batch(0, 1)
    n = len(prompt) + len(chosen) - 1
    assert batch["labels"][0, : len(prompt) - 1].eq(-100).all()
    assert batch["labels"][0, len(prompt) - 1 : n].tolist() == chosen


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "2: not valid JSON"),
        ('{"prompt": "a", "chosen": "b"}', "2: missing 'rejected'"),
        ('{"prompt": "a", "chosen": "  ", "rejected": "c"}', "2: 'chosen' is empty"),
        ('{"prompt": "a", "chosen": "b", "rejected": ""}', "2: 'rejected' is empty"),
        ('{"prompt": [{"role": "user"}], "chosen": "b", "rejected": "c"}', "2: 'prompt' messages"),
        ('{"prompt": "a", "chosen": [{"content": "b"}], "rejected": "c"}', "2: 'chosen' must be"),
        ("[1, 2]", "2: expected an object"),
    ],
)
def test_bad_rows_name_their_line(tmp_path: Path, model_dir: Path, line: str, message: str):
    good = json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"})
    data = _write(tmp_path / "bad.jsonl", [good, line])
    args = f"finetune {model_dir} --task dpo --data {data} --out {tmp_path / 'r'} --no-progress"
    result = runner.invoke(app, args.split())
    assert result.exit_code == 2
    assert f"bad.jsonl:{message}" in result.output


def test_identical_and_too_long_pairs_are_counted(tmp_path: Path, model_dir: Path) -> None:
    from glassformer.tokenizer import load_tokenizer

    rows = [
        *_chat_rows(3),
        {"prompt": "x", "chosen": "same", "rejected": "same"},
        {"prompt": "x " * 200, "chosen": "a", "rejected": "b"},
        {"prompt": "x", "chosen": "a " * 200, "rejected": "b"},
    ]
    rows[3:] = [dict(r, prompt=[{"role": "user", "content": r["prompt"]}]) for r in rows[3:]]
    pairs, stats = load_preference_jsonl(_write(tmp_path / "p.jsonl", rows))
    assert stats == {"rows": 6, "skipped_identical": 1} and len(pairs) == 5
    task = PreferenceTask(load_tokenizer(model_dir), pairs, "dpo", max_len=64, val_fraction=0)
    assert task.stats == {"pairs": 4, "skipped_prompt_too_long": 1, "truncated": 1}
    assert max(len(p) + len(c) for p, c, *_ in task.train) == 64


def test_unknown_task_is_refused(tmp_path: Path, model_dir: Path) -> None:
    data = _write(tmp_path / "p.jsonl", _chat_rows(2))
    result = runner.invoke(app, ["finetune", str(model_dir), "--task", "kto", "--data", str(data)])
    assert result.exit_code == 2 and "--task" in result.output


def test_help_mentions_preference_tasks() -> None:
    for cmd in (["train", "--help"], ["finetune", "--help"]):
        result = runner.invoke(app, cmd)
        assert result.exit_code == 0 and "dpo" in result.output
