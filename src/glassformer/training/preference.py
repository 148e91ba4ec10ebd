"""Preference tuning: pairs of answers to one prompt, the preferred one `chosen`.

Data: JSONL rows `{"prompt": ..., "chosen": ..., "rejected": ...}`, either plain text (three
strings: the answer continues the prompt's text directly, and gets the end-of-sequence token)
or chat messages as TRL writes them (`prompt` a list of messages, `chosen` and `rejected`
lists of assistant messages, or strings: the assistant's reply). A chat prompt is rendered
with the model's template up to the assistant's turn; the answer is what the template adds
for the reply, end-of-turn marker included (the tokens the model must learn to emit).

Each answer is scored by the summed log-probability of its tokens given the prompt,

    log pi(y | x) = sum_{t in answer} log pi(y_t | x, y_<t)

(`SequenceLogProbs`), and the pair by one of the losses in `preference_losses.py`. DPO and IPO
compare against a frozen reference model pi_ref, the model as it was before training: its
log-probabilities are computed once, before the first step, and cached with the examples
(and in OUT/reference_logps.pt, so a resumed run does not recompute them from a model that
has since changed).

Bad rows are errors naming the line; rows that cannot be trained on are skipped and counted
(`PreferenceTask.stats`): chosen identical to rejected (no preference to learn), a prompt
that fills the context (no room for an answer). Answers longer than the context are cut
(counted too).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glassformer.jsonl import jsonl_rows
from glassformer.training.data import EpochOrder, ExampleBatches
from glassformer.training.preference_losses import (
    LOSSES,
    REFERENCE_FREE,
    dpo_loss,
    ipo_loss,
    orpo_loss,
    simpo_loss,
)
from glassformer.training.sft import strip_generation_tags
from glassformer.training.tasks import IGNORE

__all__ = [
    "PreferencePair",
    "PreferenceTask",
    "SequenceLogProbs",
    "load_preference_jsonl",
]


@dataclass(frozen=True)
class PreferencePair:
    prompt: str | list[dict[str, Any]]
    chosen: str | list[dict[str, Any]]
    rejected: str | list[dict[str, Any]]
    line: int  # 1-based line in its file (0: made in memory)


def _answer(value: Any, where: str, key: str, chat: bool) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where}: '{key}' is empty")
        return value
    if not chat:
        raise ValueError(f"{where}: '{key}' must be a string when 'prompt' is a string")
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: '{key}' must be a string or a non-empty list of messages")
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: '{key}' messages need a 'content' string")
        if m.get("role", "assistant") != "assistant":
            raise ValueError(f"{where}: '{key}' messages must be the assistant's")
    if not any(m["content"].strip() for m in value):
        raise ValueError(f"{where}: '{key}' is empty")
    return value


def load_preference_jsonl(
    path: str | os.PathLike[str],
) -> tuple[list[PreferencePair], dict[str, int]]:
    """(pairs, counts) of a preference JSONL file; counts: rows read, identical pairs skipped.

    Raises ValueError naming the line for anything malformed."""
    pairs: list[PreferencePair] = []
    stats = {"rows": 0, "skipped_identical": 0}
    for lineno, where, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with prompt, chosen, rejected")
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
        stats["rows"] += 1
        prompt = row["prompt"]
        chat = isinstance(prompt, list)
        if chat:
            ok = prompt and all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in prompt
            )  # fmt: skip
            if not ok:
                raise ValueError(f"{where}: 'prompt' messages need 'role' and 'content'")
        elif not isinstance(prompt, str) or not prompt:
            raise ValueError(f"{where}: 'prompt' must be a non-empty string or messages")
        chosen = _answer(row["chosen"], where, "chosen", chat)
        rejected = _answer(row["rejected"], where, "rejected", chat)
        if chosen == rejected:
            stats["skipped_identical"] += 1
            continue
        pairs.append(PreferencePair(prompt, chosen, rejected, lineno))
    if not pairs:
        raise ValueError(f"{path}: no usable preference pairs ({stats})")
    return pairs, stats


def _messages(answer: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(answer, str):
        return [{"role": "assistant", "content": answer}]
    return [{"role": "assistant", **m} for m in answer]


def encode_pair(
    tokenizer: Any, pair: PreferencePair, chat_template: str | None = None
) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen answer ids, rejected answer ids)."""
    if isinstance(pair.prompt, str):
        prompt = tokenizer.encode(pair.prompt, add_special_tokens=True, parse_special=False)
        eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []

        def answer(a: Any) -> list[int]:
            return tokenizer.encode(a, add_special_tokens=False, parse_special=False) + eos

        return prompt, answer(pair.chosen), answer(pair.rejected)
    template = chat_template or tokenizer.chat_template
    if not template:
        raise ValueError("chat-format pairs need a tokenizer with a chat template")
    template = strip_generation_tags(template)
    head = tokenizer.apply_chat_template(
        pair.prompt, add_generation_prompt=True, chat_template=template
    )

    def reply(a: Any) -> list[int]:
        full = tokenizer.apply_chat_template(
            [*pair.prompt, *_messages(a)], add_generation_prompt=False, chat_template=template
        )
        if not full.startswith(head):
            raise ValueError(
                "the chat template renders the prompt differently once a reply follows"
            )
        text = full[len(head) :].rstrip()
        return tokenizer.encode(text, add_special_tokens=False, parse_special=True)

    prompt = tokenizer.encode(head, add_special_tokens=False, parse_special=True)
    return prompt, reply(pair.chosen), reply(pair.rejected)


