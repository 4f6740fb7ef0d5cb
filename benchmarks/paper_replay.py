"""Where the replay of the authors' simulator stands against the paper's clustered numbers, and why.

The replay (``petalgym reproduce``: the ``-paper`` deciders on ``clustered-9-authors``, client in cluster 0)
differs from the paper's published per-token times for lambda = 0.1. This script measures the candidate
causes on the clustered script's own arrival draws (MATLAB ``rng(42, 'twister')``, reproduced exactly):

1. **PETALS' join order**: the script makes one Monte Carlo run with one random join order
   (``randperm``, not reproducible here). The table gives the distribution of petals-paper's per-token
   time over join orders (seeds) and where the paper's number falls in it.
2. **CG-BP's |R|**: CG-BP + WS-RR is deterministic given the arrivals and |R|; the table sweeps |R| around
   the script's design rule (marked) and shows which |R| come closest to the paper's number.
3. **The script's hard-coded rate** (1 request/s) against the paper's stated lambda = 0.1, and the
   **allocation delays** (250 s / 60 s) switched off: how much of each number they make.

    python benchmarks/paper_replay.py [--seeds 100]
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

from petalgym.deciders import make_decider
from petalgym.design import design_num_sessions
from petalgym.reproduce import PAPER_PER_TOKEN, PETALS, PROPOSED, script_draws_overrides
from petalgym.scenario import load_scenario
from petalgym.simulator import simulate

SCENARIO = "clustered-9-authors"
LENGTHS = (64, 128)


def paper(l_out: int, method: str) -> float:
    return PAPER_PER_TOKEN[("clustered, client 0", 0.1, l_out)][method]


def per_token(scenario, decider: str, seed: int, **kwargs) -> float:
    return float(simulate(scenario, make_decider(decider, **kwargs), seed=seed).summary()["per_token_s"])


def join_orders(seeds: int) -> Table:
    table = Table(title=f"1. petals-paper over {seeds} join orders, the script's arrivals (per-token s)")
    for col in ("l_out", "paper", "mean", "min", "10 %", "median", "90 %", "max", "seeds <= paper"):
        table.add_column(col, justify="right")
    for l_out in LENGTHS:
        sc = load_scenario(SCENARIO, script_draws_overrides(SCENARIO, {"workload.l_out": l_out}, l_out))
        values = np.array([per_token(sc, "petals-paper", seed) for seed in range(seeds)])
        p = paper(l_out, PETALS)
        q = np.quantile(values, [0.1, 0.5, 0.9])
        cells = [values.mean(), values.min(), *q, values.max()]
        table.add_row(
            str(l_out), f"{p:.2f}", *(f"{v:.2f}" for v in cells), f"{100 * np.mean(values <= p):.0f}%"
        )
    return table


def sessions_sweep() -> Table:
    table = Table(title="2. cg-bp-ws-rr-paper by CG-BP's |R|, the script's arrivals (per-token s)")
    for col in ("l_out", "paper", "design |R|", "at design", "closest |R| (per-token)"):
        table.add_column(col, justify="right")
    for l_out in LENGTHS:
        poisson = load_scenario(SCENARIO, {"workload.l_out": l_out})
        design = design_num_sessions(poisson)
        sc = load_scenario(SCENARIO, script_draws_overrides(SCENARIO, {"workload.l_out": l_out}, l_out))
        sweep = {r: per_token(sc, "cg-bp-ws-rr-paper", 0, num_sessions=r) for r in range(4, 81)}
        p = paper(l_out, PROPOSED)
        best = sorted(sweep, key=lambda r: (abs(sweep[r] - p), r))[:1][0]
        steps = sorted({round(v, 3) for v in sweep.values()})
        below = max((v for v in steps if v <= p), default=None)
        above = min((v for v in steps if v >= p), default=None)
        near = f"{best} ({sweep[best]:.3f}); steps around the paper: {below} / {above}"
        table.add_row(str(l_out), f"{p:.2f}", str(design), f"{sweep[design]:.3f}", near)
    return table


def rate_and_delays(seeds: int) -> Table:
    table = Table(title=f"3. the replay's mechanisms switched one at a time ({seeds} seeds, per-token s)")
    for col in ("variant", "l_out", "petals-paper", "cg-bp-ws-rr-paper", "paper PETALS / proposed"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    variants = {
        "the script (1 request/s, delays 250 / 60 s)": ({}, {}),
        "the paper's stated lambda = 0.1/s": ({"workload.arrival_rate": 0.1}, {}),
        "no allocation delays": ({}, {"allocation_delay_s": 0.0}),
    }
    for name, (overrides, kwargs) in variants.items():
        for l_out in LENGTHS:
            sc = load_scenario(SCENARIO, {"workload.l_out": l_out, **overrides})
            cells = []
            for decider in ("petals-paper", "cg-bp-ws-rr-paper"):
                values = [per_token(sc, decider, seed, **kwargs) for seed in range(seeds)]
                cells.append(f"{np.mean(values):.2f}")
            papers = f"{paper(l_out, PETALS):.2f} / {paper(l_out, PROPOSED):.2f}"
            table.add_row(name, str(l_out), *cells, papers)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="join orders for table 1")
    parser.add_argument("--variant-seeds", type=int, default=10, help="seeds per cell of table 3")
    args = parser.parse_args()
    console = Console(width=150)
    console.print(join_orders(args.seeds))
    console.print(sessions_sweep())
    console.print(rate_and_delays(args.variant_seeds))


if __name__ == "__main__":
    main()
