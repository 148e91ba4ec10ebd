"""The VLM task's batches and the exact-match scoring, on hand-made cases."""

from __future__ import annotations

import torch
from torch import nn

from glassformer.components.head_loss import IGNORE
from glassformer.training.vlm import collate, evaluate_vlm, exact_match
from glassformer.training.vlm_data import SyntheticVQA, VLMVocab


def test_collate_lays_out_image_question_answer():
    vocab = VLMVocab()
    gen = SyntheticVQA(seed=0)
    exs = [gen.example("train", k) for k in range(3)]  # colour, shape, count questions
    b = collate(exs, vocab, patch=16)
    assert b["pixel_values"].shape == (3, 16, 16 * 16 * 3)
    assert b["image_position_ids"].shape == (3, 16, 2)
    for r, ex in enumerate(exs):
        ids, labels = b["input_ids"][r].tolist(), b["labels"][r].tolist()
        q, a = vocab.encode(ex.question), vocab.encode(ex.answer)
        n = 1 + len(q) + 16
        assert ids[: n + len(a)] == [vocab.bos_id, *q] + [vocab.image_id] * 16 + a
        # only the answer and <eos> are predicted, from the last image token on
        assert [t for t in labels if t != IGNORE] == [*a, vocab.eos_id]
        assert labels[n - 1] == a[0] and all(t == IGNORE for t in labels[: n - 1])
        assert b["mm_token_type_ids"][r].tolist() == [int(t == vocab.image_id) for t in ids]
    assert b["kind"].tolist() == [0, 1, 2]


def test_exact_match_needs_every_answer_token_and_the_end():
    labels = torch.tensor([
        [IGNORE, 5, 2, IGNORE],
        [IGNORE, 5, 2, IGNORE],
        [IGNORE, 5, 2, IGNORE],
        [6, 7, 2, IGNORE],
    ])  # fmt: skip
    predicted = torch.tensor([
        [9, 5, 2, 9],  # right (positions without a label do not count)
        [9, 4, 2, 9],  # wrong first answer token
        [9, 5, 7, 9],  # right answer, no end: greedy decoding would go on
        [6, 7, 2, 0],  # right two-word answer
    ])  # fmt: skip
    logits = nn.functional.one_hot(predicted, 10).float()
    assert exact_match(logits, labels).tolist() == [True, False, False, True]


class AlwaysSays(nn.Module):
    """A stand-in model whose greedy answer is always `words` then <eos>."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.vocab = VLMVocab()
        self.answer = [*self.vocab.encode(words), self.vocab.eos_id]

    def forward(self, input_ids: torch.Tensor, **media: torch.Tensor) -> torch.Tensor:
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab.vocab_size)
        for r in range(b):
            row = input_ids[r].tolist()
            last = t - 1 - row[::-1].index(self.vocab.image_id)  # the last image token
            for i, tok in enumerate(self.answer):
                if last + i < t:
                    logits[r, last + i, tok] = 1.0
        return logits


def test_evaluate_counts_per_question_type():
    gen = SyntheticVQA(seed=5)
    n = 40
    held = [gen.example("heldout", k) for k in range(n)]
    result = evaluate_vlm(AlwaysSays("red"), gen, 16, n=n, batch_size=7)
    colour = [e for e in held if e.kind == "colour"]
    assert result["counts"]["colour"] == len(colour) == n // 5
    assert result["per_type"]["colour"] == sum(e.answer == "red" for e in colour) / len(colour)
    assert result["per_type"]["count"] == 0.0
    assert result["exact_match"] == sum(e.answer == "red" for e in held) / n
    two = evaluate_vlm(AlwaysSays("top left"), gen, 16, n=n)
    assert two["exact_match"] == sum(e.answer == "top left" for e in held) / n > 0
