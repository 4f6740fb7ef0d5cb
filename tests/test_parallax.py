"""The Parallax baselines (baselines/parallax.py; peers.md section 3): the pure Phase-1 and Phase-2 functions
on the section 3.5 examples and against brute force, then the deciders in whole episodes."""

from __future__ import annotations

import itertools
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from petalgym.baselines.parallax import (
    DPStateBudgetExceeded,
    ParallaxDecider,
    dp_allocate,
    dp_route,
    dynamic_join_range,
    first_disjoint_pipelines,
    greedy_allocate,
    has_full_pipeline,
    layer_capacity,
    layer_latency_ms,
    lightest_layer,
    load_variation,
    parallax_dp,
    register_pipelines,
    stage_ranges,
    water_fill,
)
from petalgym.deciders import decider_arguments, make_decider
from petalgym.errors import DeciderError
from petalgym.scenario import load_scenario, max_blocks_on, scenario_from_dict
from petalgym.simulator import Simulator
from petalgym.swarm import RequestStatus, ServerStatus

X, Y, Z = 0, 1, 2
XYZ = [(X, 0, 2), (Y, 2, 4), (Z, 2, 4)]
LAT = [5.0, 5.0, 3.0]  # ms per layer
PEER = np.full((3, 3), np.inf)
PEER[X, Y], PEER[X, Z] = 30.0, 10.0
HUB = [20.0, 50.0, 80.0]  # t_c per server, ms


