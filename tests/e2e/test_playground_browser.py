"""The playground in a real browser (Debian's chromium driven by Playwright) against a real
`wanforge serve` on the demo model: key, upload, generate at 480p, watch, play, history, re-run,
cancel, delete, train, and generate with the trained LoRA. Screenshots go to the test's tmp dir.

The browser comes from `scripts/install-chromium.sh` (`.ci/run` calls it); Playwright never
downloads one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import Server, running_server
from tests.training.synthetic import make_dataset_zip

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")

I2V_480P = "alibaba/wan-2.2/i2v-plus-480p"
LORA_480P = "wavespeed-ai/wan-2.2/i2v-480p-lora"
TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"
DEMO_VIDEO_S = 81 / 16  # 81 frames at 16 fps
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 300_000


def chromium_path() -> str:
    found = (
        os.environ.get("WANFORGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if found:
        return found
    message = "Debian's chromium is not installed: run scripts/install-chromium.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Watched:
    """What the page did that it must not: console errors, uncaught errors, foreign requests."""

    base: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def request(self, url: str) -> None:
        # blob: previews are the page's own (URL.createObjectURL of the picked file)
        if not (url.startswith(self.base + "/") or url.startswith(f"blob:{self.base}/")):
            self.foreign.append(url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("playground-server")) as srv:
        yield srv


@pytest.fixture
def page(server: Server) -> Iterator[tuple[Any, Watched]]:
    watched = Watched(server.base_url)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(),
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        # Playwright's own waits evaluate strings, which the page's CSP (script-src 'self') forbids
        context = browser.new_context(viewport=LAPTOP, bypass_csp=True)
        pg = context.new_page()
        pg.set_default_timeout(WAIT_MS)
        pg.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: watched.errors.append(f"uncaught: {e}"))
        pg.on("request", lambda r: watched.request(r.url))
        try:
            yield pg, watched
        finally:
            browser.close()


def _done(pg: Any, selector: str = "#run .run-card") -> str:
    pg.wait_for_function(
        f"['completed', 'failed', 'cancelled'].includes(document.querySelector('{selector}')?.dataset.status)",
        timeout=WAIT_MS,
    )
    status: str = pg.get_attribute(selector, "data-status")
    if status != "completed":
        pytest.fail(f"{selector} ended {status}: {pg.inner_text(selector)}")
    return status


def _until(pg: Any, condition: str) -> None:
    """Wait for `condition` (a JS expression), failing at once with the run's text if the run
    ends some other way first."""
    ended = "['failed', 'cancelled', 'rejected'].includes(document.querySelector('#run .run-card')?.dataset.status)"
    pg.wait_for_function(f"({condition}) || {ended}", timeout=WAIT_MS)
    if pg.evaluate(ended):
        pytest.fail(f"the run ended before {condition}: {pg.inner_text('#run')}")


def _check_video(pg: Any, selector: str = "#run video.player") -> None:
    """The finished video loads, lasts 81 frames at 16 fps, and plays."""
    pg.wait_for_function(f"document.querySelector('{selector}').readyState >= 2")
    duration = pg.evaluate(f"document.querySelector('{selector}').duration")
    assert abs(duration - DEMO_VIDEO_S) < 0.1, duration
    pg.evaluate(f"document.querySelector('{selector}').play()")
    pg.wait_for_function(f"document.querySelector('{selector}').currentTime > 0")
    assert pg.evaluate(f"document.querySelector('{selector}').error") is None


def _upload(pg: Any, field: str, path: Path) -> str:
    pg.set_input_files(f"#model-form [data-field={field}] input[type=file]", str(path))
    pg.wait_for_function(
        f"document.querySelector('#model-form [data-field={field}] input[type=text]').value.includes('/files/')"
    )
    url: str = pg.input_value(f"#model-form [data-field={field}] input[type=text]")
    # the upload's progress bar ran to the end
    assert pg.evaluate(f"document.querySelector('#model-form [data-field={field}] progress').value") == 1
    return url


def test_generate_train_and_generate_with_the_lora(
    server: Server, page: tuple[Any, Watched], image_16x9: Path, tmp_path: Path
) -> None:
    pg, watched = page
    shots = tmp_path / "screenshots"
    shots.mkdir()
    pg.goto(server.base_url + "/")
    assert pg.is_hidden("#workspace")

    # 1. the key: typed once, kept in localStorage, never in the URL
    pg.fill("#key-input", server.api_key)
    pg.press("#key-input", "Enter")
    pg.wait_for_selector("#model-form .field")
    assert pg.evaluate("localStorage.getItem('wanforge.apiKey')") == server.api_key
    assert server.api_key not in pg.url
    # every catalog model is offered
    offered = pg.eval_on_selector_all("#model-select option", "els => els.map(e => e.value)")
    with server.client() as c:
        assert offered == [m["id"] for m in c.get("/api/v3/models").json()["data"]]

    # 2. the 480p form comes from its schema: required marks, the duration enum, seed bounds
    pg.select_option("#model-select", I2V_480P)
    assert pg.is_visible("[data-field=image] .req") and pg.is_visible("[data-field=prompt] .req")
    assert pg.eval_on_selector_all("[data-field=duration] option", "els => els.map(e => e.textContent)") == [
        "5"
    ]
    assert pg.get_attribute("[data-field=seed] input[type=number]", "max") == "2147483647"
    assert pg.is_checked("[data-field=seed] input[type=checkbox]")  # random seed by default
    image_url = _upload(pg, "image", image_16x9)
    assert pg.is_visible("[data-field=image] img.preview")
    pg.fill("textarea[name=prompt]", "a square drifts to the right")
    pg.screenshot(path=str(shots / "01-laptop-form.png"), full_page=True)
    pg.click("#run-button")

    # 3. live status: the progress bar moves, then the video plays with its seed and timings
    pg.wait_for_selector("#run .run-card[data-id]")
    first_id = pg.get_attribute("#run .run-card", "data-id")
    _done(pg)
    seen = [float(v) for v in pg.get_attribute("#run progress.steps", "data-seen").split(",")]
    assert seen == sorted(seen) and seen[-1] == 100, seen
    assert any(0 < v < 100 for v in seen), seen
    _check_video(pg)
    download = pg.get_attribute("#run a.download", "href")
    assert download.startswith(server.base_url + "/files/outputs/") and download.endswith(".mp4")
    assert int(pg.inner_text("#run dd[data-k=seed]")) >= 0
    assert "inference" in pg.inner_text("#run dd[data-k=timings]")
    # copy as code: curl and the wavespeed SDK, with the key from the environment only
    pg.click("#run .copy-code summary")
    curl = pg.inner_text("#run pre[data-lang=curl]")
    python = pg.inner_text("#run pre[data-lang=python]")
    assert f"{server.base_url}/api/v3/{I2V_480P}" in curl and image_url in curl
    assert "$WAVESPEED_API_KEY" in curl and server.api_key not in curl + python
    assert f'client.run(\n    "{I2V_480P}",' in python and '"seed": -1,' in python

    # 4. the history has it, with a player
    item = f"#history li[data-id='{first_id}']"
    pg.wait_for_selector(f"{item}[data-status=completed] video.thumb")
    pg.screenshot(path=str(shots / "02-laptop-generated.png"), full_page=True)

    # 5. re-run it from the history, cancel the re-run, then delete that one
    pg.click(f"{item} >> text=Re-run")
    pg.wait_for_function(
        f"(el => el && el.dataset.id !== '{first_id}')(document.querySelector('#run .run-card[data-id]'))"
    )
    rerun_id = pg.get_attribute("#run .run-card", "data-id")
    pg.click("#run button.cancel")
    pg.wait_for_function("document.querySelector('#run .run-card').dataset.status === 'cancelled'")
    pg.click("#history-refresh")
    rerun_item = f"#history li[data-id='{rerun_id}']"
    pg.wait_for_selector(f"{rerun_item}[data-status=cancelled]")
    pg.click(f"{rerun_item} >> text=Delete")
    pg.click(f"{rerun_item} >> text=Confirm delete")
    pg.wait_for_selector(rerun_item, state="detached")
    assert pg.is_visible(item)

    # 6. train: the ZIP uploads with progress; dataset report, expert/step/loss, both LoRA files
    dataset_zip = make_dataset_zip(
        tmp_path / "clips.zip", {"clips/a.mp4": "a square slides right"}, frames=40
    )
    pg.select_option("#model-select", TRAINER)
    _upload(pg, "data", dataset_zip)
    pg.fill("[data-field=steps] input", "50")
    pg.fill("[data-field=lora_rank] input", "4")
    pg.click("#run-button")
    _until(pg, "document.querySelector('#run details.dataset dd[data-k=clips]')")
    assert pg.inner_text("#run details.dataset dd[data-k=clips]") == "1 used of 1 found"
    _until(pg, "/expert · loss /.test(document.querySelector('#run .progress-text').textContent)")
    _done(pg)
    assert pg.is_visible("#run canvas.loss")
    high = pg.get_attribute("#run a.lora-link[data-expert=high_noise]", "href")
    low = pg.get_attribute("#run a.lora-link[data-expert=low_noise]", "href")
    assert high.endswith("_high_noise.safetensors") and low.endswith("_low_noise.safetensors")
    pg.screenshot(path=str(shots / "03-laptop-trained.png"), full_page=True)

    # 7. generate with this LoRA: the LoRA form, each file on its own expert, image and prompt kept
    pg.click("#run button.generate-with-lora")
    assert pg.input_value("#model-select") == LORA_480P
    assert pg.eval_on_selector_all(
        "[data-field=high_noise_loras] .lora-path", "els => els.map(e => e.value)"
    ) == [high]
    assert pg.eval_on_selector_all(
        "[data-field=low_noise_loras] .lora-path", "els => els.map(e => e.value)"
    ) == [low]
    assert pg.eval_on_selector_all("[data-field=loras] .lora-path", "els => els.length") == 0
    assert pg.input_value("[data-field=image] input[type=text]") == image_url
    # the key's own LoRAs are offered in the pickers, per expert
    options = pg.eval_on_selector_all(
        "[data-field=high_noise_loras] select option", "els => els.map(e => e.value)"
    )
    assert high in options and low not in options
    pg.click("#run-button")
    pg.wait_for_selector("#run .run-card[data-id]")
    _done(pg)
    _check_video(pg)
    python = pg.text_content("#run pre[data-lang=python]")
    assert '"high_noise_loras": [' in python and high in python and low in python

    # the history offers the same for the trained item
    pg.click("#history-refresh")
    pg.wait_for_selector(
        "#history li[data-model='wavespeed-ai/wan-2.2-i2v-lora-trainer'] >> text=Generate with this LoRA"
    )

    # 8. phone width: one column, nothing wider than the screen
    pg.set_viewport_size(PHONE)
    assert pg.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    pg.screenshot(path=str(shots / "04-phone.png"), full_page=True)

    # 9. the key can be cleared
    pg.click("#key-clear")
    assert pg.evaluate("localStorage.getItem('wanforge.apiKey')") is None
    assert pg.is_hidden("#workspace")

    assert watched.errors == []
    assert watched.foreign == []
    print(f"screenshots: {shots}")
