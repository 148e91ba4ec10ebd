"""The README's command table and the command line agree: every command the CLI has is in the
table, every command in the table exists and has `--help` and `--json`, and flags are not
shown as taking a value. `chat --json` prints one JSON object per turn, and a broken chat
template ends `generate --chat` in one error line, as the README and docs/security.md say."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest

from glassformer.cli import app, main

ROOT = Path(__file__).resolve().parents[2]


def _cli_commands() -> set[str]:
    names = {info.name or info.callback.__name__ for info in app.registered_commands}
    for group in app.registered_groups:
        for info in group.typer_instance.registered_commands:
            names.add(f"{group.name} {info.name}")
    return names


def _readme_commands() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("| command | what it does |", 1)[1].split("\n\n", 1)[0]
    found = set()
    for cell in re.findall(r"^\| `glassformer ([^`]*)`(?:, `glassformer ([^`]*)`)?", table, re.M):
        for command in cell:
            words = [w for w in command.split() if re.fullmatch(r"[a-z][a-z-]*", w)]
            if words:
                two = " ".join(words[:2])
                found.add(two if two in _cli_commands() else words[0])
    return found


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*command.split(), "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_readme_table_lists_every_command() -> None:
    assert _readme_commands() == _cli_commands()


def test_every_command_has_help_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    for command in sorted(_cli_commands()):
        text = _help(command, capsys)
        assert "--json" in text, command
        assert "<bool>" not in text, command  # a flag takes no value


def _tokenizer_with_template(directory: Path) -> Path:
    """Make `directory` (a randomly initialised `tiny` export) chat-ready: a byte-level BPE
    tokenizer and a ChatML template, so that `chat` loads it in a fraction of a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["what is two plus two"] * 4, trainer)
    tok.save(str(directory / "tokenizer.json"))
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = {"chat_template": template, "eos_token": "<|im_end|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-chat")
    with pytest.raises(SystemExit) as exited:
        main(["export", "tiny", "--hf", str(directory), "--json"])
    assert exited.value.code == 0
    return _tokenizer_with_template(directory)


def test_chat_json_prints_one_object_per_turn(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_chat: Path
) -> None:
    model = tiny_chat
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n/reset\nWhat is 2+2?\n"))
    with pytest.raises(SystemExit) as exited:
        main(["chat", "--model", str(model), "--json", "-n", "3"])
    assert exited.value.code == 0
    captured = capsys.readouterr()
    turns = [json.loads(line) for line in captured.out.splitlines()]
    assert [t["user"] for t in turns] == ["Hi", "What is 2+2?"]
    for turn in turns:
        assert 1 <= len(turn["tokens"]) <= 3
        assert turn["finish_reason"] in ("length", "eos", "stop")
        assert isinstance(turn["text"], str)
    # the second turn's prompt holds only its own question: /reset cleared the first
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    second = tok.decode(turns[1]["prompt_tokens"], skip_special_tokens=False)
    assert second == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert "(history cleared)" in captured.err


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{% include 'other' %}", "{% include %} is not supported"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "loop iterations",
        ),
        ("{{ 'A' * 2000000000 }}", "a repeated sequence"),
        ("{{ messages[0].content / 0 }}", "TypeError"),
    ],
    ids=["include", "nested loops", "huge string", "type error"],
)
def test_broken_chat_templates_end_the_cli_in_one_line(
    template: str,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_chat: Path,
) -> None:
    model = Path(shutil.copytree(tiny_chat, tmp_path / "broken"))
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": template}))
    with pytest.raises(SystemExit) as exited:
        main(["generate", "--chat", "hi", "--model", str(model), "-n", "1"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert exited.value.code == 2 and "Traceback" not in err
    assert len(lines) == 1 and needle in lines[0], err
    assert "the chat template of" in lines[0]
