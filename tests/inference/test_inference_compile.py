"""The optional `torch.compile` of the decode step, and its fallback to eager decoding."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.inference import Decoder, decode, optimize


def tiny(compile: bool, quant: str = "none") -> gf.Transformer:
    torch.manual_seed(0)
    return optimize(gf.Transformer(gf.Config.preset("tiny")).eval(), quant, compile=compile)


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["none", "int4"])
def test_compiled_decode_gives_the_eager_tokens(quant: str) -> None:
    prompts = [[5, 17, 99, 3, 250], [7, 7, 1000, 42, 8]]
    eager = Decoder(tiny(False, quant), batch_size=2, max_seq_len=32).greedy(prompts, 12)
    compiled_decoder = Decoder(tiny(True, quant), batch_size=2, max_seq_len=32)
    assert compiled_decoder.step_fn is not decode.decode_step  # the compiled wrapper
    compiled = compiled_decoder.greedy(prompts, 12)
    assert compiled.tokens == eager.tokens


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fn, **kwargs):  # type: ignore[no-untyped-def]
        def run(*args, **kw):  # type: ignore[no-untyped-def]
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    prompts = [[5, 17, 99, 3, 250]]
    expect = Decoder(tiny(False), max_seq_len=32).greedy(prompts, 8).tokens
    decoder = Decoder(tiny(True), max_seq_len=32)
    with pytest.warns(UserWarning, match="decoding eagerly"):
        assert decoder.greedy(prompts, 8).tokens == expect
    assert decoder.greedy(prompts, 8).tokens == expect  # stays eager, no second warning
