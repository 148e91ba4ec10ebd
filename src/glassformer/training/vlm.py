"""Training and evaluating a small vision-language model on synthetic questions.

A sample is one picture, one question and its answer (`vlm_data.SyntheticVQA`), laid out as
the model reads it:

    <bos>  question words  <image> x P  answer words <eos>

The question comes first, so every patch token can attend to it (early fusion: a patch can
tell whether it is what is asked about, and the answer position pools those verdicts; a
count becomes an average). The P placeholders are replaced inside the model by the P patch
embeddings of the picture
(`pixel_values` [B, P, patch*patch*3], `image_position_ids` [B, P, 2] as (x, y),
`mm_token_type_ids` 1 on the placeholders: HF's keyword inputs for Gemma 4's encoder-free
path). The loss is the next-token cross-entropy on the answer words and the closing <eos>
only (Liu et al. 2023, "Visual Instruction Tuning", train on the answer tokens):

    L = -1/N sum_{t in answer} log p(x_{t+1} | image, question, x_{<=t})

Exact match. A greedy decoder produces the reference answer (with its <eos>) exactly when, at
every answer position, the argmax of the logits given the reference prefix is the reference
token: by induction, each greedy step then sees the reference prefix. So one teacher-forced
forward pass scores greedy exact match (`exact_match`), with no generation loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.head_loss import IGNORE
from glassformer.multimodal.image import patchify
from glassformer.training.vlm_data import QUESTION_TYPES, SyntheticVQA, VLMExample, VLMVocab

__all__ = ["VLMTask", "collate", "exact_match", "load_vlm_checkpoint", "vlm_settings"]

# A nominal epoch for progress reports: examples are drawn afresh for every index.
TRAIN_SAMPLES = 1_000_000


def collate(examples: Iterable[VLMExample], vocab: VLMVocab, patch: int) -> dict[str, torch.Tensor]:
    """Right-padded rows of the layout above: input_ids, labels (IGNORE except the answer
    and <eos> targets, predicted from the last image token on), mm_token_type_ids,
    pixel_values, image_position_ids, and `kind` (each row's question type, as its index in
    QUESTION_TYPES)."""
    rows, pixels, positions, kinds = [], [], [], []
    for ex in examples:
        # Gemma 4's preprocessing of a picture already at its size: [0, 1] values, merged
        # patches in raster order with their (x, y) grid cells
        patches, pos = patchify(ex.image.astype(np.float32) / 255.0, patch)
        prompt = [vocab.bos_id, *vocab.encode(ex.question)] + [vocab.image_id] * len(patches)
        answer = [*vocab.encode(ex.answer), vocab.eos_id]
        rows.append((prompt, answer))
        pixels.append(torch.from_numpy(patches))
        positions.append(torch.from_numpy(pos))
        kinds.append(QUESTION_TYPES.index(ex.kind))
    width = max(len(p) + len(a) for p, a in rows) - 1
    input_ids = torch.full((len(rows), width), vocab.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, (prompt, answer) in enumerate(rows):
        seq = prompt + answer
        input_ids[r, : len(seq) - 1] = torch.tensor(seq[:-1])
        # position t predicts seq[t + 1]: the answer targets start at the prompt's last token
        labels[r, len(prompt) - 1 : len(seq) - 1] = torch.tensor(answer)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "mm_token_type_ids": (input_ids == vocab.image_id).long(),
        "pixel_values": torch.stack(pixels),
        "image_position_ids": torch.stack(positions),
        "kind": torch.tensor(kinds),
    }


MODEL_INPUTS = ("pixel_values", "image_position_ids", "mm_token_type_ids")


def answer_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Float32 logits [B, T, V] of a collated batch."""
    inputs = {k: batch[k] for k in MODEL_INPUTS}
    return model(batch["input_ids"], **inputs).float()


