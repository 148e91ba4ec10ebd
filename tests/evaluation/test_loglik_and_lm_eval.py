"""Log-likelihood scoring against HF transformers, the lm-eval-harness adapter against our
own scoring, and lm-eval's `simple_evaluate` running local task YAMLs on local data files
end to end (multiple choice and rolling perplexity)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from glassformer.evaluation.loglik import (
    encode_pair,
    load_multiple_choice,
    loglikelihood,
    multiple_choice,
    perplexity,
    rolling_loglikelihood,
)
from tests.training.tiny_chat_model import tiny_chat_model

REQUESTS = [
    ("Write a short poem about", " the sea"),
    ("the sea is blue and ", "the sky is wide."),  # trailing space moves to the continuation
    ("", "Is there anything else I can help with?"),  # empty context: the end-of-text token
    ('{"name": "ocean",', ' "color": "blue"}'),
]
TEXT = " ".join(
    ["the sea is blue and the sky is wide. Is there anything else I can help with?"] * 3
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from glassformer.generation import load

    path = tiny_chat_model(tmp_path_factory.mktemp("tiny_chat"))
    model, tok = load(str(path))
    return path, model.eval(), tok


def _hf_logprob(hf, ids: list[int], n: int) -> float:
    with torch.no_grad():
        logits = hf(torch.tensor([ids[:-1]])).logits[0].double()
    lp = torch.log_softmax(logits, -1)[-n:]
    return float(lp.gather(-1, torch.tensor(ids[-n:])[:, None]).sum())


def _check_against_hf(model, tok, hf, requests, tol: float) -> None:
    from glassformer.evaluation.lm_eval_adapter import GlassformerLM

    ours = loglikelihood(model, tok, requests, batch_size=3)
    lm = GlassformerLM(model=model, tokenizer=tok, batch_size=3)
    assert lm.loglikelihood([_Req(r) for r in requests]) == ours  # the same batches: identical
    # other batches pad rows differently: float32 rounding only
    one = GlassformerLM(model=model, tokenizer=tok, batch_size=1)
    for (a, greedy_a), (b, greedy_b) in zip(one.loglikelihood([_Req(r) for r in requests]), ours,
                                            strict=True):  # fmt: skip
        assert abs(a - b) <= tol and greedy_a == greedy_b
    for (ctx, cont), (lp, _) in zip(requests, ours, strict=True):
        c, k = encode_pair(tok, ctx, cont)
        assert abs(lp - _hf_logprob(hf, c + k, len(k))) <= tol
        assert lp < 0


class _Req:
    def __init__(self, args) -> None:
        self.args = args


def test_loglikelihood_equals_hf_on_the_tiny_model(tiny) -> None:
    from transformers import AutoModelForCausalLM

    path, model, tok = tiny
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    _check_against_hf(model, tok, hf, REQUESTS, 1e-4)
    # the rolling score of a text longer than the window equals HF's full-context sum when the
    # window covers the text, and differs (less context) when it does not
    ids = tok.encode(TEXT, add_special_tokens=False)
    full = _hf_logprob(hf, [tok.eos_id, *ids], len(ids))
    lp, n = rolling_loglikelihood(model, tok, TEXT, max_len=256)
    assert n == len(ids) and abs(lp - full) <= 1e-4
    windowed, _ = rolling_loglikelihood(model, tok, TEXT, max_len=8)
    assert abs(windowed - full) > 1e-3
    lm_rolling = _adapter(model, tok, max_length=8).loglikelihood_rolling([_Req((TEXT,))])
    assert lm_rolling == [windowed]


def _adapter(model, tok, **kw):
    from glassformer.evaluation.lm_eval_adapter import GlassformerLM

    return GlassformerLM(model=model, tokenizer=tok, **kw)


def test_encode_pair_moves_the_space(tiny) -> None:
    _, _, tok = tiny
    ctx, cont = encode_pair(tok, "the sea is ", "blue")
    assert tok.decode(ctx) == "the sea is" and tok.decode(cont) == " blue"


def test_generate_until_stops_at_the_stop_string(tiny) -> None:
    _, model, tok = tiny
    lm = _adapter(model, tok)
    free = lm.generate_until([_Req(("the sea", {"max_gen_toks": 12, "until": []}))])[0]
    assert free  # a random model still writes something
    stop = free[2:5] if len(free) > 5 else free[-1]
    cut = lm.generate_until([_Req(("the sea", {"max_gen_toks": 12, "until": [stop]}))])[0]
    assert stop not in cut and free.startswith(cut)


@pytest.mark.slow
def test_loglikelihood_equals_hf_on_smollm2(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from glassformer.generation import load
    from glassformer.loaders.resolve import ModelNotInstalledError
    from glassformer.loaders.safetensors_io import save_hf_dir

    try:
        model, tok = load("smollm2-135m-instruct")
    except (ModelNotInstalledError, FileNotFoundError) as err:
        pytest.skip(str(err))
    # HF reads the same weights (those of the GGUF, as glassformer dequantised them)
    save_hf_dir(tmp_path, model.config, model.state_dict())
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    _check_against_hf(model.eval(), tok, hf, REQUESTS, 1e-4)


# --- lm-eval-harness end to end -----------------------------------------------------------------
MC = [
    {"query": "The sea is", "choices": ["blue", "a spoon", "anything"], "gold": 0},
    {"query": "Is there anything else I can", "choices": ["help with?", "eat"], "gold": 0},
    {"query": "Write a short", "choices": ["poem", "ocean blue", "x"], "gold": 1},
]


def _task_dir(tmp: Path) -> Path:
    mc, text = tmp / "mc.jsonl", tmp / "text.jsonl"
    mc.write_text("".join(json.dumps(r) + "\n" for r in MC))
    text.write_text("".join(json.dumps({"text": t}) + "\n" for t in (TEXT, "the sky is wide.")))
    (tmp / "gf_mc.yaml").write_text(f"""task: gf_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {mc}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    (tmp / "gf_ppl.yaml").write_text(f"""task: gf_tiny_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {text}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
  - metric: word_perplexity
""")
    return tmp


def test_simple_evaluate_runs_local_tasks(tiny, tmp_path: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    _, model, tok = tiny
    tasks = _task_dir(tmp_path)
    lm = _adapter(model, tok, batch_size=4, max_length=16)
    out = simple_evaluate(model=lm, tasks=["gf_tiny_mc", "gf_tiny_ppl"],
                          task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
                          log_samples=False)  # fmt: skip
    res = out["results"]
    items = load_multiple_choice(tasks / "mc.jsonl")
    ours = multiple_choice(model, tok, items)
    assert res["gf_tiny_mc"]["acc,none"] == pytest.approx(ours["acc"])
    assert res["gf_tiny_mc"]["acc_norm,none"] == pytest.approx(ours["acc_norm"])
    ppl = perplexity(model, tok, [TEXT, "the sky is wide."], max_len=16)
    assert res["gf_tiny_ppl"]["bits_per_byte,none"] == pytest.approx(ppl["bits_per_byte"], 1e-9)
    words = len(TEXT.split()) + 4
    word_ppl = math.exp(ppl["nll_per_token"] * ppl["tokens"] / words)
    assert res["gf_tiny_ppl"]["word_perplexity,none"] == pytest.approx(word_ppl, 1e-9)
