"""One image's cost (explorer/multimodal.py) against the modules that compute it:
FlopCounterMode on glassformer's embedder + decoder (encoder-free path) and on HF's
SiglipVisionModel (the SigLIP path); parameter counts against the built models and HF's."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import glassformer as gf
from glassformer.cli import app
from glassformer.explorer import analyze
from glassformer.explorer.multimodal import (
    GEMMA3_SIGLIP,
    SiglipTower,
    audio_cost,
    image_cost,
    siglip_image_cost,
    siglip_ops,
)
from glassformer.multimodal.image import target_size
from tests.core.test_gemma4_unified import AUDIO, IMAGE, hf_unified_config
from tests.explorer.flop_counting import counted

transformers = pytest.importorskip("transformers")


def tiny() -> gf.Config:
    return gf.Config.from_hf(hf_unified_config().to_dict())  # 4-pixel merged patches


@pytest.mark.parametrize("size", [(16, 24), (28, 20)])  # grids within the 10-row table
def test_image_flops_equal_the_modules(size: tuple[int, int]) -> None:
    """Embedder over the budget's 70 rows (padding rows included, as the model runs them) +
    the decoder's prefill of the image's tokens, image blocks seen both ways."""
    cfg = tiny()
    h, w = target_size(*size, cfg.vision_patch_size, cfg.vision_pool, 70)
    n = (h // 4) * (w // 4)
    torch.manual_seed(0)
    model = gf.Transformer(cfg).eval()
    model.set_attention_impl("eager")  # the CPU SDPA kernel is invisible to FlopCounterMode
    positions = torch.full((1, 70, 2), -1, dtype=torch.long)
    cells = torch.arange(n)
    positions[0, :n, 0], positions[0, :n, 1] = cells % (w // 4), cells // (w // 4)
    inputs = dict(
        input_ids=torch.full((1, n), IMAGE), mm_token_type_ids=torch.ones(1, n, dtype=torch.long),
        pixel_values=torch.rand(1, 70, cfg.vision_patch_dim), image_position_ids=positions,
    )  # fmt: skip
    with torch.no_grad():
        measured = counted(lambda: model(**inputs))
    cost = image_cost(cfg, *size, max_soft_tokens=70, attention="eager")
    assert cost["image_tokens"] == n and cost["encoder"]["rows"] == 70
    assert cost["prefill_flops_matmul"] == measured
    assert (
        cost["decoder"]["flops_matmul"]
        == analyze(cfg, "prefill", 1, n, attention="eager")["flops_matmul"]
    )


def test_parameters_include_the_embedders() -> None:
    cfg = tiny()
    assert analyze(cfg)["params_total"] == sum(p.numel() for p in gf.Transformer(cfg).parameters())
    big = gf.Config.preset("gemma-4-12b")
    with torch.device("meta"):
        model = gf.Transformer(big)
    assert analyze(big)["params_total"] == sum(p.numel() for p in model.parameters())
    embedders = sum(p.numel() for p in model.vision_embed.parameters())
    assert image_cost(big, 896, 896)["encoder"]["params"] == embedders


def test_siglip_tower_params_are_gemma3s() -> None:
    """Gemma 3's vision tower and projector in HF, on meta, with the published models'
    vision_config (SigLIP So400m at 896 pixels, no attention-pooling head)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = gf.Config.preset("gemma-3-12b").to_hf()
    text.pop("model_type")
    with torch.device("meta"):
        vision = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                      num_attention_heads=16, patch_size=14, image_size=896,
                      vision_use_head=False)  # fmt: skip
        config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256)
        hf = Gemma3ForConditionalGeneration(config)
    want = sum(p.numel() for p in hf.model.vision_tower.parameters()) + sum(
        p.numel() for p in hf.model.multi_modal_projector.parameters()
    )
    cost = siglip_image_cost(gf.Config.preset("gemma-3-12b"))
    assert cost["encoder"]["params"] == want
    assert (cost["image_tokens"], cost["encoder"]["rows"]) == (256, 4096)
    assert hf.config.vision_config.image_size == GEMMA3_SIGLIP.image


def test_siglip_tower_flops_equal_hfs_module() -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    tower = SiglipTower(layers=2, width=32, mlp=48, heads=4, patch=4, image=32, pool=2)
    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        patch_size=4, image_size=32, vision_use_head=False, attn_implementation="eager",
    )  # fmt: skip
    model = SiglipVisionModel(config).eval()
    with torch.no_grad():
        measured = counted(lambda: model(pixel_values=torch.rand(1, 3, 32, 32)))
    ops = [(op, c) for op, c in siglip_ops(tower, 64) if op.name.startswith("siglip.")]
    assert sum(op.flops_mm * c for op, c in ops) == measured
    assert sum(op.params * c for op, c in ops) == sum(p.numel() for p in model.parameters())