# --------------------------------------------------------------------------------------------------
# Phase 1
# --------------------------------------------------------------------------------------------------
def test_layer_capacity_is_half_memory_capped_by_petalgym(clustered9):
    sc = clustered9
    for s in sc.servers:
        by_mem = int(0.5 * s.profile.memory_bytes // sc.model.block_bytes)
        assert layer_capacity(sc, s) == min(by_mem, max_blocks_on(sc, s), sc.num_blocks)
    assert sorted({layer_capacity(sc, s) for s in sc.servers}) == [3, 32]


def test_dp_allocator_docstring_case_two_pipelines_of_40_20_10():
    caps = [40, 40, 20, 20, 10, 10]
    res = dp_allocate(caps, 70)
    assert res.s_star == {1: 2, 2: 6}  # k = 3 is infeasible (140 < 210): not even tried
    assert res.k == 2
    assert [sorted(caps[i] for i in p) for p in res.pipelines] == [[10, 20, 40], [10, 20, 40]]
    assert sorted(i for p in res.pipelines for i in p) == list(range(6))


def test_dp_allocator_prefers_three_pipelines_when_z_says_so():
    caps = [70, 35, 35, 35, 35]
    res = dp_allocate(caps, 70)
    assert res.s_star == {1: 1, 2: 3, 3: 5}  # Z = 1, 4/3, 9/5
    assert res.k == 3
    assert sorted(sorted(caps[i] for i in p) for p in res.pipelines) == [[35, 35], [35, 35], [70]]


def _brute_s_star(caps: list[int], L: int, k: int) -> float:
    """Fewest nodes forming k disjoint groups each holding >= L layers (every assignment tried)."""
    best = math.inf
    for assign in itertools.product(range(k + 1), repeat=len(caps)):  # k: unused
        sums = [0] * k
        for c, g in zip(caps, assign, strict=True):
            if g < k:
                sums[g] += c
        if all(s >= L for s in sums):
            best = min(best, sum(g < k for g in assign))
    return best


def test_dp_allocator_s_star_matches_brute_force():
    rnd = random.Random(7)
    for _ in range(60):
        n, L = rnd.randint(1, 6), rnd.randint(1, 15)
        caps = [rnd.randint(1, 12) for _ in range(n)]
        res = dp_allocate(caps, L)
        for k, value in res.s_star.items():
            assert value == _brute_s_star(caps, L, k), (caps, L, k)
        for p in res.pipelines:  # every pipeline is complete, nodes used once
            assert sum(caps[i] for i in p) >= L
        flat = [i for p in res.pipelines for i in p]
        assert len(flat) == len(set(flat))
        assert len(res.pipelines) == res.k


def test_dp_allocator_state_budget_raises():
    with pytest.raises(DPStateBudgetExceeded):
        dp_allocate([40, 40, 20, 20, 10, 10], 70, max_states=5)


def test_greedy_allocator_largest_first_with_look_ahead():
    assert greedy_allocate([40, 40, 20, 20, 10, 10], 70) == [[0, 1]]  # then 60 < 70 left: stop
    # 220 >= 2L + 1: the smallest node holding all L (70, not 80) becomes the first one-node pipeline
    assert greedy_allocate([80, 70, 40, 30], 70) == [[1], [0], [2, 3]]
    assert greedy_allocate([80, 70, 40, 30], 70, look_ahead=False) == [[0], [1], [2, 3]]
    assert greedy_allocate([30, 30], 70) == []


def test_water_filling_examples():
    assert water_fill([8, 8, 8], [3, 1, 1], 10) == ([0, 1, 2], [6, 2, 2])
    assert water_fill([8, 8, 8], [3, 1, 1], 11) == ([0, 1, 2], [7, 2, 2])  # largest remainder
    split = water_fill([6, 8, 8], [3, 1, 1], 12)
    assert split.order == [1, 2, 0] and split.counts == [3, 3, 6]
    assert stage_ranges([10, 11, 12], split) == [(11, 0, 3), (12, 3, 6), (10, 6, 12)]
    with pytest.raises(ValueError):
        water_fill([3, 3], [1, 1], 7)


def test_dynamic_join_takes_the_lightest_layer_truncated_at_L():
    assert lightest_layer([5, 2, 2, 9]) == 1  # ties to the lower layer
    assert dynamic_join_range([5, 9, 9, 2, 7], 4, 5) == (3, 5)
    assert dynamic_join_range([0, 0, 0], 2, 3) == (0, 2)


def test_full_pipeline_and_load_variation():
    assert has_full_pipeline([(0, 0, 3), (1, 3, 5)], 5)
    assert not has_full_pipeline([(0, 0, 3), (1, 2, 5)], 5)  # overlap is no exact boundary
    assert load_variation([1, 1, 1], 10) == pytest.approx(0.0)
    assert load_variation([0, 2], 1) == pytest.approx(1.0)
    assert load_variation([0, 0], 1) == 0.0


# --------------------------------------------------------------------------------------------------
# Phase 2
# --------------------------------------------------------------------------------------------------
def test_layer_latency_has_load_compensator_and_overload():
    assert layer_latency_ms(5.0, 0, 16) == 5.0
    assert layer_latency_ms(5.0, 8, 16) == pytest.approx(5.025)
    assert layer_latency_ms(5.0, 16, 16) == math.inf


def test_dp_router_peer_takes_x_to_z():
    cost, hops = dp_route(XYZ, LAT, 4, rtt_ms=PEER)
    assert (cost, hops) == (18.0, [(X, 0, 2), (Z, 2, 4)])  # 5 + 10 + 3 vs 5 + 30 + 5


def test_dp_router_hub_takes_x_to_y():
    cost, hops = dp_route(XYZ, LAT, 4, hop_ms=HUB)
    assert (cost, hops) == (80.0, [(X, 0, 2), (Y, 2, 4)])  # 20 + 5 + 50 + 5 vs 20 + 5 + 80 + 3


def test_dp_router_avoids_an_overloaded_node_either_way():
    lat = [5.0, layer_latency_ms(5.0, 16, 16), 3.0]  # Y at 16/16
    assert dp_route(XYZ, lat, 4, rtt_ms=PEER)[1] == [(X, 0, 2), (Z, 2, 4)]
    assert dp_route(XYZ, lat, 4, hop_ms=HUB)[1] == [(X, 0, 2), (Z, 2, 4)]
    assert dp_route(XYZ, [math.inf, 5.0, 3.0], 4, rtt_ms=PEER) == (math.inf, [])


def test_dp_router_per_shard_and_recovery_start():
    ranges = [(0, 0, 4), (1, 0, 2), (2, 2, 4)]
    lat = [3.0, 2.0, 2.0]
    assert dp_route(ranges, lat, 4) == (3.0, [(0, 0, 4)])  # per layer: one node costs 3 < 2 + 2
    assert dp_route(ranges, lat, 4, per_shard=True) == (8.0, [(1, 0, 2), (2, 2, 4)])  # 12 vs 4 + 4
    # a recovery from block 3: any span containing 3, processing [3, end); entry cost on the first hop
    cost, hops = dp_route(ranges, lat, 4, start=3, entry_ms=[0.0, 0.0, 5.0], per_shard=True)
    assert (cost, hops) == (3.0, [(0, 3, 4)])


def _brute_routes(ranges, lat, rtt, L, start):
    """Every chain from ``start`` (all orders of exact boundaries), cheapest first, DFS order on ties."""
    out = []

    def walk(path, pos, cost):
        if pos == L:
            out.append((cost, list(path)))
            return
        for j, a, e in ranges:
            if (a == pos and path) or (not path and a <= pos < e):
                c = cost + lat[j] + (rtt[path[-1][0]][j] if path else 0.0)
                walk([*path, (j, max(a, pos), e)], e, c)

    walk([], start, 0.0)
    return min(out, key=lambda x: x[0]) if out else (math.inf, [])


def test_dp_router_matches_brute_force_costs():
    rnd = random.Random(3)
    for _ in range(80):
        L, n = rnd.randint(2, 6), rnd.randint(1, 7)
        ranges = []
        for j in range(n):
            a = rnd.randrange(L)
            ranges.append((j, a, rnd.randint(a + 1, L)))
        lat = [float(rnd.randint(1, 5)) for _ in range(n)]
        rtt = np.array([[float(rnd.randint(0, 9)) for _ in range(n)] for _ in range(n)])
        start = rnd.choice([0, 0, rnd.randrange(L)])
        want = _brute_routes(ranges, lat, rtt, L, start)[0]
        cost, hops = dp_route(ranges, lat, L, rtt_ms=rtt, start=start)
        assert cost == want
        if hops:
            assert hops[0][1] == start and hops[-1][2] == L
            assert all(h[2] == nxt[1] for h, nxt in itertools.pairwise(hops))


def test_rr_registers_only_one_pipeline_for_a_single_head():
    assert register_pipelines(XYZ, LAT, 4, rtt_ms=PEER) == [(X, Z)]
    assert register_pipelines(XYZ, LAT, 4, hop_ms=HUB) == [(X, Y)]


def _brute_register(ranges, lat, rtt, L):
    """The source's rule, literally: enumerate every pipeline (DFS, successors by end then node order),
    score it, group by head, heads by best cost, one best disjoint pipeline per head."""
    pipes = []

    def dfs(path):
        e = ranges[path[-1]][2]
        if e == L:
            pipes.append(list(path))
            return
        for p in sorted((p for p, r in enumerate(ranges) if r[1] == e), key=lambda p: ranges[p][2]):
            dfs([*path, p])

    for h, r in enumerate(ranges):
        if r[1] == 0:
            dfs([h])

    def cost(path):
        nodes = [ranges[p][0] for p in path]
        return sum(lat[j] for j in nodes) + sum(rtt[a][b] for a, b in itertools.pairwise(nodes))

    by_head: dict[int, list] = {}
    for path in pipes:
        by_head.setdefault(ranges[path[0]][0], []).append((path, cost(path)))
    used, out = set(), []
    for head in sorted(by_head, key=lambda h: min(c for _, c in by_head[h])):
        best, best_c = None, math.inf
        for path, c in by_head[head]:
            nodes = [ranges[p][0] for p in path]
            if not used.intersection(nodes) and c < best_c:
                best, best_c = nodes, c
        if best:
            out.append(tuple(best))
            used.update(best)
    return out


def test_rr_registration_matches_the_literal_rule():
    rnd = random.Random(11)
    for _ in range(80):
        L, n = rnd.randint(2, 5), rnd.randint(1, 8)
        cuts = sorted(rnd.sample(range(1, L), rnd.randint(0, L - 1)))
        bounds = [0, *cuts, L]
        ranges = []
        for j in range(n):
            i = rnd.randrange(len(bounds) - 1)
            ranges.append((j, bounds[i], bounds[rnd.randint(i + 1, len(bounds) - 1)]))
        lat = [float(rnd.randint(1, 3)) for _ in range(n)]
        rtt = np.array([[float(rnd.randint(0, 3)) for _ in range(n)] for _ in range(n)])
        assert register_pipelines(ranges, lat, L, rtt_ms=rtt) == _brute_register(ranges, lat, rtt, L)


def test_first_disjoint_pipelines_in_dfs_order():
    ranges = [(0, 0, 2), (1, 0, 2), (2, 2, 4), (3, 2, 3), (4, 3, 4)]
    # head 0: shorter successor first ([2,3) then [3,4)); head 1: the rest
    assert first_disjoint_pipelines(ranges, 4) == [(0, 3, 4), (1, 2)]
    assert first_disjoint_pipelines(ranges, 4, exclude=[2]) == [(0, 3, 4)]


# --------------------------------------------------------------------------------------------------
# The deciders
# --------------------------------------------------------------------------------------------------
KNOWN_FAILURES = {"no_chain", "wait_timeout"}


def _check_state(d: ParallaxDecider) -> None:
    """Counters released, per-layer loads equal to the allocations', registry node-disjoint."""
    assert d.current_requests() == {} and d._charged == {}
    loads = np.zeros(d._L, dtype=np.int64)
    for j, (a, e) in d.allocations().items():
        loads[a:e] += int(0.3 * d._memory[j]) // (e - a)
    assert (loads == d._loads).all()
    flat = [j for p in d.registered_pipelines() for j in p]
    assert len(flat) == len(set(flat))
    for p in d.registered_pipelines():
        spans = [d.allocations()[j] for j in p]
        assert spans[0][0] == 0 and spans[-1][1] == d._L
        assert all(s[1] == t[0] for s, t in itertools.pairwise(spans))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["parallax", "parallax-dp"])
