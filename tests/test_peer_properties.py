"""Property tests of the peer baselines (GBP-CR + GCA + dispatchers, Helix, Parallax) over random small
scenarios with churn and contention drawn at random: the simulator's invariants hold after every event,
every request ends completed or failed for a known reason, and an episode is a function of its seed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import small_scenarios

from petalgym.deciders import make_decider
from petalgym.errors import DeciderError, SolverError
from petalgym.simulator import Simulator
from petalgym.swarm import RequestStatus

PEERS = [
    "gbp-cr-jffc",
    "gbp-cr-jsq",
    "gbp-cr-sed",
    "gbp-cr-sa-jsq",
    "gbp-cr-jiq",
    "helix",
    "parallax",
    "parallax-dp",
]
REASONS = {"no_chain", "wait_timeout", "exceeds_capacity"}


def run(name, sc, seed):
    decider = make_decider(name)
    try:
        result = Simulator(sc, seed, check_invariants=True).run(decider)
    except (SolverError, DeciderError) as exc:  # a scenario the peer cannot plan: one named reason
        assert "\n" not in str(exc)
        assume(False)
    return decider, result


@pytest.mark.slow
@pytest.mark.parametrize("name", PEERS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=small_scenarios(), seed=st.integers(0, 2**31 - 1))
def test_peer_episodes_keep_the_invariants(name, sc, seed):
    _, result = run(name, sc, seed)
    reqs = result.requests
    assert len(reqs) == result.summary()["arrived"]
    assert all(r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED) for r in reqs)
    assert {r.failure_reason for r in reqs if r.status == RequestStatus.FAILED} <= REASONS


@pytest.mark.parametrize("name", PEERS)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=small_scenarios(), seed=st.integers(0, 2**31 - 1))
def test_peer_episodes_are_a_function_of_the_seed(name, sc, seed):
    _, a = run(name, sc, seed)
    _, b = run(name, sc, seed)
    key = [(r.id, r.status, r.start, r.finish, r.first_chain) for r in a.requests]
    assert key == [(r.id, r.status, r.start, r.finish, r.first_chain) for r in b.requests]