class SequenceLogProbs(nn.Module):
    """A causal LM scoring labelled tokens: (input_ids, labels) -> per-row sum of
    log p(labels_t | input_<=t) over the positions whose label is not IGNORE (float32 or wider).

    Only the labelled positions go through the output head, so the logits of the prompt
    (most of a row, often) are never computed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden, _, _ = self.model.hidden_states(input_ids)
        keep = labels != IGNORE
        logits = self.model.head(self.model.final_norm(hidden[keep]))
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        picked = torch.log_softmax(logits, -1).gather(-1, labels[keep][:, None])[:, 0]
        rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(labels)
        out = torch.zeros(labels.shape[0], dtype=picked.dtype, device=labels.device)
        return out.index_add(0, rows[keep], picked)


# One tokenized pair: prompt ids, chosen ids, rejected ids, reference log-probs (chosen, rejected)
Example = tuple[list[int], list[int], list[int], float, float]


class PreferenceTask(ExampleBatches):
    """Batches of pairs for the trainer: a micro-batch of b pairs is 2b right-padded rows,
    [chosen_1..chosen_b, rejected_1..rejected_b], labelled on the answer tokens only.

    `loss` sums the per-pair losses of `loss_type`; the items counted are pairs. Its extra
    sums (means once divided by the pairs) are the curves of a preference run: the reward
    margin r_w - r_l, how often it is positive, and the answers' summed log-probabilities."""

    reports_perplexity = False  # exp of a preference loss is no perplexity

    def __init__(
        self,
        tokenizer: Any,
        pairs: Sequence[PreferencePair],
        loss_type: str = "dpo",
        beta: float | None = None,
        gamma: float = 0.5,
        max_len: int = 512,
        val_fraction: float = 0.1,
        seed: int = 0,
        chat_template: str | None = None,
    ) -> None:
        if loss_type not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {loss_type!r}")
        if max_len < 2:
            raise ValueError(f"max_len: must be >= 2, got {max_len}")
        self.loss_type = loss_type
        self.beta = LOSSES[loss_type] if beta is None else beta
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        self.gamma = gamma
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.stats = {"pairs": 0, "skipped_prompt_too_long": 0, "truncated": 0}
        examples: list[Example] = []
        for pair in pairs:
            prompt, chosen, rejected = encode_pair(tokenizer, pair, chat_template)
            if len(prompt) >= max_len:
                self.stats["skipped_prompt_too_long"] += 1
                continue
            room = max_len - len(prompt)
            if len(chosen) > room or len(rejected) > room:
                self.stats["truncated"] += 1
                chosen, rejected = chosen[:room], rejected[:room]
                if chosen == rejected:  # identical once cut: nothing left to prefer
                    self.stats["skipped_prompt_too_long"] += 1
                    continue
            examples.append((prompt, chosen, rejected, 0.0, 0.0))
        if not examples:
            raise ValueError(f"no preference pair fits max_len {max_len} ({self.stats})")
        self.stats["pairs"] = len(examples)
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        n_val = 0
        if val_fraction > 0 and len(examples) > 1:
            n_val = min(max(1, int(len(examples) * val_fraction)), len(examples) - 1)
        self.val = [examples[i] for i in order[:n_val]]
        self.train = [examples[i] for i in order[n_val:]]
        self.order = EpochOrder(len(self.train), seed)
        self.has_reference = loss_type not in REFERENCE_FREE
        self.reference_ready = not self.has_reference

    # -- the reference model -------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Names the tokenized pairs (the key of a cached reference)."""
        h = hashlib.sha256()
        for ex in [*self.train, *self.val]:
            h.update(json.dumps(ex[:3]).encode())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def compute_reference(
        self,
        model: nn.Module,
        batch_pairs: int = 4,
        cache: str | os.PathLike[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        key: str = "",
    ) -> bool:
        """Score every pair under `model` (the frozen reference) once; reuse `cache` when it
        holds this data's scores under the same `key` (naming the model). Returns True when
        they were computed, False when read."""
        if not self.has_reference:
            return False
        key = f"{self.fingerprint()}:{key}"
        path = Path(cache) if cache is not None else None
        if path is not None and path.is_file():
            saved = torch.load(path, weights_only=True)
            if saved.get("key") == key:
                self._set_reference(saved["chosen"].tolist(), saved["rejected"].tolist())
                return False
        scorer = model if isinstance(model, SequenceLogProbs) else SequenceLogProbs(model)
        was_training = scorer.training
        scorer.eval()
        device = next(scorer.parameters()).device
        rows = [*self.train, *self.val]
        chosen: list[float] = []
        rejected: list[float] = []
        for i in range(0, len(rows), batch_pairs):
            chunk = rows[i : i + batch_pairs]
            batch = self._collate(chunk)
            logps = scorer(batch["input_ids"].to(device), batch["labels"].to(device)).cpu()
            chosen += logps[: len(chunk)].tolist()
            rejected += logps[len(chunk) :].tolist()
            if progress is not None:
                progress(min(i + batch_pairs, len(rows)), len(rows))
        scorer.train(was_training)
        self._set_reference(chosen, rejected)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(
                {"key": key, "chosen": torch.tensor(chosen, dtype=torch.float64),
                 "rejected": torch.tensor(rejected, dtype=torch.float64)}, tmp,
            )  # fmt: skip
            os.replace(tmp, path)
        return True

    def _set_reference(self, chosen: list[float], rejected: list[float]) -> None:
        n = len(self.train)
        rows = [*self.train, *self.val]
        both = [(*ex[:3], c, r) for ex, c, r in zip(rows, chosen, rejected, strict=True)]
        self.train, self.val = both[:n], both[n:]
        self.reference_ready = True

    # -- batches and the loss ------------------------------------------------------------------
    def _collate(self, rows: list[Example]) -> dict[str, torch.Tensor]:
        seqs = [(p, c) for p, c, _, _, _ in rows] + [(p, r) for p, _, r, _, _ in rows]
        width = max(len(p) + len(a) for p, a in seqs) - 1
        inputs = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        for i, (p, a) in enumerate(seqs):
            ids = torch.tensor(p + a)
            inputs[i, : len(ids) - 1] = ids[:-1]
            # Position t predicts token t + 1: the answer's tokens are predicted from
            # positions len(p) - 1 .. len(p) + len(a) - 2.
            labels[i, len(p) - 1 : len(ids) - 1] = ids[len(p) :]
        return {
            "input_ids": inputs,
            "labels": labels,
            "lengths": torch.tensor([len(a) for _, a in seqs], dtype=torch.float32),
            "ref_logps": torch.tensor(
                [c for *_, c, _ in rows] + [r for *_, r in rows], dtype=torch.float32
            ),
        }

    def pair_losses(
        self, logps: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-pair losses, chosen rewards, rejected rewards) from the rows' log-probs."""
        b = logps.shape[0] // 2
        c, r = logps[:b], logps[b:]
        ref = batch["ref_logps"].to(logps.dtype)
        lc, lr = batch["lengths"][:b], batch["lengths"][b:]
        if self.loss_type == "dpo":
            return dpo_loss(c, r, ref[:b], ref[b:], self.beta)
        if self.loss_type == "ipo":
            return ipo_loss(c, r, ref[:b], ref[b:], lc, lr, self.beta)
        if self.loss_type == "simpo":
            return simpo_loss(c, r, lc, lr, self.beta, self.gamma)
        return orpo_loss(c, r, lc, lr, self.beta)

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.reference_ready:
            raise RuntimeError("compute_reference() must run before training with a reference")
        logps = model(batch["input_ids"], batch["labels"])
        losses, rw, rl = self.pair_losses(logps, batch)
        b = losses.shape[0]
        lengths = batch["lengths"]
        with torch.no_grad():
            extras = {
                "reward_margin": (rw - rl).sum(),
                "reward_accuracy": (rw > rl).float().sum(),
                "chosen_logps": logps[:b].detach().sum(),
                "rejected_logps": logps[b:].detach().sum(),
                "chosen_logps_per_token": (logps[:b].detach() / lengths[:b]).sum(),
                "rejected_logps_per_token": (logps[b:].detach() / lengths[b:]).sum(),
            }
        return losses.sum(), extras

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0] // 2)
