"""Tests of CG-BPRR, CG-BP + WS-RR and the design rule (petalgym.baselines.cg)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import all_chains, placed_simulator

from petalgym import load_scenario, make_decider, simulate
from petalgym.baselines.cg import (
    CGBPRRDecider,
    CGBPWSRRDecider,
    cg_bp_placement,
    cg_bprr,
    design_num_sessions,
    design_terms,
    theorem2_bound_for,
)
from petalgym.errors import DeciderError, SolverError
from petalgym.offline import OfflineInstance, evaluate
from petalgym.perfmodel import Hop, Placement, TimeModel, shortest_chain
from petalgym.scenario import with_workload
from petalgym.simulator import Simulator
from petalgym.swarm import Request


def _instance(memory, tau, t, requests, L, caps=None, s_m=10, s_c=1, l_out=4) -> OfflineInstance:
    S = len(memory)
    return OfflineInstance(
        num_blocks=L,
        block_bytes=s_m,
        session_bytes=s_c,
        memory=np.asarray(memory, dtype=np.int64),
        max_blocks=np.asarray(caps if caps is not None else [L] * S, dtype=np.int64),
        t=np.asarray(t, dtype=float).reshape(-1, S),
        tau=np.asarray(tau, dtype=float),
        requests=np.asarray(requests, dtype=np.int64),
        l_in=2,
        l_out=l_out,
    )


# --------------------------------------------------------------------------------------------------
# A hand-made instance, checked step by step
# --------------------------------------------------------------------------------------------------
# L = 6, s_m = 10, s_c = 1, |R| = 2 (one client). m_j = min(floor(M_j / 12), cap_j):
#   server  M    cap  m  tau  t   t~ = tau + t/m   f = floor((M - 10 m) / m)
#   0       36   6    3  1.0  3   2.0              2
#   1       24   6    2  0.5  4   2.5              2
#   2       50   6    4  1.5  6   3.0              2
#   3       30   2    2  2.0  8   6.0              5
#   4       100  2    2  3.0  9   7.5              40
#   5       11   6    0  1.0  1   (unused)
# t~_0 = 8.5, T_b = 2 x 8.5 = 17 initially.
HAND = _instance(
    memory=[36, 24, 50, 30, 100, 11],
    tau=[1.0, 0.5, 1.5, 2.0, 3.0, 1.0],
    t=[3.0, 4.0, 6.0, 8.0, 9.0, 1.0],
    requests=[2],
    L=6,
    caps=[6, 6, 6, 2, 2, 6],
)


def test_hand_instance_step_by_step():
    cg = cg_bp_placement(HAND, trace=True)
    assert cg.num_blocks == (3, 2, 4, 2, 2, 0)
    assert cg.t_tilde[:5] == (2.0, 2.5, 3.0, 6.0, 7.5) and math.isinf(cg.t_tilde[5])
    assert cg.session_capacity[:5] == (2, 2, 2, 5, 40)
    assert cg.order == (0, 1, 2, 3, 4)
    assert cg.t_dummy == 8.5
    s0, s1, s2, s3, s4 = cg.steps
    # server 0: every window is all under-served with equal sums -> smallest start
    assert (s0.server, s0.start, s0.rule) == (0, 0, "under-served")
    assert s0.C == (2, 2, 2, 0, 0, 0)
    assert s0.T == (4.0, 4.0, 4.0, 17.0, 17.0, 17.0)  # 17 - (8.5 - 2) x min(2, 2)
    # server 1 (m=2): windows 3 and 4 both sum 34 (> 4 + 17 at window 2) -> 3
    assert (s1.start, s1.rule) == (3, "under-served")
    assert s1.C == (2, 2, 2, 2, 2, 0)
    assert s1.T == (4.0, 4.0, 4.0, 5.0, 5.0, 17.0)  # 17 - (8.5 - 2.5) x 2
    # server 2 (m=4): only window 2 holds the under-served block 5; served blocks do not change T
    assert (s2.start, s2.rule) == (2, "under-served")
    assert s2.C == (2, 2, 4, 4, 4, 2)
    assert s2.T == (4.0, 4.0, 4.0, 5.0, 5.0, 6.0)  # 17 - (8.5 - 3) x 2
    # server 3: all served -> the window whose sorted C is smallest: (2, 2) at 0
    assert (s3.start, s3.rule) == (0, "lexicographic")
    assert s3.C == (7, 7, 4, 4, 4, 2) and s3.T == s2.T
    # server 4: windows (7,7) (4,7) (4,4) (4,4) (2,4) -> 4 (weakest block first, not the smallest sum)
    assert (s4.start, s4.rule) == (4, "lexicographic")
    assert cg.capacity == (7, 7, 4, 4, 44, 42)
    assert cg.starts == (0, 3, 2, 0, 4, -1)
    assert cg.unused_servers == (5,)
    assert cg.filler_start() == 2  # first block of least capacity


def test_hand_instance_cg_bprr_route_objective_and_bound():
    sol = cg_bprr(HAND)
    # per-token chains: 0[0,3) (3 + 3) then 2[3,6) (6 + 1.5 x 3) = 16.5 beats 0 -> 1 -> 2 (18.5)
    assert sol.routes == {0: [((Hop(0, 0, 3), Hop(2, 3, 6)), 2)]}
    assert sol.objective == pytest.approx(2 * 4 * 16.5)
    assert sol.placement[5] == Placement(2, 1)  # the unused server's single block
    assert evaluate(HAND, sol.placement, sol.routes) == sol.objective
    # Theorem 2: servers 0, 1, 2 cover 9 >= 6 blocks: 2x3 + 2.5x2 + 3x4 - 1.5 x (9 - 6) = 18.5
    assert theorem2_bound_for(HAND, sol) == pytest.approx(18.5)
    assert sol.info["theorem2_bound"] == pytest.approx(18.5)
    assert sol.mean_per_token(HAND) == pytest.approx(16.5)


def test_infeasible_raises_solver_error_naming_the_block():
    inst = _instance(memory=[36, 24], tau=[1.0, 1.0], t=[1.0, 1.0], requests=[2], L=6)
    with pytest.raises(SolverError, match=r"\|R\|=2: block 5"):
        cg_bp_placement(inst)
    with pytest.raises(SolverError, match="no server can hold"):
        cg_bp_placement(_instance(memory=[5], tau=[1.0], t=[1.0], requests=[1], L=2))
    with pytest.raises(SolverError, match="num_sessions must be >= 1"):
        cg_bp_placement(HAND, 0)


# --------------------------------------------------------------------------------------------------
# Random small instances: a plain re-implementation, feasibility, Theorem 2
# --------------------------------------------------------------------------------------------------
def _reference_greedy(inst: OfflineInstance, R: int) -> list[int] | None:
    """Plain transcription of paper-notes section 4, steps 1-2: window starts (-1 for m_j = 0), or None
    if infeasible (no usable server, or some block ends with C_b < |R|)."""
    L, S = inst.num_blocks, inst.num_servers
    m = [
        min(int(inst.memory[j]) // (inst.block_bytes + inst.session_bytes * R), L, int(inst.max_blocks[j]))
        for j in range(S)
    ]
    tt = {j: inst.tau[j] + inst.t[:, j].max() / m[j] for j in range(S) if m[j] > 0}
    if not tt:
        return None
    f = {j: (int(inst.memory[j]) - inst.block_bytes * m[j]) // (inst.session_bytes * m[j]) for j in tt}
    t0 = max(tt.values()) + 1
    C, T = [0] * L, [R * t0] * L
    starts = [-1] * S
    for j in sorted(tt, key=lambda j: (tt[j], j)):
        wins = range(L - m[j] + 1)
        if any(c < R for c in C):
            ok = [a for a in wins if any(C[b] < R for b in range(a, a + m[j]))]
            a = max(ok, key=lambda a: (math.fsum(T[a : a + m[j]]), -a))
        else:
            a = min(wins, key=lambda a: (sorted(C[a : a + m[j]]), a))
        for b in range(a, a + m[j]):
            T[b] -= (t0 - tt[j]) * min(max(R - C[b], 0), f[j])
            C[b] += f[j]
        starts[j] = a
    return starts if min(C) >= R else None


@st.composite
def small_instances(draw) -> OfflineInstance:
    L = draw(st.integers(1, 10))
    S = draw(st.integers(1, 6))
    C = draw(st.integers(1, 3))
    requests = draw(st.lists(st.integers(0, 3), min_size=C, max_size=C).filter(lambda r: sum(r) >= 1))
    R = sum(requests)
    s_m, s_c = 10, draw(st.integers(1, 3))
    memory = draw(st.lists(st.integers(s_m, (s_m + s_c * R) * (L + 1)), min_size=S, max_size=S))
    caps = draw(st.lists(st.integers(1, L), min_size=S, max_size=S))
    times = st.sampled_from([0.1, 0.2, 0.5, 1.0, 2.0]) | st.floats(0.01, 3.0)
    tau = draw(st.lists(times, min_size=S, max_size=S))
    t = draw(st.lists(times, min_size=S * C, max_size=S * C))
    return _instance(memory, tau, t, requests, L, caps, s_m=s_m, s_c=s_c, l_out=draw(st.integers(1, 5)))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(small_instances())
def test_cg_bprr_feasible_and_within_theorem2(inst: OfflineInstance):
    reference = _reference_greedy(inst, inst.num_requests)
    if reference is None:  # infeasible by the plain transcription: CG-BPRR must say so
        with pytest.raises(SolverError, match="CG-BP infeasible"):
            cg_bprr(inst)
        return
    sol = cg_bprr(inst)
    cg = sol.info["cg_bp"]
    assert list(cg.starts) == reference
    assert evaluate(inst, sol.placement, sol.routes) == pytest.approx(sol.objective)
    assert all(cg.session_capacity[j] >= inst.num_requests for j in cg.used_servers)
    assert min(cg.capacity) >= inst.num_requests
    # every chain only uses servers CG-BP placed, and routing is optimal for the placement
    for c, routes in sol.routes.items():
        ((chain, n),) = routes
        assert n == inst.requests[c]
        assert {h.server for h in chain} <= set(cg.used_servers)
        best, _ = shortest_chain(cg.spans(), list(inst.t[c]), list(inst.tau), inst.num_blocks)
        assert inst.chain_cost(c, chain) == pytest.approx(best)
    bound = theorem2_bound_for(inst, sol)
    assert sol.mean_per_token(inst) <= bound * (1 + 1e-9)


# --------------------------------------------------------------------------------------------------
# Scenarios: design rule, deciders
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clustered():
    return load_scenario("clustered-9")


def test_design_num_sessions_clustered_matches_definition(clustered):
    sc = clustered
    model, L = sc.model, sc.num_blocks
    s_c = model.session_bytes(20, 128)
    # |R| = 1: conservative counts, recomputed
    inst = OfflineInstance.from_scenario(sc, 1)
    cg = cg_bp_placement(inst, 1)
    for j, s in enumerate(sc.servers):
        m = min(s.profile.memory_bytes // (model.block_bytes + s_c), L, s.profile.max_blocks or L)
        assert cg.num_blocks[j] == m
    # T_1: the fastest chain by brute force, full request time
    tm = TimeModel(sc)
    t1 = min(tm.request_time(ch, 0, 20, 128) for ch in all_chains(cg.spans(), L))
    lam = 0.1
    x = lam * t1
    r_max = int(
        (sum(s.profile.memory_bytes for s in sc.servers) - model.block_bytes * (L + 9)) // (s_c * (L + 9))
    )
    expected = min(math.floor(x + math.sqrt(x) + 0.5), r_max)
    terms = design_terms(sc)
    assert terms["T_1"] == pytest.approx(t1)
    assert terms["R_max"] == r_max
    assert design_num_sessions(sc) == expected
    assert expected >= 2  # the rule is not trivially 1 here


def test_design_num_sessions_trace_uses_its_mean_rate(tmp_path, clustered):
    rows = ["arrival_s,l_in,l_out"] + [f"{10.0 + 2.0 * i},20,128" for i in range(11)]  # rate 0.5/s
    (tmp_path / "trace.csv").write_text("\n".join(rows) + "\n")
    data = dict(clustered.raw)
    data["workload"] = {"trace": str(tmp_path / "trace.csv")}
    from petalgym.scenario import scenario_from_dict

    sc = scenario_from_dict(data)
    terms = design_terms(sc)
    assert terms["lambda"] == pytest.approx(0.5)
    x = 0.5 * terms["T_1"]
    assert design_num_sessions(sc) == min(math.floor(x + math.sqrt(x) + 0.5), int(terms["R_max"]))
    # a tiny rate still designs for at least one session
    slow = with_workload(sc, trace=None, arrival_rate=1e-6, num_requests=5)
    assert design_num_sessions(slow) == 1


def _request(sc, rid=10_000, client=0, l_in=20, l_out=128) -> Request:
    return Request(rid, client, 0.0, l_in, l_out, sc.model.session_bytes(l_in, l_out))


def test_ws_rr_is_the_shortest_chain_on_an_empty_swarm(clustered):
    for loc in (0, 1, 2):
        sc = load_scenario("clustered-9", {"clients.0.location": loc})
        dec = CGBPWSRRDecider()
        sim = placed_simulator(sc, dec)
        view = sim.view
        for l_out in (16, 128):
            req = _request(sc, l_out=l_out)
            fixed, per_block = view.time_model.hop_costs(0, 20, l_out)
            _, expected = shortest_chain(view.spans(), fixed, per_block, view.num_blocks)
            route = dec.route(view, req)
            assert route is not None and route.wait
            assert route.chain == expected
            assert view.chain_error(route.chain) is None
            assert all(view.wait_for(h.server, h.blocks * req.kv_bytes) == 0.0 for h in route.chain)


def _fill(sim: Simulator, server: int, busy_for: float) -> None:
    """Occupy ``server``'s whole cache with a fake session ending ``busy_for`` seconds from now."""
    s = sim.servers[server]
    s.hold(-1, s.cache_capacity - s.used_bytes, sim.now + busy_for)


