"""The README's command table and the command line agree: every command the CLI has is in the
table, every command in the table exists and has `--help` and `--json`, and flags are not
shown as taking a value."""

from __future__ import annotations

import io
import json
import re
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
            words = [w for w in command.split() if re.fullmatch(r"[a-z]+", w)]
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


@pytest.mark.slow  # loads the real SmolLM2 (about 10 s on 2 busy cores)
def test_chat_json_prints_one_object_per_turn(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from glassformer.loaders.resolve import ModelNotInstalledError, resolve

    try:
        resolve("smollm2-135m-instruct")
    except ModelNotInstalledError as err:
        pytest.skip(str(err))
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n/reset\nWhat is 2+2?\n"))
    with pytest.raises(SystemExit) as exited:
        main(["chat", "--json", "-n", "3"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    turns = [json.loads(line) for line in out.splitlines()]
    assert [t["user"] for t in turns] == ["Hi", "What is 2+2?"]
    for turn in turns:
        assert 1 <= len(turn["tokens"]) <= 3
        assert turn["finish_reason"] in ("length", "eos", "stop")
        assert isinstance(turn["text"], str)
