"""The interactive page in a real headless browser (Debian's chromium + chromedriver, Selenium).

It must load with no console errors, draw the graph and the roofline, reproduce the Python
figures, recompute when the sequence length or the mode changes, show an op's details when
clicked, and sort the table. A screenshot is written to $GLASSFORMER_TEST_ARTIFACTS (default
out/test-artifacts/). Without chromium or selenium the test is skipped, except under CI
(CI=true), where a missing browser is a failure: .ci/run installs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glassformer.explorer import analyze
from glassformer.explorer.html import write_html
from glassformer.presets import get_preset

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("GLASSFORMER_TEST_ARTIFACTS", "out/test-artifacts"))
FIELDS = ("flops_matmul", "flops_matmul_causal", "flops_other", "kv_cache_bytes", "traffic_bytes")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        return "chromium / chromedriver are not installed"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="glassformer-chromium-")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1800",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def page_numbers(driver: Any) -> dict[str, float]:
    script = (
        "const r = window.explorer.result; return {"
        + ", ".join(f"{k}: r.{k}" for k in FIELDS)
        + ", time_s: r.roofline.time_s, epilogue_saved: r.epilogue.bytes_saved};"
    )
    return driver.execute_script(script)


def assert_matches(js: dict[str, float], py: dict[str, Any]) -> None:
    for key in FIELDS:
        assert js[key] == pytest.approx(py[key], rel=1e-9, abs=1e-9), key
    assert js["time_s"] == pytest.approx(py["roofline"]["time_s"], rel=1e-9)
    saved = py["epilogue"]["total"]["bytes_saved"]
    assert js["epilogue_saved"] == pytest.approx(saved, rel=1e-9)


def test_page_in_browser(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    cfg = get_preset("deepseek-v3")
    page = write_html(cfg, tmp_path / "deepseek-v3.html", mode="prefill", batch=1, seq=4096)
    browser.get(page.resolve().as_uri())
    assert errors(browser) == []

    # the graph of a MoE block and the roofline are drawn
    nodes = browser.find_elements(By.CSS_SELECTOR, "#graph .node")
    assert len(nodes) > 15
    assert browser.find_elements(By.CSS_SELECTOR, "#graph .edge-label")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#roofline circle")) > 10
    assert_matches(page_numbers(browser), analyze(cfg, "prefill", 1, 4096))

    # changing the sequence length recomputes the figures, exactly as Python does
    before = browser.find_element(By.ID, "v-flops_matmul").text
    seq = browser.find_element(By.ID, "seq")
    seq.clear()
    seq.send_keys("8192")
    assert browser.find_element(By.ID, "v-flops_matmul").text != before
    assert_matches(page_numbers(browser), analyze(cfg, "prefill", 1, 8192))

    # decode mode: one token against an 8192-token cache, MLA in the absorbed order
    browser.find_element(By.CSS_SELECTOR, "#mode option[value=decode]").click()
    assert_matches(page_numbers(browser), analyze(cfg, "decode", 1, 8192))
    assert browser.find_element(By.ID, "seq-label").text == "context length"

    # clicking an op shows its details
    node = browser.find_element(By.CSS_SELECTOR, '#graph .node[data-op$="/attn.scores"]')
    node.click()
    details = browser.find_element(By.ID, "details-list")
    assert details.get_attribute("data-op").endswith("/attn.scores")
    assert "attn.scores" in details.text and "flops_matmul_causal" in details.text
    assert "selected" in node.get_attribute("class")

    # the table sorts by FLOPs when its header is clicked
    browser.find_element(By.CSS_SELECTOR, '#ops-table th[data-key="flops_matmul"]').click()
    flops = browser.execute_script(
        "return Array.from(document.querySelectorAll('#ops-table tbody tr')).map("
        "tr => { const id = tr.dataset.op; return window.explorer.result.ops.find("
        "o => o.section + '/' + o.name === id).flops_matmul; });"
    )
    assert flops == sorted(flops, reverse=True)
    # and a table row selects its op too
    browser.find_elements(By.CSS_SELECTOR, "#ops-table tbody tr")[0].click()
    assert browser.find_element(By.ID, "details-list").get_attribute("data-op")

    assert errors(browser) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "explorer-deepseek-v3.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("name", ["gpt2", "tiny-gemma3", "mixtral-8x7b", "qwen3.5-35b-a3b"])
def test_other_families_load(browser: Any, tmp_path: Path, name: str) -> None:
    from selenium.webdriver.common.by import By

    cfg = get_preset(name)
    page = write_html(cfg, tmp_path / f"{name}.html", mode="decode", batch=2, seq=1000, dtype="fp8")
    browser.get(page.resolve().as_uri())
    assert errors(browser) == []
    assert browser.find_elements(By.CSS_SELECTOR, "#graph .node")
    assert_matches(page_numbers(browser), analyze(cfg, "decode", 2, 1000, "fp8"))
    # the train mode's memory figures and hardware switch work too
    browser.find_element(By.CSS_SELECTOR, "#mode option[value=train]").click()
    browser.find_element(By.CSS_SELECTOR, "#hardware option[value=mi300x]").click()
    assert_matches(page_numbers(browser), analyze(cfg, "train", 2, 1000, "fp8", "mi300x"))
    assert browser.find_element(By.ID, "v-memory_ckpt").text
    assert errors(browser) == []


# A model file chooses its name (GGUF general.name), its config strings and so the labels the
# page shows: each of these would run script or stop the page's own code if it reached the
# HTML as markup.
HOSTILE = (
    "</title><script>window.__pwned = 1</script>",
    "<!--<script>",
    '</script><img src=x onerror="window.__pwned = 2">',
    '"\'><svg onload="window.__pwned = 3"></svg>&amp;\u2028\u2029',
)


def _hostile_sections(build: Any) -> Any:
    """build_sections with every op name, note, fusion target and section title made hostile
    (edges renamed with their producers, so the graph stays connected)."""

    def build_hostile(*args: Any, **kwargs: Any) -> Any:
        sections = build(*args, **kwargs)
        for i, section in enumerate(sections):
            section.title = f"{HOSTILE[i % len(HOSTILE)]} {section.title}"
            renamed = {
                op.name: f"{HOSTILE[j % len(HOSTILE)]}{op.name}" for j, op in enumerate(section.ops)
            }
            for op in section.ops:
                op.note = f"{renamed[op.name][: -len(op.name)]} note"
                op.name = renamed[op.name]
                if op.fuse_into:
                    op.fuse_into = renamed.get(op.fuse_into, op.fuse_into)
                for edge in op.inputs:
                    edge.src = renamed.get(edge.src, edge.src)
        return sections

    return build_hostile


def test_hostile_strings_stay_text(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By

    import glassformer.explorer.html as page_html

    name = "".join(HOSTILE)
    cfg = get_preset("tiny-gemma3").replace(name=name, hf_model_type=HOSTILE[2])
    monkeypatch.setattr(page_html, "build_sections", _hostile_sections(page_html.build_sections))
    page = write_html(cfg, tmp_path / "hostile.html", mode="prefill", batch=1, seq=256)
    text = page.read_text()
    for tag in ("</title><script>", "<!--<script>", "<img", "<svg onload"):
        assert text.count(tag) == 0, tag
    data = text.split('<script id="explorer-data" type="application/json">', 1)[1]
    data = data.split("</script>", 1)[0]
    assert not set(data) & set("<>&\u2028\u2029")
    browser.get(page.resolve().as_uri())

    # nothing ran, nothing was injected, and the page's own script ran to the end
    assert errors(browser) == []
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    assert browser.execute_script("return document.querySelectorAll('script').length") == 2
    assert browser.execute_script("return document.querySelectorAll('svg[onload]').length") == 0
    # the strings arrive intact, as text
    assert browser.title == f"{name}: Transformer Math Explorer"
    assert browser.execute_script("return window.explorer.DATA.model.name") == name
    assert browser.find_element(By.ID, "title").text.startswith(name.split("\u2028")[0].strip())
    assert HOSTILE[2] in browser.find_element(By.ID, "subtitle").text
    # the graph, the table and the roofline are drawn; an op's hostile label shows as text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph .node")) > 5
    rows = browser.find_elements(By.CSS_SELECTOR, "#ops-table tbody tr")
    assert len(rows) > 10
    assert browser.find_elements(By.CSS_SELECTOR, "#roofline circle")
    assert any(HOSTILE[0] in row.text for row in rows)
    rows[0].click()
    details = browser.find_element(By.ID, "details-list")
    assert " note" in details.text and any(tag.strip()[:10] in details.text for tag in HOSTILE)
    assert HOSTILE[0] in browser.find_element(By.ID, "epilogue").text
    # recomputing after a change still works
    browser.find_element(By.CSS_SELECTOR, "#mode option[value=decode]").click()
    assert browser.execute_script("return window.explorer.result.ops.length") > 5
    assert browser.execute_script("return window.__pwned === undefined")
    assert errors(browser) == []


def _layer_types_drawn(driver: Any) -> list[str]:
    """The kind of each layer, as the layer strip draws it."""
    spans = driver.execute_script(
        "return Array.from(document.querySelectorAll('#layer-strip .layer-span')).map("
        "(r) => [r.dataset.type, +r.dataset.first, +r.dataset.last]);"
    )
    kinds: dict[int, str] = {}
    for kind, first, last in spans:
        for i in range(first, last + 1):
            assert i not in kinds, f"layer {i} drawn twice"
            kinds[i] = kind
    return [kinds[i] for i in sorted(kinds)]


@pytest.mark.parametrize(
    ("name", "section", "label", "ops"),
    [
        (
            "qwen3-next-80b-a3b",
            "block.linear.moe",
            "linear attention (Gated DeltaNet)",
            ("attn.conv1d", "attn.state_read", "attn.norm", "mlp.shared.down_proj"),
        ),
        (
            "gpt-oss-120b",
            "block.sliding.moe",
            "sliding-window attention (sinks)",
            ("attn.softmax",),
        ),
    ],
)
def test_new_blocks_drawn(
    browser: Any, tmp_path: Path, name: str, section: str, label: str, ops: tuple[str, ...]
) -> None:
    """A hybrid and a sink model: the layer strip shows each layer's kind, a click on a layer
    draws its section, whose ops sit in boxes labelled from the cost model's data."""
    from selenium.webdriver.common.by import By

    cfg = get_preset(name)
    page = write_html(cfg, tmp_path / f"{name}.html", mode="decode", batch=1, seq=131072)
    browser.get(page.resolve().as_uri())
    assert errors(browser) == []
    assert_matches(page_numbers(browser), analyze(cfg, "decode", 1, 131072))
    assert _layer_types_drawn(browser) == [cfg.layer_type(i) for i in range(cfg.n_layers)]
    tile = browser.find_element(By.ID, "v-kv_cache_bytes").find_element(By.XPATH, "..").text
    hybrid = "linear" in {cfg.layer_type(i) for i in range(cfg.n_layers)}
    assert tile.startswith("KV cache / state" if hybrid else "KV cache\n")

    browser.find_element(
        By.CSS_SELECTOR, f'#layer-strip .layer-span[data-section="{section}"]'
    ).click()
    assert browser.execute_script("return window.explorer.state.section") == section
    boxes = {
        g.get_attribute("data-group"): g.text
        for g in browser.find_elements(By.CSS_SELECTOR, "#graph .group")
    }
    assert label in boxes["attn"]
    drawn = {
        n.get_attribute("data-op") for n in browser.find_elements(By.CSS_SELECTOR, "#graph .node")
    }
    for op in ops:
        assert f"{section}/{op}" in drawn
    assert errors(browser) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"explorer-{name}.png"))