def _ws_cost(view, req, chain) -> float:
    fixed, per_block = view.time_model.hop_costs(req.client, req.l_in, req.l_out)
    return sum(
        view.wait_for(h.server, h.blocks * req.kv_bytes) + fixed[h.server] + per_block[h.server] * h.blocks
        for h in chain
    )


def test_ws_rr_avoids_a_full_server_only_when_waiting_costs_more(clustered):
    dec = CGBPWSRRDecider()
    sim = placed_simulator(clustered, dec)
    view, req = sim.view, _request(clustered)
    fast = dec.route(view, req).chain
    assert fast[0].server in (0, 1)  # the A100s carry the zero-wait chain
    full = fast[0].server
    _fill(sim, full, busy_for=1e4)
    chain = dec.route(view, req).chain
    assert full not in {h.server for h in chain}
    assert view.chain_error(chain) is None
    assert _ws_cost(view, req, chain) < _ws_cost(view, req, fast)
    # brute force: WS-RR's chain is the cheapest chain under the waiting-penalised cost
    spans = dec.routable_spans(view)
    best = min(_ws_cost(view, req, ch) for ch in all_chains(spans, view.num_blocks))
    assert _ws_cost(view, req, chain) == pytest.approx(best)
    # a short wait is cheaper than the detour: WS-RR keeps the fast chain
    dec2 = CGBPWSRRDecider()
    sim2 = placed_simulator(clustered, dec2)
    _fill(sim2, full, busy_for=0.5)
    assert dec2.route(sim2.view, req).chain == fast


