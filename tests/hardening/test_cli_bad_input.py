"""A generated corpus of bad inputs to the command line: each ends in exactly one ``error:``
line that names the file, field or option, exit code 2, and no traceback.

The corpus is built from a valid HF config.json (every size field made zero, negative, a
string, a float), from files that are not JSON objects (lists, scalars, invalid or deeply
nested JSON, binary, empty), from broken GGUF headers, and from option values outside their
ranges. The CLI runs in-process through `glassformer.cli.main`, the entry point the
`glassformer` script calls, so the one error handler is what is tested.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from glassformer.cli import main

VALID_LLAMA = {
    "model_type": "llama",
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
SIZE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def assert_one_line_error(code: int, err: str, *needles: str, expected_code: int = 2) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert code == expected_code, (code, lines[0])
    return lines[0]


# ---- the corpus -----------------------------------------------------------------------------
# Each entry: (name, writer of the bad file into a directory -> path, strings the message names)


def _config(**changes: object) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        path = tmp / "config.json"
        path.write_text(json.dumps(VALID_LLAMA | changes))
        return path

    return write


def _raw(text: str | bytes, name: str = "config.json") -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        path = tmp / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return write


def _gguf(blob: bytes) -> Callable[[Path], Path]:
    return _raw(blob, "model.gguf")


def _gguf_header(version: int, n_tensors: int, n_kv: int, rest: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + rest


CORPUS: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = []
for field in SIZE_FIELDS:
    for value in (0, -3):
        CORPUS.append((f"{field}={value}", _config(**{field: value}), (field,)))
    CORPUS.append((f"{field}=string", _config(**{field: "64"}), (field,)))
    CORPUS.append((f"{field}=float", _config(**{field: 64.5}), (field,)))
CORPUS += [
    ("heads do not divide kv heads", _config(num_key_value_heads=3), ("kv_heads",)),
    ("unknown model_type", _config(model_type="no-such-family"), ("no-such-family",)),
    ("model_type missing", _config(model_type=None), ("model_type",)),
    ("a JSON list", _raw("[1, 2, 3]"), ("list",)),
    ("a JSON string", _raw('"llama"'), ("str",)),
    ("a JSON number", _raw("42"), ("int",)),
    ("JSON null", _raw("null"), ()),
    ("invalid JSON", _raw('{"model_type": "llama",'), ()),
    ("empty file", _raw(""), ()),
    ("binary", _raw(bytes(range(256))), ()),
    ("deeply nested JSON", _raw("[" * 100_000 + "]" * 100_000), ()),
    ("deeply nested object", _raw('{"a":' * 50_000 + "1" + "}" * 50_000), ()),
    ("gguf: empty", _gguf(b""), ()),
    ("gguf: wrong magic", _gguf(b"GGML" + bytes(60)), ()),
    ("gguf: truncated header", _gguf(b"GGUF\x03\x00"), ()),
    ("gguf: unsupported version", _gguf(_gguf_header(99, 0, 0)), ()),
    ("gguf: absurd tensor count", _gguf(_gguf_header(3, 2**62, 0)), ()),
    ("gguf: absurd key count", _gguf(_gguf_header(3, 0, 2**62)), ()),
    (
        "gguf: key longer than the file",
        _gguf(_gguf_header(3, 0, 1, struct.pack("<Q", 2**40) + b"general.name")),
        (),
    ),
    ("gguf: no architecture", _gguf(_gguf_header(3, 0, 0)), ()),
]


@pytest.mark.parametrize("command", ["info", "explore"])
@pytest.mark.parametrize(("name", "write", "needles"), CORPUS, ids=[case[0] for case in CORPUS])
def test_bad_model_files(
    command: str,
    name: str,
    write: Callable[[Path], Path],
    needles: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path)
    code, out, err = run([command, str(path)], capsys)
    assert out == ""
    assert_one_line_error(code, err, path.name, *needles)


# Option values outside their ranges, and argument combinations the help rules out.
OPTIONS: list[tuple[list[str], tuple[str, ...]]] = [
    (["telemetry", "tiny", "--seq-len", "-4"], ("--seq-len",)),
    (["telemetry", "tiny", "--seq-len", "1"], ("--seq-len",)),
    (["telemetry", "tiny", "--sequences", "0"], ("--sequences",)),
    (["telemetry", "tiny", "--threads", "-1"], ("--threads",)),
    (["telemetry", "tiny", "--erank-threshold", "0"], ("--erank-threshold",)),
    (["telemetry", "tiny", "--moe", "max"], ("--moe",)),
    (["telemetry", "tiny", "--text", "no-such-file.txt"], ("--text", "no-such-file.txt")),
    (["compare", "tiny"], ("two or more",)),
    (["explore", "tiny", "--batch", "0"], ("--batch",)),
    (["explore", "tiny", "--seq", "-1"], ("--seq",)),
    (["explore", "tiny", "--mode", "sideways"], ("--mode", "sideways")),
    (["explore", "tiny", "--dtype", "fp7"], ("--dtype", "fp7")),
    (["explore", "tiny", "--hardware", "abacus"], ("abacus",)),
    (["explore", "tiny", "--attention", "linear"], ("--attention",)),
    (["explore", "tiny", "--mla", "sideways"], ("--mla",)),
    (["explore", "no-such-model"], ("no-such-model",)),
    (["info", "no-such-model"], ("no-such-model",)),
    (["info", "missing/config.json"], ("missing/config.json",)),
    (["explore", "missing.gguf"], ("missing.gguf",)),
    (["export", "smollm2-135m-instruct", "--hf", "out", "--dtype", "int3"], ("--dtype",)),
    (["info", "tiny", "--json", "true"], ("true",)),
    (["info"], ("model",)),
    (["info", "tiny", "--no-such-flag"], ("--no-such-flag",)),
    (["no-such-command"], ("no-such-command",)),
]


@pytest.mark.parametrize(("args", "needles"), OPTIONS, ids=[" ".join(a) for a, _ in OPTIONS])
def test_bad_options(
    args: list[str],
    needles: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(args, capsys)
    assert out == ""
    assert_one_line_error(code, err, *needles)


def test_unwritable_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--hf naming an existing file, a path under a file, an output under /proc: refused in
    one line before any weights are read."""
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    cases = [
        (["export", "smollm2-135m-instruct", "--hf", str(existing)], "exists"),
        (["export", "smollm2-135m-instruct", "--hf", str(existing / "sub")], "not a directory"),
        (["explore", "tiny", "--html", str(existing / "page.html")], "page.html"),
        (["explore", "tiny", "--html", "/proc/glassformer/page.html"], "/proc/glassformer"),
    ]
    for args, needle in cases:
        code, _, err = run(args, capsys)
        assert_one_line_error(code, err, needle)
    assert existing.read_text() == "keep me"


