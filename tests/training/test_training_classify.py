"""Classification fine-tuning: a head on the last real token."""

from __future__ import annotations

from pathlib import Path

import torch

from glassformer.config import Config
from glassformer.model import Transformer
from glassformer.training.classify import (
    ClassificationTask,
    SequenceClassifier,
    load_classification_jsonl,
)
from glassformer.training.trainer import Trainer

from .conftest import read_losses, small_config

DATA = Path(__file__).parent / "data"


def _tok(tiny_data: Path):
    from glassformer.tokenizer import load_tokenizer

    return load_tokenizer(tiny_data / "tokenizer.json")


def test_head_reads_the_last_real_token(tiny_data: Path) -> None:
    tok = _tok(tiny_data)
    task = ClassificationTask(tok, load_classification_jsonl(DATA / "sentiment.jsonl"))
    assert task.labels == ["negative", "positive"]
    torch.manual_seed(0)
    model = SequenceClassifier(Transformer(Config.preset("tiny", vocab_size=tok.vocab_size)), 2)
    torch.nn.init.normal_(model.score.weight, 0, 0.1)
    batch = task.batch(0, 4)
    logits = model(batch["input_ids"], batch["lengths"])
    for r in range(4):
        n = int(batch["lengths"][r])
        alone = model(batch["input_ids"][r : r + 1, :n], torch.tensor([n]))
        torch.testing.assert_close(logits[r : r + 1], alone, rtol=1e-5, atol=1e-5)


def test_classifier_trains(tmp_path: Path, tiny_data: Path) -> None:
    tok = _tok(tiny_data)
    task = ClassificationTask(tok, load_classification_jsonl(DATA / "sentiment.jsonl"), seed=1)
    torch.manual_seed(0)
    net = Transformer(Config.preset("tiny", vocab_size=tok.vocab_size))
    model = SequenceClassifier(net, task.n_classes)
    tc = small_config(tmp_path / "cls", tiny_data, batch_size=8, max_steps=25, lr=5e-3,
                      eval_every=25, checkpoint_every=0)  # fmt: skip
    summary = Trainer(tc, model=model, tokenizer=tok, task=task, model_config=net.config).train()
    losses = read_losses(tmp_path / "cls")
    assert abs(losses[1] - torch.log(torch.tensor(2.0)).item()) < 1e-4  # zero head: chance
    # a random backbone sees little context at the last token; it still moves off chance
    assert sum(losses[s] for s in range(21, 26)) / 5 < 0.6
    assert 0 <= summary["val_accuracy"] <= 1 and summary["sample"] is None
