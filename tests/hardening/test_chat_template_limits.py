"""Hostile chat templates end in one `ChatTemplateError` line that names the template's source.

Templates come from model files, so they are untrusted code. The resource-exhaustion cases run
in a child process under an address-space limit (1 GiB) and a CPU-time limit, so a regression
that allocates gigabytes or loops for hours fails this test instead of hanging or swapping CI.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glassformer.tokenizer import ChatTemplateError, render_chat_template
from glassformer.tokenizer.chat import TemplateLimits

SOURCE = "the chat template of evil.gguf"

# name: (template, what the message says: one part, or parts any of which may stop it first).
# Each would hang or take gigabytes unbounded.
EXHAUSTING = {
    "nested range loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        ("more than 1,000,000 loop iterations and calls", "rendering took longer than 1 s"),
    ),
    "string repeat": ("{{ 'A' * 2000000000 }}", "a repeated sequence (2,000,000,000)"),
    "list repeat": ("{% set n = 2000000000 %}{{ [0] * n }}", "a repeated sequence"),
    "doubling with ~": (
        "{% set ns = namespace(s='A') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "a string (4,194,304)",
    ),
    "doubling with +": (
        "{% set ns = namespace(s='A') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "a concatenation",
    ),
    "center filter": ("{{ 'x' | center(2000000000) }}", "an integer argument"),
    "ljust method": ("{{ 'x'.ljust(2000000000) }}", "an integer argument"),
    "printf width": ("{{ '%2000000000d' % 1 }}", "a format width"),
    "format filter width": ("{{ '%2000000000d' | format(1) }}", "a format width"),
    "str.format width": ("{{ '{:>2000000000}'.format(1) }}", "a format width"),
    "width from format args": ("{{ '{0:{1}}'.format('x', 2000000000) }}", "an integer argument"),
    "width from format kwargs": ("{{ '{:{w}}'.format('x', w=2000000000) }}", "an integer argument"),
    "printf star width": ("{{ '%*d' % (2000000000, 1) }}", "an integer argument"),
    "format filter star width": ("{{ '%*d' | format(2000000000, 1) }}", "an integer argument"),
    "replace blow-up": (
        "{% set s = 'A' * 100000 %}{{ s | replace('A', s) }}",
        "a replace() result",
    ),
    "integer power": ("{{ 10 ** (10 ** 10) }}", "an integer power"),
    "join with a long separator": (
        "{% set sep = 'S' * 1000000 %}{{ range(100000) | list | join(sep) }}",
        "a join() result",
    ),
    "str.join with a long separator": (
        "{% set sep = 'S' * 1000000 %}{{ sep.join(['a'] * 100000) }}",
        "a join() result",
    ),
    "quadratic list sum": (
        "{{ ([[0] * 40] * 100000) | sum(start=[]) }}",
        "|sum adds numbers only",
    ),
    "tojson indent": ("{{ messages | tojson(indent=3000000000) }}", "an integer argument"),
    "busy loop": (
        "{% for i in range(100000) %}{% set x = range(100000) | join %}{% endfor %}",
        "rendering took longer than 1 s",
    ),
    "output size": (
        "{% for i in range(100000) %}{{ 'B' * 1000 }}{% endfor %}",
        "the rendered prompt",
    ),
    "macro recursion": (
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "recursion too deep",
    ),
}

CHILD = textwrap.dedent(
    """
    import json, sys
    from glassformer.tokenizer.chat import ChatTemplateError, TemplateLimits, render_chat_template

    cases = json.loads(sys.stdin.read())
    out = {}
    for name, template in cases.items():
        try:
            render_chat_template(template, [{"role": "user", "content": "hi"}],
                                 template_source="the chat template of evil.gguf",
                                 template_limits=TemplateLimits(max_seconds=1.0))
            out[name] = None
        except ChatTemplateError as err:
            out[name] = str(err)
    print(json.dumps(out))
    """
)


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (30, 30))


def test_exhausting_templates_fail_fast_within_memory_and_time_limits() -> None:
    cases = {name: template for name, (template, _) in EXHAUSTING.items()}
    child = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    messages = json.loads(child.stdout)
    for name, (_, expected) in EXHAUSTING.items():
        message = messages[name]
        assert message is not None, f"{name}: rendered without error"
        assert message.startswith(SOURCE + ": "), message
        accepted = (expected,) if isinstance(expected, str) else expected
        assert any(e in message for e in accepted), f"{name}: {message}"
        assert "\n" not in message
        # a limit, not the memory limit of this test, stopped it
        assert "out of memory" not in message, name


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{% include 'other.jinja' %}", "line 1: {% include %} is not supported"),
        ("hi\n{% import 'macros' as m %}", "line 2: {% import %} is not supported"),
        ("{% from 'x' import y %}", "{% from ... import %} is not supported"),
        ("{% extends 'base' %}", "{% extends %} is not supported"),
        ("{% for %}", "line 1: Expected an expression"),
        ("{{ messages + 1 }}", "TypeError: can only concatenate list"),
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
        ("{{ undefined_function() }}", "'undefined_function' is undefined"),
        ("{{ raise_exception('two\nlines') }}", "two lines"),
        ("{{ messages.__class__ }}{{ ''.__class__.__mro__ }}", "unsafe"),
    ],
)
def test_template_failures_are_one_line_naming_the_source(template: str, expected: str) -> None:
    with pytest.raises(ChatTemplateError) as info:
        render_chat_template(template, [], template_source=SOURCE)
    message = str(info.value)
    assert message.startswith(SOURCE + ": ")
    assert expected in message
    assert "\n" not in message


def test_tokenizer_names_its_file_in_template_errors(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    from glassformer.tokenizer import Tokenizer

    hf = HFTokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    tok.chat_template = "{% include 'x' %}"
    with pytest.raises(ChatTemplateError, match=r"^the chat template of .*tokenizer\.json: line 1"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match=r"^the chat_template argument: "):
        tok.apply_chat_template([], chat_template="{{ 1 / 0 }}")


def test_limits_leave_ordinary_loops_alone() -> None:
    """Budgets count work, they do not change what a template writes."""
    template = (
        "{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m.content | upper }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}{{ '%05.1f' % 2.25 }}{{ 'ab' * 2 }}"
    )
    messages = [{"role": "user", "content": c} for c in ("a", "b", "c")]
    assert render_chat_template(template, messages) == "1/3:A, 2/3:B, 3/3:C002.2abab"
    # large numbers as data (a timestamp through a macro, a default) are not widths
    dated = (
        "{% macro day(ts) %}{{ ts // 86400 }}{% endmacro %}{{ day(messages[0].ts) }} "
        "{{ missing | default(1700000000) }} {{ '%d' % 1700000000 }} "
        "{{ '{}'.format(1700000000) }} {{ '%d' | format(1700000000) }}"
    )
    assert render_chat_template(dated, [{"role": "user", "ts": 1_700_000_000}]) == (
        "19675 1700000000 1700000000 1700000000 1700000000"
    )
    tight = TemplateLimits(max_chars=10)
    with pytest.raises(ChatTemplateError, match="rendered prompt"):
        render_chat_template("{{ 'x' }}" * 11, [], template_limits=tight)
