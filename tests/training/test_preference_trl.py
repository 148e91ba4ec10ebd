"""Preference losses against TRL's own code (the `trl` package), on the same model.

A tiny random Transformer (float64) scores a batch of pairs with prompts and answers of
different lengths. Our side: `PreferenceTask.loss` (SequenceLogProbs + the loss functions).
TRL's side: its trainers' loss code fed the same model's logits or per-token log-probs --
DPOTrainer._compute_loss (sigmoid and IPO), CPOTrainer.get_batch_logps + cpo_loss (SimPO),
ORPOTrainer.get_batch_logps + odds_ratio_loss (ORPO). Losses and the gradients they put on
every model parameter agree to 1e-5.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from glassformer.config import Config
from glassformer.model import Transformer
from glassformer.training.preference import PreferencePair, PreferenceTask
from glassformer.training.tasks import IGNORE

trl = pytest.importorskip("trl")

VOCAB = 97


class _Tok:
    """Integer 'text': '3 5 7' encodes to [3, 5, 7]."""

    pad_id = 0
    eos_id = 1
    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = True, parse_special: bool = False):
        return [int(t) for t in text.split()]


def _pairs(seed: int, equal_chosen: bool = False) -> list[PreferencePair]:
    g = torch.Generator().manual_seed(seed)

    def words(n: int) -> str:
        return " ".join(str(int(x)) for x in torch.randint(2, VOCAB, (n,), generator=g))

    lens = [(3, 5, 2), (6, 2, 7), (2, 8, 4)]
    return [
        PreferencePair(words(p), words(4 if equal_chosen else c), words(r), 0) for p, c, r in lens
    ]


def _model() -> Transformer:
    torch.manual_seed(0)
    cfg = Config.preset("tiny", vocab_size=VOCAB, n_layers=2, d_model=64, head_dim=16, d_ff=96)
    model = Transformer(cfg).double()
    with torch.no_grad():  # move away from the initialisation's near-uniform logits
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _task(loss_type: str, beta: float, equal_chosen: bool = False) -> PreferenceTask:
    task = PreferenceTask(_Tok(), _pairs(1, equal_chosen), loss_type, beta=beta, gamma=0.3,
                          max_len=64, val_fraction=0.0)  # fmt: skip
    if task.has_reference:
        ref = _model()
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(0.02 * torch.randn_like(p))  # a reference different from the policy
        task.compute_reference(ref)
    return task


def _ours(task: PreferenceTask, model: Transformer, batch: dict) -> tuple[torch.Tensor, list]:
    from glassformer.training.preference import SequenceLogProbs

    model.zero_grad()
    loss_sum, _ = task.loss(SequenceLogProbs(model), batch)
    loss = loss_sum / task.count(batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def _trl_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TRL's unshifted layout: full sequences, labels = ids on answer tokens else -100."""
    ids, labels = batch["input_ids"], batch["labels"]
    full = torch.cat([ids, torch.zeros_like(ids[:, :1])], 1)
    trl_labels = torch.full_like(full, IGNORE)
    trl_labels[:, 1:] = labels
    full[:, 1:] = torch.where(labels != IGNORE, labels, full[:, 1:])
    return full, trl_labels, (trl_labels != IGNORE).long()


def _ours_and_trl_mean_logps(
    trainer_class: type, loss_type: str, beta: float, equal_chosen: bool = False
) -> tuple[tuple[torch.Tensor, list], Transformer, torch.Tensor, torch.Tensor]:
    """(ours, model, chosen, rejected): our loss and gradients on a batch, and the per-token
    mean log-prob of each chosen and each rejected answer by TRL's `get_batch_logps`."""
    task = _task(loss_type, beta, equal_chosen)
    model = _model()
    batch = task.batch(0, 3)
    ours = _ours(task, model, batch)
    full, trl_labels, _ = _trl_inputs(batch)
    avg = trainer_class.get_batch_logps(model(full), trl_labels, average_log_prob=True)
    b = full.shape[0] // 2
    return ours, model, avg[:b], avg[b:]


def _grads(loss: torch.Tensor, model: Transformer) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def _assert_close(ours, theirs) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = ours, theirs
    assert abs(float(loss_a) - float(loss_b)) <= 1e-5, (float(loss_a), float(loss_b))
    err = max(float((a - b).abs().max()) for a, b in zip(grads_a, grads_b, strict=True))
    assert err <= 1e-5
    assert max(float(g.abs().max()) for g in grads_a) > 1e-4  # the gradients are not all zero


