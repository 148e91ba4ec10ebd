"""Healing by distillation: the task's loss against torch's own KL divergence, a short run that
lowers it, and a run stopped and resumed that ends where an uninterrupted one does."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import glassformer as gf
from glassformer.compression.heal import DistillTask, heal
from glassformer.compression.prune import apply_plan, plan_pruning
from tests.families import perturb


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~200 kB of the default corpus as token shards, with a 320-token BPE trained on it."""
    from glassformer.training.data import prepare_data

    out = tmp_path_factory.mktemp("heal_data")
    prepare_data(
        ["default"], out, vocab_size=320, max_bytes=200_000, tokenizer_train_bytes=100_000,
        val_fraction=0.05,
    )  # fmt: skip
    return out


def teacher_and_student() -> tuple[gf.Transformer, gf.Transformer]:
    cfg = gf.Config(vocab_size=320, d_model=48, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=96)
    torch.manual_seed(0)
    teacher = gf.Transformer(cfg).eval()
    perturb(teacher)
    student = apply_plan(teacher, plan_pruning(teacher, heads="50%", mlp="50%", layers=1))
    return teacher, student


@pytest.mark.parametrize("hidden_weight", [0.0, 0.5])
def test_distill_loss_is_the_kl_divergence(tiny_data: Path, hidden_weight: float) -> None:
    teacher, student = teacher_and_student()
    task = DistillTask(teacher, tiny_data, 16, 0, temperature=2.0, hidden_weight=hidden_weight)
    batch = task.batch(0, 3)
    loss, extra = task.loss(student, batch)
    with torch.no_grad():
        t = teacher(batch["input_ids"]).float() / 2
        s = student(batch["input_ids"]).float() / 2
        want = 4 * F.kl_div(
            F.log_softmax(s, -1).flatten(0, 1), F.log_softmax(t, -1).flatten(0, 1),
            log_target=True, reduction="sum",
        )  # fmt: skip
        if hidden_weight:
            ht = teacher.hidden_states(batch["input_ids"])[0]
            hs = student.hidden_states(batch["input_ids"])[0]
            want = want + hidden_weight * (hs - ht).pow(2).mean(-1).sum()
        ce = F.cross_entropy(s.flatten(0, 1) * 2, batch["labels"].flatten(), reduction="sum")
    assert task.count(batch) == 3 * 16
    assert torch.allclose(loss.detach(), want, rtol=1e-5)
    assert torch.allclose(extra["ce"], ce, rtol=1e-5)
    loss.backward()  # the student learns, the teacher does not
    assert student.layers[0].mlp.up_proj.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_heal_lowers_the_kl_and_resumes_exactly(tiny_data: Path, tmp_path: Path) -> None:
    teacher, student = teacher_and_student()
    kwargs = dict(seq_len=32, batch_size=4, lr=3e-3, data=tiny_data, progress=False)
    whole = copy.deepcopy(student)
    summary = heal(teacher, whole, "unused", tmp_path / "a", tokens=8 * 4 * 32, **kwargs)
    assert summary["steps"] == 8 and summary["loss"] < summary["first_loss"]
    parted = copy.deepcopy(student)
    first = heal(teacher, parted, "unused", tmp_path / "b", 8 * 4 * 32, stop_after=3, **kwargs)
    assert first["steps"] == 3
    resumed = copy.deepcopy(student)  # a fresh process: the weights come from the checkpoint
    rest = heal(teacher, resumed, "unused", tmp_path / "b", 8 * 4 * 32, **kwargs)
    assert rest["steps"] == 8
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
