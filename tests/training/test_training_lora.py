"""LoRA: merging gives the logits of the unmerged adapter; only the factors train; adapters
save and load; a LoRA + SFT run on the real SmolLM2-135M-Instruct weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glassformer.config import Config
from glassformer.model import Transformer
from glassformer.training.lora import (
    ALL_LINEAR,
    LoRALinear,
    apply_lora,
    load_adapter,
    merge_lora,
    save_adapter,
)

DATA = Path(__file__).parent / "data"


def _model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(Config.preset("tiny", vocab_size=300)).eval()


def _randomise_lora(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.05)  # B starts at 0; make the update non-trivial


def test_fresh_lora_is_the_identity_and_merge_matches() -> None:
    model = _model()
    ids = torch.randint(0, 300, (2, 24))
    base = model(ids)
    names = apply_lora(model, rank=4, alpha=8, targets="all-linear")
    assert len(names) == 4 * len(ALL_LINEAR)
    torch.testing.assert_close(model(ids), base, rtol=0, atol=0)  # B = 0
    _randomise_lora(model)
    unmerged = model(ids)
    assert (unmerged - base).abs().max() > 1e-3
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(ids), unmerged, rtol=1e-5, atol=1e-5)


def test_only_lora_factors_train() -> None:
    model = _model().train()
    apply_lora(model, rank=2, alpha=4, dropout=0.1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    assert all(".q_proj." in n or ".v_proj." in n for n in trainable)
    ids = torch.randint(0, 300, (2, 16))
    model(ids).sum().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n


def test_adapter_save_and_load(tmp_path: Path) -> None:
    model = _model()
    apply_lora(model, rank=4, alpha=8, targets=["q_proj", "down_proj"])
    _randomise_lora(model)
    ids = torch.randint(0, 300, (1, 12))
    want = model(ids)
    save_adapter(model, tmp_path / "adapter")
    fresh = _model()
    load_adapter(fresh, tmp_path / "adapter")
    torch.testing.assert_close(fresh(ids), want)


def test_unknown_targets_are_an_error() -> None:
    with pytest.raises(ValueError, match="match no linear"):
        apply_lora(_model(), targets="qproj")


@pytest.mark.slow
def test_lora_sft_on_smollm2(tmp_path: Path) -> None:
    """A handful of LoRA steps on the real weights lower the reply loss; merging keeps logits."""
    from glassformer.loaders.resolve import ModelNotInstalledError

    try:
        from glassformer.generation import load

        model, tok = load("smollm2-135m-instruct")
    except (ModelNotInstalledError, FileNotFoundError) as err:
        pytest.skip(str(err))
    from glassformer.training.sft import SFTTask, load_chat_jsonl
    from glassformer.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    task = SFTTask(tok, load_chat_jsonl(DATA / "chat_pirate.jsonl"), 96, 0.15, seed=0)
    apply_lora(model, rank=8, alpha=16, targets="q_proj,v_proj")
    tc = TrainConfig(
        out=str(tmp_path / "sft"), preset=None, batch_size=4, max_steps=4, lr=3e-3,
        warmup_steps=0, schedule="constant", weight_decay=0.0, eval_every=0, eval_batches=2,
        sample_tokens=0, checkpoint_every=0, progress=False, export=False,
    )  # fmt: skip
    model.train()
    trainer = Trainer(tc, model=model, tokenizer=tok, task=task, model_config=model.config,
                      trainable_only_checkpoints=True)  # fmt: skip
    before = trainer.evaluate()["val_loss"]
    summary = trainer.train()
    assert summary["trainable_params"] < summary["params"] / 100
    assert summary["val_loss"] < before - 0.3, (before, summary["val_loss"])
    model.eval()
    ids = task.eval_batch(0, 1)["input_ids"]
    with torch.no_grad():
        unmerged = model(ids)
        merge_lora(model)
        merged = model(ids)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
