"""Gemma 4 unified (encoder-free multimodal input) against HF's
`Gemma4UnifiedForConditionalGeneration`: images alone, audio alone, both in one prompt, two
images, padded patch positions, cached decoding after a multimodal prompt; the configs' and the
weights' round trips; the image attention rule."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import glassformer as gf
from glassformer.components.kv_cache import attention_mask
from glassformer.components.multimodal_embedders import image_blocks
from tests.families import SEQ, VOCAB, perturb

transformers = pytest.importorskip("transformers")

IMAGE, AUDIO, BOI, EOI, BOA, EOA, VIDEO = 90, 91, 92, 93, 94, 95, 96
PATCH_DIM = (2 * 2) ** 2 * 3  # patch 2, pooled 2 x 2: 4 x 4 pixels, 3 channels
FRAME = 8

TEXT_CONFIG = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=48, num_hidden_layers=5,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
    num_global_key_value_heads=1, attention_k_eq_v=True, sliding_window=6,
    final_logit_softcapping=3.0,
    layer_types=["sliding_attention", "sliding_attention", "full_attention",
                 "sliding_attention", "full_attention"],
)  # fmt: skip


def hf_unified_config(**text_changes: Any) -> Any:
    from transformers import Gemma4UnifiedConfig

    return Gemma4UnifiedConfig(
        text_config={**TEXT_CONFIG, **text_changes},
        vision_config=dict(patch_size=2, pooling_kernel_size=2, mm_embed_dim=24,
                           mm_posemb_size=10, output_proj_dims=24),
        audio_config=dict(audio_embed_dim=FRAME),
        image_token_id=IMAGE, audio_token_id=AUDIO, boi_token_id=BOI, eoi_token_id=EOI,
        boa_token_id=BOA, eoa_token_index=EOA, video_token_id=VIDEO,
    )  # fmt: skip


def build_hf_unified(seed: int = 0, **text_changes: Any) -> Any:
    from transformers import Gemma4UnifiedForConditionalGeneration

    torch.manual_seed(seed)
    model = Gemma4UnifiedForConditionalGeneration(hf_unified_config(**text_changes))
    model = model.float().eval()
    perturb(model, seed)
    model.set_attn_implementation("eager")
    return model


def prompt(rows: list[list[tuple[str, int]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows of (kind, count) runs -> HF's keyword inputs, SEQ tokens a row. Kinds: "text",
    "image" (count = valid patches of a 3-wide grid), "audio" (count = frames)."""
    gen = torch.Generator().manual_seed(seed)
    ids, types, images, clips = [], [], [], []
    for row in rows:
        r_ids: list[int] = []
        r_types: list[int] = []
        for kind, n in row:
            if kind == "text":
                r_ids += torch.randint(3, 90, (n,), generator=gen).tolist()
                r_types += [0] * n
            elif kind == "image":
                r_ids += [BOI] + [IMAGE] * n + [EOI]
                r_types += [0] + [1] * n + [0]
                images.append(n)
            else:
                r_ids += [BOA] + [AUDIO] * n + [EOA]
                r_types += [0] + [3] * n + [0]
                clips.append(n)
        assert len(r_ids) <= SEQ
        fill = SEQ - len(r_ids)
        r_ids += torch.randint(3, 90, (fill,), generator=gen).tolist()
        r_types += [0] * fill
        ids.append(r_ids)
        types.append(r_types)
    out = {
        "input_ids": torch.tensor(ids),
        "mm_token_type_ids": torch.tensor(types),
    }
    if images:
        most = max(images) + 2  # padding patches after every image's own
        pixels = torch.rand(len(images), most, PATCH_DIM, generator=gen)
        positions = torch.full((len(images), most, 2), -1, dtype=torch.long)
        for i, n in enumerate(images):
            cells = torch.arange(n)
            positions[i, :n, 0], positions[i, :n, 1] = cells % 3, cells // 3
        out.update(pixel_values=pixels, image_position_ids=positions)
    if clips:
        frames = max(clips) + 1
        out["input_features"] = torch.randn(len(clips), frames, FRAME, generator=gen) * 0.3
        mask = torch.zeros(len(clips), frames, dtype=torch.bool)
        for i, n in enumerate(clips):
            mask[i, :n] = True
        out["input_features_mask"] = mask
    return out


