"""Log-likelihood scoring, as lm-eval-harness does it: continuations, whole texts, and
multiple-choice tasks.

A continuation c of a context x scores

    log p(c | x) = sum_{t in c} log p(c_t | x, c_<t)

and is `greedy` when every c_t is the model's argmax. The pair is tokenized as lm-eval's HF
model does: whitespace ending the context moves to the continuation, the whole x + c is
encoded, and the continuation's tokens are those after the context's own encoding (BPE merges
across the boundary stay as the tokenizer makes them); an empty context is the end-of-text
token.

A whole text (perplexity) is scored in windows of at most `max_len` tokens, prefixed by the
end-of-text token: each window predicts the next up-to-`max_len` tokens with as much
preceding text as fits in the window as context (lm-eval's rolling windows). Perplexity is
exp(-sum log p / tokens), and bits per byte -sum log p / (ln 2 * UTF-8 bytes).

A multiple-choice item (query, choices, gold) scores each choice as the continuation
" " + choice of the query: `acc` takes the argmax of log p, `acc_norm` the argmax of
log p / len(choice) in characters (lm-eval's length normalisation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from glassformer.jsonl import jsonl_rows

__all__ = [
    "encode_pair",
    "load_multiple_choice",
    "loglikelihood",
    "multiple_choice",
    "perplexity",
    "rolling_loglikelihood",
]


def _prefix_token(tokenizer: Any) -> int:
    for tid in (tokenizer.eos_id, getattr(tokenizer, "bos_id", None)):
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has no end-of-text or BOS token to start a text with")


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval-harness's HF model splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not context:
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        return [_prefix_token(tokenizer)], cont
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = tokenizer.encode(context, add_special_tokens=False)
    return ctx, whole[len(ctx) :]


@torch.no_grad()
def _score_rows(
    model: Any, rows: Sequence[tuple[list[int], int]], max_len: int, pad_id: int
) -> list[tuple[float, bool]]:
    """For each (ids, n): log-prob of the last n ids given the ones before, and greedy."""
    out: list[tuple[float, bool]] = []
    inputs = []
    for ids, n in rows:
        if n < 1:
            raise ValueError("a continuation has no tokens")
        ids = ids[-(max_len + 1) :]  # keep the continuation, cut the context from the left
        inputs.append((ids[:-1], ids[-n:]))
    width = max(len(x) for x, _ in inputs)
    batch = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    for i, (x, _) in enumerate(inputs):
        batch[i, : len(x)] = torch.tensor(x)  # right padding: causal rows never see it
    device = next(model.parameters()).device
    logits = model(batch.to(device)).float()
    for i, (x, target) in enumerate(inputs):
        n = len(target)
        lp = torch.log_softmax(logits[i, len(x) - n : len(x)], -1)
        tgt = torch.tensor(target, device=lp.device)
        out.append((float(lp.gather(-1, tgt[:, None]).sum()), bool((lp.argmax(-1) == tgt).all())))
    return out


def loglikelihood(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 8,
    max_len: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, bool]]:
    """(log p(continuation | context), greedy) for each (context, continuation)."""
    max_len = max_len or model.config.max_seq_len
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    rows = []
    for context, continuation in requests:
        ctx, cont = encode_pair(tokenizer, context, continuation)
        rows.append((ctx + cont, len(cont)))
    out: list[tuple[float, bool]] = []
    for i in range(0, len(rows), batch_size):
        out += _score_rows(model, rows[i : i + batch_size], max_len, pad)
        if progress is not None:
            progress(len(rows[i : i + batch_size]))
    return out


def rolling_loglikelihood(
    model: Any, tokenizer: Any, text: str, max_len: int | None = None
) -> tuple[float, int]:
    """(sum of log p over every token of `text`, number of tokens), in rolling windows."""
    max_len = max_len or model.config.max_seq_len
    tokens = tokenizer.encode(text, add_special_tokens=False)
    seq = [_prefix_token(tokenizer), *tokens]
    total = 0.0
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    for start in range(1, len(seq), max_len):  # predict seq[start:end]
        end = min(start + max_len, len(seq))
        window = seq[max(0, end - 1 - max_len) : end]
        (lp, _), = _score_rows(model, [(window, end - start)], max_len, pad)  # fmt: skip
        total += lp
    return total, len(tokens)


def perplexity(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_len: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Token perplexity and bits per byte of `texts` (each scored on its own)."""
    logp, tokens, n_bytes = 0.0, 0, 0
    for text in texts:
        lp, n = rolling_loglikelihood(model, tokenizer, text, max_len)
        logp, tokens, n_bytes = logp + lp, tokens + n, n_bytes + len(text.encode("utf-8"))
        if progress is not None:
            progress(1)
    if tokens == 0:
        raise ValueError("no tokens to score")
    return {
        "perplexity": math.exp(-logp / tokens),
        "nll_per_token": -logp / tokens,
        "bits_per_byte": -logp / (math.log(2) * max(n_bytes, 1)),
        "tokens": tokens,
        "texts": len(texts),
    }


def load_texts(path: str | os.PathLike[str], field: str = "text") -> list[str]:
    """Documents of a .jsonl file (their `field`) or a plain-text file (one document)."""
    p = os.fspath(path)
    if not p.endswith(".jsonl"):
        with open(p, encoding="utf-8") as fh:
            text = fh.read()
        if not text.strip():
            raise ValueError(f"{p}: empty")
        return [text]
    texts = []
    for _, where, row in jsonl_rows(p):
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise ValueError(f"{where}: expected an object with a {field!r} string")
        if row[field]:
            texts.append(row[field])
    if not texts:
        raise ValueError(f"{p}: no texts")
    return texts


def load_multiple_choice(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Items {"query", "choices", "gold"} of a JSONL file (checked, with line numbers)."""
    items = []
    for _, where, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with query, choices, gold")
        query, choices, gold = row.get("query"), row.get("choices"), row.get("gold")
        if not isinstance(query, str):
            raise ValueError(f"{where}: 'query' must be a string")
        if not isinstance(choices, list) or len(choices) < 2:
            raise ValueError(f"{where}: 'choices' must list at least two strings")
        if not all(isinstance(c, str) and c for c in choices):
            raise ValueError(f"{where}: 'choices' must be non-empty strings")
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise ValueError(f"{where}: 'gold' must index 'choices' (0..{len(choices) - 1})")
        items.append({"query": query, "choices": choices, "gold": gold})
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def multiple_choice(
    model: Any,
    tokenizer: Any,
    items: Sequence[dict[str, Any]],
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """acc and acc_norm of the items, and each item's choice log-probs."""
    requests = [(it["query"], " " + c) for it in items for c in it["choices"]]
    scores = loglikelihood(model, tokenizer, requests, batch_size, progress=progress)
    acc = acc_norm = 0
    details = []
    k = 0
    for it in items:
        lps = [s for s, _ in scores[k : k + len(it["choices"])]]
        k += len(it["choices"])
        norm = [lp / len(c) for lp, c in zip(lps, it["choices"], strict=True)]
        pick, pick_norm = (
            max(range(len(lps)), key=lps.__getitem__),
            max(range(len(norm)), key=norm.__getitem__),
        )
        acc += pick == it["gold"]
        acc_norm += pick_norm == it["gold"]
        details.append({"loglikelihoods": lps, "pred": pick, "pred_norm": pick_norm,
                        "gold": it["gold"]})  # fmt: skip
    n = len(items)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "items": n, "results": details}
