"""Tests of the PETALS baseline (baselines/petals.py) against the rules of PETALS' source."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import all_chains, gpu_profile

from petalgym.baselines.petals import (
    PetalsDecider,
    choose_best_start,
    min_latency_chain,
    petals_throughput,
)
from petalgym.deciders import Route, ShortestChainDecider, make_decider
from petalgym.errors import DeciderError
from petalgym.perfmodel import Hop, TimeModel, chain_errors, petals_cache_bytes_per_block
from petalgym.scenario import load_scenario, scenario_from_dict
from petalgym.simulator import DecisionKind, Simulator, simulate
from petalgym.swarm import Request, ServerState, ServerStatus, SwarmView

SMALL_MODEL = {"name": "tiny", "num_blocks": 8, "block_gb": 1.0, "d_model": 1024}


def small_scenario(profiles: list[str], rtt_ms: list[float], num_blocks: int = 8, **petals) -> object:
    """A hand-made world: one client, one server per entry of ``profiles``, RTTs given per server."""
    return scenario_from_dict(
        {
            "model": {**SMALL_MODEL, "num_blocks": num_blocks},
            "gpu_profiles": {
                # PETALS places 2 blocks on a 2.4 GB GPU (1 GB blocks): throughput 3 / 1.5 = 2, 4.5 / 1.5 = 3
                "p2": gpu_profile(2.4, forward_rps=3.0, inference_rps=100.0),
                "p3": gpu_profile(2.4, forward_rps=4.5, inference_rps=400.0),
                "mid": gpu_profile(4.5),  # 4 blocks
                "fast": gpu_profile(inference_rps=500.0),
                "slow": gpu_profile(inference_rps=50.0),
            },
            "servers": [{"profile": p} for p in profiles],
            "network": {"kind": "matrix", "rtt_ms": [rtt_ms]},
            "workload": {"arrival_rate": 1.0, "num_requests": 1, "l_in": 20, "l_out": 128},
            "petals": petals,
        }
    )


def swarm(scenario, placed: list[tuple[int, int, ServerStatus]]) -> SwarmView:
    """A view whose server j hosts [start, end) with the given status (start < 0: not placed)."""
    servers = [ServerState(spec) for spec in scenario.servers]
    for s, (a, e, status) in zip(servers, placed, strict=True):
        s.status = status
        if a >= 0:
            s.start, s.end = a, e
            s.cache_capacity = (e - a) * petals_cache_bytes_per_block(scenario.model, 4096)
            s.placements = 1
    view = SwarmView(scenario, TimeModel(scenario), servers)
    view.placement_version = 1
    return view


def reset(decider: PetalsDecider, scenario, seed: int = 0) -> PetalsDecider:
    decider.reset(scenario, np.random.default_rng(seed))
    return decider


ON, LOAD, OFF, DRAIN = ServerStatus.ONLINE, ServerStatus.LOADING, ServerStatus.OFFLINE, ServerStatus.DRAINING


# --------------------------------------------------------------------------------------------------
# Block counts and throughput
# --------------------------------------------------------------------------------------------------
def initial_placements(scenario, decider, seed: int = 0) -> Simulator:
    """Run the simulator's initial PLACE decisions only."""
    sim = Simulator(scenario, seed)
    decider.reset(scenario, sim.decider_rng)
    while (d := sim.next_decision()) is not None and d.kind == DecisionKind.PLACE:
        sim.apply(decider.place(sim.view, d.server))
    return sim


def test_block_counts_and_fixed_cache_on_clustered_9():
    sc = load_scenario("clustered-9")
    sim = initial_placements(sc, PetalsDecider())
    per_block = petals_cache_bytes_per_block(sc.model, 4096)
    counts = {s.spec.profile.name: set() for s in sim.servers}
    for s in sim.servers:
        counts[s.spec.profile.name].add(s.num_blocks)
        assert s.cache_capacity == s.num_blocks * per_block
    assert counts == {"a100": {53}, "mig-1g": {4}}
    # a MIG slice's fixed budget holds 27 sessions of 148 tokens through its 4 blocks (paper: ~27)
    mig = next(s for s in sim.servers if s.spec.profile.name == "mig-1g")
    assert mig.cache_capacity // (4 * sc.model.session_bytes(20, 128)) == 27


def test_announced_throughput():
    sc = load_scenario("clustered-9")
    a100, mig = sc.profiles["a100"], sc.profiles["mig-1g"]
    assert petals_throughput(a100, 53) == pytest.approx(20829.0 / 27)
    assert petals_throughput(mig, 4) == pytest.approx(2758.0 / 2.5)
    assert petals_throughput(a100, 1) == 3020.0  # network-bound


