"""`glassformer serve`'s own checks, before any model loads: an address in use is one error
line and exit code 2; the served id of a file is its name without .gguf."""

from __future__ import annotations

import socket

import pytest

from glassformer.cli import main
from glassformer.cli.serve import served_name


def test_address_in_use_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["serve", "no-such-model", "--port", str(port)])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and f"127.0.0.1:{port}" in err[0]


def test_served_name(tmp_path) -> None:
    model = tmp_path / "SmolLM2-135M.Q4_1.gguf"
    model.write_bytes(b"")
    assert served_name(str(model)) == "SmolLM2-135M.Q4_1"
    assert served_name("smollm2-135m-instruct") == "smollm2-135m-instruct"
