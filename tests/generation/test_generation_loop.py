"""The decode loop: greedy text equal to HF transformers' generate, batching, stops, streaming."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.generation import GenerationConfig, generate
from tests.generation.byte_tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def tiny() -> gf.Transformer:
    torch.manual_seed(0)
    return gf.Transformer(gf.Config.preset("tiny").replace(vocab_size=257)).eval()


def test_batched_generation_equals_one_by_one(tiny: gf.Transformer) -> None:
    tok = ByteTokenizer()
    prompts = ["hello there", "a much longer prompt than the first", "x"]
    cfg = GenerationConfig(max_new_tokens=12, ignore_eos=True)
    batched = generate(tiny, tok, prompts, cfg)
    for prompt, result in zip(prompts, batched, strict=True):
        alone = generate(tiny, tok, prompt, cfg)
        assert result.tokens == alone.tokens


def test_streamed_pieces_add_up_to_the_text(tiny: gf.Transformer) -> None:
    pieces: list[str] = []
    cfg = GenerationConfig(max_new_tokens=20, temperature=1.0, seed=3, ignore_eos=True)
    result = generate(tiny, ByteTokenizer(), "stream", cfg, on_text=lambda _, p: pieces.append(p))
    assert "".join(pieces) == result.text
    again = generate(tiny, ByteTokenizer(), "stream", cfg)
    assert again.tokens == result.tokens  # same seed, same draw


def test_stop_string_and_stop_token(tiny: gf.Transformer) -> None:
    tok = ByteTokenizer()
    free = generate(tiny, tok, "abc", GenerationConfig(max_new_tokens=16, ignore_eos=True))
    stop = free.text[5:7]
    stopped = generate(tiny, tok, "abc", GenerationConfig(max_new_tokens=16, stop_strings=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]
    first = free.tokens[3]
    by_id = generate(tiny, tok, "abc", GenerationConfig(max_new_tokens=16, stop_token_ids=(first,)))
    assert by_id.finish_reason == "eos"
    assert by_id.tokens == free.tokens[: free.tokens.index(first)]


@pytest.mark.slow
def test_greedy_continuation_equals_hf_generate_on_smollm2() -> None:
    transformers = pytest.importorskip("transformers")
    from glassformer.loaders.resolve import ModelNotInstalledError, resolve

    try:
        path = resolve("smollm2-135m-instruct")
    except ModelNotInstalledError as err:
        pytest.skip(str(err))
    model, tok = gf.load(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    prompts = [
        "The three primary colours are",
        tok.apply_chat_template(
            [{"role": "user", "content": "Write a haiku about the sea."}],
            add_generation_prompt=True,
        ),
    ]
    for prompt in prompts:
        ours = generate(
            model, tok, prompt, GenerationConfig(max_new_tokens=32, add_special_tokens=False)
        )
        ids = torch.tensor([ours.prompt_tokens])
        ref = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=32,
            do_sample=False,
            eos_token_id=sorted(tok.eos_ids),
            pad_token_id=0,
        )[0, ids.shape[1] :].tolist()
        ref = [t for t in ref if t not in tok.eos_ids][: len(ours.tokens)]
        assert ours.tokens == ref, prompt


def test_hybrid_linear_attention_generation_carries_its_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Qwen3.5-style hybrid (Gated DeltaNet + full attention): the linear layers' fixed-size
    states ride along as the KV cache grows, padded rows decode as they would alone, and the
    greedy tokens are those of full forward passes without any cache."""
    import sys

    from tests.families import our_config

    # a small first cache, so that it grows while decoding (the package's `generate` attribute
    # is the function; the module is its own entry)
    monkeypatch.setattr(sys.modules["glassformer.generation.generate"], "INITIAL_NEW", 4)
    torch.manual_seed(0)
    # weights large enough that every layer sways the argmax
    cfg = our_config("qwen3_5_text").replace(vocab_size=257, max_seq_len=96, init_std=0.3)
    model = gf.Transformer(cfg).eval()
    tok = ByteTokenizer()
    prompts = ["a hybrid", "and a longer prompt"]
    gen = GenerationConfig(max_new_tokens=12, ignore_eos=True)
    batched = generate(model, tok, prompts, gen)
    for prompt, result in zip(prompts, batched, strict=True):
        assert result.tokens == generate(model, tok, prompt, gen).tokens
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            for _ in range(len(result.tokens)):
                ids = torch.cat((ids, model(ids)[:, -1].argmax(-1, keepdim=True)), 1)
        assert result.tokens == ids[0, -len(result.tokens) :].tolist()