@pytest.mark.parametrize(
    "scenario,overrides",
    [
        ("clustered-9", {"workload.num_requests": 30}),
        ("clustered-9", {"workload.num_requests": 30, "contention": {"mode": "fifo"}}),
        ("bellcanada-26-churn", {"workload.horizon_s": 900}),
        ("bellcanada-26-churn", {"workload.horizon_s": 600, "contention": "fifo"}),
    ],
)
def test_episodes_under_the_invariants(name, scenario, overrides):
    sc = load_scenario(scenario).with_overrides(overrides)
    d = make_decider(name)
    result = Simulator(sc, 3, check_invariants=True).run(d)
    assert result.requests
    assert all(r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED) for r in result.requests)
    assert {r.failure_reason for r in result.requests if r.status == RequestStatus.FAILED} <= KNOWN_FAILURES
    assert sum(r.status == RequestStatus.COMPLETED for r in result.requests) > 0.8 * len(result.requests)
    _check_state(d)
    if sc.churn.enabled:
        assert d.rebalance_period_s == 30.0 and result.extra["leaves"]
    else:
        assert d.rebalance_period_s is None and result.extra["moves"] == 0


def test_rr_serves_only_registered_pipelines_and_dp_only_exact_boundaries(clustered9):
    sc = clustered9.with_overrides({"workload.num_requests": 40})
    rr, dp = make_decider("parallax"), make_decider("parallax-dp")
    res_rr = Simulator(sc, 1).run(rr)
    res_dp = Simulator(sc, 1).run(dp)
    registered = set(rr.registered_pipelines())
    assert registered and all(tuple(h.server for h in r.first_chain) in registered for r in res_rr.requests)
    alloc = dp.allocations()
    for r in res_dp.requests:
        assert all(alloc[h.server] == (h.start, h.end) for h in r.first_chain)


