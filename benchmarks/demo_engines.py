"""The web demo's memory when visitors pick many engines: resident memory per job, with the
engines a worker keeps bounded (the default, 2) and unbounded (as before).

Run: .venv/bin/python benchmarks/demo_engines.py [--rounds 2] [--size 64] [--keep 2 100]

Each setting runs in a fresh process: the demo's job queue (no web server) serves jobs that cycle
through every network / weights / precision / pooling combination the page offers on this machine,
``--rounds`` times, and prints the resident memory after each job and the growth over the last round.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def combinations() -> list[tuple]:
    """Every engine the page offers here: (network, weights, precision, network options)."""
    from styleplug.core.device import PRECISIONS
    from styleplug.host.plugins import PluginHost
    from styleplug.frontends.webform import offered_weights
    from styleplug.frontends.webjobs import Limits

    host, limits = PluginHost(entrypoints=False), Limits()
    keys = []
    for name, entry in host.networks.items():
        network = entry.cls
        choices = [param.choices for param in network.params]
        for weights, precision, *options in itertools.product(offered_weights(network, limits), PRECISIONS, *choices):
            keys.append((name, weights, precision, tuple(zip((p.name for p in network.params), options))))
    return keys


def serve(keep: int, rounds: int, size: int, count: int | None) -> None:
    import psutil

    import styleplug
    from styleplug.frontends.webjobs import JobQueue, Limits, WebJob

    examples = Path(styleplug.__file__).parent / "examples"
    content, style = str(examples / "tubingen.jpg"), str(examples / "starry_night.jpg")
    keys = combinations()[:count]
    jobs = JobQueue(lambda key: styleplug.Engine(key[0], key[1], precision=key[2], **dict(key[3])), Limits(max_engines=keep))
    process, rss = psutil.Process(), []
    for index, key in enumerate(keys * rounds):
        job = WebJob(f"job-{index}", key, styleplug.Job(content=content, style=style, size=size, steps=2, scales="none"), (512, 384))
        jobs.submit(job)
        for kind, payload in jobs.follow(job):
            if kind == "error":
                raise SystemExit(f"{key}: {payload}")
        rss.append(process.memory_info().rss / 2**20)
    per_round = len(keys)
    print(f"keep {keep}: {len(keys)} engines x {rounds} rounds; RSS MiB after each round: "
          + ", ".join(f"{rss[(r + 1) * per_round - 1]:.0f}" for r in range(rounds))
          + f"; peak {max(rss):.0f}; growth over the last round {rss[-1] - rss[-per_round - 1] if rounds > 1 else 0:+.0f} MiB",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--keep", type=int, nargs="+", default=[2, 100], help="engines kept per worker, one run each")
    parser.add_argument("--combinations", type=int, default=None, help="only the first N combinations (default: all)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.rounds, args.size, args.combinations)
        return
    print(f"{len(combinations())} engine combinations offered on this machine")
    for keep in args.keep:
        subprocess.run([sys.executable, __file__, "--serve", str(keep), "--rounds", str(args.rounds), "--size", str(args.size),
                        *(["--combinations", str(args.combinations)] if args.combinations else [])], check=True)


if __name__ == "__main__":
    main()
