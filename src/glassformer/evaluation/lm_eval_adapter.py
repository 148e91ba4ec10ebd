"""A glassformer model as an lm-eval-harness model (`lm_eval.api.model.LM`).

    from lm_eval import simple_evaluate
    from glassformer.evaluation.lm_eval_adapter import GlassformerLM

    lm = GlassformerLM("smollm2-135m-instruct")            # or GlassformerLM(model=, tokenizer=)
    simple_evaluate(model=lm, tasks=["my_task"], task_manager=TaskManager(include_path=...))

The three request types map onto `loglik.py` and `glassformer.generation`:

    loglikelihood          (context, continuation) -> (log p(continuation | context), greedy)
    loglikelihood_rolling  (text,)                 -> log p(text) over rolling windows
    generate_until         (context, {until, max_gen_toks, do_sample, temperature})
                           -> greedy (or sampled) text, cut at the first stop string

Registered as "glassformer" too, so `lm_eval --model glassformer --model_args
pretrained=smollm2-135m-instruct` works once this module is imported.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from glassformer.evaluation.loglik import loglikelihood, rolling_loglikelihood

__all__ = ["GlassformerLM"]


@register_model("glassformer")
class GlassformerLM(LM):
    def __init__(
        self,
        pretrained: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
        batch_size: int | str = 8,
        max_length: int | None = None,
        max_gen_toks: int = 256,
    ) -> None:
        super().__init__()
        if model is None:
            if pretrained is None:
                raise ValueError("GlassformerLM: give pretrained= (a model name or path) or model=")
            from glassformer.generation import load

            model, tokenizer = load(pretrained)
        if tokenizer is None:
            raise ValueError("GlassformerLM: model= needs tokenizer=")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size = int(batch_size) if str(batch_size) != "auto" else 8
        self.max_length = max_length or model.config.max_seq_len
        self.max_gen_toks = max_gen_toks

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list:
        pairs = [tuple(r.args) for r in requests]
        return loglikelihood(self.model, self.tokenizer, pairs, self.batch_size, self.max_length)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list:
        return [
            rolling_loglikelihood(self.model, self.tokenizer, r.args[0], self.max_length)[0]
            for r in requests
        ]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from glassformer.generation import GenerationConfig, generate

        out = []
        for r in requests:
            context, kwargs = r.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            sample = kwargs.pop("do_sample", False)
            temperature = float(kwargs.pop("temperature", 0.0)) if sample else 0.0
            cfg = GenerationConfig(
                max_new_tokens=int(kwargs.pop("max_gen_toks", self.max_gen_toks)),
                temperature=temperature, stop_strings=tuple(until), add_special_tokens=False,
            )  # fmt: skip
            text = generate(self.model, self.tokenizer, context, cfg).text  # type: ignore[union-attr]
            for stop in until:  # lm-eval expects the text before the first stop string
                text = text.split(stop)[0]
            out.append(text)
        return out

    @property
    def tokenizer_name(self) -> str:
        return "glassformer"

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, add_generation_prompt=add_generation_prompt
        )
