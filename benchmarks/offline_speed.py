"""Run time of CG-BPRR (and of its CG-BP placement alone) and of PETALS versus the number of servers, L = 70.

Scenarios: BLOOM-176B (70 blocks), 20 % A100 and 80 % MIG 1g.10gb slices, one client, raw RTTs drawn
uniformly in 5..200 ms (seeded); |R| = 100 requests. Prints a rich table of median wall times over
``--reps`` repetitions (the OfflineInstance is built once, outside the timing). PETALS: every server joins
in a random order choosing its blocks by PETALS' rule, then the |R| requests are routed one by one on
PETALS' min-latency chain (:func:`petalgym.baselines.offline_solve.petals_offline`). Its two phases are
also timed apart: the placement (all joins) and the routing, per request. PETALS' exact memos (routing
graphs, routes, best starts) are emptied before each repetition, so every timing is a cold run.

A second table times the peer deciders (GBP-CR + GCA + JFFC, Helix, Parallax's two routers): their
planning (``reset``, the whole plan from the scenario; Helix's MILP at ``--helix-time-limit``, with its
status and gap; above 300 servers with Helix's pruning to 12 out-links per server) and their decision
time per decision over a 100-request episode (every server's ``place`` and every ``route``), on fresh
scenarios (no memo shared between the timings).

    python benchmarks/offline_speed.py [--sizes 10 30 100 300 1000] [--reps 5] [--requests 100]
        [--peers gbp-cr-jffc helix parallax parallax-dp] [--helix-time-limit 60]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from petalgym.baselines.cg import cg_bp_placement, cg_bprr
from petalgym.baselines.offline_solve import petals_offline, petals_offline_placement, petals_offline_routes
from petalgym.deciders import make_decider
from petalgym.offline import OfflineInstance
from petalgym.scenario import Scenario, scenario_from_dict
from petalgym.simulator import Simulator


def make_scenario(num_servers: int, seed: int = 0) -> Scenario:
    """``num_servers`` servers (20 % A100, the rest MIG slices) and one client, RTT matrix 5..200 ms."""
    rng = np.random.default_rng(seed)
    n_a100 = max(1, num_servers // 5)
    rtt = rng.uniform(5.0, 200.0, size=(1, num_servers)).round(3).tolist()
    return scenario_from_dict(
        {
            "name": f"speed-{num_servers}",
            "model": "bloom-176b",
            "servers": [{"profile": "a100", "count": n_a100}]
            + ([{"profile": "mig-1g", "count": num_servers - n_a100}] if num_servers > n_a100 else []),
            "clients": [{"name": "client"}],
            "network": {"kind": "matrix", "rtt_ms": rtt},
            "workload": {"arrival_rate": 0.1, "num_requests": 100, "l_in": 20, "l_out": 128},
        }
    )


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):  # every run builds its own deciders and memos: cold, as a user's first run
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def petals_phases(scenario: Scenario, instance: OfflineInstance, seed: int = 0) -> tuple[float, float, list]:
    """The two phases of :func:`petals_offline`, timed apart: (placement s, routing s per request, chains)."""
    t0 = time.perf_counter()
    servers = petals_offline_placement(scenario, seed)
    t_place = time.perf_counter() - t0
    t0 = time.perf_counter()
    chains, _ = petals_offline_routes(scenario, instance, servers)
    t_route = (time.perf_counter() - t0) / max(1, int(instance.requests.sum()))
    return t_place, t_route, chains


def peer_times(name: str, num_servers: int, kwargs: dict) -> dict[str, object]:
    """Planning time (s: the first ``reset`` on a fresh scenario), decider time per decision over a
    100-request episode on that scenario (ms: the episode's decider time less its own ``reset``, which
    may reuse what the first one memoised), the decider's description and per-token time."""
    scenario = make_scenario(num_servers)
    decider = make_decider(name, **kwargs)
    t0 = time.perf_counter()
    decider.reset(scenario, np.random.default_rng(0))
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decider.reset(scenario, np.random.default_rng(0))
    again_s = time.perf_counter() - t0
    result = Simulator(scenario, 0).run(decider)
    decisions = sum(result.decisions.values())
    per_decision = max(result.decide_s - again_s, 0.0) / max(decisions, 1)
    return {
        "plan_s": plan_s,
        "per_decision_ms": 1e3 * per_decision,
        "detail": decider.describe(),
        "note": getattr(decider, "note", ""),
        "per_token_s": result.summary()["per_token_s"],
    }


