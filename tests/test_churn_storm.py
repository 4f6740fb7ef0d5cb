"""Churn storms: every server leaves and rejoins again and again (lifetimes and downtimes of seconds, fast
reloads), by failures, by drains (with and without a drain timeout) or both, with built-in deciders that
rebalance (PETALS, every few seconds) and that do not (CG-BP + WS-RR), and with random placements,
routes, wait modes and moves.

Checked (``check_invariants=True``: memory, chains and conservation after every event and decision):

* every server left and rejoined several times, and each kind of departure the storm asks for happened;
* no request is lost: every request that arrived completed, or failed with a reason;
* no cache slot leaks: whenever no request is in flight, and at the end of the episode, every server
  holds no session bytes and no reservations (its whole cache is free again);
* the episode is a function of its seed under the storm too.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import RandomFeasibleDecider, scenario_dicts

import petalgym  # noqa: F401  (registers the environments)
from petalgym.deciders import Decider, make_decider
from petalgym.scenario import Scenario, load_scenario, scenario_from_dict
from petalgym.simulator import DecisionKind, Simulator
from petalgym.swarm import RequestStatus

REASONS = {"no_chain", "wait_timeout", "exceeds_capacity"}


def storm(
    life: float | dict[str, Any],
    down: float | dict[str, Any],
    failure: float,
    drain: float,
    load: float = 0.005,
    no_chain: float = 120.0,
) -> dict[str, Any]:
    """Churn overrides: lifetime / downtime (a mean in seconds -> exponential, or a distribution)."""

    def dist(x: float | dict[str, Any]) -> dict[str, Any]:
        return x if isinstance(x, dict) else {"dist": "exponential", "mean": x}

    return {
        "churn.enabled": True,
        "churn.lifetime_s": dist(life),
        "churn.downtime_s": dist(down),
        "churn.failure_fraction": failure,
        "churn.drain_timeout_s": drain,
        "churn.load_s_per_gb": load,
        "churn.no_chain_timeout_s": no_chain,
    }


def every(seconds: float) -> dict[str, float]:
    """The scenario side of PETALS' balance-check period (the decider gets the same number)."""
    return {"petals.mean_balance_check_period_s": seconds}


def assert_no_leak(sim: Simulator) -> None:
    for s in sim.servers:
        assert s.used_bytes == 0 and not s.sessions and not s.reservations, (
            f"server {s.id} ({s.status.name}) still holds {s.used_bytes} B, {len(s.sessions)} sessions, "
            f"{len(s.reservations)} reservations with no request in flight"
        )


#: Decisions after which a storm episode is given up (:class:`StormTooLong`).
MAX_STORM_DECISIONS = 20_000


class StormTooLong(Exception):
    """A storm episode exceeded MAX_STORM_DECISIONS: faithful but (nearly) endless, e.g. a request whose
    replay outlasts most of its servers' lifetimes; the random-storm test rejects such draws."""


def run_storm(
    sc: Scenario, decider: Decider, seed: int, check: bool = True, max_decisions: int | None = None
) -> tuple[Simulator, Counter, int]:
    """Play an episode as Simulator.run does, counting PLACE decisions per server and checking for leaks
    every time the swarm has no request in flight (and, with ``check``, the simulator's invariants after
    every event). Returns (simulator, places per server, idle-swarm checks); raises StormTooLong after
    ``max_decisions`` decisions (None: no limit)."""
    sim = Simulator(sc, seed, check_invariants=check)
    sim.attach(decider)
    places: Counter = Counter()
    idle_checks = 0
    view = sim.view
    decisions = 0
    while (d := sim.next_decision()) is not None:
        decisions += 1
        if max_decisions is not None and decisions > max_decisions:
            raise StormTooLong(f"{decisions} decisions at t={sim.now:.1f}s")
        if sim.in_flight == 0 and sim.requests:
            assert_no_leak(sim)
            idle_checks += 1
        if d.kind == DecisionKind.PLACE:
            places[d.server] += 1
        sim.apply(d.ask(decider, view), decider.name)
    return sim, places, idle_checks


