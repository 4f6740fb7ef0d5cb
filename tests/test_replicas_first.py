"""``replicas-first``: whole-model replicas first, Parallax's pipelines for the overflow, optionally
following the load."""

from __future__ import annotations

import pytest

from petalgym.deciders import make_decider
from petalgym.errors import DeciderError
from petalgym.scenario import load_scenario
from petalgym.simulator import Simulator
from petalgym.swarm import RequestStatus


def _world(rate: float, horizon_s: float = 1200.0):
    factor = rate / 0.12  # llama70b-diurnal-48's clients sum to 0.12 requests/s
    profile = {"kind": "piecewise", "times_s": [0], "factors": [factor]}
    overrides = {"workload.rate_profile": profile, "workload.horizon_s": horizon_s, "workload.warmup_s": 0}
    return load_scenario("llama70b-diurnal-48", overrides)


@pytest.mark.slow
def test_static_replicas_host_the_whole_model_and_serve_alone_requests_in_one_hop():
    scenario = _world(0.02)
    decider = make_decider("replicas-first")
    sim = Simulator(scenario, 1, check_invariants=True)
    sim.run(decider)
    L = scenario.num_blocks
    assert decider.replicas  # the A100 / H100 class servers hold all 80 blocks
    for j in decider.replicas:
        assert (sim.servers[j].start, sim.servers[j].end) == (0, L)
    assert sim.moves == 0 and decider.switches == 0
    done = [r for r in sim.requests if r.status == RequestStatus.COMPLETED]
    assert len(done) == len(sim.requests) > 5
    # at this load a replica is almost always free: (nearly) every request takes one hop
    assert sum(len(r.first_chain) == 1 for r in done) >= 0.9 * len(done)


@pytest.mark.slow
def test_following_the_load_moves_the_replicas_back_to_parallax_when_busy():
    scenario = _world(0.3)
    decider = make_decider("replicas-first", busy_load=0.2, rate_window_s=120.0, check_period_s=30.0)
    sim = Simulator(scenario, 1, check_invariants=True)
    sim.run(decider)
    assert decider.switches >= 1 and sim.moves >= 1
    ranges = decider.parallax.allocations()
    moved = [
        j for j in decider.replicas if j in ranges and (sim.servers[j].start, sim.servers[j].end) == ranges[j]
    ]
    assert moved  # at least one replica went back to its Parallax range
    assert all(r.status != RequestStatus.FAILED for r in sim.requests)


def test_it_is_left_out_where_no_server_holds_the_model_and_rejects_bad_arguments():
    with pytest.raises(DeciderError, match="can hold the whole model"):
        make_decider("replicas-first").check_scenario(load_scenario("clustered-9"))
    for kwargs in ({"busy_load": 0}, {"replica_sessions": 0}, {"rate_window_s": -1.0}, {"busy_load": True}):
        with pytest.raises(DeciderError, match="replicas-first"):
            make_decider("replicas-first", **kwargs)
