"""Image and audio preprocessing against hand-computed cases and HF's formulas (its image
processor's torchvision backend cannot run here: its patchify-and-merge is ported below as the
reference; its size rule and audio feature extractor are called directly)."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import glassformer as gf
from glassformer.multimodal import prepare
from glassformer.multimodal.audio import frames, load_wav
from glassformer.multimodal.image import (
    SOFT_TOKEN_BUDGETS,
    open_image,
    patchify,
    preprocess_image,
    target_size,
)

transformers = pytest.importorskip("transformers")


def test_target_size_hand_computed() -> None:
    # 896 x 896 at 280 tokens: f = sqrt(280 * 9 * 256 / 896^2) = 0.896, 803 -> 16 * 48 = 768
    assert target_size(896, 896, 16, 3, 280) == (768, 768)  # 16 x 16 = 256 tokens
    # 1 x 10000: the short side rounds to 0 -> 48; the long one, 10000 * 48, capped at
    # (max_patches // 9) * 48 = 280 * 48
    assert target_size(1, 10000, 16, 3, 280) == (48, 13440)  # one row of 280 tokens
    assert target_size(10000, 1, 16, 3, 70) == (3360, 48)
    # 480 x 640 at 70 tokens: f = sqrt(70 * 2304 / 307200) = 0.7246: 347.8 -> 336, 463.7 -> 432
    assert target_size(480, 640, 16, 3, 70) == (336, 432)  # 7 x 9 = 63 tokens
    with pytest.raises(ValueError, match="zero-size"):
        target_size(0, 10, 16, 3, 280)


def test_target_size_is_hfs_formula() -> None:
    from transformers.models.gemma4_unified.processing_gemma4_unified import (
        get_aspect_ratio_preserving_size,
    )

    rng = np.random.default_rng(0)
    sizes = [(1, 10000), (10000, 1), (3, 7), (896, 896), (1080, 1920), (48, 48), (5000, 20)]
    sizes += [tuple(int(v) for v in rng.integers(1, 4000, 2)) for _ in range(200)]
    for budget in SOFT_TOKEN_BUDGETS:
        for h, w in sizes:
            want = get_aspect_ratio_preserving_size(h, w, 16, budget * 9, 3)
            got = target_size(h, w, 16, 3, budget)
            assert got == want, (h, w, budget)
            assert (got[0] // 48) * (got[1] // 48) <= budget


def _hf_patches(image: torch.Tensor, patch_size: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's convert_image_to_patches + teacher positions + patches_merge
    (image_processing_gemma4_unified.py), for a [3, H, W] image."""
    c, h, w = image.shape
    ph, pw = h // patch_size, w // patch_size
    p = image.reshape(c, ph, patch_size, pw, patch_size).permute(1, 3, 2, 4, 0)
    patches = p.reshape(ph * pw, -1)[None]
    grid = torch.meshgrid(torch.arange(pw), torch.arange(ph), indexing="xy")
    positions = torch.stack(grid, dim=-1).reshape(ph * pw, 2)[None]
    length = ph * pw // (k * k)
    max_x = positions[..., 0].max(dim=-1, keepdim=True)[0] + 1
    kernel = torch.div(positions, k, rounding_mode="floor")
    from_top_left = k * k * kernel[..., 0] + k * max_x * kernel[..., 1]
    within = torch.remainder(positions, k)
    order = within[..., 0] + within[..., 1] * k + from_top_left
    perm = order.long().argsort(dim=-1)
    ordered = patches.gather(-2, perm.unsqueeze(-1).expand_as(patches))
    ordered = ordered.reshape(1, length, k, k, patch_size, patch_size, 3)
    merged = ordered.permute(0, 1, 2, 4, 3, 5, 6).reshape(1, length, -1)
    pos = positions.float().gather(-2, perm.unsqueeze(-1).expand_as(positions))
    pos = torch.div(pos.reshape(1, length, k * k, 2), k, rounding_mode="floor")
    return merged[0], pos.min(dim=-2)[0].long()[0]


