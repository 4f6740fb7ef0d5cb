"""Simulated requests per second (wall clock, one process) of the discrete-event simulator.

Usage: python benchmarks/sim_speed.py [--requests N] [--repeats K] [--deciders shortest,cg-bp-ws-rr,...]
       [--overload-sizes 1000,10000,100000]

Two tables. **Load**: for each scenario and decider, an episode of N requests at the scenario's arrival
rate and, for the deciders in --heavy, at 3x that rate (requests wait for cache); the median over K
repetitions. **Sustained overload**: the two cases of issue 10 -- clustered-9 at 5 requests/s with
CG-BP + WS-RR (reservations pile up) and at 1 request/s with PETALS (back-off retries pile up) -- at
1,000, 10,000 and 100,000 requests, to show that the cost per request stays about flat as the queue grows
(goal: >= 3,000 requests/s at 10,000). **Compute contention**: bellcanada-26 and clustered-9 at l_out 128
with ``contention: none`` and ``fifo`` (every step through a FIFO processor; goal: >= 1,000 requests/s on
bellcanada-26). The decider's own time is included: this is the speed a user gets.
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
from petalgym.simulator import Simulator

#: The overload cases: (label, scenario, arrival rate (1/s), decider).
OVERLOAD = (
    ("CG-BP + WS-RR, reservations", "clustered-9", 5.0, "cg-bp-ws-rr"),
    ("PETALS, back-off retries", "clustered-9", 1.0, "petals"),
)


def measure(
    scenario_name: str,
    decider_name: str,
    rate: float,
    requests: int,
    repeats: int,
    overrides: dict | None = None,
) -> dict:
    """Median requests/s over ``repeats`` episodes (seeds 0..), the last episode's mean wait and per-token
    time (s), events, skipped retries and processor jobs (fifo)."""
    scenario = load_scenario(
        scenario_name,
        {"workload.num_requests": requests, "workload.arrival_rate": rate, **(overrides or {})},
    )
    speeds, out = [], {}
    for seed in range(repeats):
        decider = make_decider(decider_name)
        t0 = time.perf_counter()
        sim = Simulator(scenario, seed)
        result = sim.run(decider)
        speeds.append(requests / (time.perf_counter() - t0))
        out = {
            "wait": result.summary()["wait_s"],
            "per_token": result.summary()["per_token_s"],
            "events": result.events,
            "skipped": result.extra["skipped_retries"],
            "jobs": sim.fifo.jobs if sim.fifo is not None else 0,
        }
    out["speed"] = statistics.median(speeds)
    return out


def load_table(args: argparse.Namespace) -> Table:
    table = Table(title=f"Simulator speed: {args.requests:,} requests per episode, median of {args.repeats}")
    for col in ("scenario", "decider", "arrival rate (/s)", "mean wait (s)", "requests/s"):
        table.add_column(col, justify="right" if col not in ("scenario", "decider") else "left")
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
    return table


def overload_table(sizes: list[int]) -> Table:
    table = Table(title="Sustained overload on clustered-9: requests/s as the queue grows (one episode each)")
    for col in ("case", "rate (/s)", "requests", "mean wait (s)", "events", "retries skipped", "requests/s"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for label, scenario, rate, decider in OVERLOAD:
        for n in sizes:
            m = measure(scenario, decider, rate, n, 1)
            table.add_row(
                label, f"{rate:g}", f"{n:,}", f"{m['wait']:,.0f}", f"{m['events']:,}", f"{m['skipped']:,}",
                f"{m['speed']:,.0f}",
            )  # fmt: skip
    return table


def contention_table(requests: int, repeats: int, deciders: list[str]) -> Table:
    table = Table(title=f"Compute contention: {requests:,} requests, l_out 128, median of {repeats}")
    for col in ("scenario", "decider", "contention", "per-token (s)", "mean wait (s)", "processor jobs",
                "requests/s"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("scenario", "decider", "contention") else "right")
    for scenario in ("bellcanada-26", "clustered-9"):
        rate = load_scenario(scenario).workload.arrival_rate
        for decider in deciders:
            for mode in ("none", "fifo"):
                over = {"workload.l_out": 128, "contention": mode}
                m = measure(scenario, decider, rate, requests, repeats, over)
                table.add_row(
                    scenario, decider, mode, f"{m['per_token']:.3f}", f"{m['wait']:,.1f}", f"{m['jobs']:,}",
                    f"{m['speed']:,.0f}",
                )  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deciders", default="shortest,cg-bp-ws-rr,petals")
    parser.add_argument("--scenarios", default="clustered-9,bellcanada-26")
    parser.add_argument("--heavy", default="shortest,cg-bp-ws-rr", help="deciders also run at 3x the rate")
    parser.add_argument("--overload-sizes", default="1000,10000,100000", help="'' skips the overload table")
    parser.add_argument("--contention-requests", type=int, default=2000, help="0 skips the contention table")
    args = parser.parse_args()
    console = Console(width=140)
    console.print(load_table(args))
    if args.overload_sizes:
        console.print(overload_table([int(x) for x in args.overload_sizes.split(",")]))
    if args.contention_requests:
        deciders = args.deciders.split(",")
        console.print(contention_table(args.contention_requests, args.repeats, deciders))


if __name__ == "__main__":
    main()