@settings(max_examples=25, deadline=None)
@given(
    busy=st.lists(st.tuples(st.integers(0, 8), st.floats(0.0, 1.0), st.floats(0.1, 500.0)), max_size=6),
    loc=st.integers(0, 2),
)
def test_ws_rr_matches_brute_force_under_random_load(busy, loc):
    sc = load_scenario("clustered-9", {"clients.0.location": loc})
    dec = CGBPWSRRDecider()
    sim = placed_simulator(sc, dec)
    for k, (j, share, dur) in enumerate(busy):
        s = sim.servers[j]
        b = int((s.cache_capacity - s.used_bytes) * share)
        s.hold(-1 - k, b, sim.now + dur)
    view, req = sim.view, _request(sc)
    route = dec.route(view, req)
    spans = dec.routable_spans(view)
    best = min(_ws_cost(view, req, ch) for ch in all_chains(spans, view.num_blocks))
    assert _ws_cost(view, req, route.chain) == pytest.approx(best, rel=1e-12)


def test_recovery_routes_the_suffix(clustered):
    for dec in (CGBPWSRRDecider(), CGBPRRDecider()):
        sim = placed_simulator(clustered, dec)
        req = _request(clustered)
        req.route_from, req.tokens_done, req.history_tokens = 30, 5, 25
        route = dec.route(sim.view, req)
        assert route is not None and route.chain[0].start == 30
        assert sim.view.chain_error(route.chain, start=30) is None