# --------------------------------------------------------------------------------------------------
# choose_best_blocks
# --------------------------------------------------------------------------------------------------
def brute_force_start(t: list[float], m: int) -> int:
    """Smallest i whose sorted window is lexicographically smallest, by explicit comparisons."""
    best, best_window = -1, None
    for i in range(len(t) - m + 1):
        window = sorted(t[i : i + m])
        if best_window is None:
            best, best_window = i, window
            continue
        for x, y in zip(window, best_window, strict=True):
            if x != y:
                if x < y:
                    best, best_window = i, window
                break
    return best


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 1.0, 2.0, 2.5, 7.0]), min_size=1, max_size=14),
    st.integers(min_value=1, max_value=14),
)
def test_choose_best_start_is_the_lexicographic_rule(t, m):
    m = min(m, len(t))
    assert choose_best_start(t, m) == brute_force_start(t, m)


def test_choose_best_start_prefers_weakest_block_not_smallest_sum():
    # window 0 has the smaller sum but window 2 holds the weakest block
    assert choose_best_start([1.0, 1.0, 5.0, 0.5, 9.0], 2) == 2
    assert choose_best_start([3.0, 3.0, 3.0], 2) == 0  # ties: smallest start


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_place_matches_rule_on_hand_made_swarms(data):
    L = data.draw(st.integers(min_value=2, max_value=12))
    n = data.draw(st.integers(min_value=2, max_value=6))
    profiles = data.draw(st.lists(st.sampled_from(["p2", "p3", "mid", "fast"]), min_size=n, max_size=n))
    sc = small_scenario([*profiles, "fast"], [10.0] * (n + 1), num_blocks=L)  # the last never joins
    placed = []
    for _ in range(n - 1):
        a = data.draw(st.integers(min_value=0, max_value=L - 1))
        e = data.draw(st.integers(min_value=a + 1, max_value=L))
        placed.append((a, e, data.draw(st.sampled_from([ON, LOAD, OFF, DRAIN]))))
    placed += [(-1, -1, OFF), (-1, -1, OFF)]  # the joining server, a spare
    view = swarm(sc, placed)
    for s in view.servers:
        if s.status == OFF:  # as in the simulator: an offline server hosts nothing
            s.start = s.end = -1
    decider = reset(PetalsDecider(), sc)
    p = decider.place(view, n - 1)
    # T_b: JOINING (loading) or ONLINE servers hosting b, summed in server order
    t = [0.0] * L
    for s in view.servers:
        if s.status in (ON, LOAD) and s.start >= 0:
            thr = min(s.spec.profile.forward_rps / ((s.num_blocks + 1) / 2), s.spec.profile.network_rps)
            for b in range(s.start, s.end):
                t[b] += thr
    # PETALS' count: floor((M - 2 GiB d_model / 14336) / (s_m + 2 d_model 4096 tokens 2 bytes)), <= L
    mem = sc.servers[n - 1].profile.memory_bytes
    autograd = 2 * 2**30 * 1024 / 14336
    assert p.num_blocks == min(int((mem - autograd) // (1e9 + 2 * 1024 * 4096 * 2)), L)
    assert p.cache_bytes == p.num_blocks * 2 * 1024 * 4096 * 2
    assert p.start == brute_force_start(t, p.num_blocks)


def test_join_order_precomputes_sequential_choices():
    sc = load_scenario("clustered-9")
    order = [8, 7, 6, 5, 4, 3, 2, 1, 0]
    spans_by_seed = []
    for seed in (0, 1):
        sim = initial_placements(sc, PetalsDecider(join_order=lambda s: order), seed)
        spans_by_seed.append([(s.start, s.end) for s in sim.servers])
    assert spans_by_seed[0] == spans_by_seed[1]  # independent of the simulator's join order
    t = [0.0] * sc.num_blocks
    expected = {}
    for j in order:
        m = 53 if sc.servers[j].profile.name == "a100" else 4
        a = brute_force_start(t, m)
        expected[j] = (a, a + m)
        # recompute T in server order, as PETALS does
        t = [0.0] * sc.num_blocks
        for k in sorted(expected):
            ka, ke = expected[k]
            for b in range(ka, ke):
                t[b] += petals_throughput(sc.servers[k].profile, ke - ka)
    assert spans_by_seed[0] == [expected[j] for j in range(sc.num_servers)]


def test_num_blocks_override_uses_all_memory_left():
    sc = load_scenario("clustered-9")
    sim = initial_placements(sc, PetalsDecider(num_blocks=lambda s, j: 2))
    for s in sim.servers:
        assert s.num_blocks == 2
        assert s.cache_capacity == s.memory_bytes - 2 * sc.model.block_bytes


# --------------------------------------------------------------------------------------------------
# Min-latency routing
# --------------------------------------------------------------------------------------------------
def petals_cost(chain, rtt, irps, lacks, overhead=0.018, penalty=10.0) -> float:
    """The latency PETALS' graph assigns to ``chain`` (independent re-statement of its edges)."""
    cost = 0.0
    for h in chain:
        cost += min(rtt[h.server] / 2, 5.0) + overhead + (penalty if lacks[h.server] else 0.0)
        cost += h.blocks / irps[h.server]
    return cost + min(rtt[chain[-1].server] / 2, 5.0)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_min_latency_chain_is_cheapest_under_petals_costs(data):
    L = data.draw(st.integers(min_value=1, max_value=7))
    n = data.draw(st.integers(min_value=1, max_value=6))
    spans = []
    for j in range(n):
        a = data.draw(st.integers(min_value=0, max_value=L - 1))
        spans.append((j, a, data.draw(st.integers(min_value=a + 1, max_value=L))))
    rtt = data.draw(st.lists(st.sampled_from([0.005, 0.1, 0.3, 12.0]), min_size=n, max_size=n))
    irps = data.draw(st.lists(st.sampled_from([61.55, 300.0, 369.2]), min_size=n, max_size=n))
    lacks = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    start = data.draw(st.integers(min_value=0, max_value=L - 1))
    cost, chain = min_latency_chain(spans, L, rtt, irps, lacks, start=start)
    chains = all_chains(spans, L, start)
    if not chains:
        assert cost == math.inf and chain == ()
        return
    assert chain_errors(chain, {j: (a, e) for j, a, e in spans}, L, start) is None
    best = min(petals_cost(c, rtt, irps, lacks) for c in chains)
    assert petals_cost(chain, rtt, irps, lacks) == pytest.approx(best, abs=1e-9)
    assert cost == pytest.approx(best, abs=1e-9)


def request(sc, route_from: int = 0) -> Request:
    r = Request(0, 0, 0.0, 20, 128, sc.model.session_bytes(20, 128))
    r.route_from = route_from
    return r


def test_route_pays_lacking_cache_penalty_and_avoids_full_server():
    sc = small_scenario(["fast", "fast"], [10.0, 50.0])
    view = swarm(sc, [(0, 8, ON), (0, 8, ON)])
    decider = reset(PetalsDecider(), sc)
    req = request(sc)
    ans = decider.route(view, req)
    assert isinstance(ans, Route) and ans.wait is False
    assert ans.chain == (Hop(0, 0, 8),)  # lower RTT
    full = view.servers[0]
    full.used_bytes = full.cache_capacity - 8 * req.kv_bytes + 1  # one byte short for its span
    assert decider.route(view, req).chain == (Hop(1, 0, 8),)
    # alone, the full server is still chosen, 10 s dearer (the simulator then backs off)
    rtt, irps = [0.010, 0.050], [500.0, 500.0]
    free, _ = min_latency_chain([(0, 0, 8)], 8, rtt, irps, [False, False])
    lacking, chain = min_latency_chain([(0, 0, 8)], 8, rtt, irps, [True, False])
    assert chain == (Hop(0, 0, 8),) and lacking - free == pytest.approx(10.0)


def test_lacking_cache_counts_the_whole_span_even_for_a_recovery():
    sc = small_scenario(["fast", "fast"], [10.0, 50.0])
    view = swarm(sc, [(0, 8, ON), (4, 8, ON)])
    decider = reset(PetalsDecider(), sc)
    req = request(sc, route_from=6)
    assert decider.route(view, req).chain == (Hop(0, 6, 8),)
    s = view.servers[0]
    s.used_bytes = s.cache_capacity - 2 * req.kv_bytes  # room for the 2 blocks used, not for 8
    assert decider.route(view, req).chain == (Hop(1, 6, 8),)


def test_route_uses_online_servers_only_and_stalls_on_a_gap():
    sc = small_scenario(["fast", "fast", "slow"], [10.0, 10.0, 10.0])
    view = swarm(sc, [(0, 4, ON), (4, 8, LOAD), (2, 8, ON)])
    decider = reset(PetalsDecider(), sc)
    assert decider.route(view, request(sc)).chain == (Hop(0, 0, 4), Hop(2, 4, 8))
    view.servers[2].status = DRAIN
    view.placement_version += 1
    assert decider.route(view, request(sc)) is None


def test_router_delegation():
    sc = small_scenario(["fast", "slow"], [10.0, 10.0])
    view = swarm(sc, [(0, 8, ON), (0, 8, ON)])
    router = ShortestChainDecider()
    decider = reset(PetalsDecider(router=router), sc)
    ans = decider.route(view, request(sc))
    assert ans == router.route(view, request(sc)) and ans.wait is True


# --------------------------------------------------------------------------------------------------
# Rebalancing
# --------------------------------------------------------------------------------------------------
def test_rebalance_moves_to_the_badly_covered_blocks():
    # three servers of throughput 2 on [0,2), one on [2,4): T = [6,6,2,2]; moving gives [4,4,4,4],
    # quality 2/4 = 0.5 < 0.75 - eps
    sc = small_scenario(["p2", "p2", "p2", "p2"], [10.0] * 4, num_blocks=4)
    view = swarm(sc, [(0, 2, ON), (0, 2, ON), (0, 2, ON), (2, 4, ON)])
    decider = reset(PetalsDecider(), sc)
    p = decider.rebalance(view, 0)
    assert p is not None and (p.start, p.num_blocks) == (2, 2)
    assert p.cache_bytes == view.servers[0].cache_capacity
    assert decider.rebalance(view, 3) is None  # moving the only server of [2,4) would uncover it


def test_rebalance_stays_when_quality_is_not_below_threshold():
    # T = [6,6,3,3]; moving server 0 gives [4,4,5,5]: quality 3/4 = 0.75, not < 0.75 - eps
    sc = small_scenario(["p2", "p2", "p2", "p3"], [10.0] * 4, num_blocks=4)
    view = swarm(sc, [(0, 2, ON), (0, 2, ON), (0, 2, ON), (2, 4, ON)])
    assert reset(PetalsDecider(), sc).rebalance(view, 0) is None
    p = reset(PetalsDecider(balance_quality=0.9), sc).rebalance(view, 0)  # 0.75 < 0.9 - eps
    assert p is not None and p.start == 2
    # loading (joining) servers count: a joining server on [2,4) removes the imbalance
    view.servers[1].status = LOAD
    view.servers[1].start, view.servers[1].end = 2, 4
    assert reset(PetalsDecider(balance_quality=0.9), sc).rebalance(view, 0) is None


def test_rebalance_switches():
    sc = small_scenario(["p2", "p2", "p2", "p2"], [10.0] * 4, num_blocks=4)
    view = swarm(sc, [(0, 2, ON), (0, 2, ON), (0, 2, ON), (2, 4, ON)])
    assert reset(PetalsDecider(rebalance=False), sc).rebalance(view, 0) is None
    assert PetalsDecider(rebalance=False).rebalance_period_s is None
    assert PetalsDecider().rebalance_period_s == 120.0
    sc_off = small_scenario(["p2"] * 4, [10.0] * 4, num_blocks=4, rebalance=False)
    assert reset(PetalsDecider(), sc_off).rebalance(swarm(sc_off, [(0, 2, ON)] * 3 + [(2, 4, ON)]), 0) is None
    sc_slow = small_scenario(["p2"] * 4, [10.0] * 4, num_blocks=4, mean_balance_check_period_s=300)
    with pytest.warns(UserWarning, match="300"):
        reset(PetalsDecider(), sc_slow)


# --------------------------------------------------------------------------------------------------
# Whole episodes
# --------------------------------------------------------------------------------------------------
def test_full_episode_feasible_and_complete():
    sc = load_scenario("clustered-9")
    res = simulate(sc, PetalsDecider(), seed=0, check_invariants=True)
    s = res.summary()
    assert s["completed"] == s["arrived"] == 100
    assert s["failed"] == 0
    assert res.decisions["REBALANCE"] > 0  # balance checks were offered


def test_deterministic_per_seed():
    sc = load_scenario("bellcanada-26")
    runs = [simulate(sc, make_decider("petals"), seed=s) for s in (0, 0, 1)]
    rec = [[(r["first_chain"], r["finish_s"]) for r in x.records()] for x in runs]
    assert rec[0] == rec[1]
    assert rec[0] != rec[2]
    assert runs[0].extra["moves"] == runs[1].extra["moves"]


def test_errors_name_the_bad_value():
    sc = load_scenario("clustered-9")
    with pytest.raises(DeciderError, match="twice"):
        reset(PetalsDecider(join_order=lambda s: [0, 0, 1]), sc)
    with pytest.raises(DeciderError, match="99"):
        reset(PetalsDecider(join_order=lambda s: [99]), sc)
    with pytest.raises(DeciderError, match="gave 0"):
        reset(PetalsDecider(num_blocks=lambda s, j: 0), sc)
    with pytest.raises(DeciderError, match="-5"):
        PetalsDecider(balance_check_period_s=-5)
    with pytest.raises(DeciderError, match="router"):
        PetalsDecider(router="shortest")  # type: ignore[arg-type]