def exact_match(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] bool: every counted position's argmax is its label (greedy exact match; see the
    module docstring)."""
    counted = labels != IGNORE
    hit = (logits.argmax(-1) == labels) | ~counted
    return hit.all(-1)


class VLMTask:
    """The synthetic VQA data as a trainer `Task`: train example k = generator example k of
    the train split (a pure function of the seed and k), held-out examples from the held-out
    split. Extra metric: `token_accuracy` (argmax hits per answer token)."""

    reports_perplexity = False

    def __init__(self, gen: SyntheticVQA, patch: int, eval_examples: int = 512) -> None:
        self.gen, self.patch, self.vocab = gen, patch, VLMVocab()
        self.n_eval = eval_examples
        self.image_tokens = (gen.image_size // patch) ** 2

    def train_samples(self) -> int:
        return TRAIN_SAMPLES

    def eval_samples(self) -> int:
        return self.n_eval

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        exs = [self.gen.example("train", k) for k in range(first, first + count)]
        return collate(exs, self.vocab, self.patch)

    def eval_batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        exs = [self.gen.example("heldout", (first + k) % self.n_eval) for k in range(count)]
        return collate(exs, self.vocab, self.patch)

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # The vocabulary is tiny, so the logits are cheap to hold (no fused head needed).
        logits = answer_logits(model, batch)
        labels = batch["labels"]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
            ignore_index=IGNORE, reduction="sum",
        )  # fmt: skip
        hits = ((logits.argmax(-1) == labels) & (labels != IGNORE)).sum()
        return loss, {"token_accuracy": hits}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())


@torch.no_grad()
def evaluate_vlm(
    model: nn.Module,
    gen: SyntheticVQA,
    patch: int,
    n: int = 500,
    batch_size: int = 50,
    progress: Any = None,
) -> dict[str, Any]:
    """Exact match on the first `n` held-out examples: overall and per question type."""
    vocab = VLMVocab()
    model.eval()
    hits = np.zeros(len(QUESTION_TYPES))
    totals = np.zeros(len(QUESTION_TYPES))
    for first in range(0, n, batch_size):
        exs = [gen.example("heldout", k) for k in range(first, min(n, first + batch_size))]
        batch = collate(exs, vocab, patch)
        ok = exact_match(answer_logits(model, batch), batch["labels"])
        np.add.at(hits, batch["kind"].numpy(), ok.numpy().astype(float))
        np.add.at(totals, batch["kind"].numpy(), 1.0)
        if progress is not None:
            progress(len(exs))
    per_type = {QUESTION_TYPES[i]: hits[i] / totals[i] for i in range(len(hits)) if totals[i]}
    return {
        "exact_match": float(hits.sum() / max(totals.sum(), 1)),
        "per_type": {k: float(v) for k, v in per_type.items()},
        "counts": {QUESTION_TYPES[i]: int(totals[i]) for i in range(len(totals)) if totals[i]},
        "examples": int(totals.sum()),
    }


def vlm_settings(gen: SyntheticVQA, patch: int) -> dict[str, Any]:
    """What a run records (TrainConfig.extra["vlm"]) to rebuild its data for evaluation."""
    return {**gen.settings(), "patch": patch}


def generator_of(settings: dict[str, Any]) -> tuple[SyntheticVQA, int]:
    s = dict(settings)
    patch = int(s.pop("patch"))
    s["kinds"] = tuple(s["kinds"])
    return SyntheticVQA(**s), patch


def load_vlm_checkpoint(path: str | Path) -> tuple[nn.Module, SyntheticVQA, int, dict[str, Any]]:
    """(model, generator, patch size, checkpoint info) of a VLM run directory (its newest
    checkpoint) or one checkpoint file."""
    from glassformer.config import Config
    from glassformer.model import Transformer
    from glassformer.training.checkpoint import latest_checkpoint, load_checkpoint

    p = Path(path)
    if p.is_dir():
        found = latest_checkpoint(p)
        if found is None:
            raise FileNotFoundError(f"{p}: no checkpoint found (expected {p}/checkpoints/)")
        p = found[0]
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint")
    state = load_checkpoint(p)
    settings = (state.get("train_config") or {}).get("extra", {}).get("vlm")
    if not settings or state.get("config") is None:
        raise ValueError(f"{p}: not a checkpoint of a VLM run (no extra.vlm settings)")
    config = Config.from_dict(state["config"])
    model = Transformer(config)
    model.load_state_dict(state["model"])
    gen, patch = generator_of(settings)
    info = {"checkpoint": str(p), "step": int(state["step"]), "samples": state["samples_seen"]}
    return model, gen, patch, info


def vlm_task(
    tc: Any,
    model_config: Any,
    kinds: tuple[str, ...] = QUESTION_TYPES,
    eval_examples: int = 512,
) -> tuple[VLMTask, Any]:
    """The synthetic VQA task of run `tc` (generator seeded with tc.seed, asking the question
    types `kinds`) and `model_config` fitted to it: the synthetic vocabulary, its placeholder,
    padding and end ids, and room for the longest sample. Records the generator's settings
    in tc.extra["vlm"]."""
    if not model_config.vision_patch_size:
        raise ValueError(
            f"vision_patch_size: the model config {model_config.name!r} has no vision embedder "
            "(use --preset tiny-vlm, or a config with vision_patch_size > 0)"
        )
    gen = SyntheticVQA(seed=tc.seed, kinds=tuple(kinds))
    patch = model_config.vision_patch_size * model_config.vision_pool
    task = VLMTask(gen, patch, eval_examples)
    vocab = task.vocab
    longest = 1 + task.image_tokens + 8 + 3  # <bos>, image, question, answer + <eos>
    grid = gen.image_size // patch
    if model_config.vision_posemb_size < grid:
        raise ValueError(
            f"vision_posemb_size: {model_config.vision_posemb_size} rows cannot place a "
            f"{grid} x {grid} patch grid"
        )
    config = model_config.replace(
        vocab_size=vocab.vocab_size,
        image_token_id=vocab.image_id,
        mm_pad_token_id=vocab.pad_id,
        bos_token_id=vocab.bos_id,
        eos_token_id=vocab.eos_id,
        max_seq_len=max(model_config.max_seq_len, longest),
    )
    tc.extra = {**tc.extra, "vlm": vlm_settings(gen, patch)}
    return task, config