@pytest.mark.parametrize("name", ["clustered-9", "bellcanada-26"])
@pytest.mark.parametrize("decider", ["cg-bprr", "cg-bp-ws-rr"])
def test_full_simulation_completes_every_request(name, decider):
    sc = load_scenario(name)
    res = simulate(sc, make_decider(decider), seed=1, check_invariants=True)
    s = res.summary()
    assert s["completed"] == s["arrived"] == 100
    assert s["failed"] == 0
    # a request's time is at least its fastest chain's (no processor sharing, waits >= 0)
    tm = TimeModel(sc)
    dec = make_decider(decider)
    dec.reset(sc, np.random.default_rng(0))
    lower = shortest_chain(
        [(j, a, a + m) for j, (a, m, _) in enumerate(dec.cg.placements())], *tm.token_costs(0), sc.num_blocks
    )[0]
    assert s["later_token_s"] >= lower - 1e-9


def test_cg_bprr_decider_sessions_and_placement(clustered):
    dec = CGBPRRDecider()
    dec.reset(clustered, np.random.default_rng(0))
    assert dec.sessions_used == 100  # the workload's number of requests
    inst = OfflineInstance.from_scenario(clustered, 100)
    assert dec.cg.starts == cg_bp_placement(inst).starts
    assert "|R|=100" in dec.describe()
    ws = CGBPWSRRDecider()
    ws.reset(clustered, np.random.default_rng(0))
    assert ws.sessions_used == design_num_sessions(clustered)
    fixed = CGBPWSRRDecider(num_sessions=20)
    fixed.reset(clustered, np.random.default_rng(0))
    assert fixed.sessions_used == 20
    overload = clustered.with_overrides({"workload.arrival_rate": 2.0, "workload.num_requests": 200})
    half = CGBPWSRRDecider(sessions_factor=0.5)
    half.reset(overload, np.random.default_rng(0))
    assert half.sessions_used == round(0.5 * design_num_sessions(overload)) < design_num_sessions(overload)
    same = CGBPWSRRDecider(num_sessions=half.sessions_used)
    same.reset(overload, np.random.default_rng(0))
    assert half.cg.starts == same.cg.starts
    bprr = CGBPRRDecider(sessions_factor=0.25)
    bprr.reset(clustered, np.random.default_rng(0))
    assert bprr.sessions_used == 25  # a quarter of the workload's 100 requests


