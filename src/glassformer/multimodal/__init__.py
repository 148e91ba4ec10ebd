"""Preparing images and audio for a model with encoder-free embedders (Gemma 4 unified).

    prepare(tokenizer, text, config, images=["cat.png"], audio=["clip.wav"])
        -> {"input_ids", "mm_token_type_ids", "pixel_values", "image_position_ids",
            "input_features", "input_features_mask"}   (HF's names; `Transformer.forward`)

`image.py` turns an image into merged raw patches, `audio.py` a WAV file into raw frames.
The prompt gets one placeholder token per soft token, wrapped in the begin/end markers:

    image: boi, image_token x n, eoi        (n: the image's merged patches)
    audio: boa, audio_token x m, eoa        (m: the clip's frames)

and mm_token_type_ids marks them (text 0, image 1, audio 3: HF's processor's values), which
is what the attention mask's image rule reads. In the text, `<|image|>` and `<|audio|>` stand
where each image and clip goes, in order (they are replaced by the runs above, whatever the
tokenizer would make of them); a text without markers gets the images, then the clips, before
it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from glassformer.multimodal.audio import SAMPLE_RATE, frames, load_wav
from glassformer.multimodal.image import (
    SOFT_TOKEN_BUDGETS,
    ImagePatches,
    open_image,
    patchify,
    preprocess_image,
    target_size,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUDIO_MARKER",
    "IMAGE_MARKER",
    "SAMPLE_RATE",
    "SOFT_TOKEN_BUDGETS",
    "ImagePatches",
    "frames",
    "load_wav",
    "open_image",
    "patchify",
    "prepare",
    "preprocess_image",
    "target_size",
]

IMAGE_MARKER = "<|image|>"
AUDIO_MARKER = "<|audio|>"

Source = str | os.PathLike[str] | Any


def prepare(
    tokenizer: Any,
    text: str,
    config: Any,
    images: Sequence[Source] = (),
    audio: Sequence[str | os.PathLike[str] | np.ndarray] = (),
    max_soft_tokens: int = 280,
    add_special_tokens: bool = True,
) -> dict[str, torch.Tensor]:
    """The model's keyword inputs for one prompt with images (paths or Pillow images) and
    audio clips (WAV paths or 16 kHz mono float arrays); see the module docstring."""
    # here, not at the top: the explorer reads image sizes from this package without torch
    import torch

    from glassformer.components.multimodal_embedders import AUDIO, IMAGE, TEXT

    if images and not config.vision_patch_size:
        raise ValueError("images: the model has no vision embedder (Config.vision_patch_size)")
    if audio and not config.audio_frame_size:
        raise ValueError("audio: the model has no audio embedder (Config.audio_frame_size)")
    parts = re.split(f"({re.escape(IMAGE_MARKER)}|{re.escape(AUDIO_MARKER)})", text)
    n_image_marks, n_audio_marks = parts.count(IMAGE_MARKER), parts.count(AUDIO_MARKER)
    if n_image_marks == 0 and n_audio_marks == 0:
        parts = [IMAGE_MARKER] * len(images) + [AUDIO_MARKER] * len(audio) + [text]
    elif (n_image_marks, n_audio_marks) != (len(images), len(audio)):
        raise ValueError(
            f"prompt: {n_image_marks} {IMAGE_MARKER} and {n_audio_marks} {AUDIO_MARKER} markers "
            f"for {len(images)} images and {len(audio)} audio clips"
        )
    prepared = [
        preprocess_image(img, config.vision_patch_size, config.vision_pool, max_soft_tokens)
        for img in images
    ]
    clips = [
        frames(load_wav(a) if isinstance(a, str | os.PathLike) else np.asarray(a, np.float32),
               config.audio_frame_size)
        for a in audio
    ]  # fmt: skip
    ids: list[int] = []
    if add_special_tokens and getattr(tokenizer, "add_bos", False) and tokenizer.bos_id is not None:
        ids.append(tokenizer.bos_id)
    types = [TEXT] * len(ids)
    next_image, next_clip = iter(prepared), iter(clips)
    for part in parts:
        if part == IMAGE_MARKER:
            run = _wrap(config.boi_token_id, config.image_token_id, next(next_image).n_tokens,
                        config.eoi_token_id)  # fmt: skip
            kind = IMAGE
        elif part == AUDIO_MARKER:
            run = _wrap(config.boa_token_id, config.audio_token_id, len(next(next_clip)),
                        config.eoa_token_id)  # fmt: skip
            kind = AUDIO
        else:
            piece = tokenizer.encode(part, add_special_tokens=False, parse_special=True)
            ids += piece
            types += [TEXT] * len(piece)
            continue
        ids += [t for t, _ in run]
        types += [kind if placeholder else TEXT for _, placeholder in run]
    out = {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "mm_token_type_ids": torch.tensor([types], dtype=torch.long),
    }
    if prepared:
        out["pixel_values"] = torch.from_numpy(np.stack([p.patches for p in prepared]))
        out["image_position_ids"] = torch.from_numpy(np.stack([p.positions for p in prepared]))
    if clips:
        longest = max(len(c) for c in clips)
        features = np.zeros((len(clips), longest, config.audio_frame_size), dtype=np.float32)
        mask = np.zeros((len(clips), longest), dtype=bool)
        for i, c in enumerate(clips):
            features[i, : len(c)], mask[i, : len(c)] = c, True
        out["input_features"] = torch.from_numpy(features)
        out["input_features_mask"] = torch.from_numpy(mask)
    return out


def _wrap(begin: int | None, token: int, n: int, end: int | None) -> list[tuple[int, bool]]:
    """(token id, is a placeholder) for one image or clip: begin, n placeholders, end (the
    markers where the config has them)."""
    run = [(begin, False)] if begin is not None else []
    run += [(token, True)] * n
    return run + ([(end, False)] if end is not None else [])