@pytest.mark.parametrize("shape", [(48, 48), (96, 144), (144, 96), (48, 1488), (336, 432)])
def test_patch_order_and_positions_are_hfs(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.random((*shape, 3), dtype=np.float32)
    patches, positions = patchify(pixels, 48)
    want_patches, want_positions = _hf_patches(torch.from_numpy(pixels).permute(2, 0, 1), 16, 3)
    assert torch.equal(torch.from_numpy(patches), want_patches)
    assert torch.equal(torch.from_numpy(positions), want_positions)


def test_patchify_hand_computed() -> None:
    """A 4 x 6 image in 2-pixel patches: raster order, (x, y) cells, [row, col, channel]."""
    pixels = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    patches, positions = patchify(pixels, 2)
    assert positions.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]
    # patch (x=1, y=1): rows 2-3, columns 2-3
    want = np.concatenate([pixels[2, 2], pixels[2, 3], pixels[3, 2], pixels[3, 3]])
    assert np.array_equal(patches[4], want)


def _png(tmp_path: Path, image: Image.Image, name: str = "x.png", **kw) -> Path:
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_preprocess_pads_to_the_budget(tmp_path: Path) -> None:
    path = _png(tmp_path, Image.new("RGB", (640, 480), (255, 0, 0)))
    out = preprocess_image(path, 16, 3, 70)
    assert out.size == (336, 432) and out.n_tokens == 63
    assert out.patches.shape == (70, 6912) and out.positions.shape == (70, 2)
    assert np.all(out.positions[63:] == -1) and not out.patches[63:].any()
    assert np.allclose(out.patches[:63].reshape(63, -1, 3), [1.0, 0.0, 0.0])
    assert out.positions[:63].max(0).tolist() == [8, 6]
    with pytest.raises(ValueError, match="max_soft_tokens"):
        preprocess_image(path, 16, 3, 100)


