"""The README's set-up commands are the ones CI runs."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_setup_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].startswith("bash scripts/install.sh &&")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


@pytest.mark.slow
def test_readme_tour_runs() -> None:
    """The README's Python tour is real code: run it as written."""

    from glassformer.loaders.resolve import ModelNotInstalledError, resolve

    try:
        resolve("smollm2-135m-instruct")
    except ModelNotInstalledError as err:
        pytest.skip(str(err))
    text = (ROOT / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["big"].num_parameters() == 671_026_404_352
