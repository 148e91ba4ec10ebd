"""Our GGUF loader + Transformer vs HF transformers loading the same GGUF file (slow).

HF dequantises with gguf-py and builds its own model; the logits must agree to 1e-3 in fp32
(they agree exactly at the time of writing). The config HF derives from the file must equal
ours under `Config.from_hf`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glassformer.config import Config
from glassformer.loaders.gguf import config_from_gguf

pytestmark = pytest.mark.slow

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # HF's GGUF loading path requires it

# Token ids of three prompts as HF's tokenizer (loaded from each GGUF) encodes them:
#   "The capital of France is"
#   "def fibonacci(n):\n    if n < 2:\n        return n"
#   "Once upon a time, in a small village by the sea, there lived"
# Hard-coded because building HF's tokenizer from the GGUF vocab takes ~10 s (SmolLM2) and
# ~35 s (Gemma 3) and tokenisation is not what is under test here.
PROMPTS = {
    "smollm2": [
        "504 3575 282 4649 314",
        "1604 3987 46477 24 94 727 472 585 304 2067 216 34 42 448 1003 304",
        "6403 1980 253 655 28 281 253 1165 6560 411 260 3426 28 665 4161",
    ],
    "gemma3": [
        "2 818 5279 529 7001 563",
        "2 2063 10779 78113 236769 236749 1473 107 140 584 538 655 236743 236778 236787 107 144 "
        "2060 538",
        "2 14946 3324 496 990 236764 528 496 1944 9744 684 506 5442 236764 993 11742",
    ],
}
# HF's GGUF loader records where the file came from and how it was stored in these keys; they
# do not change what the model computes (glassformer's config_from_hf refuses keys it does not
# know, so they are dropped here).
HF_BOOKKEEPING = ("_model_name_or_path", "unk_token_id", "quantization_config")


def hf_from_gguf(path: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()


# Each HF model lives only while its own tests run (the two together with ours and a 600-token
# Gemma logits tensor are most of the suite's peak memory).
@pytest.fixture
def smollm2_pair(smollm2_path: Path, smollm2_model):
    return _cached("smollm2", lambda: hf_from_gguf(smollm2_path)), smollm2_model


@pytest.fixture
def gemma3_pair(gemma3_path: Path, gemma3_model):
    return _cached("gemma3", lambda: hf_from_gguf(gemma3_path)), gemma3_model


_HF: dict = {}


def _cached(name: str, build):
    """One HF model at a time: building one drops the other (the tests below are ordered so
    that each is built once)."""
    if name not in _HF:
        _HF.clear()
        _HF[name] = build()
    return _HF[name]


@pytest.fixture(scope="module", autouse=True)
def _drop_hf_models():
    yield
    _HF.clear()


def token_ids(text: str) -> list[int]:
    return [int(t) for t in text.split()]


def max_diff(hf, ours, ids: list[int] | str) -> float:
    x = torch.tensor([token_ids(ids) if isinstance(ids, str) else ids])
    with torch.no_grad():
        theirs = hf(x).logits
        return theirs.sub_(ours(x)).abs_().max().item()  # in place: Gemma's are 1 GB at 600


def check_config(path: Path, hf) -> None:
    hf_dict = {k: v for k, v in hf.config.to_dict().items() if k not in HF_BOOKKEEPING}
    theirs = Config.from_hf(hf_dict)
    ours = config_from_gguf(path)
    # the name is descriptive only: ours is the file's general.name
    assert ours.replace(name=theirs.name) == theirs


def test_smollm2_config_matches_hf(smollm2_path: Path, smollm2_pair) -> None:
    check_config(smollm2_path, smollm2_pair[0])


@pytest.mark.parametrize("prompt", range(3))
def test_smollm2_logits_match_hf(smollm2_pair, prompt: int) -> None:
    diff = max_diff(*smollm2_pair, PROMPTS["smollm2"][prompt])
    print(f"smollm2 prompt {prompt}: max |logit diff| = {diff:.3g}")
    assert diff <= 1e-3


def test_gemma3_config_matches_hf(gemma3_path: Path, gemma3_pair) -> None:
    check_config(gemma3_path, gemma3_pair[0])


@pytest.mark.parametrize("prompt", range(3))
def test_gemma3_logits_match_hf(gemma3_pair, prompt: int) -> None:
    diff = max_diff(*gemma3_pair, PROMPTS["gemma3"][prompt])
    print(f"gemma3 prompt {prompt}: max |logit diff| = {diff:.3g}")
    assert diff <= 1e-3


def test_gemma3_beyond_the_sliding_window(gemma3_pair) -> None:
    # 600 tokens > the 512-token window: the local layers must stop seeing the start
    ids = (token_ids(PROMPTS["gemma3"][2])[1:] * 40)[:599]
    diff = max_diff(*gemma3_pair, [2, *ids])
    print(f"gemma3 600 tokens: max |logit diff| = {diff:.3g}")
    assert diff <= 1e-3
