"""Speed-up of the Ray backend of the evaluation harness over the local one, on this machine.

Usage::

    python benchmarks/ray_speedup.py                       # 4 deciders x 10 seeds on clustered-9
    python benchmarks/ray_speedup.py --scenario bellcanada-26-churn --seeds 10 --repeats 1
    python benchmarks/ray_speedup.py --address auto        # an existing Ray cluster instead of a local one

The same grid (deciders x seeds, one RunSpec each) runs through :func:`petalgym.evaluation.run_grid` with

* ``local``, one process (the reference, speed-up 1.0);
* ``local``, a process pool of ``--workers`` processes (default: all cores);
* ``ray`` cold: ``ray.init`` inside the measurement (what ``petalgym evaluate --backend ray`` pays);
* ``ray`` warm: the Ray session already up and its workers already started (a second grid in the same
  session, e.g. a notebook or a sweep).

Each backend's best of ``--repeats`` runs is reported (wall clock), with runs/s and the speed-up over the
single process. Every backend's rows are checked against the single process's (all metrics but the
wall-clock and decider timings must be equal). Run on an idle machine: other processes on the same cores
lower every parallel number.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from petalgym.distributed import ensure_ray, rows_equal
from petalgym.evaluation import DeciderSpec, RunSpec, run_grid
from petalgym.scenario import load_scenario

DEFAULT_DECIDERS = "petals,cg-bp-ws-rr,cg-bprr,round-robin"


def timed(fn: Callable[[], list[dict[str, Any]]], repeats: int) -> tuple[float, list[dict[str, Any]]]:
    """(best wall-clock seconds of ``repeats`` calls, rows of the last call)."""
    best, rows = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = fn()
        best = min(best, time.perf_counter() - t0)
    return best, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="clustered-9")
    parser.add_argument("--deciders", default=DEFAULT_DECIDERS)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local process pool size")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per backend")
    parser.add_argument("--address", help="a running Ray cluster (default: a local Ray on this machine)")
    args = parser.parse_args()

    scenario = load_scenario(args.scenario)
    deciders = [DeciderSpec.parse(d) for d in args.deciders.split(",") if d.strip()]
    specs = [RunSpec(scenario, d, seed) for d in deciders for seed in range(args.seeds)]
    cores = os.cpu_count() or 1
    console = Console(width=120)
    console.print(
        f"grid: {len(deciders)} deciders x {args.seeds} seeds = {len(specs)} runs of {scenario.name} "
        f"({scenario.summary()}); {cores} cores; load average {os.getloadavg()[0]:.2f}"
    )

    results: list[tuple[str, float, list[dict[str, Any]]]] = []
    t, ref = timed(lambda: run_grid(specs, workers=1, progress=False), args.repeats)
    results.append(("local, 1 process", t, ref))
    t, rows = timed(lambda: run_grid(specs, workers=args.workers, progress=False), args.repeats)
    results.append((f"local, pool of {args.workers} processes", t, rows))

    def ray_cold() -> list[dict[str, Any]]:
        ray, started = ensure_ray(args.address)
        try:
            return run_grid(specs, backend="ray", progress=False)
        finally:
            if started:
                ray.shutdown()

    t, rows = timed(ray_cold, args.repeats)
    results.append(("ray, cold (ray.init included)", t, rows))
    ray, started = ensure_ray(args.address)
    try:
        run_grid(specs, backend="ray", progress=False)  # start the workers, import petalgym in them
        t, rows = timed(lambda: run_grid(specs, backend="ray", progress=False), args.repeats)
        results.append(("ray, warm (session and workers up)", t, rows))
        cpus = ray.cluster_resources().get("CPU", 0)
    finally:
        if started:
            ray.shutdown()

    base = results[0][1]
    table = Table(title=f"Ray backend vs local: {len(specs)} runs of {scenario.name}, best of {args.repeats}")
    for col in ("backend", "wall s", "runs/s", "speed-up vs 1 process", "rows identical"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for label, t, rows in results:
        same = len(rows) == len(ref) and all(rows_equal(a, b) for a, b in zip(ref, rows, strict=True))
        table.add_row(label, f"{t:.2f}", f"{len(specs) / t:.1f}", f"{base / t:.2f}x", "yes" if same else "NO")
    console.print(table)
    sim_s = sum(r["wall_s"] for r in ref)
    console.print(
        f"mean simulation time per run {sim_s / len(ref):.3f} s (single process); Ray CPUs: {cpus:g}. "
        "Each task costs Ray some milliseconds of scheduling and transfer, and a cold start seconds: the "
        "speed-up grows with the time per run."
    )


if __name__ == "__main__":
    main()
