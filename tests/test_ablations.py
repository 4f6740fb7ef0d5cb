"""The paper's PETALS ablations: each changes exactly one component of PETALS."""

from __future__ import annotations

import pytest

from petalgym.baselines import ablations
from petalgym.baselines.cg import CGBPWSRRDecider, cg_bp_placement, design_num_sessions
from petalgym.baselines.petals import PetalsDecider, block_throughputs, choose_best_start, petals_throughput
from petalgym.deciders import make_decider
from petalgym.offline import OfflineInstance
from petalgym.perfmodel import petals_num_blocks
from petalgym.scenario import load_scenario
from petalgym.simulator import Simulator, simulate
from petalgym.swarm import RequestStatus


@pytest.fixture(scope="module")
def clustered():
    return load_scenario("clustered-9")


def _placements(scenario, decider, seed=0):
    sim = Simulator(scenario, seed)
    sim.run(decider)
    return sim, {s.id: (s.start, s.end) for s in sim.servers}


def test_opt_order_joins_in_cg_bp_order(clustered):
    n = design_num_sessions(clustered)
    order = cg_bp_placement(OfflineInstance.from_scenario(clustered, n), n).order
    assert ablations.cg_join_order(clustered) == list(order)
    # replay PETALS' rule in that order by hand: same windows for every seed (join order no longer random)
    spans: list[tuple[int, int, int, float]] = []
    expected = {}
    for j in order:
        profile = clustered.servers[j].profile
        m = petals_num_blocks(clustered.model, profile, clustered.petals.attn_cache_tokens)
        start = choose_best_start(block_throughputs(spans, clustered.num_blocks), m)
        spans.append((j, start, start + m, petals_throughput(profile, m)))
        expected[j] = (start, start + m)
    for seed in (0, 3):
        _, got = _placements(clustered, make_decider("petals-opt-order"), seed)
        assert got == expected


def test_opt_number_uses_cg_block_counts(clustered):
    n = design_num_sessions(clustered)
    cg = cg_bp_placement(OfflineInstance.from_scenario(clustered, n), n)
    sim, got = _placements(clustered, make_decider("petals-opt-number"))
    for j, (a, e) in got.items():
        assert e - a == max(1, cg.num_blocks[j])
        # all memory left after the blocks is cache (not PETALS' fixed budget)
        s = sim.servers[j]
        assert s.cache_capacity == s.memory_bytes - (e - a) * clustered.model.block_bytes


def test_opt_rr_keeps_petals_placement_and_routes_like_ws_rr(clustered):
    seed = 2
    _, petals = _placements(clustered, PetalsDecider(), seed)
    sim, opt_rr = _placements(clustered, make_decider("petals-opt-rr"), seed)
    assert opt_rr == petals
    # every routed chain is the WS-RR chain on that placement: re-route with a WS-RR router on an idle swarm
    router = CGBPWSRRDecider()
    router.reset(clustered, sim.decider_rng)
    first = sim.requests[0]
    assert first.first_chain  # routed
    fresh = Simulator(clustered, seed)
    d = fresh.next_decision()
    petals_d = make_decider("petals-opt-rr")
    petals_d.reset(clustered, fresh.decider_rng)
    while d.kind.name == "PLACE":
        fresh.apply(petals_d.place(fresh.view, d.server))
        d = fresh.next_decision()
    assert router.route(fresh.view, d.request).chain == petals_d.route(fresh.view, d.request).chain


@pytest.mark.parametrize("name", ["petals-opt-order", "petals-opt-number", "petals-opt-rr"])
def test_ablations_complete_all_requests(clustered, name):
    result = simulate(clustered, make_decider(name), seed=1, check_invariants=True)
    assert all(r.status == RequestStatus.COMPLETED for r in result.requests)
    assert len(result.requests) == clustered.workload.num_requests