def peer_table(sizes: list[int], names: list[str], helix_time_limit: float) -> Table:
    table = Table(title="Peer deciders: planning and decision time (one run each)")
    for col in ("decider", "servers", "plan (s)", "per decision (ms)", "per-token (s)", "plan"):
        table.add_column(col, justify="right" if col not in ("decider", "plan") else "left")
    for name in names:
        for n in sizes:
            kwargs: dict = {}
            if name == "helix":  # unpruned, the MILP has ~n^2 links: prune as Helix's AE does (12) above 300
                kwargs = {"time_limit_s": helix_time_limit} | ({"max_out_links": 12} if n > 300 else {})
            t = peer_times(name, n, kwargs)
            detail = str(t["detail"])  # (a decider's describe() includes its note)
            table.add_row(
                name,
                str(n),
                f"{t['plan_s']:.3f}",
                f"{t['per_decision_ms']:.3f}",
                f"{t['per_token_s']:.3f}",
                detail,
            )
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--peers", nargs="*", default=["gbp-cr-jffc", "helix", "parallax", "parallax-dp"])
    ap.add_argument("--helix-time-limit", type=float, default=60.0, help="Helix MILP time limit (s)")
    ap.add_argument("--no-classic", action="store_true", help="only the peer table")
    args = ap.parse_args(argv)
    if args.peers:
        Console(width=200).print(peer_table(args.sizes, args.peers, args.helix_time_limit))
    if args.no_classic:
        return
    table = Table(title=f"Offline run time, L = 70, |R| = {args.requests} (median of {args.reps})")
    for col in (
        "servers",
        "CG-BP placement (s)",
        "CG-BPRR steps 1-3 (s)",
        "used servers",
        "per-token (s)",
        "PETALS (s)",
        "PETALS placement (s)",
        "PETALS routing / request (ms)",
        "PETALS per-token (s)",
    ):
        table.add_column(col, justify="right")
    for n in args.sizes:
        scenario = make_scenario(n)
        inst = OfflineInstance.from_scenario(scenario, args.requests)
        t_place = _median_time(lambda inst=inst: cg_bp_placement(inst), args.reps)
        t_full = _median_time(lambda inst=inst: cg_bprr(inst), args.reps)
        sol = cg_bprr(inst)
        used = len(sol.info["cg_bp"].used_servers)  # type: ignore[attr-defined]
        t_petals = _median_time(lambda sc=scenario, inst=inst: petals_offline(sc, inst), args.reps)
        petals = petals_offline(scenario, inst)
        phases = [petals_phases(scenario, inst) for _ in range(args.reps)]
        counts: dict = {}
        for c, chain in phases[0][2]:
            counts.setdefault(c, {}).setdefault(chain, 0)
            counts[c][chain] += 1
        assert {c: dict(v) for c, v in petals.routes.items()} == counts, "petals_phases != petals_offline"
        t_petals_place = statistics.median(ph[0] for ph in phases)
        t_petals_route = statistics.median(ph[1] for ph in phases)
        table.add_row(
            str(n),
            f"{t_place:.4f}",
            f"{t_full:.4f}",
            str(used),
            f"{sol.mean_per_token(inst):.4f}",
            f"{t_petals:.4f}",
            f"{t_petals_place:.4f}",
            f"{1e3 * t_petals_route:.3f}",
            f"{petals.mean_per_token(inst):.4f}",
        )
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
