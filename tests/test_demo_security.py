"""The web demo under attack: every event by its index, queue floods, bounds, logins, forwarded
headers and what is left on disk. Each test talks to a real `styleplug demo` over raw HTTP."""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support import EXAMPLES
from test_demo import ARTIFACTS, RawClient, _serving, queue_result

# This server believes forwarded headers from the loopback proxy, so each test client can have an address of its own.
PROXY = "--trusted-proxy=127.0.0.1"
FILES = {"content": {"path": str(EXAMPLES / "tubingen.jpg")}, "style": {"path": str(EXAMPLES / "starry_night.jpg")}}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("gradio")
    # No Keras weight files on this server, whatever this machine has cached: VGG16 has no offline source.
    env = {**os.environ, "GRADIO_TEMP_DIR": str(base), "KERAS_HOME": str(tmp_path_factory.mktemp("keras"))}
    with _serving(PROXY, "--max-queue", "4", env=env, log_name="demo-security.log") as url:
        yield url
    # Stopped (SIGTERM): its private folder of uploads, cache and results is gone.
    assert list(base.glob("styleplug-demo-*")) == []


def _log() -> str:
    return (ARTIFACTS / "demo-security.log").read_text()


def _post(url: str, body: dict, address: str = "127.0.0.1", timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json", "X-Forwarded-For": address})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _call(url: str, fn_index: int, data: list, queued: bool, session: str) -> dict:
    """One event by its index, as a client that skips the page would call it; the final output."""
    body = {"fn_index": fn_index, "data": data, "session_hash": session, "event_data": None}
    if not queued:
        return _post(f"{url}gradio_api/run/predict", body)[1]
    _post(f"{url}gradio_api/queue/join", body)
    return queue_result(url, session)


def _file_urls(output: object) -> list[str]:
    text = json.dumps(output)
    return re.findall(r'"url": "([^"]+)"', text)


def test_no_event_returns_or_reveals_a_server_file(server, tmp_path):
    """Every event of the app, by index (hidden ones too): a file path in any image input is refused
    alike whether it exists or not, and no output serves the file's pixels."""
    secret = tmp_path / "secret.png"
    secret_pixels = np.full((48, 64, 3), (200, 30, 30), np.uint8)
    Image.fromarray(secret_pixels).save(secret)
    with urllib.request.urlopen(f"{server}config") as response:
        config = json.load(response)
    components = {c["id"]: c for c in config["components"]}
    probed = 0
    for index, dependency in enumerate(config["dependencies"]):
        kinds = [components[i]["type"] for i in dependency["inputs"]]
        if "image" not in kinds:
            continue
        answers = {}
        for target in (str(secret), str(tmp_path / "missing.png"), os.path.relpath(secret)):
            data = [{"path": target, "meta": {"_type": "gradio.FileData"}} if kind == "image"
                    else components[i].get("props", {}).get("value") for i, kind in zip(dependency["inputs"], kinds)]
            output = _call(server, index, data, dependency.get("queue") is not False, os.urandom(8).hex())
            for url in _file_urls(output):
                with urllib.request.urlopen(url) as response, Image.open(response) as served:
                    pixels = np.asarray(served.convert("RGB"))
                assert pixels.shape != secret_pixels.shape or not np.array_equal(pixels, secret_pixels), (index, url)
            # Gradio's own check may echo the path it was sent (resolved); that tells nothing new.
            said = {key: output.get(key) for key in ("data", "error")}  # not the timings
            answers[target] = json.dumps(said).replace(os.path.abspath(target), "PATH").replace(target, "PATH")
        print(index, dependency.get("api_name"), answers)
        assert len(set(answers.values())) == 1, (index, dependency.get("api_name"), answers)
        probed += 1
    assert probed >= 6  # instant, refine, run and the estimates


def test_a_client_that_does_not_listen_is_dropped_and_one_address_cannot_fill_the_queue(server):
    from gradio_client import Client, handle_file

    with urllib.request.urlopen(f"{server}config") as response:
        run = next(i for i, d in enumerate(json.load(response)["dependencies"]) if d.get("api_name") == "run")
    parameters = RawClient(server).parameters
    values = {**FILES, "size": 256, "steps": 1000}
    data = [values.get(p["parameter_name"], p["parameter_default"]) for p in parameters]
    flooded = time.perf_counter()
    for _ in range(12):  # fresh sessions, none of them listening
        body = {"data": data, "fn_index": run, "session_hash": os.urandom(8).hex()}
        assert _post(f"{server}gradio_api/queue/join", body, address="203.0.113.5")[0] == 200
    # A real visitor from elsewhere is served soon: the flood's jobs were refused or dropped.
    visitor = Client(server, verbose=False, headers={"X-Forwarded-For": "198.51.100.7"})
    time.sleep(1)
    started = time.perf_counter()
    outputs = visitor.predict(content=handle_file(str(EXAMPLES / "tubingen.jpg")), style=handle_file(str(EXAMPLES / "starry_night.jpg")),
                              size=64, steps=10, api_name="/run")
    waited = time.perf_counter() - started
    print(f"visitor's result {waited:.1f} s after a 12-job flood ({time.perf_counter() - flooded:.1f} s since)")
    assert outputs[1].startswith("Done: 10 steps"), outputs[1]
    assert waited < 60
    # The page counts the job's own time, not the time it waited behind the flood.
    assert float(re.search(r"in ([\d.]+) s", outputs[1]).group(1)) < waited - 1
    flood = [line for line in _log().splitlines() if "client=203.0.113.5" in line and "access:" in line]
    assert 1 <= len(flood) <= 2, flood  # its share: two jobs, both ended early
    assert all("steps=1000/1000" not in line for line in flood)
    assert "nobody is listening; cancelled" in _log()


@pytest.mark.parametrize(("name", "value", "message"), [
    ("style_scale", 16, "'Style scale' must be between 0.25 and 2; got 16."),
    ("size", "Infinity", "'Output size (long side, px)' must be a whole number; got 'Infinity'."),
    ("style_weight_log10", 400, "'Style weight (log10)' must be between 5 and 9; got 400."),
    ("steps", "abc", "'Steps' must be a whole number; got 'abc'."),
    ("seed", -1, "'Seed' must be between 0 and 2.14748e+09; got -1."),
    ("precision", 123, "'Precision' must be one of auto, float32, bfloat16; got '123'."),
    ("vgg19__pooling", [1], "invalid value for option 'pooling' of network 'vgg19'; expected str."),
    ("network", "vgg16", "weights must be one of"),
    ("content", {"path": "/tmp/a\x00b.png"}, "images must be uploaded through this page"),
    ("content", {"path": "/" + "a" * 5000}, "images must be uploaded through this page"),
])
def test_every_field_is_bounded_and_bad_values_get_one_line(server, name, value, message):
    answer = RawClient(server).run(**{**FILES, "size": 64, "steps": 5, name: value})
    assert message in answer.get("error", ""), answer
    assert "Traceback" not in _log()


def test_vgg16_without_its_weights_file_is_not_offered(server):
    """The page offers only weight sources present on the server: no visitor makes it download."""
    answer = RawClient(server).run(**FILES, size=64, steps=5, network="vgg16", weights="auto")
    assert answer == {"error": "weights must be one of none for network 'vgg16' on this server."}


def test_a_huge_image_header_is_refused_by_its_size(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a 60000x60000 header over a few bytes of data
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    client = Client(server, verbose=False, headers={"X-Forwarded-For": "192.0.2.20"})
    with pytest.raises(AppError, match="too many pixels|above the limit"):
        client.predict(content=handle_file(str(bomb)), style=handle_file(str(EXAMPLES / "starry_night.jpg")), size=64,
                       steps=5, api_name="/run")


def test_an_instant_flood_is_refused_at_once_and_never_blocks_the_optimiser(server):
    with urllib.request.urlopen(f"{server}config") as response:
        instant = next(i for i, d in enumerate(json.load(response)["dependencies"]) if d.get("api_name") == "instant")
    body = {"fn_index": instant, "data": [FILES["content"], "starry_night", "(none)", 0.5, 1, 512],
            "session_hash": "flood"}
    results: list[tuple[int, dict]] = []

    def flood() -> None:
        with ThreadPoolExecutor(16) as pool:
            results.extend(pool.map(lambda _: _post(f"{server}gradio_api/run/predict", body, "203.0.113.9"), range(80)))

    flooding = threading.Thread(target=flood)
    started = time.perf_counter()
    flooding.start()
    outcome = RawClient(server).run(**FILES, size=64, steps=5)
    flooding.join()
    print(f"80 instant calls and a /run in {time.perf_counter() - started:.1f} s")
    assert "Done: 5 steps" in json.dumps(outcome), outcome
    errors = [answer.get("error") for status, answer in results]
    painted = sum(error is None for error in errors)
    assert 1 <= painted < 80 and all(error is None or "painting in progress" in error or "busy" in error for error in errors)


def test_forwarded_headers_count_only_from_a_trusted_proxy():
    """The guard's decision on raw ASGI scopes: an untrusted peer cannot choose its address or the host name."""
    from styleplug.frontends.webguard import Guard

    def scope(peer: str) -> dict:
        return {"client": (peer, 5000), "headers": [(b"x-forwarded-for", b"1.2.3.4, 10.0.0.7"),
                                                    (b"x-forwarded-host", b"evil.example"), (b"host", b"demo")]}

    guard = Guard(["127.0.0.1", "10.0.0.0/8"])
    untrusted = scope("192.0.2.1")
    assert guard.client(untrusted) == "192.0.2.1"
    assert untrusted["headers"] == [(b"host", b"demo")]
    trusted = scope("127.0.0.1")
    assert guard.client(trusted) == "1.2.3.4"  # the nearest hop that is not a proxy of ours
    assert (b"x-forwarded-host", b"evil.example") in trusted["headers"]


def test_logins_from_a_file_slow_failures_and_hide_the_api(tmp_path):
    secrets_file = tmp_path / "logins"
    secrets_file.write_text("ada:correct horse\n")
    base = tmp_path / "gradio"
    base.mkdir()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(base)}
    with _serving(PROXY, "--auth-file", str(secrets_file), env=env, log_name="demo-auth.log") as url:
        with urllib.request.urlopen(url) as response:
            page = response.read().decode()
        assert "window.gradio_api_info = null;" in page and "named_endpoints" not in page
        for route in ("gradio_api/openapi.json", "gradio_api/info"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url + route)
            assert refused.value.code == 401

        def login(password: str, address: str) -> tuple[int, float]:
            started = time.perf_counter()
            request = urllib.request.Request(f"{url}login", f"username=ada&password={password}".encode(),
                                             {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": address})
            try:
                with urllib.request.urlopen(request) as response:
                    return response.status, time.perf_counter() - started
            except urllib.error.HTTPError as error:
                return error.code, time.perf_counter() - started

        wrong = [login("guess", "203.0.113.77") for _ in range(11)]
        assert all(status == 400 and seconds >= 0.9 for status, seconds in wrong[:10]), wrong
        assert wrong[10][0] == 429  # locked out after ten failures
        assert login("correct horse", "203.0.113.77")[0] == 429
        assert login("correct horse", "198.51.100.1")[0] == 200  # another address is not
        assert len(list(base.glob("styleplug-demo-*"))) == 1  # the demo's private folder
    assert list(base.glob("styleplug-demo-*")) == []


def test_a_worker_keeps_only_its_most_recently_used_engines():
    """Visitors who pick many networks and precisions do not make a worker keep an engine for each."""
    import gc
    import weakref

    import styleplug
    from styleplug.host.plugins import PluginHost
    from styleplug.frontends.webjobs import JobQueue, Limits, WebJob

    host, built = PluginHost(entrypoints=False), []

    def make_engine(key):
        engine = styleplug.Engine(key[0], key[1], precision=key[2], host=host, **dict(key[3]))
        built.append(weakref.ref(engine))
        return engine

    jobs = JobQueue(make_engine, Limits(max_engines=2))
    keys = [("vgg19", "none", "float32", (("pooling", pooling),)) for pooling in ("max", "avg")] + [("vgg16", "none", "float32", ())]
    for index, key in enumerate([*keys, keys[2]]):  # the last job reuses the newest engine
        job = WebJob(f"visitor-{index}", key, styleplug.Job(content=str(EXAMPLES / "tubingen.jpg"),
                                                            style=str(EXAMPLES / "starry_night.jpg"), size=32, steps=1), (512, 384))
        jobs.submit(job)
        assert [kind for kind, _ in jobs.follow(job)][-1] == "done"
    gc.collect()
    assert len(built) == 3 and [reference() is None for reference in built] == [True, False, False]
