"""Long run: memory stays flat over 1,000,000 env steps, and the full 100,000-step action fuzz.

Usage::

    python benchmarks/long_run.py                              # 1,000,000 steps of PetalRouting-v0
    python benchmarks/long_run.py --steps 200000 --scenario bellcanada-26-churn
    python benchmarks/long_run.py --tracemalloc                # also Python heap sizes (about 2x slower)
    python benchmarks/long_run.py --fuzz-steps 100000          # tests/test_fuzz_env.py at full budget

Memory mode: one ``gym.make`` env plays random *masked* actions (drawn from ``info["action_mask"]``),
resetting with a new seed after every episode. Memory is measured at episode boundaries (right after a
reset, when the previous episode's simulator is gone), at the first boundary after the warm-up (the first
10 % of the steps: the allocator's high-water mark is set by the largest episodes seen, so a short warm-up
shows a one-off rise) and after each checkpoint: the process's current resident set size
(``/proc/self/statm``), its peak RSS so far (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and, with
``--tracemalloc``, the traced Python heap. It prints them as a rich table and a verdict on the growth from
the first record to the last (a leak of even 100 bytes per step would add ~100 MB over 1,000,000 steps).

Fuzz mode runs :func:`tests.test_fuzz_env.fuzz_env` over the same configurations as the test, with the step
counts scaled so that they add up to ``--fuzz-steps``, and prints what was exercised.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

import petalgym  # noqa: F401  (registers the environments)

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE / 1e6
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def memory_run(env_id: str, scenario: str, steps: int, checkpoints: int, trace: bool, seed: int) -> None:
    console = Console(width=120)
    env = gym.make(env_id, scenario=scenario)
    rng = np.random.default_rng(seed)
    if trace:
        tracemalloc.start()
    marks = sorted({int(steps * k / checkpoints) for k in range(1, checkpoints + 1)})
    rows: list[tuple[int, int, float, float, float, float]] = []  # step, episodes, s, RSS, peak, heap
    done, episodes, n = True, 0, 0
    info: dict = {}
    warmup = max(steps // 10, 1)
    due = [warmup, *marks]  # record at the first episode boundary at or after each of these steps
    t0 = time.perf_counter()

    def record(step: int) -> None:
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] / 1e6 if trace else float("nan")
        rows.append((step, episodes, time.perf_counter() - t0, rss_mb(), peak_rss_mb(), heap))

    while n < steps:
        if done:
            _, info = env.reset(seed=int(rng.integers(2**31)))
            episodes += 1
            if due and n >= due[0]:
                while due and n >= due[0]:
                    due.pop(0)
                record(n)
        mask = info["action_mask"]
        valid = np.flatnonzero(mask)
        action = int(valid[rng.integers(len(valid))]) if len(valid) else 0
        _, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        n += 1
    if due:  # the run ended inside an episode
        record(n)
    env.close()
    if trace:
        tracemalloc.stop()

    wall = rows[-1][2]
    table = Table(title=f"{env_id} on {scenario}: {steps:,} steps, {episodes:,} episodes, {wall:,.0f} s")
    for col in ("step", "episodes", "elapsed s", "RSS MB", "peak RSS MB", "traced heap MB", "steps/s"):
        table.add_column(col, justify="right")
    for i, (step, eps, el, rss, peak, heap) in enumerate(rows):
        prev = rows[i - 1] if i else (0, 0, 0.0)
        rate = (step - prev[0]) / max(el - prev[2], 1e-9)
        table.add_row(
            f"{step:,}",
            f"{eps:,}",
            f"{el:,.1f}",
            f"{rss:.1f}",
            f"{peak:.1f}",
            "-" if heap != heap else f"{heap:.2f}",
            f"{rate:,.0f}",
        )
    console.print(table)
    first, last = rows[0], rows[-1]
    span = last[0] - first[0]
    growth = last[3] - first[3]
    per_step = 1e6 * growth / span if span else float("nan")
    console.print(
        f"RSS after the warm-up {first[3]:.1f} MB -> end {last[3]:.1f} MB ({growth:+.1f} MB, "
        f"{per_step:+.1f} bytes per step over {span:,} steps); peak RSS {first[4]:.1f} MB -> {last[4]:.1f} MB"
    )
    if trace:
        console.print(
            f"traced Python heap {first[5]:.2f} MB -> {last[5]:.2f} MB ({last[5] - first[5]:+.2f} MB)"
        )
    verdict = "flat" if abs(growth) < 20.0 else "GROWING"
    console.print(f"verdict: memory {verdict} (threshold: 20 MB over the run)")


def fuzz_run(total: int, seed: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_fuzz_env import CONFIGS, FuzzStats, fuzz_env  # the test's driver and configurations

    console = Console(width=140)
    scale = total / sum(c[3] for c in CONFIGS)
    table = Table(title=f"Env action fuzz: {total:,} steps over {len(CONFIGS)} configurations")
    for col in ("config", "steps", "episodes", "raised", "replaced", "masked", "out of range", "not int",
                "invariant checks", "s"):  # fmt: skip
        table.add_column(col, justify="left" if col == "config" else "right")
    grand = FuzzStats()
    done = 0
    for i, (label, env_id, kwargs, steps) in enumerate(CONFIGS):
        n = total - done if i == len(CONFIGS) - 1 else round(steps * scale)
        done += n
        env = gym.make(env_id, **kwargs)
        t0 = time.perf_counter()
        st = fuzz_env(env, n, seed=seed + i, bad_prob=0.15)
        env.close()
        grand.add(st)
        k = st.kinds
        table.add_row(
            label,
            f"{st.steps:,}",
            f"{st.episodes:,}",
            f"{st.raised:,}",
            f"{st.replaced:,}",
            f"{k.get('masked', 0):,}",
            f"{k.get('out_of_range', 0):,}",
            f"{k.get('not_integer', 0):,}",
            f"{st.invariant_checks:,}",
            f"{time.perf_counter() - t0:.0f}",
        )
    k = grand.kinds
    table.add_row(
        "total",
        f"{grand.steps:,}",
        f"{grand.episodes:,}",
        f"{grand.raised:,}",
        f"{grand.replaced:,}",
        f"{k.get('masked', 0):,}",
        f"{k.get('out_of_range', 0):,}",
        f"{k.get('not_integer', 0):,}",
        f"{grand.invariant_checks:,}",
        "",
        style="bold",
    )
    console.print(table)
    console.print("every step kept the contract (an assertion would have stopped the run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="PetalRouting-v0")
    parser.add_argument("--scenario", default="clustered-9")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the Python heap (slower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fuzz-steps", type=int, default=0, help="run the env action fuzz instead")
    args = parser.parse_args()
    if args.fuzz_steps:
        fuzz_run(args.fuzz_steps, args.seed)
    else:
        memory_run(args.env, args.scenario, args.steps, args.checkpoints, args.tracemalloc, args.seed)


if __name__ == "__main__":
    main()
