"""Synthetic image-question-answer data for training a small vision-language model.

Each example is a small RGB picture, a question about it and a short exact answer:

    colour    "what colour is the square ?"        -> "red"
    shape     "what shape is the blue object ?"    -> "circle"
    count     "how many circles ?"                 -> "3"
    position  "where is the triangle ?"            -> "top left"
    digit     "what digit is shown ?"              -> "7"

Scenes are drawn with Pillow on a grid of cells (a 64 x 64 picture has a 4 x 4 grid of 16-pixel
cells), one filled shape per cell, so objects never overlap and a count is unambiguous; a digit
is rendered large in Pillow's bundled font. The answer follows from the scene's description,
which is what was drawn: it is right by construction.

Example k of a split is a pure function of (seed, split, k): a resumed or re-run job sees the
same examples. The held-out split is disjoint from the training split by construction: an
example belongs to the split that the SHA-256 of its description (question + every drawn
object's kind, colour, cell and size) selects, and a draw for the other split is redrawn.

The language is closed, so its tokenizer is a word-level vocabulary of every word the
templates use (`VLMVocab`): the simplest tokenizer that loses nothing, with no training and no
unknown words.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLOURS",
    "QUESTION_TYPES",
    "SHAPES",
    "SceneSpec",
    "SyntheticVQA",
    "VLMExample",
    "VLMVocab",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
}
SHAPES = ("square", "circle", "triangle")
PLURALS = {"square": "squares", "circle": "circles", "triangle": "triangles"}
QUESTION_TYPES = ("colour", "shape", "count", "position", "digit")
BACKGROUND = (30, 30, 30)
MAX_COUNT = 5


@dataclass(frozen=True)
class SceneSpec:
    """What is drawn: objects as (shape, colour, row, col, size) on the cell grid, or a digit
    as ("digit", colour, x, y, size) in pixels."""

    objects: tuple[tuple[str, str, int, int, int], ...]

    def key(self) -> str:
        return json.dumps(self.objects)


@dataclass(frozen=True)
class VLMExample:
    image: np.ndarray  # [H, W, 3] uint8
    question: str
    answer: str
    kind: str  # one of QUESTION_TYPES
    scene: SceneSpec = field(repr=False)


class VLMVocab:
    """Word-level tokenizer of the synthetic language: special tokens, then every word of the
    templates in sorted order. Text is split on spaces; '?' is its own word."""

    PAD, BOS, EOS, IMAGE = "<pad>", "<bos>", "<eos>", "<image>"

    def __init__(self) -> None:
        words = {"what", "colour", "is", "the", "shape", "object", "how", "many", "where",
                 "digit", "shown", "?", "top", "bottom", "left", "right"}  # fmt: skip
        words |= set(COLOURS) | set(SHAPES) | set(PLURALS.values())
        words |= {str(d) for d in range(10)}
        self.itos = [self.PAD, self.BOS, self.EOS, self.IMAGE, *sorted(words)]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        return self.stoi[self.PAD]

    @property
    def bos_id(self) -> int:
        return self.stoi[self.BOS]

    @property
    def eos_id(self) -> int:
        return self.stoi[self.EOS]

    @property
    def image_id(self) -> int:
        return self.stoi[self.IMAGE]

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[w] for w in text.split()]
        except KeyError as err:
            raise ValueError(f"word {err.args[0]!r} is not in the synthetic vocabulary") from err

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.itos[i] for i in ids)


class SyntheticVQA:
    """The generator: `example(split, k)` draws example k of "train" or "heldout".

    `heldout_fraction` of all possible descriptions belong to the held-out split (by hash).
    `kinds` restricts the question types drawn (evenly, in turn: example k has type
    kinds[k % len(kinds)])."""

    def __init__(
        self,
        seed: int = 0,
        image_size: int = 64,
        cell: int = 16,
        kinds: tuple[str, ...] = QUESTION_TYPES,
        heldout_fraction: float = 0.2,
    ) -> None:
        if image_size % cell or image_size // cell < 2:
            raise ValueError(f"image_size: {image_size} must be a multiple (>= 2) of cell {cell}")
        unknown = [k for k in kinds if k not in QUESTION_TYPES]
        if unknown or not kinds:
            raise ValueError(f"kinds: expected some of {', '.join(QUESTION_TYPES)}, got {kinds}")
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"heldout_fraction: must be in (0, 1), got {heldout_fraction}")
        self.seed, self.image_size, self.cell = seed, image_size, cell
        self.grid = image_size // cell
        self.kinds = tuple(kinds)
        self.heldout_fraction = heldout_fraction
        self._font = ImageFont.load_default(size=int(image_size * 0.7))

    def settings(self) -> dict[str, Any]:
        return {"seed": self.seed, "image_size": self.image_size, "cell": self.cell,
                "kinds": list(self.kinds), "heldout_fraction": self.heldout_fraction}  # fmt: skip

    # -- splits ----------------------------------------------------------------------------------
    def split_of(self, scene: SceneSpec, question: str) -> str:
        digest = hashlib.sha256((question + "|" + scene.key()).encode()).digest()
        u = int.from_bytes(digest[:8], "little") / 2.0**64
        return "heldout" if u < self.heldout_fraction else "train"

    def example(self, split: str, k: int) -> VLMExample:
        if split not in ("train", "heldout"):
            raise ValueError(f"split: expected train or heldout, got {split!r}")
        kind = self.kinds[k % len(self.kinds)]
        tag = 0 if split == "train" else 1
        rng = np.random.default_rng([self.seed, tag, k])
        while True:  # redraw until the description belongs to this split
            scene, question, answer = self._draw(kind, rng)
            if self.split_of(scene, question) == split:
                return VLMExample(self.render(scene), question, answer, kind, scene)

    # -- scenes ----------------------------------------------------------------------------------
    def _cells(self, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        flat = rng.choice(self.grid * self.grid, size=n, replace=False)
        return [(int(i) // self.grid, int(i) % self.grid) for i in flat]

    def _size(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.cell * 5 // 8, self.cell - 1))  # 10..14 px in 16-px cells

    def _draw(self, kind: str, rng: np.random.Generator) -> tuple[SceneSpec, str, str]:
        if kind == "digit":
            digit = int(rng.integers(10))
            colour = str(rng.choice(list(COLOURS)))
            jitter = self.image_size // 8
            x, y = (int(v) for v in rng.integers(-jitter, jitter + 1, size=2))
            scene = SceneSpec((("digit", colour, x, y, digit),))
            return scene, "what digit is shown ?", str(digit)
        if kind == "count":
            target = str(rng.choice(SHAPES))
            n = int(rng.integers(1, MAX_COUNT + 1))
            others = [s for s in SHAPES if s != target]
            n_other = int(rng.integers(0, 3))
            kinds = [target] * n + [str(rng.choice(others)) for _ in range(n_other)]
            cells = self._cells(rng, len(kinds))
            objects = tuple(
                (s, str(rng.choice(list(COLOURS))), r, c, self._size(rng))
                for s, (r, c) in zip(kinds, cells, strict=True)
            )
            return SceneSpec(objects), f"how many {PLURALS[target]} ?", str(n)
        # colour / shape / position: 1..3 objects of distinct shapes and distinct colours
        n = int(rng.integers(1, len(SHAPES) + 1))
        shapes = [str(s) for s in rng.choice(SHAPES, size=n, replace=False)]
        colours = [str(c) for c in rng.choice(list(COLOURS), size=n, replace=False)]
        cells = self._cells(rng, n)
        objects = tuple(
            (s, c, r, col, self._size(rng))
            for s, c, (r, col) in zip(shapes, colours, cells, strict=True)
        )
        shape, colour, row, col, _ = objects[int(rng.integers(n))]
        if kind == "colour":
            return SceneSpec(objects), f"what colour is the {shape} ?", colour
        if kind == "shape":
            return SceneSpec(objects), f"what shape is the {colour} object ?", shape
        half = self.grid / 2
        where = ("top" if row < half else "bottom") + " " + ("left" if col < half else "right")
        return SceneSpec(objects), f"where is the {shape} ?", where

    def render(self, scene: SceneSpec) -> np.ndarray:
        img = Image.new("RGB", (self.image_size, self.image_size), BACKGROUND)
        draw = ImageDraw.Draw(img)
        for kind, colour, a, b, size in scene.objects:
            fill = COLOURS[colour]
            if kind == "digit":
                centre = (self.image_size / 2 + a, self.image_size / 2 + b)
                draw.text(centre, str(size), fill=fill, font=self._font, anchor="mm")
                continue
            # The shape is centred in cell (row a, column b), `size` pixels wide.
            cx, cy = b * self.cell + self.cell / 2, a * self.cell + self.cell / 2
            x0, y0 = cx - size / 2, cy - size / 2
            x1, y1 = x0 + size - 1, y0 + size - 1
            if kind == "square":
                draw.rectangle((x0, y0, x1, y1), fill=fill)
            elif kind == "circle":
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            else:  # triangle, apex up
                draw.polygon(((cx, y0), (x1, y1), (x0, y1)), fill=fill)
        return np.asarray(img, dtype=np.uint8).copy()
