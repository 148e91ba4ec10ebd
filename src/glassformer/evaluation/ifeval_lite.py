"""ifeval-lite: verifiable instruction following, offline, with no judge model.

In the spirit of IFEval (Zhou et al. 2023, "Instruction-Following Evaluation for Large
Language Models"): each prompt is a small writing task plus one or two instructions whose
compliance a program can decide -- answer in lowercase, include a keyword, at most N words,
exactly N bullet points, a JSON object with given keys, end with a given phrase, ... A
checker per instruction returns True or False for a response; nothing is judged by a model.

    instruction-level accuracy = followed instructions / instructions
    prompt-level accuracy      = prompts whose every instruction is followed / prompts

`strict` applies each checker to the response as it is; `loose` (IFEval's loosened
evaluation) accepts an instruction when any of eight variants of the response passes: the
response, without its first line, without its last line, without both, and each of these
with the markdown emphasis characters '*' removed -- so a preamble ("Sure! Here is ...") or
a closing remark does not fail an otherwise compliant answer. `strict_accuracy` and
`loose_accuracy` are prompt-level, as IFEval reports first.

Prompts come from a seeded generator: a task template ("Write a short poem about {topic}.")
crossed with topics and instruction parameters. The evaluation and training splits use
disjoint topic lists, so a model tuned on training prompts is measured on prompts it never
saw (`make_prompts("eval")` vs `make_prompts("train")`).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONSTRAINTS",
    "Constraint",
    "check",
    "loose_variants",
    "make_prompts",
    "score_responses",
]


@dataclass(frozen=True)
class Constraint:
    """One verifiable instruction: its text for given parameters, its checker, and a
    sampler of parameters."""

    id: str
    text: Callable[[Mapping[str, Any]], str]
    check: Callable[[str, Mapping[str, Any]], bool]
    sample: Callable[[random.Random], dict[str, Any]]
    conflicts: frozenset[str] = frozenset()


# --- checkers -------------------------------------------------------------------------------------
def _has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def check_lowercase(text: str, kw: Mapping[str, Any]) -> bool:
    return _has_letters(text) and text == text.lower()


def check_uppercase(text: str, kw: Mapping[str, Any]) -> bool:
    return _has_letters(text) and text == text.upper()


def _word_re(word: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)


def check_include_keyword(text: str, kw: Mapping[str, Any]) -> bool:
    return _word_re(kw["keyword"]).search(text) is not None


def check_exclude_keyword(text: str, kw: Mapping[str, Any]) -> bool:
    return _word_re(kw["keyword"]).search(text) is None


def _words(text: str) -> list[str]:
    # Words as runs of letters, digits or apostrophes (IFEval counts with a tokenizer that
    # also ignores punctuation).
    return re.findall(r"[\w']+", text)


def check_max_words(text: str, kw: Mapping[str, Any]) -> bool:
    return 0 < len(_words(text)) <= kw["n"]


# IFEval's bullet patterns: a line starting "* " (not "**") or "- ".
_BULLET = re.compile(r"^\s*(?:\*[^\*]|-\s).*$", re.MULTILINE)


def check_bullets(text: str, kw: Mapping[str, Any]) -> bool:
    return len(_BULLET.findall(text)) == kw["n"]


def check_end_phrase(text: str, kw: Mapping[str, Any]) -> bool:
    return text.strip().strip('"').lower().endswith(kw["phrase"].strip().lower())


def check_start_word(text: str, kw: Mapping[str, Any]) -> bool:
    words = _words(text)
    return bool(words) and words[0].lower() == kw["word"].lower()


_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n?(.*?)\n?```$", re.DOTALL)


def check_json_keys(text: str, kw: Mapping[str, Any]) -> bool:
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:  # IFEval accepts the object inside a markdown code block
        body = fenced.group(1).strip()
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    return isinstance(obj, dict) and set(obj) == set(kw["keys"])


def check_no_commas(text: str, kw: Mapping[str, Any]) -> bool:
    return bool(text.strip()) and "," not in text


def check_quotation(text: str, kw: Mapping[str, Any]) -> bool:
    body = text.strip()
    return len(body) > 1 and body[0] == '"' and body[-1] == '"'


def check_title(text: str, kw: Mapping[str, Any]) -> bool:
    return re.search(r"<<[^\n]+>>", text) is not None


def check_postscript(text: str, kw: Mapping[str, Any]) -> bool:
    return re.search(r"\s*p\.\s?s\..*$", text.lower(), re.MULTILINE) is not None


# --- the instruction set --------------------------------------------------------------------------
KEYWORDS = ("water", "light", "friend", "morning", "simple", "green", "future", "music",
            "history", "smile", "journey", "energy")  # fmt: skip
END_PHRASES = ("Is there anything else I can help with?", "That is all.", "Thank you.",
               "Have a nice day.")  # fmt: skip
START_WORDS = ("Yes", "Today", "Imagine", "Sure", "First")
JSON_KEYS = (("title", "summary"), ("name", "reason"), ("answer", "confidence"),
             ("topic", "points"))  # fmt: skip

_CASE = frozenset({"lowercase", "uppercase"})
_SHAPE = frozenset({"json_keys", "bullets", "quotation", "title", "postscript", "end_phrase",
                    "start_word"})  # fmt: skip

CONSTRAINTS: dict[str, Constraint] = {
    c.id: c
    for c in [
        Constraint(
            "lowercase",
            lambda kw: "Your entire response must be in lowercase letters; no capital letters "
            "are allowed.",
            check_lowercase, lambda r: {}, _CASE,
        ),
        Constraint(
            "uppercase",
            lambda kw: "Your entire response must be in English and in capital letters only.",
            check_uppercase, lambda r: {}, _CASE | {"json_keys"},
        ),
        Constraint(
            "include_keyword",
            lambda kw: f"Include the word \"{kw['keyword']}\" in your response.",
            check_include_keyword, lambda r: {"keyword": r.choice(KEYWORDS)},
            frozenset({"exclude_keyword", "json_keys"}),
        ),
        Constraint(
            "exclude_keyword",
            lambda kw: f"Do not use the word \"{kw['keyword']}\" anywhere in your response.",
            check_exclude_keyword, lambda r: {"keyword": r.choice(("the", "and", "is", "a"))},
            frozenset({"include_keyword"}),
        ),
        Constraint(
            "max_words",
            lambda kw: f"Answer in at most {kw['n']} words.",
            check_max_words, lambda r: {"n": r.choice((10, 15, 20, 30))},
            frozenset({"bullets", "json_keys"}),
        ),
        Constraint(
            "bullets",
            lambda kw: f"Your answer must contain exactly {kw['n']} bullet points. Use markdown "
            "bullet points such as:\n* This is a point.",
            check_bullets, lambda r: {"n": r.choice((2, 3, 4))}, _SHAPE | {"max_words"},
        ),
        Constraint(
            "end_phrase",
            lambda kw: f"Finish your response with this exact phrase: \"{kw['phrase']}\". No "
            "other words should follow this phrase.",
            check_end_phrase, lambda r: {"phrase": r.choice(END_PHRASES)}, _SHAPE,
        ),
        Constraint(
            "start_word",
            lambda kw: f"Start your response with the word \"{kw['word']}\".",
            check_start_word, lambda r: {"word": r.choice(START_WORDS)}, _SHAPE,
        ),
        Constraint(
            "json_keys",
            lambda kw: "Your entire output must be a JSON object with exactly the keys "
            + " and ".join(f'"{k}"' for k in kw["keys"]) + " and string values.",
            check_json_keys, lambda r: {"keys": list(r.choice(JSON_KEYS))},
            _SHAPE | {"max_words", "include_keyword", "uppercase", "no_commas"},
        ),
        Constraint(
            "no_commas",
            lambda kw: "Do not use any commas in your response.",
            check_no_commas, lambda r: {}, frozenset({"json_keys"}),
        ),
        Constraint(
            "quotation",
            lambda kw: "Wrap your entire response with double quotation marks.",
            check_quotation, lambda r: {}, _SHAPE,
        ),
        Constraint(
            "title",
            lambda kw: "Your answer must contain a title, wrapped in double angular brackets, "
            "such as <<poem of joy>>.",
            check_title, lambda r: {}, _SHAPE,
        ),
        Constraint(
            "postscript",
            lambda kw: "At the end of your response, add a postscript starting with P.S.",
            check_postscript, lambda r: {}, _SHAPE,
        ),
    ]
}  # fmt: skip

TASKS = (
    "Write a short poem about {topic}.",
    "Describe {topic} in a few sentences.",
    "Explain {topic} to a ten-year-old.",
    "Give some advice about {topic}.",
    "Write a short story about {topic}.",
    "Write a product description for something related to {topic}.",
    "List some interesting facts about {topic}.",
    "Write a short letter to a friend about {topic}.",
)
_TOPICS = (
    "the ocean", "autumn leaves", "a city at night", "learning to cook", "the moon",
    "a rainy day", "coffee", "mountains", "a lost cat", "space travel", "gardening",
    "a library", "winter mornings", "bicycles", "friendship", "the desert", "trains",
    "a birthday party", "honey bees", "old photographs", "the river", "chess", "a lighthouse",
    "volcanoes", "summer holidays", "a robot", "bread baking", "thunderstorms", "owls",
    "the internet", "a marathon", "snow", "a market", "painting", "the forest", "kites",
    "a small village", "music lessons", "recycling", "the stars", "a bakery", "penguins",
    "a museum", "running shoes", "tea", "a bridge", "clouds", "a school play", "dolphins",
    "the first day of spring", "a treasure map", "camping", "an old castle", "a garden party",
    "the wind", "a train station", "sunflowers", "a science fair", "a quiet beach", "dragons",
)  # fmt: skip
# Disjoint topics: even positions for evaluation, odd for training (preference data).
TOPICS = {"eval": _TOPICS[0::2], "train": _TOPICS[1::2]}
SEEDS = {"eval": 2023, "train": 7}


def make_prompts(split: str = "eval", n: int = 120, seed: int | None = None) -> list[dict]:
    """`n` prompts of a split: {"id", "prompt", "constraints": [{"id", "kwargs"}]}, one or two
    compatible instructions each, the same list for the same (split, n, seed)."""
    if split not in TOPICS:
        raise ValueError(f"split: expected eval or train, got {split!r}")
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    rng = random.Random(SEEDS[split] if seed is None else seed)
    ids = sorted(CONSTRAINTS)
    items, seen = [], set()
    attempts = 0
    while len(items) < n:
        attempts += 1
        task = rng.choice(TASKS).format(topic=rng.choice(TOPICS[split]))
        first = ids[len(items) % len(ids)]  # every instruction equally often
        chosen = [first]
        if rng.random() < 0.4:
            options = [c for c in ids if c not in chosen and c not in CONSTRAINTS[first].conflicts
                       and first not in CONSTRAINTS[c].conflicts]  # fmt: skip
            chosen.append(rng.choice(options))
        constraints = [{"id": c, "kwargs": CONSTRAINTS[c].sample(rng)} for c in chosen]
        text = " ".join([task, *(CONSTRAINTS[c["id"]].text(c["kwargs"]) for c in constraints)])
        if text in seen and attempts < 50 * n:
            continue
        seen.add(text)
        items.append({"id": f"{split}-{len(items):04d}", "prompt": text,
                      "constraints": constraints})  # fmt: skip
    return items


# --- scoring --------------------------------------------------------------------------------------
def loose_variants(response: str) -> list[str]:
    """IFEval's loosened responses: first/last line removed, '*' removed, and combinations."""
    lines = response.split("\n")
    cut = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return cut + [r.replace("*", "") for r in cut]


