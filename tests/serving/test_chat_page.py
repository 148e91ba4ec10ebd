"""The chat page at `/` in a real headless browser (Debian's chromium + chromedriver, Selenium):
it streams an answer equal to the model's greedy reply, keeps the conversation across turns,
and its stop button ends an answer mid-stream and frees the server's slot. A screenshot goes
to $GLASSFORMER_TEST_ARTIFACTS (default out/test-artifacts/). Skipped without a browser,
except under CI=true."""

from __future__ import annotations

import time

import torch

from glassformer.generation import GenerationConfig, generate
from glassformer.serving import Scheduler
from tests.explorer.test_explorer_page import ARTIFACTS, browser, errors  # noqa: F401
from tests.serving.conftest import serve_live, wait_free

NAME = "tiny"


class Slow(torch.nn.Module):
    """The tiny model, 30 ms a call: long enough for a click to land mid-answer."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, *args, **kwargs):
        time.sleep(0.03)
        return self.model(*args, **kwargs)

    def new_cache(self, *args, **kwargs):
        return self.model.new_cache(*args, **kwargs)


def wait(driver, script: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for: {script}"
        time.sleep(0.05)


def send(driver, text: str) -> None:
    box = driver.find_element("id", "input")
    box.send_keys(text)
    driver.find_element("id", "send").click()


# the newest answer's bubble, as a JavaScript expression
LAST = "[...document.querySelectorAll('.assistant')].at(-1)"
DONE = f"return {LAST}?.dataset.state === 'done'"


def test_chat_page_streams_multi_turn_and_stops(browser, tiny_model, byte_tok) -> None:  # noqa: F811
    scheduler = Scheduler(Slow(tiny_model), byte_tok, max_batch=1, max_queue=2, ctx=256)
    prompts: list[str] = []  # what the page sent, rendered by the chat template
    submit = scheduler.submit
    scheduler.submit = lambda r: (prompts.append(byte_tok.decode(r.prompt)), submit(r))[1]
    with serve_live(scheduler, NAME) as url:
        browser.get(url + "/")
        wait(browser, "return document.getElementById('model').textContent === 'tiny'")
        browser.execute_script("document.getElementById('max-tokens').value = '12'")

        def greedy(rendered: str) -> str:
            cfg = GenerationConfig(max_new_tokens=12)
            return generate(tiny_model, byte_tok, rendered, cfg).text

        send(browser, "hi")
        wait(browser, DONE)
        first = browser.execute_script(f"return {LAST}.textContent")
        assert first == greedy("<user>hi<assistant>")

        send(browser, "more")
        wait(
            browser,
            "const m = document.querySelectorAll('.assistant'); "
            "return m.length === 2 && m[1].dataset.state === 'done'",
        )
        second = browser.execute_script(f"return {LAST}.textContent")
        assert prompts == [
            "<user>hi<assistant>",
            f"<user>hi<assistant>{first}<user>more<assistant>",
        ]
        assert second == greedy(f"<user>hi<assistant>{first}<user>more<assistant>")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "chat_page.png"))

        browser.execute_script("document.getElementById('max-tokens').value = '200'")
        send(browser, "go on")
        wait(
            browser,
            "const m = document.querySelectorAll('.assistant'); "
            "return m.length === 3 && m[2].textContent.length > 0",
        )
        browser.find_element("id", "stop").click()
        wait(browser, DONE)
        notes = browser.execute_script(
            "return [...document.querySelectorAll('.meta')].map(n => n.textContent)"
        )
        assert notes[-1] == "stopped"
        stopped = browser.execute_script(f"return {LAST}.textContent")
        assert 0 < len(stopped) < 200
        send(browser, "again")  # the stopped answer stays in the conversation as far as it got
        wait(browser, "return document.querySelectorAll('.assistant').length === 4")
        assert prompts[-1].endswith(f"<user>go on<assistant>{stopped}<user>again<assistant>")
        browser.find_element("id", "stop").click()
        wait_free(url, 1)
        assert not browser.find_element("id", "send").get_attribute("disabled")
        assert errors(browser) == []
