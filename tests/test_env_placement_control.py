"""Placement control at REBALANCE ticks (KEEP or move) and gap-aligned placement starts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import small_scenarios
from test_env import play
from test_env_adapter import RecordingRandomPolicy, assert_policy_in_simulate_equals_env, outcome

import petalgym  # noqa: F401  (registers the environments)
from petalgym.envs import PolicyDecider
from petalgym.envs.codec import EnvConfigError
from petalgym.swarm import RequestStatus, ServerStatus

CHURN = {"scenario": "bellcanada-26-churn", "scenario_overrides": {"workload.horizon_s": 900}}
PAPER = {"scenario_overrides": {"workload.num_requests": 100, "workload.arrival_rate": 2.0}}


def random_summary(env: gym.Env, seed: int) -> dict:
    """The summary of an episode of random valid actions (seeded by ``seed``)."""
    _, _, infos = play(env, seed, policy="random", rng_seed=seed)
    return infos[-1]["summary"]


# --------------------------------------------------------------------------------------------------
# REBALANCE control
# --------------------------------------------------------------------------------------------------
def test_rebalance_ticks_offer_keep_and_moves() -> None:
    env = gym.make("PetalPlacement-v0", rebalance_period_s=60.0, **CHURN)
    u = env.unwrapped
    keep = u.codec.keep_action
    assert keep == env.action_space.n - 1 == u.codec.n_place
    _, info = env.reset(seed=0)
    ticks = moved = 0
    rng = np.random.default_rng(0)
    done = False
    while not done:
        a = info["default_action"]
        if info["decision"] == "REBALANCE":
            ticks += 1
            j = u.pending.decision.server
            server = u.sim.servers[j]
            assert server.status == ServerStatus.ONLINE
            mask = info["action_mask"]
            assert mask[keep] and a == keep  # CG-BP + WS-RR never moves: its answer is KEEP
            assert mask[: u.codec.n_place].any()
            assert "KEEP" in u.describe_action(keep)
            if ticks % 5 == 0:  # move to a random placement
                moves = [x for x in np.flatnonzero(mask) if x != keep]
                a = int(moves[rng.integers(len(moves))])
                target = u.codec.decode(u.pending, a)
                before = u.sim.moves
                _, _, terminated, truncated, info = env.step(a)
                same = (target.start, target.start + target.num_blocks) == (server.start, server.end)
                assert u.sim.moves == before + 1 or same
                moved += u.sim.moves - before
                assert server.start == target.start and server.end == target.start + target.num_blocks
                done = terminated or truncated
                continue
        _, _, terminated, truncated, info = env.step(a)
        done = terminated or truncated
    assert ticks > 20 and moved > 0
    assert u.sim.decisions["REBALANCE"] == ticks


def test_keep_everywhere_equals_the_builtin_with_the_same_ticks() -> None:
    """KEEP at every tick: the episode is the built-in decider's own (the ticks draw only the rebalance
    stream), request for request."""
    env = gym.make("PetalPlacement-v0", rebalance_period_s=60.0, **CHURN)
    base = gym.make("PetalPlacement-v0", **CHURN)
    ends = []
    for e in (env, base):
        _, info = e.reset(seed=3)
        done = False
        while not done:
            _, _, terminated, truncated, info = e.step(info["default_action"])
            done = terminated or truncated
        ends.append(outcome(e.unwrapped.sim.requests))
    assert ends[0] == ends[1]


@pytest.mark.slow
@pytest.mark.parametrize("placement_starts", ["any", "gaps"])
def test_rebalance_policy_in_simulate_equals_env(placement_starts: str) -> None:
    env = gym.make(
        "PetalAlloc-v0",
        rebalance_period_s=90.0,
        placement_starts=placement_starts,
        obs_mode="dict",
        feature_set="v1",
        **CHURN,
    )
    assert PolicyDecider.from_env(RecordingRandomPolicy(2), env).rebalance_period_s == 90.0
    log = assert_policy_in_simulate_equals_env(env, policy_seed=2, seed=5)
    assert sum(int(o["context"][0] == 1.0) for o, _, _ in log) > 0  # REBALANCE decisions were played


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"control": "routing", "rebalance_period_s": 60.0}, "rebalance control needs placement"),
        ({"rebalance_period_s": 0.0}, "rebalance_period_s must be a finite number > 0"),
        ({"placement_starts": "left"}, "unknown placement_starts 'left'"),
    ],
)
def test_bad_placement_control_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(EnvConfigError, match=message):
        gym.make("PetalAlloc-v0", **kwargs)


# --------------------------------------------------------------------------------------------------
# Gap-aligned starts
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "seeds"), [("clustered-9", range(8)), ("bellcanada-26", range(4))])
def test_random_gap_aligned_placements_cover_the_model(where: str, seeds: range) -> None:
    """Random valid placements leave blocks uncovered (every request fails) with any start, never with
    gap-aligned starts."""
    failed = {}
    for starts in ("any", "gaps"):
        env = gym.make("PetalPlacement-v0", scenario=where, placement_starts=starts, **PAPER)
        failed[starts] = [random_summary(env, seed)["failed"] for seed in seeds]
    assert sum(failed["any"]) > 0
    assert failed["gaps"] == [0.0] * len(seeds)


def test_gap_aligned_masks() -> None:
    env = gym.make("PetalPlacement-v0", placement_starts="gaps", **PAPER)
    u = env.unwrapped
    L = u.scenario.num_blocks
    _, info = env.reset(seed=0)
    checked = 0
    while info["decision"] == "PLACE":
        j = u.pending.decision.server
        (first, end), _ = u.codec._first_gap(u.sim.view, j)
        for a in np.flatnonzero(info["action_mask"]):
            level, start = divmod(int(a), L)
            m = u.pending.levels[level].num_blocks
            if a != info["default_action"]:
                assert start in (min(max(first, 0), L - m), min(max(end - m, 0), L - m))
            # a window aligned with the gap covers its first block or its last one
            assert start <= first < start + m or start < end <= start + m
        checked += 1
        _, _, terminated, truncated, info = env.step(int(info["default_action"]))
        if terminated or truncated:
            break
    assert checked == u.scenario.num_servers


@settings(max_examples=10, deadline=None)
@given(scenario=small_scenarios(), seed=st.integers(0, 2**16), starts=st.sampled_from(["any", "gaps"]))
def test_random_placement_control_keeps_every_invariant(scenario, seed: int, starts: str) -> None:
    env = gym.make(
        "PetalAlloc-v0", scenario=scenario, rebalance_period_s=30.0, placement_starts=starts, feature_set="v1"
    )
    summary = random_summary(env, seed)
    sim = env.unwrapped.sim
    sim.check_invariants()
    assert all(r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED) for r in sim.requests)
    assert summary["arrived"] == summary["completed"] + summary["failed"]
