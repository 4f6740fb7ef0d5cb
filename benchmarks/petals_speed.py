"""Quality and decision time of the PETALS baseline per scenario, over seeds.

Usage: python benchmarks/petals_speed.py [--scenarios clustered-9,bellcanada-26] [--seeds 5] [--no-rebalance]

For each scenario, runs one episode per seed with :class:`~petalgym.baselines.petals.PetalsDecider` and
prints the mean (and min..max over seeds) of the per-token time, time to first token and wait of
completed requests (seconds), the failures, the rebalancing moves and the decider's mean time per decision
(milliseconds, wall clock). These are the figures a results table cites for PETALS.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from petalgym.baselines.petals import PetalsDecider
from petalgym.scenario import load_scenario
from petalgym.simulator import simulate


def run(scenario_name: str, seeds: int, rebalance: bool) -> dict[str, list[float]]:
    """Per-seed metrics of PETALS on ``scenario_name``."""
    scenario = load_scenario(scenario_name)
    out: dict[str, list[float]] = {
        k: [] for k in ("per_token_s", "ttft_s", "wait_s", "failed", "moves", "ms_per_decision", "wall_s")
    }
    for seed in range(seeds):
        t0 = time.perf_counter()
        res = simulate(scenario, PetalsDecider(rebalance=rebalance), seed=seed)
        wall = time.perf_counter() - t0
        s = res.summary()
        for k in ("per_token_s", "ttft_s", "wait_s", "failed"):
            out[k].append(s[k])
        out["moves"].append(float(res.extra["moves"]))
        out["ms_per_decision"].append(1e3 * res.decide_s / max(sum(res.decisions.values()), 1))
        out["wall_s"].append(wall)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="clustered-9,bellcanada-26")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-rebalance", action="store_true", help="disable PETALS' balance checks")
    args = ap.parse_args()
    table = Table(title=f"PETALS baseline, seeds 0..{args.seeds - 1} (mean \\[min..max])")
    for col in ("scenario", "per-token s", "TTFT s", "wait s", "failed", "moves", "ms/decision", "wall s"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for name in args.scenarios.split(","):
        m = run(name, args.seeds, not args.no_rebalance)

        def cell(key: str, fmt: str = ".3f", m: dict = m) -> str:
            v = np.asarray(m[key])
            return f"{v.mean():{fmt}} [{v.min():{fmt}}..{v.max():{fmt}}]"

        table.add_row(
            name,
            cell("per_token_s"),
            cell("ttft_s"),
            cell("wait_s"),
            cell("failed", ".0f"),
            cell("moves", ".1f"),
            cell("ms_per_decision", ".2f"),
            cell("wall_s", ".2f"),
        )
    Console().print(table)


if __name__ == "__main__":
    main()