@pytest.mark.parametrize(
    ("family", "section", "boxes"),
    [
        ("gemma4_text", "block.full_shared.dense", {"attn", "mlp", "per_layer_input"}),
        ("gemma4_text-moe", "block.full.moe", {"attn", "mlp", "moe", "moe.experts"}),
    ],
)
def test_gemma4_blocks_drawn(
    browser: Any, tmp_path: Path, family: str, section: str, boxes: set[str]
) -> None:
    """Gemma 4's parts (tiny configs): layers reading another layer's keys and values in the
    strip, per-layer inputs, the experts beside the dense MLP, each in its own box."""
    from selenium.webdriver.common.by import By

    from tests.families import our_config

    cfg = our_config(family)
    page = write_html(cfg, tmp_path / f"{family}.html", mode="decode", batch=2, seq=64)
    browser.get(page.resolve().as_uri())
    assert errors(browser) == []
    assert_matches(page_numbers(browser), analyze(cfg, "decode", 2, 64))
    drawn = _layer_types_drawn(browser)
    shared = set(range(cfg.n_layers - cfg.n_kv_shared_layers, cfg.n_layers))
    assert drawn == [
        cfg.layer_type(i) + ("_shared" if i in shared else "") for i in range(cfg.n_layers)
    ]
    browser.find_element(
        By.CSS_SELECTOR, f'#layer-strip .layer-span[data-section="{section}"]'
    ).click()
    groups = {
        g.get_attribute("data-group"): g.text
        for g in browser.find_elements(By.CSS_SELECTOR, "#graph .group")
    }
    assert set(groups) == boxes
    if "moe" in groups:
        assert groups["moe"] == "experts beside the MLP"
    if section.split(".")[1].endswith("_shared"):
        assert "keys and values of another layer" in groups["attn"]
    assert errors(browser) == []
