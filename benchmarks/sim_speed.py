"""Simulated requests per second (wall clock, one process) of the discrete-event simulator.

Usage: python benchmarks/sim_speed.py [--requests N] [--repeats K] [--deciders shortest,cg-bp-ws-rr,...]

For each scenario and decider, runs an episode of N requests at the scenario's arrival rate (light load)
and, for the deciders in --heavy, at 3x that rate (requests wait for cache), and prints the median
requests/s over K repetitions. The decider's own time is included: this is the speed a user gets.
(PETALS is only run at the light load by default: at 3x it is unstable on clustered-9 -- its queue grows
without bound -- and each request then costs dozens of back-off retries, each a Dijkstra in Python.)
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

from petalgym.deciders import make_decider
from petalgym.errors import DeciderError
from petalgym.scenario import load_scenario
from petalgym.simulator import simulate


def measure(scenario_name: str, decider_name: str, rate: float, requests: int, repeats: int) -> dict:
    """Median requests/s over ``repeats`` episodes, and the episode's mean wait (s)."""
    scenario = load_scenario(
        scenario_name, {"workload.num_requests": requests, "workload.arrival_rate": rate}
    )
    speeds, wait = [], 0.0
    for seed in range(repeats):
        decider = make_decider(decider_name)
        t0 = time.perf_counter()
        result = simulate(scenario, decider, seed=seed)
        speeds.append(requests / (time.perf_counter() - t0))
        wait = result.summary()["wait_s"]
    return {"speed": statistics.median(speeds), "wait": wait}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deciders", default="shortest,cg-bp-ws-rr,petals")
    parser.add_argument("--scenarios", default="clustered-9,bellcanada-26")
    parser.add_argument("--heavy", default="shortest,cg-bp-ws-rr", help="deciders also run at 3x the rate")
    args = parser.parse_args()
    table = Table(title=f"Simulator speed: {args.requests:,} requests per episode, median of {args.repeats}")
    for col in ("scenario", "decider", "arrival rate (/s)", "mean wait (s)", "requests/s"):
        table.add_column(col, justify="right" if col != "scenario" and col != "decider" else "left")
    for scenario in args.scenarios.split(","):
        base = load_scenario(scenario).workload.arrival_rate
        for decider in args.deciders.split(","):
            for rate in (base, 3 * base) if decider in args.heavy.split(",") else (base,):
                try:
                    m = measure(scenario, decider, rate, args.requests, args.repeats)
                except DeciderError as exc:
                    table.add_row(scenario, decider, f"{rate:g}", "-", f"unavailable: {exc}")
                    continue
                table.add_row(scenario, decider, f"{rate:g}", f"{m['wait']:.2f}", f"{m['speed']:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
