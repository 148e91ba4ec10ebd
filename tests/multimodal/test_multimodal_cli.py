"""`glassformer generate --image/--audio` and `chat`'s /image on a tiny random Gemma 4 unified
model saved as HF saves it (its own tokenizer: characters)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import glassformer as gf
from glassformer.cli import app
from glassformer.loaders.resolve import load_model
from glassformer.multimodal import prepare
from glassformer.tokenizer import load_tokenizer
from tests.core.test_gemma4_unified import AUDIO, IMAGE, build_hf_unified

pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CHARS = "abcdefghijklmnopqrstuvwxyz?.,"


def _tokenizer(directory: Path) -> None:
    vocab = {"<unk>": 0, "<eos>": 1, "<bos>": 2, **{c: 3 + i for i, c in enumerate(CHARS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, [], unk_token="<unk>"))
    tok.save(str(directory / "tokenizer.json"))
    (directory / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}model:{% endif %}"
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mm")
    model_dir = root / "model"
    build_hf_unified(seed=1).save_pretrained(model_dir)
    _tokenizer(model_dir)
    image = root / "cat.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(image)
    clip = root / "clip.wav"
    with wave.open(str(clip), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(rng.integers(-3000, 3000, 21).astype("<i2").tobytes())
    return {"model": model_dir, "image": image, "audio": clip}


def _run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("fast", [False, True])
def test_generate_with_image_and_audio(files: dict[str, Path], fast: bool) -> None:
    args = ["generate", "--model", str(files["model"]), "-n", "3", "--json", "--ignore-eos",
            "--image", str(files["image"]), "--audio", str(files["audio"]),
            "--image-tokens", "70", "what is this?"]  # fmt: skip
    code, out, err = _run(args + ([] if fast else ["--plain"]))
    assert code == 0, err
    result = json.loads(out)
    prompt = result["prompt_tokens"]
    # the prompt the model saw: its placeholders, then the text
    model = load_model(files["model"])
    tok = load_tokenizer(files["model"] / "tokenizer.json")
    inputs = prepare(tok, "what is this?", model.config, [str(files["image"])],
                     [str(files["audio"])], 70)  # fmt: skip
    assert prompt == inputs["input_ids"][0].tolist()
    assert prompt.count(AUDIO) == 3 and prompt.count(IMAGE) == int(
        (inputs["image_position_ids"][0, :, 0] >= 0).sum()
    )
    with torch.no_grad():
        first = int(model(**inputs)[0, -1].argmax())
    assert result["tokens"][0] == first
    assert len(result["tokens"]) == 3


def test_generate_refuses_media_without_embedders(tmp_path: Path, files: dict[str, Path]) -> None:
    text_dir = tmp_path / "text"
    gf.to_hf(gf.Transformer(gf.Config.preset("tiny"))).save_pretrained(text_dir)
    _tokenizer(text_dir)
    code, _, err = _run(["generate", "--model", str(text_dir), "-n", "1", "--plain",
                         "--image", str(files["image"]), "hi"])  # fmt: skip
    assert code == 2 and "no image or audio embedders" in err
    code, _, err = _run(["generate", "--model", str(files["model"]), "-n", "1", "--plain",
                         "--image", str(files["model"] / "config.json"), "hi"])  # fmt: skip
    assert code == 2 and "cannot read the image" in err


def test_chat_attaches_an_image(files: dict[str, Path]) -> None:
    stdin = f"/image {files['image']}\nwhat is it?\nand now?\n"
    code, out, err = _run(
        ["chat", "--model", str(files["model"]), "-n", "2", "--json", "--plain",
         "--image-tokens", "70"], stdin,
    )  # fmt: skip
    assert code == 0, err
    turns = [json.loads(line) for line in out.splitlines()]
    assert len(turns) == 2
    # the image stays in the conversation: the second turn's prompt holds it too
    n = turns[0]["prompt_tokens"].count(IMAGE)
    assert n > 0 and turns[1]["prompt_tokens"].count(IMAGE) == n
