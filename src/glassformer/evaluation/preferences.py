"""Preference pairs made offline from ifeval-lite's training prompts and its checkers.

For each training prompt (topics disjoint from the evaluation split) the model samples K
answers; each answer is scored by the share of the prompt's instructions it follows
(strictly). Pairs are (a best-scoring answer, a worst-scoring answer) with a strictly higher
score for the chosen one -- the checker is the reward model, and the policy's own samples are
the data (on-policy, as in self-rewarding and "RLAIF without a judge" setups). A prompt whose
samples all score the same gives no pair and is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from glassformer.evaluation.ifeval_lite import check

__all__ = ["label_pairs", "score_answer"]


def score_answer(item: dict[str, Any], answer: str) -> float:
    """Share of the prompt's instructions the answer follows (strict)."""
    verdicts = [check(c, answer) for c in item["constraints"]]
    return sum(verdicts) / len(verdicts)


def label_pairs(
    item: dict[str, Any], answers: Sequence[str], max_pairs: int = 2
) -> list[dict[str, Any]]:
    """Up to `max_pairs` rows {prompt, chosen, rejected, ...} for one prompt's answers: the
    best answers against the worst, distinct texts, chosen strictly better."""
    scored = sorted(
        {a: score_answer(item, a) for a in answers if a.strip()}.items(),
        key=lambda kv: (-kv[1], len(kv[0])),  # best first; among equals the shorter
    )
    if len(scored) < 2 or scored[0][1] == scored[-1][1]:
        return []
    best = [kv for kv in scored if kv[1] == scored[0][1]]
    worst = [kv for kv in reversed(scored) if kv[1] == scored[-1][1]]
    rows = []
    for i in range(min(max_pairs, max(len(best), len(worst)))):
        (chosen, sc), (rejected, sr) = best[i % len(best)], worst[i % len(worst)]
        rows.append({
            "prompt": [{"role": "user", "content": item["prompt"]}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "prompt_id": item["id"], "chosen_score": sc, "rejected_score": sr,
        })  # fmt: skip
    # Two pairs with the same texts teach nothing new.
    unique = {(r["chosen"][0]["content"], r["rejected"][0]["content"]): r for r in rows}
    return list(unique.values())


def build_preferences(
    model: Any,
    tokenizer: Any,
    items: Sequence[dict[str, Any]],
    samples: int = 4,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 96,
    batch_size: int = 8,
    seed: int = 0,
    max_pairs: int = 2,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(pair rows, counts) from `samples` sampled answers per prompt."""
    from glassformer.evaluation.respond import respond

    prompts = [it["prompt"] for it in items for _ in range(samples)]
    answers = respond(model, tokenizer, prompts, max_new_tokens, batch_size, temperature, top_p,
                      seed, progress)  # fmt: skip
    rows: list[dict[str, Any]] = []
    no_pair = 0
    passed = 0
    for k, item in enumerate(items):
        mine = answers[k * samples : (k + 1) * samples]
        passed += sum(score_answer(item, a) == 1.0 for a in mine)
        made = label_pairs(item, mine, max_pairs)
        no_pair += not made
        rows += made
    stats = {
        "prompts": len(items),
        "samples": len(answers),
        "pairs": len(rows),
        "prompts_without_pair": no_pair,
        "sample_strict_pass_rate": passed / max(len(answers), 1),
    }
    return rows, stats
