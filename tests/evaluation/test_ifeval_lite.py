"""ifeval-lite: every checker on answers that follow and answers that break its instruction
(property-based where the property is simple to state), the loose variants, the scores, and
the prompt splits."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.evaluation.ifeval_lite import (
    CONSTRAINTS,
    TOPICS,
    check,
    loose_variants,
    make_prompts,
    score_responses,
)


def ok(cid: str, text: str, **kw) -> bool:
    return check({"id": cid, "kwargs": kw}, text)


def loose(cid: str, text: str, **kw) -> bool:
    return check({"id": cid, "kwargs": kw}, text, loose=True)


PASS_FAIL = [
    ("lowercase", {}, "the sea is calm tonight.", "The sea is calm tonight."),
    ("uppercase", {}, "THE SEA IS CALM.", "THE SEA is CALM."),
    ("include_keyword", {"keyword": "water"}, "Water is life.", "Waterfalls are loud."),
    ("exclude_keyword", {"keyword": "the"}, "Theory and thermal ideas.", "Into the sea."),
    ("max_words", {"n": 5}, "One two three four five.", "One two three four five six."),
    ("bullets", {"n": 2}, "Intro\n* one\n* two", "* one\n* two\n- three"),
    ("bullets", {"n": 1}, "- only", "**bold** is not a bullet"),
    ("end_phrase", {"phrase": "That is all."}, "Done here. That is all.", "That is all. Bye."),
    ("start_word", {"word": "Yes"}, "Yes, of course.", "Yesterday it rained."),
    ("json_keys", {"keys": ["a", "b"]}, '```json\n{"a": "1", "b": "2"}\n```', '{"a": "1"}'),
    ("json_keys", {"keys": ["a", "b"]}, '{"b": 1, "a": 2}', '{"a": 1, "b": 2, "c": 3}'),
    ("no_commas", {}, "No commas here.", "One, two."),
    ("quotation", {}, '"All quoted."', '"Half quoted.'),
    ("title", {}, "<<The Sea>>\nWaves.", "<The Sea>\nWaves."),
    ("postscript", {}, "Hello.\nP.S. see you", "Hello. PS see you"),
]


@pytest.mark.parametrize(("cid", "kw", "good", "bad"), PASS_FAIL)
def test_checker_passes_and_fails(cid: str, kw: dict, good: str, bad: str) -> None:
    assert ok(cid, good, **kw)
    assert not ok(cid, bad, **kw)


def test_every_constraint_has_examples() -> None:
    assert {row[0] for row in PASS_FAIL} == set(CONSTRAINTS)


def test_empty_answer_follows_nothing() -> None:
    for cid, kw, *_ in PASS_FAIL:
        assert not ok(cid, "", **kw) and not ok(cid, "   \n", **kw)


words = st.lists(st.text(string.ascii_letters, min_size=1, max_size=8), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(words, st.integers(1, 40))
def test_max_words_counts_words(ws: list[str], n: int) -> None:
    assert ok("max_words", " ".join(ws), n=n) == (len(ws) <= n)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_case_checkers_agree_with_str_methods(text: str) -> None:
    has_letter = any(c.isalpha() for c in text)
    assert ok("lowercase", text) == (has_letter and text == text.lower())
    assert ok("lowercase", text.lower()) == any(c.isalpha() for c in text.lower())
    assert ok("no_commas", text) == (bool(text.strip()) and "," not in text)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(string.ascii_letters + " ", min_size=1, max_size=20), max_size=6),
       st.integers(0, 6))  # fmt: skip
def test_bullets_counts_the_bullet_lines(items: list[str], n: int) -> None:
    text = "Here you go:\n" + "\n".join(f"* {x.strip() or 'x'}" for x in items)
    assert ok("bullets", text, n=n) == (len(items) == n)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.text(max_size=10), min_size=1))
def test_json_keys_is_set_equality(obj: dict) -> None:
    assert ok("json_keys", json.dumps(obj), keys=["a", "b"]) == (set(obj) == {"a", "b"})


def test_loose_forgives_a_preamble_and_markdown() -> None:
    answer = "Sure! Here is my answer:\n**the sea is calm**"
    assert not ok("lowercase", answer) and loose("lowercase", answer)
    assert loose("start_word", "Okay.\nYes indeed", word="Yes")
    assert not loose("lowercase", "Sure!\nThe Sea\nIs Calm")
    assert len(loose_variants("a\nb\nc")) == 8


def test_scores_are_prompt_and_instruction_level() -> None:
    items = [
        {"id": "p0", "prompt": "", "constraints": [{"id": "lowercase", "kwargs": {}},
                                                   {"id": "no_commas", "kwargs": {}}]},
        {"id": "p1", "prompt": "", "constraints": [{"id": "lowercase", "kwargs": {}}]},
    ]  # fmt: skip
    result = score_responses(items, ["all lowercase, with a comma", "Hello\nthere"])
    assert result["strict_accuracy"] == 0.0  # p0 breaks no_commas, p1 is not lowercase
    assert result["loose_accuracy"] == 0.5  # p1 passes once its first line is dropped
    assert result["instruction_strict_accuracy"] == pytest.approx(1 / 3)
    assert result["per_constraint"]["lowercase"] == {
        "n": 2, "strict_accuracy": 0.5, "loose_accuracy": 1.0
    }  # fmt: skip
    with pytest.raises(ValueError, match="2 prompts but 1"):
        score_responses(items, ["x"])


def test_splits_are_disjoint_deterministic_and_balanced() -> None:
    ev, tr = make_prompts("eval", 120), make_prompts("train", 200)
    assert make_prompts("eval", 120) == ev
    assert not set(TOPICS["eval"]) & set(TOPICS["train"])
    assert not {p["prompt"] for p in ev} & {p["prompt"] for p in tr}
    for item in tr:  # no training prompt mentions an evaluation topic
        assert not any(t in item["prompt"] for t in TOPICS["eval"])
    counts = {c: sum(p["constraints"][0]["id"] == c for p in ev) for c in CONSTRAINTS}
    assert max(counts.values()) - min(counts.values()) <= 1
    for item in ev:  # instructions of a prompt never contradict each other
        ids = [c["id"] for c in item["constraints"]]
        assert len(set(ids)) == len(ids)
        if len(ids) == 2:
            assert ids[1] not in CONSTRAINTS[ids[0]].conflicts
    with pytest.raises(ValueError, match="split"):
        make_prompts("test")