def test_internal_errors_are_one_line_with_exit_1_and_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import glassformer.explorer.costs as costs

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(costs, "parameter_counts", broken)
    code, _, err = run(["info", "tiny"], capsys)
    line = assert_one_line_error(code, err, "internal error", "ZeroDivisionError", expected_code=1)
    assert "--debug" in line
    code, _, err = run(["info", "tiny", "--debug"], capsys)
    assert code == 1
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: internal")
    monkeypatch.setenv("GLASSFORMER_DEBUG", "1")
    code, _, err = run(["info", "tiny"], capsys)
    assert "Traceback" in err


def test_a_file_that_breaks_a_parser_is_still_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error no parser foresaw, raised while reading the user's file, is reported as that
    file's fault (exit 2, the file named), not as a crash."""
    import glassformer.loaders.resolve as resolve_mod

    def unforeseen(path: object) -> None:
        raise AttributeError("'list' object has no attribute 'get'")

    monkeypatch.setattr(resolve_mod, "resolve_config", unforeseen)
    path = tmp_path / "config.json"
    path.write_text("{}")
    code, _, err = run(["info", str(path)], capsys)
    assert_one_line_error(code, err, "config.json", "AttributeError")


def test_good_input_still_works(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(VALID_LLAMA))
    code, out, err = run(["info", str(path), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["config"]["n_heads"] == 4
    code, out, _ = run(["compare", "tiny", "tiny-gpt2", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["models"]) == 2


@pytest.mark.parametrize(
    ("raised", "expected_code", "needle"),
    [
        (
            PermissionError(13, "Permission denied", "/out/model"),
            2,
            "/out/model: Permission denied",
        ),
        (OSError(30, "Read-only file system", "/ro/page.html"), 2, "/ro/page.html: Read-only"),
        (FileExistsError(17, "File exists", "out"), 2, "out: File exists"),
        (RecursionError("maximum recursion depth exceeded"), 2, "nested too deeply"),
        (MemoryError(), 2, "out of memory"),
        (ImportError("No module named 'matplotlib'"), 2, "matplotlib"),
        (RuntimeError("shape mismatch"), 1, "internal error: RuntimeError: shape mismatch"),
        (TypeError("unsupported operand"), 1, "internal error: TypeError"),
        (ZeroDivisionError("division by zero"), 1, "internal error: ZeroDivisionError"),
        (KeyError("blk.0.attn_q.weight"), 1, "internal error: KeyError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_every_exception_type_is_one_line(
    raised: BaseException,
    expected_code: int,
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever a command raises, the handler prints one line and picks the exit code."""
    import glassformer.explorer.costs as costs

    def fail(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(costs, "parameter_counts", fail)
    code, out, err = run(["info", "tiny"], capsys)
    assert out == ""
    assert_one_line_error(code, err, needle, expected_code=expected_code)


def test_ctrl_c_exits_130_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import glassformer.explorer.costs as costs

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(costs, "parameter_counts", interrupted)
    code, out, err = run(["info", "tiny"], capsys)
    assert code == 130
    assert out == "" and "Traceback" not in err


def test_suggestions_are_close_names_only(capsys: pytest.CaptureFixture[str]) -> None:
    """A name that resembles nothing gets no suggestion; a typo gets the names it resembles."""
    for args in (["info", "no-such-model"], ["generate", "hi", "-m", "no-such-model"]):
        code, _, err = run(args, capsys)
        line = assert_one_line_error(code, err, "no-such-model")
        assert "did you mean" not in line, line
    code, _, err = run(["info", "llama3-8b"], capsys)
    assert_one_line_error(code, err, "did you mean", "llama-3-8b")
    code, _, err = run(["explore", "tiny", "--hardware", "h10"], capsys)
    assert_one_line_error(code, err, "did you mean", "h100")
    code, _, err = run(["generate", "hi", "-m", "tiny"], capsys)
    assert_one_line_error(code, err, "'tiny' is a preset")


def test_compare_pages_stay_in_their_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compare --html` names each page after its model; a GGUF's general.name such as
    '../../escape/<b>x' becomes a plain file name next to the requested one."""
    import gguf

    from tests.explorer.test_explorer_cli import write_tiny_gguf

    add_name = gguf.GGUFWriter.add_name
    monkeypatch.setattr(
        gguf.GGUFWriter, "add_name", lambda self, _: add_name(self, "../../escape/<b>x")
    )
    model = tmp_path / "models" / "evil.gguf"
    model.parent.mkdir()
    write_tiny_gguf(model)
    out = tmp_path / "pages" / "deep"
    out.mkdir(parents=True)
    code, _, err = run(["compare", str(model), "tiny", "--html", str(out / "p.html")], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["p-escape-b-x.html", "p-tiny.html"]
    assert not (tmp_path / "escape").exists() and not (tmp_path / "pages" / "escape").exists()
    assert "<b>x" not in (out / "p-escape-b-x.html").read_text().split("</title>")[0]


def test_model_names_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GGUF's general.name with rich markup and terminal escape sequences prints as text."""
    import gguf

    from tests.explorer.test_explorer_cli import write_tiny_gguf

    name = "[/bold] [link=http://x]\x1b[31mred\x1b]0;title\x07"
    add_name = gguf.GGUFWriter.add_name
    monkeypatch.setattr(gguf.GGUFWriter, "add_name", lambda self, _: add_name(self, name))
    model = tmp_path / "evil.gguf"
    write_tiny_gguf(model)
    for args in (["info", str(model)], ["explore", str(model)], ["compare", str(model), "tiny"]):
        code, out, err = run(args, capsys)
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out
        assert "[/bold] [link=http://x]\\x1b[31mred" in out.replace("\n", " ")
    code, out, _ = run(["info", str(model), "--json"], capsys)
    assert json.loads(out)["config"]["name"] == name  # JSON keeps the name exactly