def test_bad_images(tmp_path: Path) -> None:
    good = _png(tmp_path, Image.new("RGB", (64, 64), (10, 20, 30)))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.png: cannot read the image"):
        open_image(truncated)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read the image"):
        open_image(text)
    with pytest.raises(ValueError, match="zero-size"):
        open_image(Image.new("RGB", (0, 5)))
    # 1 x 10000: HF's rule makes it 48 x 13440 (one row of 280 tokens)
    thin = preprocess_image(_png(tmp_path, Image.new("L", (10000, 1), 128), "thin.png"), 16, 3)
    assert thin.size == (48, 13440) and thin.n_tokens == 280
    assert thin.positions[:, 1].max() == 0 and thin.positions[:, 0].max() == 279
    # CMYK -> RGB (Pillow's conversion)
    cmyk = open_image(_png(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "c.jpg"))
    assert cmyk.mode == "RGB" and cmyk.getpixel((0, 0))[0] > 200 > cmyk.getpixel((0, 0))[1]
    # 16-bit grayscale: the top 8 bits
    deep = Image.fromarray(np.full((8, 8), 0xABCD, dtype=np.uint16))
    rgb = open_image(_png(tmp_path, deep, "deep.png"))
    assert rgb.mode == "RGB" and rgb.getpixel((3, 3)) == (0xAB, 0xAB, 0xAB)
    # RGBA: composited onto white
    clear = open_image(_png(tmp_path, Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "clear.png"))
    assert clear.getpixel((0, 0)) == (255, 255, 255)
    # animated GIF: the first frame
    first, second = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    gif = tmp_path / "anim.gif"
    first.save(gif, save_all=True, append_images=[second], duration=100, loop=0)
    r, _, b = open_image(gif).getpixel((2, 2))
    assert r > 200 and b < 50


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file declaring more than twice Pillow's pixel limit (lowered here to keep it small)."""
    path = _png(tmp_path, Image.new("RGB", (64, 64)), "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="too many pixels"):
        open_image(path)


def _wav(path: Path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())
    return path


def test_wav_frames_are_hfs_feature_extractor(tmp_path: Path) -> None:
    from transformers.models.gemma4_unified.feature_extraction_gemma4_unified import (
        Gemma4UnifiedAudioFeatureExtractor,
    )

    rng = np.random.default_rng(2)
    ints = rng.integers(-32768, 32767, 1000)
    samples = load_wav(_wav(tmp_path / "a.wav", ints))
    assert np.array_equal(samples, ints.astype(np.float32) / 32768)
    got = frames(samples, 640)
    assert got.shape == (math.ceil(1000 / 640), 640) and not got[1, 1000 - 640 :].any()
    want = Gemma4UnifiedAudioFeatureExtractor()(samples, return_tensors="np")
    assert np.array_equal(got, want["input_features"][0])
    assert want["input_features_mask"].all()


def test_bad_audio(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sample rate 44100 Hz"):
        load_wav(_wav(tmp_path / "cd.wav", np.zeros(100), rate=44100))
    with pytest.raises(ValueError, match="empty audio"):
        load_wav(_wav(tmp_path / "empty.wav", np.zeros(0)))
    # stereo: the channels' mean
    stereo = np.stack([np.full(50, 1000), np.full(50, -3000)], axis=1).reshape(-1)
    mono = load_wav(_wav(tmp_path / "stereo.wav", stereo, channels=2))
    assert mono.shape == (50,) and np.allclose(mono, -1000 / 32768)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ValueError, match="cannot read as a PCM WAV"):
        load_wav(junk)
    with pytest.raises(ValueError, match="empty audio"):
        frames(np.zeros(0, np.float32), 640)


class _ByteTokenizer:
    """Text as its UTF-8 bytes (ids 3 .. 258 would do; tiny vocabularies need less)."""

    bos_id, add_bos = 2, True

    def encode(self, text: str, add_special_tokens: bool = True, parse_special: bool = True):
        return [3 + (b % 80) for b in text.encode()]


def _tiny_config() -> gf.Config:
    from tests.core.test_gemma4_unified import hf_unified_config

    return gf.Config.from_hf(hf_unified_config().to_dict())


def test_prepare_places_markers_and_counts(tmp_path: Path) -> None:
    cfg = _tiny_config()  # patch 2, pool 2: 4-pixel merged patches; image id 90, audio id 91
    image = Image.new("RGB", (12, 8), (0, 255, 0))
    clip = np.linspace(-1, 1, 20, dtype=np.float32)  # frames of 8: 3 tokens
    out = prepare(_ByteTokenizer(), "ab<|image|>c<|audio|>", cfg, [image], [clip], 70)
    ids, types = out["input_ids"][0].tolist(), out["mm_token_type_ids"][0].tolist()
    h, w = target_size(8, 12, 2, 2, 70)
    n = (h // 4) * (w // 4)
    want = [2, 3 + ord("a") % 80, 3 + ord("b") % 80, 92] + [90] * n + [93, 3 + ord("c") % 80]
    want += [94, 91, 91, 91, 95]
    assert ids == want
    assert types == [0, 0, 0, 0] + [1] * n + [0, 0, 0, 3, 3, 3, 0]
    assert out["pixel_values"].shape == (1, 70, 48)
    assert int((out["image_position_ids"][0, :, 0] >= 0).sum()) == n
    assert out["input_features"].shape == (1, 3, 8) and out["input_features_mask"].all()
    # no markers: images then clips before the text
    plain = prepare(_ByteTokenizer(), "hi", cfg, [image], [clip], 70)["input_ids"][0].tolist()
    assert plain[:2] == [2, 92] and plain[-2:] == [3 + ord("h") % 80, 3 + ord("i") % 80]
    with pytest.raises(ValueError, match="markers"):
        prepare(_ByteTokenizer(), "<|image|><|image|>", cfg, [image], [], 70)
    model = gf.Transformer(cfg).eval()
    with torch.no_grad():
        logits = model(**out)
    assert logits.shape == (1, len(want), cfg.vocab_size) and torch.isfinite(logits).all()
