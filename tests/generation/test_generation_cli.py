"""The `generate` and `chat` commands, driven as a user would (chat through a pseudo-terminal)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from glassformer.loaders.resolve import ModelNotInstalledError, resolve

try:
    resolve("smollm2-135m-instruct")
except ModelNotInstalledError as err:  # pragma: no cover - the install script provides it
    pytest.skip(str(err), allow_module_level=True)

CLI = [sys.executable, "-m", "glassformer.cli"]


def test_generate_json_reports_tokens_and_speeds() -> None:
    out = subprocess.run(
        [*CLI, "generate", "--json", "-n", "6", "--chat", "What is the capital of France?"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(out.stdout)
    assert set(result) >= {
        "prompt_tokens",
        "tokens",
        "text",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
    }
    assert len(result["tokens"]) <= 6 and result["tokens"]
    assert "Paris" in result["text"]
    assert result["prompt_tokens"][0] == 1  # ChatML opens with <|im_start|> (id 1)


def test_generate_help_explains_itself() -> None:
    out = subprocess.run([*CLI, "generate", "--help"], capture_output=True, text=True, check=True)
    assert "--max-new-tokens" in out.stdout and "--json" in out.stdout


@pytest.mark.slow
def test_chat_two_turns_in_a_terminal() -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "glassformer.cli", "chat", "-n", "12"],
        encoding="utf-8",
        timeout=300,
    )
    child.expect(">>> ")
    child.sendline("What is the capital of France? Answer in one word.")
    child.expect("Paris")
    child.expect(">>> ")
    child.sendline("And what is the capital of Italy?")  # answered from the history
    child.expect(">>> ")
    assert "Rome" in child.before
    child.sendline("/reset")
    child.expect("history cleared")
    child.expect(">>> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_default_is_the_fast_path_and_plain_is_one_flag_away() -> None:
    """Without options `generate` runs the fused float32 path; `--plain` the plain model; both
    give the same greedy tokens, and `--threads` sets the count the run reports."""
    runs = {}
    for name, extra in [("default", []), ("plain", ["--plain", "--threads", "1"])]:
        out = subprocess.run(
            [*CLI, "generate", "--json", "-n", "8", "--ignore-eos", *extra, "The capital of"],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        runs[name] = json.loads(out.stdout)
    assert runs["default"]["quant"] == "none" and runs["plain"]["quant"] == "plain"
    assert runs["plain"]["threads"] == 1
    assert runs["default"]["tokens"] == runs["plain"]["tokens"]
    assert runs["default"]["context"] == 8192
