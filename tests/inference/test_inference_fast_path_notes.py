"""`fast_path_notes`: what of the fast path a model does not get, and why."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.inference import fast_path_notes, native, optimize

pytestmark = pytest.mark.skipif(not native.available(), reason="needs the native kernels")


def _model(preset: str, **overrides) -> gf.Transformer:
    torch.manual_seed(0)
    return gf.Transformer(gf.Config.preset(preset).replace(**overrides)).eval()


def test_plain_model_is_named() -> None:
    assert fast_path_notes(_model("tiny")) == [
        "the plain model: every module runs through PyTorch (optimize() for speed)"
    ]


@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
def test_llama_shape_gets_everything(quant: str) -> None:
    assert fast_path_notes(optimize(_model("tiny"), quant, huge_pages=False)) == []


def test_widths_int4_cannot_hold_are_counted() -> None:
    # d_model 96: q/k/v, gate/up (K = 96) cannot be int4 (K % 64); o (K = 128) and down
    # (K = 384) can. After fusing, each layer has qkv, o, gate_up, down: two of four stay fp32.
    model = _model("tiny", d_model=96)
    notes = fast_path_notes(optimize(model, "int4", huge_pages=False))
    assert notes == [
        "8 of 16 projections stay float32: their input width is not a multiple of the int4 group"
    ]


def test_a_model_the_plan_cannot_run_says_why() -> None:
    notes = fast_path_notes(optimize(_model("tiny-gemma3"), "none", huge_pages=False))
    assert len(notes) == 1
    assert notes[0].startswith("decode steps run module by module, not as one native program: ")
