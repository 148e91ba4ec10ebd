"""Chat templates rendered by glassformer vs ``transformers``' apply_chat_template."""

from __future__ import annotations

from typing import Any

import pytest

from glassformer.tokenizer import ChatTemplateError, Tokenizer, render_chat_template

transformers = pytest.importorskip("transformers")

SPECIALS = {
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|im_end|>",
}

# Gemma 3's instruction template (the model file in the test package has none).
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Whitespace control (trim_blocks/lstrip_blocks), tojson, namespace, loop controls, tools,
# documents and extra variables, in the style of Llama 3.1 / Qwen templates.
TOOLS_TEMPLATE = """{{ bos_token }}
{% set ns = namespace(n=0) %}
{% if tools %}
Tools: {{ tools | tojson(indent=2) }}
{% endif %}
{% for doc in documents or [] %}
  Doc {{ loop.index }}: {{ doc.title }} {{ doc | tojson }}
{% endfor %}
{% for m in messages %}
    {% if m.role == 'skip' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    <{{ m.role }}>{{ m.content }}
    {%- if m.tool_calls is defined %} calls={{ m.tool_calls | tojson }}{% endif -%}
    </{{ m.role }}>
    {% if ns.n >= 4 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}<assistant>{% endif %}
{% if today is defined %}date={{ today }}{% endif %}
"""

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "  Hi  there \n"},
        {"role": "assistant", "content": "Hello. ünïcödé 日本 😀"},
        {"role": "user", "content": "Bye"},
    ],
    [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image"}]},
        {"role": "assistant", "content": "ok", "tool_calls": None},
    ],
]


def _hf(template: str) -> Any:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    vocab = {text: i for i, text in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])}
    backend = HFTokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, chat_template=template, **SPECIALS
    )


def _both(template: str, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[str, str]:
    want = _hf(template).apply_chat_template(messages, tokenize=False, **kwargs)
    got = render_chat_template(template, messages, **{**SPECIALS, **kwargs})
    return got, want


@pytest.mark.parametrize("generation", [True, False])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_gemma3_template_matches_transformers(generation: bool, conversation: int) -> None:
    messages = CONVERSATIONS[conversation]
    got, want = _both(GEMMA3_TEMPLATE, messages, add_generation_prompt=generation)
    assert got == want


def test_tools_template_matches_transformers() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Wetter ☀"}}]
    documents = [{"title": "A <b>", "text": "x & y"}]
    messages = [
        {"role": "user", "content": "a"},
        {"role": "skip", "content": "hidden"},
        {"role": "assistant", "content": "b", "tool_calls": [{"name": "f", "arguments": {"x": 1}}]},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "never rendered"},
    ]
    got, want = _both(
        TOOLS_TEMPLATE,
        messages,
        add_generation_prompt=True,
        tools=tools,
        documents=documents,
        today="26 Jul 2024",
    )
    assert got == want
    assert '"Wetter ☀"' in got  # tojson keeps non-ASCII, unlike Jinja's HTML-safe default


def test_smollm2_template(smollm2: Tokenizer) -> None:
    template = smollm2.chat_template
    assert template is not None
    for messages in CONVERSATIONS[:2]:
        for generation in (True, False):
            want = _hf(template).apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation
            )
            assert smollm2.apply_chat_template(messages, add_generation_prompt=generation) == want
    # The template's default system prompt appears when the conversation has none.
    prompt = smollm2.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = smollm2.encode(prompt)
    assert ids[0] == smollm2.token_to_id("<|im_start|>") and ids.count(2) == 2


def test_continue_final_message_matches_transformers() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello th"}]
    want = _hf(GEMMA3_TEMPLATE).apply_chat_template(
        messages, tokenize=False, continue_final_message=True
    )
    got = render_chat_template(
        GEMMA3_TEMPLATE,
        messages,
        add_generation_prompt=False,
        continue_final_message=True,
        **SPECIALS,
    )
    assert got == want and got.endswith("<start_of_turn>model\nHello th")


def test_raise_exception_and_missing_template(gemma3: Tokenizer) -> None:
    bad = [{"role": "assistant", "content": "first"}]
    with pytest.raises(ChatTemplateError, match="must alternate"):
        render_chat_template(GEMMA3_TEMPLATE, bad, **SPECIALS)
    assert gemma3.chat_template is None
    with pytest.raises(ValueError, match="no chat template"):
        gemma3.apply_chat_template([{"role": "user", "content": "hi"}])
    prompt = gemma3.apply_chat_template(
        [{"role": "user", "content": "hi"}], chat_template=GEMMA3_TEMPLATE
    )
    assert prompt == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    ids = gemma3.encode(prompt)
    assert ids[:2] == [2, 2]  # the template writes <bos> and encode adds one: avoid either
    assert gemma3.encode(prompt, add_special_tokens=False, parse_special=True)[0] == 2


def test_sandbox_blocks_python_internals() -> None:
    import jinja2

    with pytest.raises((jinja2.exceptions.SecurityError, ChatTemplateError)):
        render_chat_template("{{ messages.__class__.__mro__ }}", [])
    assert render_chat_template("{{ strftime_now('%Y') | length }}", []) == "4"