def assert_storm_outcome(sim: Simulator, places: Counter, min_rejoins: int) -> None:
    # nothing lost: every request that arrived ended, failures say why
    assert len(sim.requests) == sim.num_arrivals_planned > 0 and sim.in_flight == 0 and sim.done
    for r in sim.requests:
        assert r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED)
        if r.status == RequestStatus.FAILED:
            assert r.failure_reason in REASONS, r.failure_reason
        else:
            assert r.failure_reason == "" and math.isfinite(r.per_token) and r.per_token > 0
            assert r.arrival <= r.start <= r.finish
    # no slot leaks
    assert_no_leak(sim)
    sim.check_invariants()
    # the storm happened: every server was placed (joined) 1 + min_rejoins times or more
    assert len(places) == sim.scenario.num_servers
    assert min(places.values()) >= 1 + min_rejoins, places


STORMS = [
    # label, scenario, churn overrides (+ workload), decider, decider kwargs, causes that must occur, rejoins
    ("clustered9-failures", "clustered-9", storm(25, 4, 1.0, 0.0), "cg-bp-ws-rr", {}, {"failure"}, 5),
    ("clustered9-drains-max-wait", "clustered-9", {**storm(25, 4, 0.0, 15.0), "workload.max_wait_s": 10.0},
     "cg-bp-ws-rr", {}, {"departure"}, 5),
    ("clustered9-sparse-idle-gaps", "clustered-9",
     {**storm(20, 3, 0.5, 5.0), "workload.arrival_rate": 0.004, "workload.num_requests": 25},
     "cg-bp-ws-rr", {}, {"failure", "departure"}, 20),
    ("clustered9-drains-no-timeout", "clustered-9", storm(25, 4, 0.0, 0.0), "cg-bp-ws-rr", {},
     {"departure"}, 5),
    ("clustered9-mixed-petals-rebalancing", "clustered-9",
     {**storm(25, 4, 0.5, 10.0), **every(10.0)}, "petals", {"balance_check_period_s": 10.0},
     {"failure", "departure"}, 5),
    ("clustered9-synchronised", "clustered-9",
     storm({"dist": "constant", "value": 30.0}, {"dist": "constant", "value": 2.0}, 0.5, 5.0),
     "cg-bp-ws-rr", {}, {"failure", "departure"}, 5),
    ("clustered9-slow-reload-petals", "clustered-9",
     {**storm(40, 8, 0.5, 20.0, load=0.2, no_chain=20.0), **every(10.0)}, "petals",
     {"balance_check_period_s": 10.0},
     {"failure", "departure"}, 3),
    ("bellcanada26-mixed-petals", "bellcanada-26-churn",
     {**storm(60, 10, 0.5, 10.0), **every(15.0), "workload.horizon_s": 600}, "petals",
     {"balance_check_period_s": 15.0},
     {"failure", "departure"}, 3),
    ("bellcanada26-mixed-cg", "bellcanada-26-churn",
     {**storm(60, 10, 0.5, 10.0), "workload.horizon_s": 600}, "cg-bp-ws-rr", {}, {"failure", "departure"}, 3),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("label", "scenario", "overrides", "decider", "kwargs", "causes", "rejoins"),
    STORMS,
    ids=[s[0] for s in STORMS],
)
def test_storm_loses_nothing_and_leaks_nothing(label, scenario, overrides, decider, kwargs, causes, rejoins):
    sc = load_scenario(scenario, overrides)
    sim, places, idle_checks = run_storm(sc, make_decider(decider, **kwargs), seed=7)
    assert_storm_outcome(sim, places, rejoins)
    assert sum(r.status == RequestStatus.COMPLETED for r in sim.requests) > 0
    assert causes <= set(sim.leaves), sim.leaves
    if "failure" in causes:
        assert sim.interruptions.get("failure", 0) > 0  # sessions were cut by failures, and recovered
    assert sum(r.recoveries for r in sim.requests) > 0
    if decider == "petals":
        assert sim.decisions["REBALANCE"] > 0
    if "sparse" in label:  # the swarm emptied between requests: every server's cache was free each time
        assert idle_checks > 0


