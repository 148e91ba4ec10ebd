"""Chat SFT: the loss mask covers exactly the assistant tokens (checked against HF
transformers' `return_assistant_tokens_mask` and, for SmolLM2's real template, by decoding)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glassformer.training.bpe_trainer import chatml_template, train_tokenizer
from glassformer.training.sft import SFTTask, load_chat_jsonl, tokenize_chat
from glassformer.training.tasks import IGNORE

DATA = Path(__file__).parent / "data"
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
    [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!  How can I help?\n"},
        {"role": "user", "content": "Name a color 🎨"},
        {"role": "assistant", "content": "Ünïcode blue, of course."},
    ],
    *load_chat_jsonl(DATA / "chat_pirate.jsonl")[:6],
]


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our BPE with a ChatML template that marks replies with HF's {% generation %}."""
    out = tmp_path_factory.mktemp("chatml")
    texts = [json.dumps(c) for c in CONVERSATIONS] * 3
    train_tokenizer(texts, 400, out, chat_template=chatml_template(generation_tags=True))
    return out


def test_mask_equals_hf_assistant_tokens_mask(chatml_dir: Path) -> None:
    from transformers import AutoTokenizer

    from glassformer.tokenizer import load_tokenizer

    hf = AutoTokenizer.from_pretrained(str(chatml_dir))
    ours = load_tokenizer(chatml_dir)
    for conv in CONVERSATIONS:
        ref = hf.apply_chat_template(
            conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = tokenize_chat(ours, conv)
        assert ids == ref["input_ids"]
        assert mask == ref["assistant_masks"]
        assert sum(mask) > 0


def test_smollm2_mask_decodes_to_the_replies() -> None:
    from glassformer.loaders.resolve import ModelNotInstalledError

    try:
        from glassformer.loaders.resolve import resolve
        from glassformer.tokenizer import load_tokenizer

        tok = load_tokenizer(resolve("smollm2-135m-instruct"))
    except (ModelNotInstalledError, FileNotFoundError) as err:
        pytest.skip(str(err))
    for conv in CONVERSATIONS:
        ids, mask = tokenize_chat(tok, conv)
        runs, current = [], []
        for i, m in zip(ids, mask, strict=True):
            if m:
                current.append(i)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        replies = [m["content"] for m in conv if m["role"] == "assistant"]
        assert [tok.decode(r) for r in runs] == [r + "<|im_end|>" for r in replies]
        # the (default) system prompt and the user turns are not trained on
        text = tok.decode([i for i, m in zip(ids, mask, strict=True) if not m])
        system = conv[0]["content"] if conv[0]["role"] == "system" else "named SmolLM"
        assert system in text
        assert all(m["content"] in text for m in conv if m["role"] == "user")


def test_sft_batches_shift_and_mask(chatml_dir: Path) -> None:
    from glassformer.tokenizer import load_tokenizer

    tok = load_tokenizer(chatml_dir)
    task = SFTTask(tok, CONVERSATIONS, max_len=128, val_fraction=0.2, seed=0)
    assert task.train_samples() + task.eval_samples() == len(CONVERSATIONS)
    batch = task.batch(0, 3)
    x, y = batch["input_ids"], batch["labels"]
    assert x.shape == y.shape
    for r in range(3):
        ids, mask = task.train[task.order[r]]
        n = len(ids) - 1
        assert x[r, :n].tolist() == ids[:-1]
        want = [t if m else IGNORE for t, m in zip(ids[1:], mask[1:], strict=True)]
        assert y[r, :n].tolist() == want
        assert (y[r, n:] == IGNORE).all()
    assert task.count(batch) == int((y != IGNORE).sum())
    prompt = task.sample_prompt()
    assert prompt.endswith("<|im_start|>assistant\n")


def test_sft_loss_trains_only_on_replies(chatml_dir: Path) -> None:
    from glassformer.config import Config
    from glassformer.model import Transformer
    from glassformer.tokenizer import load_tokenizer

    tok = load_tokenizer(chatml_dir)
    task = SFTTask(tok, CONVERSATIONS, max_len=128, val_fraction=0.0)
    torch.manual_seed(0)
    model = Transformer(Config.preset("tiny", vocab_size=tok.vocab_size))
    batch = task.batch(0, 2)
    loss, _ = task.loss(model, batch)
    logits = model(batch["input_ids"])
    keep = batch["labels"] != IGNORE
    manual = torch.nn.functional.cross_entropy(logits[keep], batch["labels"][keep], reduction="sum")
    torch.testing.assert_close(loss, manual)
