"""Tests of the simple reference deciders (petalgym.baselines.simple)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petalgym import load_scenario, make_decider, simulate
from petalgym.baselines.simple import RandomDecider, RoundRobinDecider
from petalgym.perfmodel import Hop, Placement
from petalgym.scenario import max_blocks_on, scenario_from_dict
from petalgym.simulator import DecisionKind, Simulator
from petalgym.swarm import Request


def _tiny(num_servers: int = 4, num_blocks: int = 4):
    """A small custom world: ``num_servers`` MIG slices (cap 4 blocks) and a short model."""
    return scenario_from_dict(
        {
            "model": {"base": "bloom-176b", "num_blocks": num_blocks},
            "servers": [{"profile": "mig-1g", "count": num_servers, "location": 0}],
            "clients": [{"location": 0}],
            "network": {"kind": "clusters", "intra_rtt_ms": 5, "inter_rtt_ms": 100},
            "workload": {"arrival_rate": 0.1, "num_requests": 5, "l_in": 20, "l_out": 16},
        }
    )


def _with_placements(sc, placements: list[Placement]) -> Simulator:
    """A simulator whose initial servers got ``placements``; stops at the first ROUTE decision."""
    sim = Simulator(sc, 0)
    while (d := sim.next_decision()) is not None and d.kind == DecisionKind.PLACE:
        sim.apply(placements[d.server])
    return sim


def _request(sc, route_from: int = 0) -> Request:
    r = Request(10_000, 0, 0.0, 20, 16, sc.model.session_bytes(20, 16))
    r.route_from = route_from
    return r


@pytest.mark.parametrize("name", ["clustered-9", "bellcanada-26"])
@pytest.mark.parametrize("decider", ["random", "round-robin"])
def test_all_requests_complete_on_feasible_chains(name, decider):
    sc = load_scenario(name)
    res = simulate(sc, make_decider(decider), seed=2, check_invariants=True)  # the simulator checks chains
    s = res.summary()
    assert s["completed"] == s["arrived"] == 100 and s["failed"] == 0
    for r in res.requests:
        assert r.first_chain[0].start == 0 and r.first_chain[-1].end == sc.num_blocks


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(["clustered-9", "bellcanada-26", "abovenet"]))
def test_random_placement_covers_the_model_within_memory(seed, name):
    sc = load_scenario(name)
    dec = RandomDecider()
    dec.reset(sc, np.random.default_rng(seed))
    covered = np.zeros(sc.num_blocks, dtype=int)
    for j, spec in enumerate(sc.servers):
        p = dec._placements[j]
        assert 1 <= p.num_blocks <= max_blocks_on(sc, spec)
        assert p.start >= 0 and p.end <= sc.num_blocks
        covered[p.start : p.end] += 1
    assert covered.min() >= 1


def test_random_route_is_uniform_over_feasible_chains():
    sc = _tiny()
    # chains from 0: 0[0,2) then 1[2,4) | 2[2,4) | 3[1,4)@2 ; 3[1,4) needs block 0 first -> via 0 only
    sim = _with_placements(sc, [Placement(0, 2), Placement(2, 2), Placement(2, 2), Placement(1, 3)])
    dec = RandomDecider()
    dec.reset(sc, np.random.default_rng(7))
    counts = Counter(dec.route(sim.view, _request(sc)).chain for _ in range(3000))
    expected = {
        (Hop(0, 0, 2), Hop(1, 2, 4)),
        (Hop(0, 0, 2), Hop(2, 2, 4)),
        (Hop(0, 0, 2), Hop(3, 2, 4)),
    }
    assert set(counts) == expected
    assert all(abs(n - 1000) < 150 for n in counts.values())  # ~6 sd
    # from block 1 the span of server 3 is usable too
    suffix = Counter(dec.route(sim.view, _request(sc, route_from=1)).chain for _ in range(600))
    assert set(suffix) == {
        (Hop(0, 1, 2), Hop(1, 2, 4)),
        (Hop(0, 1, 2), Hop(2, 2, 4)),
        (Hop(0, 1, 2), Hop(3, 2, 4)),
        (Hop(3, 1, 4),),
    }


def test_routes_none_on_a_coverage_gap():
    sc = _tiny(num_servers=2)
    sim = _with_placements(sc, [Placement(0, 2), Placement(3, 1)])  # block 2 is hosted by nobody
    for dec in (RandomDecider(), RoundRobinDecider()):
        dec.reset(sc, np.random.default_rng(0))
        assert dec.route(sim.view, _request(sc)) is None
        assert dec.route(sim.view, _request(sc, route_from=3)).chain == (Hop(1, 3, 4),)


def test_round_robin_split_and_tiling_in_join_order():
    sc = load_scenario("clustered-9")
    dec = RoundRobinDecider()
    sim = Simulator(sc, 5)
    dec.reset(sc, sim.decider_rng)
    # water-filling: 7 MIG slices at their cap of 4, the A100s share the other 42 blocks
    assert sorted(dec._num_blocks) == [4] * 7 + [21, 21]
    pos = 0
    while (d := sim.next_decision()) is not None and d.kind == DecisionKind.PLACE:
        p = dec.place(sim.view, d.server)
        assert p.start == pos  # join order, contiguous
        pos = p.end
        sim.apply(p)
    assert pos == sc.num_blocks
    assert dec.place(sim.view, 3) == dec.place(sim.view, 3)  # a rejoining server keeps its window


def test_round_robin_wraps_around_and_cycles_chains():
    sc = _tiny(num_servers=6, num_blocks=4)
    dec = RoundRobinDecider()
    dec.reset(sc, np.random.default_rng(0))
    assert dec._num_blocks == [1] * 6  # 6 servers, 4 blocks: one each, sum max(L, S)
    places = [dec.place(None, j) for j in range(6)]
    assert [p.start for p in places] == [0, 1, 2, 3, 0, 1]
    sim = _with_placements(sc, places)
    chains = [dec.route(sim.view, _request(sc)).chain for _ in range(4)]
    assert chains[0] == (Hop(0, 0, 1), Hop(1, 1, 2), Hop(2, 2, 3), Hop(3, 3, 4))
    assert chains[1] == (Hop(4, 0, 1), Hop(5, 1, 2), Hop(2, 2, 3), Hop(3, 3, 4))
    assert chains[2] == chains[0] and chains[3] == chains[1]


def test_simple_deciders_are_deterministic_per_seed():
    sc = load_scenario("bellcanada-26")
    for name in ("random", "round-robin"):
        a = simulate(sc, make_decider(name), seed=4).records()
        b = simulate(sc, make_decider(name), seed=4).records()
        assert a == b
    c = simulate(sc, make_decider("random"), seed=5).records()
    assert [r["first_chain"] for r in c] != [r["first_chain"] for r in a]