def hf_logits(hf: Any, inputs: dict[str, torch.Tensor], cache: Any = None) -> Any:
    """HF's output with the masks its generation builds (`create_masks_for_generate`: image
    blocks both ways on the sliding layers, within the window; causal on the full layers).
    HF's forward without them ORs the image blocks into every layer's mask, window or not,
    which its generation and its own docstring do not do; glassformer follows generation."""
    from transformers import Gemma4UnifiedForConditionalGeneration as HF

    ids = inputs["input_ids"]
    start = cache.get_seq_length() if cache is not None else 0
    embeds = hf.model.get_input_embeddings()(ids.clamp(max=VOCAB - 1))
    positions = torch.arange(start, start + ids.shape[1])[None]
    masks = HF.create_masks_for_generate(
        hf.config, embeds, None, cache, positions, inputs.get("mm_token_type_ids")
    )
    return hf(**inputs, attention_mask=masks, cache=cache, use_cache=cache is not None)


CASES = {
    # an image alone in each row: 8 tokens (past the 6-token window), 5 tokens and padding
    "image": [[("text", 3), ("image", 8), ("text", 4)], [("text", 7), ("image", 5)]],
    "audio": [[("text", 2), ("audio", 6)], [("audio", 4), ("text", 5)]],
    "image+audio": [[("text", 2), ("image", 6), ("text", 3), ("audio", 5)],
                    [("audio", 3), ("image", 9), ("text", 2)]],
    "two-images": [[("image", 4), ("text", 2), ("image", 7)],
                   [("text", 1), ("image", 3), ("image", 6)]],
}  # fmt: skip


@pytest.fixture(scope="module")
def pair() -> tuple[Any, gf.Transformer]:
    hf = build_hf_unified()
    return hf, gf.from_hf(hf).eval()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("impl", ["native", "sdpa", "eager"])
def test_logits_match_hf(pair: tuple[Any, gf.Transformer], case: str, impl: str) -> None:
    hf, ours = pair
    inputs = prompt(CASES[case])
    with torch.no_grad():
        want = hf_logits(hf, inputs).logits
        ours.set_attention_impl(impl)
        got = ours(**inputs)
    ours.set_attention_impl("native")
    assert (got - want).abs().max().item() <= 1e-4


def test_soft_tokens_change_the_logits(pair: tuple[Any, gf.Transformer]) -> None:
    """The image really enters: other pixels give other logits (from the image on only). A
    uniform brightness shift would not: the first LayerNorm removes each patch's mean."""
    _, ours = pair
    inputs = prompt(CASES["image"])
    shifted = dict(inputs, pixel_values=inputs["pixel_values"] + 0.5)
    with torch.no_grad():
        assert (ours(**inputs) - ours(**shifted)).abs().max() < 1e-4
    other = dict(inputs, pixel_values=inputs["pixel_values"].flip(-1))
    with torch.no_grad():
        a, b = ours(**inputs), ours(**other)
    assert torch.equal(a[:, :3], b[:, :3])
    assert (a - b).abs().max() > 1e-3


def test_image_tokens_see_each_other_on_sliding_layers_only(
    pair: tuple[Any, gf.Transformer],
) -> None:
    """Image tokens depend on later tokens of their own image: the bidirectional rule."""
    _, ours = pair
    inputs = prompt(CASES["image"])
    later = inputs["pixel_values"].clone()
    later[0, 7] = later[0, 7].flip(-1)  # the last patch of row 0's image (token 4 + 7 = 11)
    with torch.no_grad():
        a = ours(**inputs)
        b = ours(**dict(inputs, pixel_values=later))
    assert (a[0, 5:11] - b[0, 5:11]).abs().max() > 1e-4  # earlier tokens of the same image
    assert torch.equal(a[0, :4], b[0, :4])  # the text before it


@pytest.mark.parametrize("case", ["image+audio", "two-images"])
def test_cached_decoding_after_multimodal_prompt(
    pair: tuple[Any, gf.Transformer], case: str
) -> None:
    _, ours = pair
    inputs = prompt(CASES[case])
    prefill = 28  # every image and clip lies inside the prefill
    with torch.no_grad():
        full = ours(**inputs)
        cache = ours.new_cache(batch_size=2, max_seq_len=SEQ)
        media = {k: v for k, v in inputs.items() if k not in ("input_ids", "mm_token_type_ids")}
        head = ours(
            inputs["input_ids"][:, :prefill], cache,
            mm_token_type_ids=inputs["mm_token_type_ids"][:, :prefill], **media,
        )  # fmt: skip
        steps = [head]
        for t in range(prefill, SEQ):
            steps.append(ours(inputs["input_ids"][:, t : t + 1], cache))
    got = torch.cat(steps, dim=1)
    assert (got - full).abs().max().item() <= 1e-4


