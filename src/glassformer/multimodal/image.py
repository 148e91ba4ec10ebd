"""Images -> merged raw patches and their grid cells (what `VisionEmbedder` reads).

The steps, as HF's `Gemma4UnifiedImageProcessor` takes them (its formulas, with Pillow and
numpy in place of torchvision):

1. Read the file as 8-bit RGB (conversions below).
2. Resize, keeping the aspect ratio, to the largest H x W that
   - holds at most max_soft_tokens * k^2 patches of p x p pixels (p = patch size, k = the
     pooling kernel; max_soft_tokens one of 70, 140, 280, 560, 1120), and
   - has both sides multiples of s = k p (one merged patch, 48 pixels for Gemma 4):
       f = sqrt(max_soft_tokens k^2 p^2 / (h w)),  H = floor(f h / s) s,  W = floor(f w / s) s
   A side that rounds to 0 becomes s and the other floor(long / short) s, capped at
   max_soft_tokens * s (an image 1 pixel high and 10000 wide becomes 48 x 13440 at 280
   tokens: one row of 280 merged patches).
   Bicubic, antialiased (Pillow's resampling; torchvision's differs in the last bits of some
   pixels, never in the sizes, patch order or positions).
3. Scale to [0, 1] (x / 255), no mean or std normalisation.
4. Cut into s x s merged patches in raster order (row by row), each flattened as
   [row, column, channel] (s^2 * 3 values: 6912 for s = 48); its grid cell is (x, y) =
   (column, row). HF cuts p x p patches first and merges k x k of them; the result is the same
   (`tests/multimodal/test_preprocess.py` checks it against HF's formulas).
5. Pad to max_soft_tokens rows: zeros, grid cell (-1, -1).

Conversions, so that any common file works: transparency (RGBA, LA, palette with
transparency) is composited onto white, as HF's `convert_to_rgb` does; CMYK, grayscale,
palette and YCbCr images are converted to RGB; 16-bit images keep their top 8 bits;
an animated image (GIF, APNG, WebP) gives its first frame. A file Pillow cannot read (truncated,
not an image), one declaring more pixels than Pillow's decompression-bomb limit and an image
with a zero side raise ValueError naming the file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

SOFT_TOKEN_BUDGETS = (70, 140, 280, 560, 1120)


def target_size(
    height: int, width: int, patch_size: int, pool: int, max_soft_tokens: int
) -> tuple[int, int]:
    """The resized (height, width): see step 2 of the module docstring."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image: zero-size image ({width} x {height} pixels)")
    max_patches = max_soft_tokens * pool**2
    target_px = max_patches * patch_size**2
    factor = math.sqrt(target_px / (height * width))
    side = pool * patch_size
    new_h = math.floor(factor * height / side) * side
    new_w = math.floor(factor * width / side) * side
    if new_h == 0 and new_w == 0:  # cannot happen for a budget of at least one token
        raise ValueError(f"image: {width} x {height} resizes to nothing")
    longest = (max_patches // pool**2) * side
    if new_h == 0:
        new_h, new_w = side, min(math.floor(width / height) * side, longest)
    elif new_w == 0:
        new_w, new_h = side, min(math.floor(height / width) * side, longest)
    return new_h, new_w


def open_image(source: str | os.PathLike[str] | Any) -> Any:
    """A file path (or a Pillow image) -> an 8-bit RGB Pillow image (conversions above)."""
    from PIL import Image, UnidentifiedImageError

    name = str(source) if isinstance(source, str | os.PathLike) else "image"
    try:
        image = Image.open(source) if isinstance(source, str | os.PathLike) else source
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # an animation: its first frame
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{name}: cannot read the image ({err})") from None
    except Image.DecompressionBombError as err:  # Pillow's limit on pixels a file may declare
        raise ValueError(f"{name}: refused, too many pixels ({err})") from None
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name}: zero-size image ({image.width} x {image.height} pixels)")
    return to_rgb(image, name)


def to_rgb(image: Any, name: str = "image") -> Any:
    """8-bit RGB: transparency onto white, 16-bit to its top 8 bits, other modes converted."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.uint32)
        if mode == "I" and values.max(initial=0) > 65535:
            raise ValueError(f"{name}: 32-bit integer pixels are not supported")
        return Image.fromarray((values >> 8).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise ValueError(f"{name}: floating-point pixels (mode F) are not supported")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass
class ImagePatches:
    """One image as the vision embedder reads it."""

    patches: np.ndarray  # [max_soft_tokens, s^2 * 3] float32, rows past n_tokens zero
    positions: np.ndarray  # [max_soft_tokens, 2] int64 (x, y); (-1, -1) past n_tokens
    n_tokens: int  # soft tokens (placeholders in the prompt)
    size: tuple[int, int]  # resized (height, width)


def patchify(pixels: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """[H, W, 3] (H, W multiples of `side`) -> the side x side patches in raster order, each
    flattened [row, column, channel], and their (x, y) grid cells."""
    h, w, c = pixels.shape
    rows, cols = h // side, w // side
    blocks = pixels.reshape(rows, side, cols, side, c).transpose(0, 2, 1, 3, 4)
    patches = blocks.reshape(rows * cols, side * side * c)
    ys, xs = np.divmod(np.arange(rows * cols), cols)
    return patches, np.stack((xs, ys), axis=-1).astype(np.int64)


def preprocess_image(
    source: str | os.PathLike[str] | Any, patch_size: int, pool: int, max_soft_tokens: int = 280
) -> ImagePatches:
    """A file (or Pillow image) -> its merged patches, padded to `max_soft_tokens` rows."""
    from PIL import Image

    if max_soft_tokens not in SOFT_TOKEN_BUDGETS:
        raise ValueError(
            f"max_soft_tokens: expected one of {SOFT_TOKEN_BUDGETS}, got {max_soft_tokens}"
        )
    image = open_image(source)
    height, width = target_size(image.height, image.width, patch_size, pool, max_soft_tokens)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    patches, positions = patchify(pixels, patch_size * pool)
    n = patches.shape[0]
    out = np.zeros((max_soft_tokens, patches.shape[1]), dtype=np.float32)
    cells = np.full((max_soft_tokens, 2), -1, dtype=np.int64)
    out[:n], cells[:n] = patches, positions
    return ImagePatches(out, cells, n, (height, width))