def test_explore_and_compare_with_an_image() -> None:
    out = CliRunner().invoke(app, ["explore", "gemma-4-12b", "--image", "896x896", "--json"])
    assert out.exit_code == 0, out.output
    image = json.loads(out.stdout)["image"]
    assert (image["path"], image["image_tokens"], image["resized"]) == (
        "encoder-free",
        256,
        [768, 768],
    )
    out = CliRunner().invoke(
        app, ["compare", "gemma-4-12b", "gemma-3-12b", "--image", "896x896", "--seq", "256",
              "--hardware", "h100-sxm", "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    free, siglip = json.loads(out.stdout)["images"]
    assert siglip["path"] == "SigLIP encoder" and siglip["image_tokens"] == 256
    # the claim made checkable: the encoder-free path costs less to prefill and to hold
    assert free["prefill_flops"] < siglip["prefill_flops"]
    assert free["encoder"]["params"] < siglip["encoder"]["params"] / 8
    assert free["ttft_s"] < siglip["ttft_s"]
    text = CliRunner().invoke(app, ["compare", "gemma-4-12b", "gemma-3-12b", "--image", "896x896"])
    assert text.exit_code == 0 and "time to first token" in text.stdout
    bad = CliRunner().invoke(app, ["explore", "gemma-4-12b", "--image", "big"])
    assert bad.exit_code != 0


def test_audio_flops_equal_the_modules() -> None:
    """43 samples in frames of 8: 6 tokens (the last frame zero-padded)."""
    cfg = tiny()
    torch.manual_seed(0)
    model = gf.Transformer(cfg).eval()
    model.set_attention_impl("eager")
    inputs = dict(
        input_ids=torch.full((1, 6), AUDIO), mm_token_type_ids=torch.full((1, 6), 3),
        input_features=torch.randn(1, 6, 8), input_features_mask=torch.ones(1, 6, dtype=torch.bool),
    )  # fmt: skip
    with torch.no_grad():
        measured = counted(lambda: model(**inputs))
    cost = audio_cost(cfg, 43 / 16000, attention="eager")
    assert cost["audio_tokens"] == 6
    assert cost["prefill_flops_matmul"] == measured
    assert cost["encoder"]["params"] == sum(p.numel() for p in model.audio_embed.parameters())
    out = CliRunner().invoke(app, ["explore", "gemma-4-12b", "--audio-seconds", "10", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["audio"]["audio_tokens"] == 250
    bad = CliRunner().invoke(app, ["explore", "gemma-3-12b", "--audio-seconds", "1"])
    assert bad.exit_code == 2 and "no audio embedder" in bad.output


@pytest.mark.parametrize("layers", [1, 2])
def test_vision_encoder_layers_counted(layers: int) -> None:
    """With a ViT encoder inside the embedder (Config.vision_encoder_layers), the explorer's
    image FLOPs still equal what FlopCounterMode counts, and its parameters the module's."""
    from glassformer.explorer.multimodal import multimodal_params

    cfg = tiny().replace(vision_encoder_layers=layers, vision_encoder_heads=4)
    h, w = target_size(16, 24, cfg.vision_patch_size, cfg.vision_pool, 70)
    n, cols = (h // 4) * (w // 4), w // 4
    torch.manual_seed(0)
    model = gf.Transformer(cfg).eval()
    model.set_attention_impl("eager")
    positions = torch.full((1, 70, 2), -1, dtype=torch.long)
    positions[0, :n, 0], positions[0, :n, 1] = torch.arange(n) % cols, torch.arange(n) // cols
    inputs = dict(
        input_ids=torch.full((1, n), IMAGE), mm_token_type_ids=torch.ones(1, n, dtype=torch.long),
        pixel_values=torch.rand(1, 70, cfg.vision_patch_dim), image_position_ids=positions,
    )  # fmt: skip
    with torch.no_grad():
        measured = counted(lambda: model(**inputs))
    cost = image_cost(cfg, 16, 24, max_soft_tokens=70, attention="eager")
    assert cost["image_tokens"] == n
    assert cost["prefill_flops_matmul"] == measured
    plain = image_cost(tiny(), 16, 24, max_soft_tokens=70, attention="eager")
    assert cost["encoder"]["flops_matmul"] > plain["encoder"]["flops_matmul"]
    embedders = (model.vision_embed, model.audio_embed)
    assert multimodal_params(cfg) == sum(p.numel() for m in embedders for p in m.parameters())