def test_hf_cached_generation_agrees(pair: tuple[Any, gf.Transformer]) -> None:
    """HF's own cached continuation after the multimodal prompt equals our cached one."""
    hf, ours = pair
    inputs = prompt(CASES["image+audio"])
    prefill = 30
    short = {k: (v[:, :prefill] if k in ("input_ids", "mm_token_type_ids") else v)
             for k, v in inputs.items()}  # fmt: skip
    with torch.no_grad():
        from transformers import DynamicCache

        hf_cache = DynamicCache(config=hf.config.text_config)
        hf_logits(hf, short, hf_cache)
        step = {"input_ids": inputs["input_ids"][:, prefill : prefill + 1]}
        hf_next = hf_logits(hf, step, hf_cache)
        cache = ours.new_cache(batch_size=2, max_seq_len=SEQ)
        media = {k: v for k, v in short.items() if k != "input_ids"}
        ours(short["input_ids"], cache, **media)
        our_next = ours(inputs["input_ids"][:, prefill : prefill + 1], cache)
    assert (our_next - hf_next.logits).abs().max().item() <= 1e-4


def test_kv_sharing_and_no_bidirectional_rule() -> None:
    """The text stack's other Gemma 4 traits under images: KV-sharing layers see the image
    blocks too; use_bidirectional_attention=None keeps every layer causal."""
    for changes in (dict(num_kv_shared_layers=2), dict(use_bidirectional_attention=None)):
        hf = build_hf_unified(seed=3, **changes)
        ours = gf.from_hf(hf).eval()
        want_rule = "none" if "use_bidirectional_attention" in changes else "sliding"
        assert ours.config.image_bidirectional == want_rule
        inputs = prompt(CASES["image+audio"], seed=5)
        with torch.no_grad():
            diff = (ours(**inputs) - hf_logits(hf, inputs).logits).abs().max().item()
        assert diff <= 1e-4, changes


def test_config_and_weights_round_trip(pair: tuple[Any, gf.Transformer]) -> None:
    hf, ours = pair
    cfg = ours.config
    assert gf.Config.from_hf(hf.config.to_dict()) == cfg
    assert (cfg.vision_patch_size, cfg.vision_pool, cfg.vision_patch_dim) == (2, 2, PATCH_DIM)
    assert (cfg.audio_frame_size, cfg.image_token_id, cfg.audio_token_id) == (FRAME, IMAGE, AUDIO)
    assert gf.Config.from_hf(cfg.to_hf()) == cfg
    back = gf.to_hf(ours)
    assert type(back).__name__ == "Gemma4UnifiedForConditionalGeneration"
    want = hf.state_dict()
    for name, tensor in back.state_dict().items():
        assert torch.equal(tensor, want[name]), name
    inputs = prompt(CASES["image+audio"])
    back.set_attn_implementation("eager")
    with torch.no_grad():
        assert torch.equal(hf_logits(back, inputs).logits, hf_logits(hf, inputs).logits)


def test_from_a_saved_directory(pair: tuple[Any, gf.Transformer], tmp_path: Any) -> None:
    """HF saves the image embedder under its checkpoint names (vision_embedder.*,
    embed_vision.embedding_projection); loading the directory finds them."""
    hf, _ = pair
    hf.save_pretrained(tmp_path)
    ours = gf.from_hf(tmp_path).eval()
    inputs = prompt(CASES["image+audio"])
    with torch.no_grad():
        assert (ours(**inputs) - hf_logits(hf, inputs).logits).abs().max().item() <= 1e-4


def test_wrong_counts_and_shapes_are_refused(pair: tuple[Any, gf.Transformer]) -> None:
    _, ours = pair
    inputs = prompt(CASES["image"])
    fewer = dict(inputs, image_position_ids=inputs["image_position_ids"].clone())
    fewer["image_position_ids"][0, 0] = -1
    with pytest.raises(ValueError, match="placeholder tokens"):
        ours(**fewer)
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        ours(**dict(inputs, mm_token_type_ids=inputs["mm_token_type_ids"][:, :5]))
    text_only = gf.Transformer(ours.config.replace(**_no_media()))
    with pytest.raises(ValueError, match="multimodal input"):
        text_only(inputs["input_ids"], pixel_values=inputs["pixel_values"])


