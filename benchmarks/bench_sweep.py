"""Sweep throughput: 4 tiny runs (agents/sweep/maze-tiny.toml, seeds 0-3) under the serial, process and Ray executors
of `workbench.sweep.run_sweep`, and Ray's start-up overhead.

What is compared, and why: a population is many independent runs, so the executors differ only in how they spread
runs over cores and what they pay to start. `serial` trains in the calling process (imports already paid);
`process` spawns a pool of `workers` fresh Python processes (each imports torch and the workbench, ~5 s on an idle
core); `ray` starts a private local cluster (`ray.init(address="local", num_cpus=workers)`) whose workers import the
same. With runs this short, start-up dominates: the table shows what a sweep pays before its first run trains, and
at what run length the parallel executors overtake the serial loop (roughly when a run costs more than the start-up
divided by the spare cores). Every executor must produce byte-identical records (checked; exit 1 otherwise).

Ray start-up overhead is measured on its own: `ray_init` (local cluster) plus one trivial task plus `ray.shutdown()`,
and the first-task latency (a worker process starting).

Timings are single runs on whatever load the machine has: read the ratios and the start-up seconds, not the absolute
run times. Usage: python benchmarks/bench_sweep.py [--workers 2] [--runs 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "agents" / "sweep" / "maze-tiny.toml"


def ray_startup(workers: int = 2) -> dict:
    """Seconds to start a local Ray cluster, run a first trivial task (a worker starts), and shut it down."""
    from workbench.sweep import ray_init

    t0 = time.perf_counter()
    ray_init(None, workers)
    import ray

    t1 = time.perf_counter()
    ref = ray.remote(num_cpus=1)(lambda: os.getpid()).remote()
    ray.get(ref)
    t2 = time.perf_counter()
    ray.shutdown()
    t3 = time.perf_counter()
    return {"init_s": t1 - t0, "first_task_s": t2 - t1, "shutdown_s": t3 - t2, "total_s": t3 - t0}


def _records(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted((out / "runs").glob("*/record.json"))}


def sweep_rows(quick: bool = False, threads: int = 1, workers: int = 2, runs: int = 4) -> list[dict]:
    """Table rows for `benchmarks/run.py` (name, unit, ours, peer, ratio, details): runs per minute under each
    executor next to serial, and Ray's start-up seconds. Raises RuntimeError if the records differ."""
    os.environ["WORKBENCH_THREADS"] = str(threads)  # each run's torch threads (the sweep passes it to workers)
    from workbench.sweep import run_sweep

    seeds = list(range(runs))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        # warm-up: the first in-process training imports torch's compiler stack (seconds), which serial would pay
        run_sweep(RECIPE, [99], out=Path(tmp) / "warm", store=False, progress=False)
        records = {}
        for executor in ("serial", "process", "ray"):
            out = Path(tmp) / executor
            t0 = time.perf_counter()
            result = run_sweep(RECIPE, seeds, executor=executor, workers=workers, out=out, store=False, progress=False)
            wall = time.perf_counter() - t0
            if result.failed:
                raise RuntimeError(f"{executor}: runs failed: {result.failed}")
            per_run = [r["seconds"] for r in result.runs]
            results[executor] = {"wall_s": wall, "run_s": per_run}
            records[executor] = _records(out)
        if not records["serial"] == records["process"] == records["ray"]:
            raise RuntimeError("records differ between executors")
    startup = ray_startup(workers)
    serial = runs / results["serial"]["wall_s"] * 60
    rows = []
    for executor in ("serial", "process", "ray"):
        r = results[executor]
        ours = runs / r["wall_s"] * 60
        rows.append(
            {
                "name": f"sweep, {runs} tiny maze runs, executor={executor}"
                + (f" ({workers} workers)" if executor != "serial" else ""),
                "unit": "runs/min",
                "ours": ours,
                "peer": None if executor == "serial" else serial,
                "peer_label": "" if executor == "serial" else "serial",
                "ratio": None if executor == "serial" else ours / serial,
                "ratio_label": "" if executor == "serial" else f"{executor} / serial",
                "details": {
                    "wall_s": round(r["wall_s"], 2),
                    "median_run_s": round(sorted(r["run_s"])[len(r["run_s"]) // 2], 2),
                    "records_identical": True,
                },
            }
        )
    rows.append(
        {
            "name": f"Ray local cluster start-up ({workers} CPUs): init + first task + shutdown",
            "unit": "s",
            "ours": startup["total_s"],
            "details": {k: round(v, 2) for k, v in startup.items()},
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        rows = sweep_rows(threads=args.threads, workers=args.workers, runs=args.runs)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for row in rows:
        extra = f"  ({row['ratio_label']} = {row['ratio']:.2f}x)" if row.get("ratio") else ""
        print(f"{row['name']}: {row['ours']:.2f} {row['unit']}{extra}  {row['details']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
