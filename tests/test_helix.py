"""Tests of the Helix baseline (petalgym.baselines.helix): the placement MILP, the max flow, IWRR and the
decider, on the hand-checkable example of docs/peers.md section 2.5 and on whole episodes."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

import pytest
from strategies import gpu_profile, placed_simulator

from petalgym.baselines.helix import (
    IWRR,
    SINK,
    SOURCE,
    HelixDecider,
    greedy_pipelines,
    helix_placement,
    placement_max_flow,
    session_capacity_tables,
    solve_helix_milp,
)
from petalgym.baselines.milp import solver_available
from petalgym.cli import main
from petalgym.deciders import Route, make_decider
from petalgym.errors import DeciderError, SolverError
from petalgym.perfmodel import Hop
from petalgym.scenario import load_scenario, scenario_from_dict
from petalgym.simulator import Simulator
from petalgym.swarm import Request, RequestStatus

KNOWN_FAILURES = {"no_chain", "wait_timeout", "exceeds_capacity"}
A, B, C = 0, 1, 2


# --------------------------------------------------------------------------------------------------
# The example of peers.md 2.5: L = 2, s_m = 10, s_c = 1, one client, M = (40, 35, 12)
# --------------------------------------------------------------------------------------------------
def toy_dict(memory_c: float = 12.0, **workload) -> dict:
    """The example in units of 1 MB: blocks of 10 MB; l_in = l_out = 1, so s_c = 2 d_model x 2 tokens x 1 B
    = 1 MB at the longest session; servers A, B, C with 40, 35 and ``memory_c`` MB."""
    wl = {"arrival_rate": 1.0, "num_requests": 30, "l_in": 1, "l_out": 1, **workload}
    return {
        "name": "helix-toy",
        "model": {
            "name": "toy",
            "num_blocks": 2,
            "block_bytes": 10_000_000,
            "d_model": 250_000,
            "dtype_bytes": 1,
        },
        "gpu_profiles": {"A": gpu_profile(0.040), "B": gpu_profile(0.035), "C": gpu_profile(memory_c / 1e3)},
        "servers": [{"profile": "A"}, {"profile": "B"}, {"profile": "C"}],
        "clients": [{"name": "c"}],
        "network": {"kind": "matrix", "rtt_ms": [[10.0, 10.0, 10.0]]},
        "workload": wl,
    }


def toy(memory_c: float = 12.0, **workload):
    return scenario_from_dict(toy_dict(memory_c, **workload))


TABLES = [[30, 10], [25, 7], [2]]


def _flow(tables, placement, L=2):
    spans = {j: (a, a + k) for j, (a, k) in enumerate(placement)}
    return placement_max_flow(spans, {j: tables[j][k - 1] for j, (_, k) in enumerate(placement)}, L)


def _shares_b_and_c(placements) -> bool:
    """B and C hold the same single block, A the other one."""
    spans = [(p.start, p.end) for p in placements]
    return spans[B] == spans[C] and spans[A] != spans[B] and all(e - a == 1 for a, e in spans)


def test_capacity_tables_of_the_example():
    assert session_capacity_tables(toy()) == TABLES  # f_C has K_C = 1
    assert session_capacity_tables(toy(11.0))[C] == [1]


def test_brute_force_optimum_is_27_with_two_mirror_placements():
    values = {}
    for placement in itertools.product(
        *[[(a, k) for k in range(1, len(t) + 1) for a in range(3 - k)] for t in TABLES]
    ):
        values[placement] = _flow(TABLES, placement).value
    best = max(values.values())
    assert best == 27
    assert {p for p, v in values.items() if v == best} == {((0, 1), (1, 1), (1, 1)), ((1, 1), (0, 1), (0, 1))}
    assert sorted(set(values.values()), reverse=True)[:2] == [27, 25]  # 25: C beside A
    assert values[((0, 2), (0, 2), (0, 1))] == 17  # A and B hold both blocks


def test_forced_flows_of_the_optimum():
    g = _flow(TABLES, [(0, 1), (1, 1), (1, 1)])
    assert g.link_flows() == {(SOURCE, A): 27, (A, B): 25, (A, C): 2, (B, SINK): 25, (C, SINK): 2}
    assert g.out[A] == ((B, 25), (C, 2))  # ascending targets: the IWRR's index order
    mirror = placement_max_flow({0: (0, 1), 1: (1, 2), 2: (1, 2)}, {0: 30, 1: 2, 2: 25}, 2)
    assert mirror.out[0] == ((1, 2), (2, 25))  # by index, not by flow


def test_suffix_graph_enters_every_server_hosting_route_from():
    spans = {0: (0, 3), 1: (0, 1), 2: (1, 3), 3: (1, 2), 4: (2, 3)}
    cap = dict.fromkeys(spans, 5)
    g = placement_max_flow(spans, cap, 3, start=1)
    assert [t for t, _ in g.out[SOURCE]] == [0, 2, 3]  # 0 enters mid-span; 1 ends at 1: not in the graph
    assert g.value == 15 and 1 not in g.spans
    assert placement_max_flow(spans, cap, 3).value == 10  # from block 0: servers 0 and 1 -> 2 or 3 -> 4


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_milp_finds_the_27_session_optimum(solver):
    if not solver_available(solver):
        pytest.skip(f"{solver} not available")
    plan = solve_helix_milp(TABLES, 2, solver=solver, time_limit_s=30)
    assert plan.flow == pytest.approx(27) and plan.objective == pytest.approx(27)
    assert plan.status == "optimal" and plan.gap == pytest.approx(0.0, abs=1e-6)
    assert _shares_b_and_c(plan.placements)
    # the scenario route gives the same, and the 5 % case has optimum 26 (C in parallel with B)
    plan = helix_placement(toy(), solver=solver, time_limit_s=30)
    assert plan.flow == 27 and _shares_b_and_c(plan.placements)
    assert helix_placement(toy(11.0), solver=solver, time_limit_s=30).flow == 26


def test_milp_warm_start_and_cuts_keep_the_optimum():
    start = greedy_pipelines(TABLES, 2)
    assert _flow(TABLES, start).value >= 1
    for cuts in (False, True):
        plan = solve_helix_milp(TABLES, 2, start=start, cuts=cuts, time_limit_s=30)
        assert plan.flow == 27 and plan.start_flow == _flow(TABLES, start).value
    pruned = solve_helix_milp(TABLES, 2, max_out_links=1, time_limit_s=30)
    assert pruned.links == 3 and pruned.flow <= 27
    # pruning keeps the warm start's links (A -> B and A -> C here), so the start's flow survives
    kept = solve_helix_milp(TABLES, 2, max_out_links=1, start=[(0, 1), (1, 1), (1, 1)], time_limit_s=30)
    assert kept.start_flow == 27 and kept.flow == 27 and kept.links <= 5


# --------------------------------------------------------------------------------------------------
# IWRR
# --------------------------------------------------------------------------------------------------
def test_iwrr_interleaves_25_to_2_with_strict_ties():
    iw = IWRR([B, C], [25, 2])
    picks = [iw.choose_one(100.0) for _ in range(54)]
    assert picks[:12] == [B] * 12 and picks[12] == C  # 50 < 52
    assert picks[25] == B  # request 26: B 100 vs C 100, a tie keeps the lower index
    assert picks[26] == C
    assert Counter(picks[:27]) == {B: 25, C: 2} and Counter(picks[27:]) == {B: 25, C: 2}
    assert iw.loads == pytest.approx([200.0, 200.0])


def test_iwrr_masks_links_below_5_percent_and_by_callback():
    iw = IWRR([B, C], [25, 1])  # 1 < 0.05 x 26
    assert iw.small == (False, True)
    assert {iw.choose_one(100.0) for _ in range(40)} == {B}
    assert iw.choose(1.0, lambda t: t != B) is None  # C is masked by the share rule, B by the callback
    assert IWRR([B, C], [25, 2]).small == (False, False)  # 2 >= 1.35


# --------------------------------------------------------------------------------------------------
# The decider on the example
# --------------------------------------------------------------------------------------------------


def _request(sc, rid, route_from=0) -> Request:
    r = Request(rid, 0, 0.0, 1, 1, sc.model.session_bytes(1, 1))
    r.route_from = route_from
    return r


def _branch(route: Route) -> int:
    """The server holding the block B and C share (B or C) on the chain."""
    (hop,) = [h for h in route.chain if h.server != A]
    return hop.server


def test_decider_places_the_optimum_and_splits_25_to_2():
    sc = toy()
    d = HelixDecider(time_limit_s=30)
    sim = placed_simulator(sc, d)
    assert d.plan.flow == 27 and _shares_b_and_c(d.plan.placements)
    assert d.scheduler(sim.view).graph.value == 27
    routes = [d.route(sim.view, _request(sc, i)) for i in range(54)]
    assert all(r.wait is False and len(r.chain) == 2 for r in routes)
    branches = [_branch(r) for r in routes]
    assert branches[:12] == [B] * 12 and branches[12] == C
    assert Counter(branches[:27]) == {B: 25, C: 2} and Counter(branches) == {B: 50, C: 4}


def test_decider_never_uses_a_5_percent_link():
    sc = toy(11.0)
    d = HelixDecider(time_limit_s=30)
    sim = placed_simulator(sc, d)
    assert d.plan.flow == 26
    assert {_branch(d.route(sim.view, _request(sc, i))) for i in range(60)} == {B}


def test_dead_end_charges_nothing_and_backs_off():
    sc = toy()
    d = HelixDecider(time_limit_s=30)
    sim = placed_simulator(sc, d)
    servers = sim.servers
    branch_node = A if d.plan.placements[A].start == 0 else SOURCE
    iw = d.scheduler(sim.view).iwrr[branch_node]
    servers[B].used_bytes = servers[B].cache_capacity  # B and C full: every candidate at the branch masked
    servers[C].used_bytes = servers[C].cache_capacity
    route = d.route(sim.view, _request(sc, 0))
    assert route.wait is False and _branch(route) == B  # the flow-only IWRR pick, B
    assert iw.loads == [0.0, 0.0] and d.dead_ends == 1  # not charged: it does not fit now
    servers[C].used_bytes = 0  # C free again: the KV mask sends the request to C, charged
    route = d.route(sim.view, _request(sc, 1))
    assert _branch(route) == C and iw.loads == pytest.approx([0.0, 2.0 / 2])
    servers[B].used_bytes = 0


def test_recovery_routes_from_route_from():
    sc = toy()
    d = HelixDecider(time_limit_s=30)
    sim = placed_simulator(sc, d)
    route = d.route(sim.view, _request(sc, 0, route_from=1))
    assert route.chain[0].start == 1 and route.chain[-1].end == 2
    assert sim.view.chain_error(route.chain, 1) is None
    holders = {j for j, p in enumerate(d.plan.placements) if p.start == 1}
    assert route.chain[0].server in holders and holders in ({B, C}, {A})


def test_dense_burst_hits_dead_ends_and_still_completes():
    sc = toy(arrival_rate=5000.0, num_requests=80)
    d = HelixDecider(time_limit_s=30)
    res = Simulator(sc, 0, check_invariants=True).run(d)
    assert d.dead_ends > 0
    assert all(r.status == RequestStatus.COMPLETED for r in res.requests)


# --------------------------------------------------------------------------------------------------
# Bad input: one error line
# --------------------------------------------------------------------------------------------------
def test_infeasible_input_is_one_error_line():
    with pytest.raises(SolverError, match=r"^helix: no placement carries any flow: .* block 1") as exc:
        solve_helix_milp([[5]], 2)
    assert "\n" not in str(exc.value)
    with pytest.raises(SolverError, match="server 1 cannot hold one block"):
        solve_helix_milp([[5, 3], []], 2)
    one_server = dataclasses.replace(
        load_scenario("clustered-9"), servers=load_scenario("clustered-9").servers[2:3]
    )
    with pytest.raises(
        SolverError, match=r"^helix: no placement carries any flow: the 1 servers hold at most 4 of"
    ):
        HelixDecider(time_limit_s=5).reset(one_server, None)
    with pytest.raises(SolverError, match="unknown solver"):
        solve_helix_milp(TABLES, 2, solver="gurobi")
    with pytest.raises(DeciderError, match="time_limit_s"):
        make_decider("helix", time_limit_s=0)


def test_cli_bad_helix_argument_is_one_error_line(tmp_path, capsys):
    import yaml

    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_dict()))
    assert (
        main(["simulate", "--scenario", str(path), "--decider", "helix", "--decider-arg", "solver=nope"]) == 2
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "unknown solver 'nope'" in lines[0]
    assert main(["simulate", "--scenario", str(path), "--decider", "helix", "--check"]) == 0


# --------------------------------------------------------------------------------------------------
# Whole episodes
# --------------------------------------------------------------------------------------------------
class _Recording(HelixDecider):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.recovery_routes = 0

    def route(self, view, request):
        answer = super().route(view, request)
        if answer is not None and request.route_from > 0:
            self.recovery_routes += 1
        return answer


def _check_episode(sc, seed=0, **kwargs):
    d = _Recording(time_limit_s=2, **kwargs)
    res = Simulator(sc, seed, check_invariants=True).run(d)
    for r in res.requests:
        assert r.status == RequestStatus.COMPLETED or (
            r.status == RequestStatus.FAILED and r.failure_reason in KNOWN_FAILURES
        ), r
    assert d.plan.flow >= (d.plan.start_flow or 1)
    return d, res


@pytest.mark.slow
@pytest.mark.parametrize("contention", [None, "fifo"])
def test_episode_on_clustered_9(contention):
    overrides = {"workload.num_requests": 30, "workload.arrival_rate": 1.0}
    if contention:
        overrides["contention"] = {"mode": contention}
    sc = load_scenario("clustered-9", overrides)
    d, res = _check_episode(sc)
    assert all(r.status == RequestStatus.COMPLETED for r in res.requests)
    starts = {j: p.start for j, p in enumerate(d.plan.placements)}
    for r in res.requests:  # exact-boundary links only: every hop enters its server at its first block
        assert all(isinstance(h, Hop) and h.start == starts[h.server] for h in r.chain)
    assert d.routed == 30 and d.dead_ends == 0


@pytest.mark.slow
def test_episode_with_churn_recovers_from_route_from():
    churn = {
        "enabled": True,
        "lifetime_s": {"dist": "exponential", "mean": 600},
        "downtime_s": {"dist": "exponential", "mean": 30},
        "failure_fraction": 1.0,
        "drain_timeout_s": 30,
        "no_chain_timeout_s": 300,
        "load_s_per_gb": 0.05,
    }
    sc = load_scenario(
        "clustered-9", {"workload.num_requests": 40, "workload.arrival_rate": 0.2, "churn": churn}
    )
    d, res = _check_episode(sc)
    assert sum(res.extra["leaves"].values()) > 0
    assert d.recovery_routes > 0
    assert any(r.recoveries > 0 and r.status == RequestStatus.COMPLETED for r in res.requests)
    # a rejoining server gets its planned span back
    assert all(p == d.place(None, j) for j, p in enumerate(d.plan.placements))