def test_placements_follow_the_plan_whatever_the_join_order(clustered9):
    sc = clustered9.with_overrides({"workload.num_requests": 5})
    spans = []
    for seed in (0, 1, 2):
        sim = Simulator(sc, seed)
        d = ParallaxDecider()
        sim.run(d)
        spans.append([(s.start, s.end, s.cache_capacity) for s in sim.servers])
        for s in sim.servers:
            alloc = d.allocations().get(s.id)
            if alloc is not None:
                assert (s.start, s.end) == alloc
            left = s.memory_bytes - (s.end - s.start) * sc.model.block_bytes
            assert s.cache_capacity == min(int(0.3 * s.memory_bytes), left)
    assert spans[0] == spans[1] == spans[2]


def test_queue_when_every_pipeline_is_overloaded(clustered9):
    sc = clustered9.with_overrides({"workload.num_requests": 25, "workload.arrival_rate": 5.0})
    d = make_decider("parallax", max_requests=1)
    result = Simulator(sc, 0, check_invariants=True).run(d)
    assert result.extra["enqueued"] > 0
    assert all(r.status == RequestStatus.COMPLETED for r in result.requests)
    # one request at a time on the single registered pipeline
    runs = sorted((r.start, r.finish) for r in result.requests)
    assert all(b[0] >= a[1] - 1e-9 for a, b in itertools.pairwise(runs))
    _check_state(d)
    admit = make_decider("parallax", max_requests=1, when_overloaded="admit")
    result = Simulator(sc, 0, check_invariants=True).run(admit)
    assert result.extra["enqueued"] == 0
    runs = sorted((r.start, r.finish) for r in result.requests)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(runs))  # admitted beyond Parallax's cap


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allocator": "greedy"},
        {"vertex_cost": "per_shard", "edge_cost": "hub"},
        {"max_requests": "kv", "power": "bandwidth"},
        {"leftovers_at_bootstrap": True, "dp_max_states": 5},
    ],
)
def test_flags_run(kwargs):
    sc = load_scenario("bellcanada-26").with_overrides({"workload.num_requests": 25})
    for factory in (ParallaxDecider, parallax_dp):
        d = factory(**kwargs)
        result = Simulator(sc, 0, check_invariants=True).run(d)
        assert all(r.status == RequestStatus.COMPLETED for r in result.requests)
        _check_state(d)
        if "dp_max_states" in kwargs:
            assert "greedy allocator used" in d.note