@pytest.mark.parametrize(("loss_type", "beta"), [("dpo", 0.1), ("dpo", 0.5), ("ipo", 0.2)])
def test_dpo_and_ipo_equal_trl_dpo_trainer(loss_type: str, beta: float) -> None:
    from trl import DPOTrainer

    task = _task(loss_type, beta)
    model = _model()
    batch = task.batch(0, 3)
    ours = _ours(task, model, batch)

    full, _, completion = _trl_inputs(batch)

    def fake_model(input_ids, attention_mask, labels, fused_lm_head, use_cache):
        logits = model(input_ids)[:, :-1]
        target = labels[:, 1:]
        lp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
        lp = lp * (target != IGNORE)
        zeros = torch.zeros_like(lp)
        return SimpleNamespace(log_probs=lp, entropy=zeros, mean_logits=zeros,
                               is_top1=zeros.bool())  # fmt: skip

    fake_model.training = True
    b = full.shape[0] // 2
    ref = batch["ref_logps"].double()
    ident = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x,
                            gather=lambda x: x)  # fmt: skip
    trainer = SimpleNamespace(
        model=fake_model, accelerator=ident, aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["sigmoid" if loss_type == "dpo" else "ipo"], loss_weights=[1.0],
        beta=beta, use_weighting=False, label_smoothing=0.0,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    inputs = {
        "input_ids": full, "attention_mask": torch.ones_like(full),
        "completion_mask": completion, "ref_chosen_logps": ref[:b], "ref_rejected_logps": ref[b:],
    }  # fmt: skip
    loss = DPOTrainer._compute_loss(trainer, fake_model, inputs, False)
    _assert_close(ours, (loss.detach(), _grads(loss, model)))


def test_simpo_equals_trl_cpo_trainer() -> None:
    from trl.experimental.cpo import CPOTrainer

    beta, gamma = 2.0, 0.3
    ours, model, chosen, rejected = _ours_and_trl_mean_logps(CPOTrainer, "simpo", beta)
    trainer = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta,
                              label_smoothing=0.0,
                              accelerator=SimpleNamespace(device=torch.device("cpu")))  # fmt: skip
    losses, _, _ = CPOTrainer.cpo_loss(trainer, chosen, rejected)
    loss = losses.mean()  # CPOTrainer adds cpo_alpha * NLL; SimPO is cpo_alpha = 0
    _assert_close(ours, (loss.detach(), _grads(loss, model)))


def test_orpo_equals_trl_orpo_trainer() -> None:
    from trl.experimental.orpo import ORPOTrainer

    beta = 0.25
    ours, model, chosen, rejected = _ours_and_trl_mean_logps(
        ORPOTrainer, "orpo", beta, equal_chosen=True
    )
    trainer = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device=torch.device("cpu")))
    losses, *_ = ORPOTrainer.odds_ratio_loss(trainer, chosen, rejected)
    # ORPOTrainer: loss = NLL(chosen) - mean(beta log sigmoid(log odds ratio)). Its NLL is the
    # token mean over the chosen rows; with answers of equal length that is the mean over pairs
    # of each answer's per-token NLL, -chosen. (TRL also counts the prompt's tokens in the NLL;
    # the paper's SFT term, and ours, is the answer's alone.)
    nll = -chosen.mean()
    loss = nll - losses.mean()
    _assert_close(ours, (loss.detach(), _grads(loss, model)))


def test_reference_is_cached_and_reused(tmp_path) -> None:
    task = _task("dpo", 0.1)
    first = [ex[3:] for ex in task.train]
    again = PreferenceTask(_Tok(), _pairs(1), "dpo", max_len=64, val_fraction=0.0)
    cache = tmp_path / "ref.pt"
    assert again.compute_reference(_model(), cache=cache) is True
    other = PreferenceTask(_Tok(), _pairs(1), "dpo", max_len=64, val_fraction=0.0)
    # read back, not recomputed: a different model would give different numbers
    assert other.compute_reference(torch.nn.Linear(1, 1), cache=cache) is False
    assert [ex[3:] for ex in other.train] == [ex[3:] for ex in again.train]
    assert first != [ex[3:] for ex in again.train]  # _task's reference differs from _model()


def test_training_without_reference_is_refused() -> None:
    task = PreferenceTask(_Tok(), _pairs(1), "dpo", max_len=64, val_fraction=0.0)
    with pytest.raises(RuntimeError, match="compute_reference"):
        task.loss(None, task.batch(0, 1))  # type: ignore[arg-type]
