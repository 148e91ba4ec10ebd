"""A tiny random chat model on disk: an HF directory (config, safetensors, a ChatML BPE
tokenizer) that `glassformer.load` and HF transformers both read. For command-line tests of
fine-tuning and evaluation that must not depend on a downloaded model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXTS = [
    "Write a short poem about the sea. answer in lowercase letters only.",
    "the sea is blue and the sky is wide. Is there anything else I can help with?",
    '{"name": "ocean", "color": "blue"} * first point * second point - third',
    "Explain rivers to a child. Include the keyword water. Do not use any commas.",
]


def tiny_chat_model(out: Path, seed: int = 0, vocab: int = 320) -> Path:
    """Write the model to `out` (once) and return it."""
    from glassformer.config import Config
    from glassformer.loaders.safetensors_io import save_hf_dir
    from glassformer.model import Transformer
    from glassformer.tokenizer import load_tokenizer
    from glassformer.training.bpe_trainer import chatml_template, train_tokenizer

    if (out / "model.safetensors").exists():
        return out
    tok_dir = out / "tok"
    texts = [json.dumps(TEXTS)] * 4 + TEXTS
    train_tokenizer(texts, vocab, tok_dir, chat_template=chatml_template())
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(seed)
    cfg = Config.preset(
        "tiny", vocab_size=tok.vocab_size, n_layers=2, d_model=64, head_dim=16, d_ff=96,
        max_seq_len=256, eos_token_id=tok.eos_id, bos_token_id=None,
    )  # fmt: skip
    model = Transformer(cfg)
    save_hf_dir(out, cfg, model.state_dict())
    for f in tok_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out