def test_dp_allocation_is_the_decider_plan():
    sc = load_scenario("bellcanada-26")
    d = ParallaxDecider()
    d.reset(sc, np.random.default_rng(0))
    caps = [layer_capacity(sc, s) for s in sc.servers]
    res = dp_allocate(caps, sc.num_blocks)
    assert res.k == 2
    assert sorted(d.allocations()) == sorted(i for p in res.pipelines for i in p)
    assert len(d.registered_pipelines()) == 2
    # the DP router's leftovers join at the lightest layers: every server gets a range
    d_dp = parallax_dp()
    d_dp.reset(sc, np.random.default_rng(0))
    assert len(d_dp.allocations()) == sc.num_servers


def _fake_view(d: ParallaxDecider, version: int, offline: set[int]) -> SimpleNamespace:
    servers = []
    for j in range(d.scenario.num_servers):
        a, e = d.allocations().get(j, (0, 1))
        status = ServerStatus.OFFLINE if j in offline else ServerStatus.ONLINE
        servers.append(SimpleNamespace(status=status, start=a, end=e))
    return SimpleNamespace(placement_version=version, servers=servers)


def test_departure_drops_the_rr_pipeline_and_reboots_without_a_full_one():
    sc = load_scenario("bellcanada-26")
    d = ParallaxDecider()
    d.reset(sc, np.random.default_rng(0))
    d._awaiting.clear()
    first, second = d.registered_pipelines()
    gone = first[1]
    d.rebalance(_fake_view(d, 1, {gone}), second[0])
    assert d.registered_pipelines() == [second]  # the other pipeline is untouched: no reboot
    assert not set(first) & set(d.allocations()) and gone not in d._present
    assert d.reboots == 0
    d.rebalance(_fake_view(d, 2, {gone, second[0]}), second[1])  # no full pipeline left: reboot
    assert d.reboots == 1
    assert has_full_pipeline([(j, *r) for j, r in d.allocations().items()], sc.num_blocks)
    assert not {gone, second[0]} & set(d.allocations())


def test_server_rtts_missing_falls_back_to_hub():
    sc = scenario_from_dict(
        {
            "name": "matrix",
            "model": "bloom-176b",
            "servers": [{"profile": "a100", "count": 3}],
            "clients": [{"name": "c"}],
            "network": {"kind": "matrix", "rtt_ms": [[10.0, 20.0, 30.0]]},
            "workload": {"arrival_rate": 1.0, "num_requests": 5, "l_in": 20, "l_out": 16},
        }
    )
    d = ParallaxDecider()
    result = Simulator(sc, 0, check_invariants=True).run(d)
    assert "hub edge costs" in d.note and d._hub
    assert all(r.status == RequestStatus.COMPLETED for r in result.requests)


def test_factory_and_arguments():
    assert decider_arguments("parallax-dp").keys() == decider_arguments("parallax").keys()
    assert decider_arguments("parallax-dp")["router"] == "dp"
    d = make_decider("parallax-dp", vertex_cost="per_shard", allocation_delay_s=1.0)
    assert (d.name, d.router, d.vertex_cost, d.allocation_delay_s) == ("parallax-dp", "dp", "per_shard", 1.0)
    assert make_decider("parallax").router == "rr"
    with pytest.raises(DeciderError, match="unknown argument"):
        make_decider("parallax-dp", nope=1)
    for bad in ({"router": "x"}, {"max_requests": 0}, {"dp_max_states": 0}, {"reload_check_period_s": -1}):
        with pytest.raises(DeciderError):
            ParallaxDecider(**bad)
