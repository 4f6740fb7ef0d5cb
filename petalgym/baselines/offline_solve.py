"""One entry point for the offline problem (``petalgym solve``): CG-BPRR, the MILP, or PETALS' rules.

Every method returns an :class:`~petalgym.offline.OfflineSolution` checked by
:func:`petalgym.offline.evaluate`, so their objectives are directly comparable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from petalgym.errors import SolverError
from petalgym.offline import OfflineInstance, OfflineSolution, evaluate
from petalgym.perfmodel import Chain, Placement
from petalgym.scenario import Scenario
from petalgym.simulator import DecisionKind, Simulator
from petalgym.swarm import ServerState

#: Offline methods ``solve_offline`` knows.
METHODS = ("cg-bprr", "milp", "petals")


def petals_offline_placement(scenario: Scenario, seed: int = 0) -> list[ServerState]:
    """Phase 1 of :func:`petals_offline`: every server joins in the seed's random order and chooses its
    blocks by PETALS' rule (fixed cache budget); the servers' states after the last join."""
    from petalgym.baselines.petals import PetalsDecider

    sim = Simulator(scenario, seed)
    decider = PetalsDecider(rebalance=False)
    decider.reset(scenario, sim.decider_rng)
    d = sim.next_decision()
    while d is not None and d.kind == DecisionKind.PLACE:
        sim.apply(decider.place(sim.view, d.server), decider.name)
        d = sim.next_decision()
    return sim.servers


def petals_offline_routes(
    scenario: Scenario, instance: OfflineInstance, servers: Sequence[ServerState]
) -> tuple[list[tuple[int, Chain]], int]:
    """Phase 2 of :func:`petals_offline`: the requests, client by client, routed one by one on PETALS'
    min-latency chain given the cache the previous ones hold (a server whose budget cannot take the
    request gets the 10 s penalty). Returns the (client, chain) pairs in routing order and the number of
    requests routed through a server beyond its budget."""
    from petalgym.baselines.petals import PetalsMemo, min_latency_chain

    memo = PetalsMemo()
    spans = [(s.id, s.start, s.end) for s in servers]
    budget = np.array([s.cache_capacity for s in servers], dtype=np.int64)
    used = np.zeros(len(servers), dtype=np.int64)
    rps = [s.spec.profile.inference_rps for s in servers]
    p = scenario.petals
    chains: list[tuple[int, Chain]] = []
    over = 0
    for c in range(instance.num_clients):
        rtt = [float(x) for x in instance.t[c] - scenario.overheads.token_overhead_s]
        for _ in range(int(instance.requests[c])):
            lacks = [(s.end - s.start) * instance.session_bytes > budget[s.id] - used[s.id] for s in servers]
            _, chain = min_latency_chain(
                spans,
                instance.num_blocks,
                rtt,
                rps,
                lacks,
                overhead_s=p.hop_overhead_s,
                penalty_s=p.lacking_cache_penalty_s,
                memo=memo,
            )
            if not chain:
                raise SolverError(f"petals: no chain covers all {instance.num_blocks} blocks")
            for h in chain:
                used[h.server] += h.blocks * instance.session_bytes
            over += any(used[h.server] > budget[h.server] for h in chain)
            chains.append((c, chain))
    return chains, over


def petals_offline(scenario: Scenario, instance: OfflineInstance, seed: int = 0) -> OfflineSolution:
    """PETALS on the offline problem: :func:`petals_offline_placement` then :func:`petals_offline_routes`.
    ``info["over_budget"]`` counts requests routed through a server beyond its PETALS budget (they would
    wait for cache online). If the |R| sessions together exceed a server's whole memory the status is
    "over-memory" (infeasible offline; ``info["memory_violation"]`` says where) and the objective is the
    routes' time without the memory check."""
    t0 = time.perf_counter()
    servers = petals_offline_placement(scenario, seed)
    placement = [Placement(s.start, s.num_blocks) for s in servers]
    chains, over = petals_offline_routes(scenario, instance, servers)
    counts: dict[int, dict[Chain, int]] = {c: {} for c in range(instance.num_clients)}
    for c, chain in chains:
        counts[c][chain] = counts[c].get(chain, 0) + 1
    routes = {c: sorted(items.items(), key=lambda kv: -kv[1]) for c, items in counts.items()}
    info: dict[str, object] = {"over_budget": over, "seed": seed}
    status = "heuristic"
    try:
        objective = evaluate(instance, placement, routes)
    except ValueError as exc:  # all |R| sessions at once do not fit: online, PETALS would make them wait
        status = "over-memory"
        info["memory_violation"] = str(exc)
        objective = sum(
            n * instance.l_out * instance.chain_cost(c, chain)
            for c, items in routes.items()
            for chain, n in items
        )
    return OfflineSolution(
        "petals",
        placement,
        routes,
        objective,
        status=status,
        solve_time_s=time.perf_counter() - t0,
        info=info,
    )


def solve_offline(
    scenario: Scenario,
    requests: int,
    method: str = "cg-bprr",
    *,
    solver: str = "highs",
    time_limit_s: float = 60.0,
    seed: int = 0,
    l_in: int | None = None,
    l_out: int | None = None,
) -> tuple[OfflineInstance, OfflineSolution]:
    """Build the offline instance of ``scenario`` with ``requests`` requests and solve it by ``method``."""
    if method not in METHODS:
        raise SolverError(f"unknown offline method {method!r} (known: {', '.join(METHODS)})")
    try:
        instance = OfflineInstance.from_scenario(scenario, requests, l_in=l_in, l_out=l_out)
    except ValueError as exc:
        raise SolverError(str(exc)) from None
    if method == "cg-bprr":
        from petalgym.baselines.cg import cg_bprr

        t0 = time.perf_counter()
        solution = cg_bprr(instance)
        solution.solve_time_s = time.perf_counter() - t0
    elif method == "milp":
        from petalgym.baselines.milp import solve_milp

        solution = solve_milp(instance, solver=solver, time_limit_s=time_limit_s)
    else:
        solution = petals_offline(scenario, instance, seed)
    return instance, solution
