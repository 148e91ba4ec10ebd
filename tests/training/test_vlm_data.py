"""The synthetic VQA generator: deterministic, disjoint splits, answers read back from pixels."""

from __future__ import annotations

import numpy as np
import pytest

from glassformer.training.vlm_data import (
    BACKGROUND,
    COLOURS,
    PLURALS,
    SyntheticVQA,
    VLMVocab,
)


def components(image: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """Connected (4-neighbour) regions of non-background pixels: (boolean mask, colour)."""
    fg = np.any(image != np.array(BACKGROUND, dtype=np.uint8), axis=-1)
    seen = np.zeros_like(fg)
    out = []
    h, w = fg.shape
    for y0, x0 in zip(*np.nonzero(fg), strict=True):
        if seen[y0, x0]:
            continue
        mask = np.zeros_like(fg)
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            mask[y, x] = True
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and fg[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        colours, counts = np.unique(image[mask], axis=0, return_counts=True)
        out.append((mask, tuple(int(c) for c in colours[counts.argmax()])))
    return out


def shape_of(mask: np.ndarray) -> str:
    """Filled share of the bounding box: square 1, disc pi/4, triangle about 1/2."""
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    return "square" if fill > 0.92 else "circle" if fill > 0.66 else "triangle"


def colour_name(rgb: tuple[int, int, int]) -> str:
    return next(name for name, c in COLOURS.items() if c == rgb)


def test_deterministic_by_seed_and_index():
    a, b, c = SyntheticVQA(seed=3), SyntheticVQA(seed=3), SyntheticVQA(seed=4)
    for split in ("train", "heldout"):
        for k in (0, 1, 7, 123):
            x, y = a.example(split, k), b.example(split, k)
            assert (x.question, x.answer, x.kind) == (y.question, y.answer, y.kind)
            np.testing.assert_array_equal(x.image, y.image)
    differ = [
        not np.array_equal(a.example("train", k).image, c.example("train", k).image)
        for k in range(10)
    ]
    assert sum(differ) >= 8


def test_splits_are_disjoint_and_cover_every_kind():
    gen = SyntheticVQA(seed=0)
    train = [gen.example("train", k) for k in range(300)]
    held = [gen.example("heldout", k) for k in range(300)]
    key = lambda e: (e.question, e.scene.key())  # noqa: E731
    assert not {key(e) for e in train} & {key(e) for e in held}
    assert all(gen.split_of(e.scene, e.question) == "train" for e in train)
    assert all(gen.split_of(e.scene, e.question) == "heldout" for e in held)
    assert {e.kind for e in held} == {"colour", "shape", "count", "position", "digit"}


def test_answers_read_back_from_the_pixels():
    gen = SyntheticVQA(seed=1)
    checked = {"colour": 0, "shape": 0, "count": 0, "position": 0}
    for k in range(120):
        ex = gen.example("train", k)
        if ex.kind == "digit":
            continue
        found = [(shape_of(m), colour_name(c), m) for m, c in components(ex.image)]
        words = ex.question.split()
        if ex.kind == "count":
            target = next(s for s, p in PLURALS.items() if p == words[2])
            assert sum(s == target for s, _, _ in found) == int(ex.answer), ex.question
        elif ex.kind == "colour":
            (colour,) = [c for s, c, _ in found if s == words[4]]
            assert colour == ex.answer
        elif ex.kind == "shape":
            (shape,) = [s for s, c, _ in found if c == words[4]]
            assert shape == ex.answer
        else:
            ((mask),) = [m for s, _, m in found if s == words[3]]
            ys, xs = np.nonzero(mask)
            half = ex.image.shape[0] / 2
            where = ("top" if ys.mean() < half else "bottom") + " "
            where += "left" if xs.mean() < half else "right"
            assert where == ex.answer
        checked[ex.kind] += 1
    assert min(checked.values()) >= 10


def test_digit_scene_draws_the_digit_in_its_colour():
    gen = SyntheticVQA(seed=2, kinds=("digit",))
    ex = gen.example("heldout", 5)
    assert ex.question == "what digit is shown ?" and ex.answer.isdigit()
    _, colour, *_ = ex.scene.objects[0]
    assert np.all(ex.image == np.array(COLOURS[colour]), axis=-1).sum() > 30


def test_vocab_round_trip():
    vocab = VLMVocab()
    gen = SyntheticVQA(seed=0)
    for k in range(20):
        ex = gen.example("train", k)
        assert vocab.decode(vocab.encode(ex.question)) == ex.question
    with pytest.raises(ValueError, match="zebra"):
        vocab.encode("what zebra")


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="kinds"):
        SyntheticVQA(kinds=("weather",))
    with pytest.raises(ValueError, match="image_size"):
        SyntheticVQA(image_size=60)
    with pytest.raises(ValueError, match="split"):
        SyntheticVQA().example("test", 0)