def _no_media() -> dict[str, Any]:
    from glassformer.config import MULTIMODAL_FIELDS, Config

    return {n: Config.__dataclass_fields__[n].default for n in MULTIMODAL_FIELDS}


def test_config_refuses_what_it_cannot_build(pair: tuple[Any, gf.Transformer]) -> None:
    cfg = pair[1].config
    with pytest.raises(ValueError, match="vision_embed_dim"):
        cfg.replace(vision_embed_dim=0)
    with pytest.raises(ValueError, match="image_token_id"):
        cfg.replace(image_token_id=VOCAB)
    with pytest.raises(ValueError, match="image_bidirectional"):
        cfg.replace(**{**_no_media(), "image_bidirectional": "sliding"})
    with pytest.raises(ValueError, match="vision_pool"):
        cfg.replace(vision_pool=0)
    bad = hf_unified_config().to_dict()
    bad["vision_config"]["output_proj_dims"] = 32
    with pytest.raises(ValueError, match="output_proj_dims"):
        gf.Config.from_hf(bad)
    bad = hf_unified_config().to_dict()
    bad["text_config"]["use_bidirectional_attention"] = "all"
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        gf.Config.from_hf(bad)
    with pytest.raises(ValueError, match="image_bidirectional='all'"):
        cfg.replace(image_bidirectional="all").to_hf()


def test_mask_rule_against_hand_built_mask() -> None:
    """Sliding layer, window 3: text causal; the image at positions 2..6 sees itself both ways
    within the window (p_i - p_j < 3, later keys always)."""
    types = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0, 0]])
    blocks = image_blocks(types)
    assert blocks.tolist() == [[-1, -1, 0, 0, 0, 0, 0, -1, -1]]
    pos = torch.arange(9)
    got = attention_mask(pos, pos, 3, None, False, None, blocks)[0, 0]
    want = torch.zeros(9, 9, dtype=torch.bool)
    for i in range(9):
        for j in range(9):
            causal = 0 <= i - j < 3
            same = 2 <= i <= 6 and 2 <= j <= 6 and i - j < 3
            want[i, j] = causal or same
    assert torch.equal(got, want)
    two = image_blocks(torch.tensor([[1, 1, 0, 1, 1, 2, 2]]))
    assert two.tolist() == [[0, 0, -1, 1, 1, 1, 1]]  # HF: image and video runs join


# The 12B's config.json as transcribed in public test code (an MLX Swift port), with the keys
# HF's unified model does not read (per-layer input sizes, num_soft_tokens, model_patch_size)
PUBLISHED_12B = {
    "model_type": "gemma4_unified", "image_token_id": 258880, "audio_token_id": 258881,
    "video_token_id": 258884, "audio_config": {"model_type": "gemma4_unified_audio",
                                               "audio_embed_dim": 640},
    "text_config": {
        "attention_bias": False, "attention_k_eq_v": True, "enable_moe_block": False,
        "final_logit_softcapping": 30.0, "global_head_dim": 512, "head_dim": 256,
        "hidden_size": 3840, "hidden_size_per_layer_input": 0, "intermediate_size": 15360,
        "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 8,
        "model_type": "gemma4_unified_text", "moe_intermediate_size": None,
        "num_attention_heads": 16, "num_experts": None, "num_global_key_value_heads": 1,
        "num_hidden_layers": 48, "num_key_value_heads": 8, "num_kv_shared_layers": 0,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0,
                               "rope_type": "proportional"},
            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
        },
        "sliding_window": 1024, "tie_word_embeddings": True, "top_k_experts": None,
        "use_double_wide_mlp": False, "vocab_size": 262144,
        "vocab_size_per_layer_input": 262144, "bos_token_id": 2, "eos_token_id": 1,
    },
    "vision_config": {
        "mm_embed_dim": 3840, "mm_posemb_size": 1120, "model_patch_size": 48,
        "model_type": "gemma4_unified_vision", "num_soft_tokens": 280, "output_proj_dims": 3840,
        "patch_size": 16, "pooling_kernel_size": 3, "rms_norm_eps": 1e-6,
    },
}  # fmt: skip


def test_published_12b_config_is_the_preset() -> None:
    cfg = gf.Config.from_hf(PUBLISHED_12B)
    assert cfg == gf.Config.preset("gemma-4-12b")
    assert cfg.vision_patch_dim == 6912 and cfg.image_bidirectional == "sliding"
