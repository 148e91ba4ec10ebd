"""`glassformer telemetry`'s terminal output: a table that fits 80 columns, numbers that keep
three significant digits, and progress lines when stderr is not a terminal."""

from __future__ import annotations

import math

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from glassformer.cli import app
from glassformer.cli.telemetry import _fmt


@pytest.mark.parametrize(
    "value",
    [0.0, 1.0, -1.0, 0.0123, 0.999, 1.06, 12.34, 999.4, 1234.5, -9876.0, 1.06e4, 3.3e-3,
     -4.56e-7, 2.5e12, 7.77e-30],
)  # fmt: skip
def test_numbers_fit_six_characters_and_a_sign_below_two_digit_exponents(value: float) -> None:
    text = _fmt(value)
    assert len(text.lstrip("-")) <= (6 if 1e-9 < abs(value) < 1e10 else 7), text
    # what is printed reads back as the value to its 2-3 significant digits
    assert math.isclose(float(text), value, rel_tol=0.05, abs_tol=0.0), text


def test_non_numbers() -> None:
    assert [_fmt(None), _fmt(True), _fmt(False), _fmt(3), _fmt(math.inf)] == [
        "-", "yes", "no", "3", "inf",
    ]  # fmt: skip


def test_table_fits_80_columns_with_progress_lines() -> None:
    result = CliRunner().invoke(
        app, ["telemetry", "tiny", "--sequences", "2", "--seq-len", "16"], terminal_width=80
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("data erank" in line for line in lines)  # the data columns are there
    assert all(cell_len(line) <= 80 for line in lines), max(lines, key=cell_len)
    assert "…" not in result.stdout  # nothing truncated
    # stderr is not a terminal here: each stage reports its start and its end as lines
    for stage, total in [("weight-only (1:1 rule)", 4), ("forward passes (data)", 2),
                         ("weightwatcher metrics", 4)]:  # fmt: skip
        assert f"telemetry: {stage}: 0/{total}" in result.stderr
        assert f"telemetry: {stage}: {total}/{total}" in result.stderr