def check(constraint: Mapping[str, Any], response: str, loose: bool = False) -> bool:
    """Whether `response` follows one instruction {"id", "kwargs"}."""
    spec = CONSTRAINTS[constraint["id"]]
    kwargs = constraint.get("kwargs", {})
    candidates = loose_variants(response) if loose else [response]
    return any(r.strip() and spec.check(r, kwargs) for r in candidates)


def _rates(row: Mapping[str, int]) -> dict[str, float]:
    n = row["n"]
    return {"n": n, "strict_accuracy": row["strict"] / n, "loose_accuracy": row["loose"] / n}


def score_responses(items: Sequence[Mapping[str, Any]], responses: Sequence[str]) -> dict:
    """Accuracies of responses to prompts from `make_prompts`: prompt- and instruction-level,
    strict and loose, overall and per instruction, and each prompt's verdicts."""
    if len(items) != len(responses):
        raise ValueError(f"{len(items)} prompts but {len(responses)} responses")
    per: dict[str, dict[str, int]] = {}
    prompts_strict = prompts_loose = n_inst = inst_strict = inst_loose = 0
    details = []
    for item, response in zip(items, responses, strict=True):
        verdicts = []
        for c in item["constraints"]:
            s, lo = check(c, response), check(c, response, loose=True)
            row = per.setdefault(c["id"], {"n": 0, "strict": 0, "loose": 0})
            row["n"] += 1
            row["strict"] += s
            row["loose"] += lo
            verdicts.append({"id": c["id"], "strict": s, "loose": lo})
        n_inst += len(verdicts)
        inst_strict += sum(v["strict"] for v in verdicts)
        inst_loose += sum(v["loose"] for v in verdicts)
        all_strict = all(v["strict"] for v in verdicts)
        all_loose = all(v["loose"] for v in verdicts)
        prompts_strict += all_strict
        prompts_loose += all_loose
        details.append({"id": item["id"], "strict": all_strict, "loose": all_loose,
                        "constraints": verdicts, "response": response})  # fmt: skip
    n = max(len(items), 1)
    return {
        "prompts": len(items),
        "strict_accuracy": prompts_strict / n,
        "loose_accuracy": prompts_loose / n,
        "instruction_strict_accuracy": inst_strict / max(n_inst, 1),
        "instruction_loose_accuracy": inst_loose / max(n_inst, 1),
        "per_constraint": {k: _rates(v) for k, v in sorted(per.items())},
        "results": details,
    }