def test_bad_arguments_are_named():
    for bad in (0, -1.0, math.inf, math.nan, True, "2"):
        with pytest.raises(DeciderError, match="sessions_factor must be a number > 0"):
            CGBPWSRRDecider(sessions_factor=bad)
    with pytest.raises(DeciderError, match="num_sessions or sessions_factor, not both"):
        CGBPRRDecider(num_sessions=10, sessions_factor=0.5)
    with pytest.raises(DeciderError, match="num_sessions must be an integer >= 1 or None, got 0"):
        CGBPWSRRDecider(num_sessions=0)
    with pytest.raises(DeciderError, match=r"got 2\.5"):
        CGBPRRDecider(num_sessions=2.5)
    sc = load_scenario("clustered-9")
    with pytest.raises(SolverError, match=r"cg-bprr on clustered-9: CG-BP infeasible for \|R\|=100000"):
        CGBPRRDecider(num_sessions=100_000).reset(sc, np.random.default_rng(0))


def test_determinism():
    sc = load_scenario("bellcanada-26-churn", {"workload.horizon_s": 900})
    for name in ("cg-bprr", "cg-bp-ws-rr"):
        a = simulate(sc, make_decider(name), seed=3).records()
        b = simulate(sc, make_decider(name), seed=3).records()
        assert a == b


@pytest.mark.parametrize("decider", ["cg-bprr", "cg-bp-ws-rr"])
def test_churn_is_handled(decider):
    sc = load_scenario("bellcanada-26-churn", {"workload.horizon_s": 900})
    res = simulate(sc, make_decider(decider), seed=0, check_invariants=True)
    s = res.summary()
    assert s["arrived"] == s["completed"] + s["failed"] and s["in_flight"] == 0
    assert sum(res.extra["leaves"].values()) > 0  # churn did happen
    assert s["completed"] >= 0.9 * s["arrived"]


def test_hop_wait_answers_as_wait_for_on_a_partly_full_swarm(clustered):
    sim = placed_simulator(clustered, CGBPWSRRDecider())
    view, req = sim.view, _request(clustered)
    _fill(sim, 0, busy_for=30.0)
    s = sim.servers[1]
    s.hold(-2, (s.cache_capacity - s.used_bytes) // 2, sim.now + 5.0)  # half full: some hops fit
    wait = view.hop_wait(req.kv_bytes)
    answers = set()
    for j, a, e in view.spans():
        for blocks in range(1, e - a + 1):
            expected = view.wait_for(j, blocks * req.kv_bytes)
            assert wait(j, blocks) == expected
            answers.add(expected)
    assert 0.0 in answers and any(x > 0.0 for x in answers)  # both branches were asked


def test_route_costs_are_the_hop_costs_of_the_next_route(clustered):
    tm = TimeModel(clustered)
    for l_out in (16, 128, 16):  # the third call is answered from the cache
        req = _request(clustered, l_out=l_out)
        fixed, per_block = tm.route_costs(req)
        assert (list(fixed), list(per_block)) == tm.hop_costs(req.client, req.l_in, l_out)