@pytest.mark.slow
@pytest.mark.parametrize("label", ["clustered9-mixed-petals-rebalancing", "bellcanada26-mixed-cg"])
def test_storm_episode_is_a_function_of_its_seed(label):
    _, scenario, overrides, decider, kwargs, _, _ = next(s for s in STORMS if s[0] == label)
    sc = load_scenario(scenario, overrides)
    a, _, _ = run_storm(sc, make_decider(decider, **kwargs), seed=3, check=False)
    b, _, _ = run_storm(sc, make_decider(decider, **kwargs), seed=3, check=False)
    ra, rb = a.result().records(), b.result().records()
    assert ra == rb or all(
        x.keys() == y.keys()
        and all(
            x[k] == y[k] or (isinstance(x[k], float) and math.isnan(x[k]) and math.isnan(y[k])) for k in x
        )
        for x, y in zip(ra, rb, strict=True)
    )
    assert a.leaves == b.leaves and a.interruptions == b.interruptions and a.events == b.events


# --------------------------------------------------------------------------------------------------
# Random small swarms under storms, with random deciders (random waits, random rebalancing moves)
# --------------------------------------------------------------------------------------------------
@st.composite
def stormy_scenarios(draw: st.DrawFn) -> Scenario:
    """Small random swarms whose servers live ~1-6 s and stay away ~0.2-3 s. Lifetimes are exponential: with
    a constant lifetime shorter than a request's replay, that request could never progress (every server of
    its chain would always leave before its next token; a faithful but endless episode)."""
    data = draw(scenario_dicts(churn=False, min_requests=10, max_requests=25))
    data["churn"] = {
        "enabled": True,
        "lifetime_s": {"dist": "exponential", "mean": draw(st.floats(1.0, 6.0))},
        "downtime_s": {"dist": "exponential", "mean": draw(st.floats(0.2, 3.0))},
        "failure_fraction": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "drain_timeout_s": draw(st.sampled_from([0.0, 0.5, 5.0])),
        "no_chain_timeout_s": draw(st.floats(2.0, 20.0)),
        "load_s_per_gb": draw(st.sampled_from([0.0, 0.05, 0.5])),
    }
    return scenario_from_dict(data, source="storm")


@pytest.mark.slow
@settings(max_examples=30)
@given(
    sc=stormy_scenarios(),
    seed=st.integers(0, 2**32 - 1),
    wait=st.sampled_from([None, True, False]),
    period=st.sampled_from([None, 0.5, 3.0]),
)
def test_random_storms_lose_nothing_and_leak_nothing(sc, seed, wait, period):
    decider = RandomFeasibleDecider(wait=wait, move_prob=0.5, rebalance_period_s=period)
    try:
        sim, places, _ = run_storm(sc, decider, seed, max_decisions=MAX_STORM_DECISIONS)
    except StormTooLong:
        assume(False)  # a (nearly) endless episode: faithful, but no outcome to check in a test
    assert_storm_outcome(sim, places, min_rejoins=0)
    assert decider.checks > 0
    assert sum(sim.leaves.values()) > 0  # servers did leave


@pytest.mark.slow
def test_storm_through_the_environment_leaks_nothing():
    """The same storm driven by an agent (random masked routes and placements) through PetalAlloc-v0 with
    PETALS rebalancing: after every episode every request ended and every server's cache is free."""
    env = gym.make(
        "PetalAlloc-v0",
        scenario="clustered-9",
        scenario_overrides={**storm(25, 4, 0.5, 10.0), **every(10.0), "workload.num_requests": 40},
        decider="petals",
        decider_kwargs={"balance_check_period_s": 10.0},
    )
    rng = np.random.default_rng(0)
    for episode in range(2):
        _, info = env.reset(seed=episode)
        u = env.unwrapped
        u.sim.check = True
        done, steps = False, 0
        while not done:
            mask = info["action_mask"]
            action = int(rng.choice(np.flatnonzero(mask))) if mask.any() else 0
            _, _, terminated, truncated, info = env.step(action)
            done, steps = terminated or truncated, steps + 1
        sim = u.sim
        assert terminated and steps > 20 and sim.decisions["REBALANCE"] > 0
        assert sum(sim.leaves.values()) >= 3 * u.scenario.num_servers
        assert sim.in_flight == 0 and len(sim.finished) == len(sim.requests) == sim.num_arrivals_planned
        assert_no_leak(sim)
