"""The ``"mixed"`` ROUTE candidate set: chains by different rules, each feasible and what its rule says."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import all_chains, small_scenarios

import petalgym  # noqa: F401  (registers the environments)
from petalgym.envs.candidates import ChainGenerator
from petalgym.envs.codec import EnvConfigError
from petalgym.swarm import RequestStatus

CHURN = {"scenario": "bellcanada-26-churn", "scenario_overrides": {"workload.horizon_s": 900}}


def check_mixed(env: gym.Env) -> dict[str, int]:
    """Check the pending ROUTE decision's mixed candidates against brute force; count sources."""
    u = env.unwrapped
    view, pending = u.sim.view, u.pending
    req = pending.decision.request
    cands = pending.candidates
    assert len(cands.chains) == len(set(cands.chains)) == len(cands.sources) == len(cands.waits)
    assert cands.sources[0] == "builtin" and cands.waits[0] == cands.wait
    for chain in cands.chains:
        assert view.chain_error(chain, req.route_from) is None
    free = [s.cache_capacity - s.used_bytes for s in view.servers]
    every = all_chains(view.spans(), view.num_blocks, req.route_from)
    rules = u.codec.chains.rule_chains(view, req, free)
    servers = view.servers
    kv = req.kv_bytes
    fitting = [
        c for c in every if all(free[h.server] - servers[h.server].reserved_bytes >= h.blocks * kv for h in c)
    ]
    assert bool(rules["free-now"]) == bool(fitting)
    if fitting:
        assert rules["free-now"] in fitting
    if every:
        fewest = min(len(c) for c in every)
        assert len(rules["fewest-hops"]) == fewest

        def load(c):
            held = [servers[h.server] for h in c]
            return sum((s.used_bytes + s.reserved_bytes) / s.cache_capacity for s in held)

        best = min(load(c) for c in every)
        assert math.isclose(load(rules["least-loaded"]), best, rel_tol=1e-9, abs_tol=1e-4)
    counts: dict[str, int] = {}
    for i, source in enumerate(cands.sources):
        counts[source] = counts.get(source, 0) + 1
        if source == "free-now":
            assert cands.waits[i] is False
            assert cands.starts[i] == view.now  # it fits now: no wait
            assert cands.chains[i] == rules["free-now"]
        elif source in ("least-loaded", "fewest-hops"):
            assert cands.chains[i] == rules[source]
    return counts


@settings(max_examples=15, deadline=None)
@given(scenario=small_scenarios(), seed=st.integers(0, 2**16), k=st.integers(2, 6))
def test_mixed_candidates_are_feasible_and_follow_their_rules(scenario, seed: int, k: int) -> None:
    env = gym.make("PetalAlloc-v0", scenario=scenario, candidate_set="mixed", num_candidates=k)
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    done = False
    while not done:
        if info["decision"] == "ROUTE":
            assert len(env.unwrapped.pending.candidates.chains) <= k
            check_mixed(env)
        valid = np.flatnonzero(info["action_mask"])
        a = int(valid[rng.integers(len(valid))]) if len(valid) else 0
        _, _, terminated, truncated, info = env.step(a)
        done = terminated or truncated
    sim = env.unwrapped.sim
    assert all(r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED) for r in sim.requests)


@pytest.mark.slow
def test_mixed_candidates_differ_from_ws_rr_under_churn() -> None:
    """On BellCanada with churn the rules give chains WS-RR's k best do not: they widen the choice."""
    env = gym.make("PetalRouting-v0", candidate_set="mixed", num_candidates=6, **CHURN)
    _, info = env.reset(seed=2)
    seen: dict[str, int] = {}
    done = False
    while not done:
        for source, n in check_mixed(env).items():
            seen[source] = seen.get(source, 0) + n
        _, _, terminated, truncated, info = env.step(info["default_action"])
        done = terminated or truncated
    assert {"builtin", "least-loaded", "fewest-hops"} <= set(seen)


def test_free_now_is_taken_without_waiting() -> None:
    """Where WS-RR's chain must wait (churn shrank the swarm) the free-now candidate is offered; choosing it
    routes with wait=False and the request starts at once."""
    over = {"workload.horizon_s": 1800}
    env = gym.make(
        "PetalRouting-v0",
        scenario="bellcanada-26-churn",
        candidate_set="mixed",
        num_candidates=6,
        scenario_overrides=over,
    )
    _, info = env.reset(seed=1)
    taken = []
    done = False
    while not done:
        u = env.unwrapped
        cands = u.pending.candidates
        a = info["default_action"]
        if "free-now" in cands.sources:
            i = cands.sources.index("free-now")
            a = u.codec.route_offset + i
            route = u.codec.decode(u.pending, a)
            assert route.wait is False and route.chain == cands.chains[i]
            assert cands.starts[0] > u.sim.now  # the built-in chain would wait
            taken.append((u.pending.decision.request, u.sim.now))
        _, _, terminated, truncated, info = env.step(a)
        done = terminated or truncated
    assert taken
    for req, now in taken:
        assert req.start == now or req.recoveries > 0  # started when routed (a recovery keeps its start)


def test_unknown_candidate_set_is_named() -> None:
    with pytest.raises(EnvConfigError, match="unknown candidate_set 'best'"):
        gym.make("PetalAlloc-v0", candidate_set="best")
    with pytest.raises(ValueError, match="unknown candidate set"):
        ChainGenerator(gym.make("PetalAlloc-v0").unwrapped.scenario, 4, "best")
