"""The dense holding-cost reward, fixed-horizon episodes, the swarm's load counters and feature set v1."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import small_scenarios
from test_env import play

import petalgym  # noqa: F401  (registers the environments)
from petalgym.envs.codec import EnvConfigError
from petalgym.envs.features import LOG_SCALED, OBS_CLIP, PART_FEATURES
from petalgym.metrics import EpisodeCost
from petalgym.swarm import RequestLoad, RequestStatus

LOADED = {"workload.num_requests": 150, "workload.arrival_rate": 2.0}


def episode_cost(env: gym.Env, penalty: float) -> float:
    requests = env.unwrapped.sim.requests
    done = [r.per_token for r in requests if r.status == RequestStatus.COMPLETED]
    failed = sum(r.status == RequestStatus.FAILED for r in requests)
    return math.fsum(done) + penalty * failed


# --------------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(
    scenario=small_scenarios(),
    control=st.sampled_from(["joint", "placement", "routing"]),
    seed=st.integers(0, 2**16),
)
def test_holding_and_completion_returns_are_the_per_token_total(scenario, control: str, seed: int) -> None:
    """Both rewards sum to minus (per-token times + penalty x failures) over a finished episode, on the
    same episode (random valid actions, failures included)."""
    returns = []
    for reward in ("completion", "holding"):
        env = gym.make(
            "PetalAlloc-v0", scenario=scenario, control=control, reward=reward, failure_penalty=3.0
        )
        _, rewards, infos = play(env, seed, policy="random", rng_seed=seed)
        assert infos[-1].get("summary") is not None  # ran to the end
        total = episode_cost(env, 3.0)
        assert math.isclose(sum(rewards), -total, rel_tol=1e-9, abs_tol=1e-9)
        returns.append(sum(rewards))
    assert math.isclose(returns[0], returns[1], rel_tol=1e-9, abs_tol=1e-9)


def test_holding_reward_is_dense_under_load() -> None:
    steps = {}
    for reward in ("completion", "holding"):
        env = gym.make("PetalRouting-v0", reward=reward, reward_scale=0.1, scenario_overrides=LOADED)
        _, rewards, _ = play(env, seed=4)
        steps[reward] = np.count_nonzero(rewards) / len(rewards)
        assert all(r <= 0 for r in rewards)
        assert math.isclose(sum(rewards), -0.1 * episode_cost(env, 50.0), rel_tol=1e-9)
    # at 2 requests/s the completions pay on under a fifth of the steps; holding costs on nearly all
    assert steps["completion"] < 0.2 < 0.9 < steps["holding"]


def test_holding_cost_accrues_one_over_l_out_per_second() -> None:
    """A hand-made timeline: the meter charges (elapsed / l_out) per request in the system."""

    class R:
        def __init__(self, arrival: float, l_out: int):
            self.arrival, self.l_out = arrival, l_out
            self.status = RequestStatus.RUNNING
            self.finish = math.nan

        @property
        def per_token(self) -> float:
            return (self.finish - self.arrival) / self.l_out

    meter = EpisodeCost("holding", failure_penalty=9.0)
    a, b = R(0.0, 10), R(2.0, 4)
    cost, _, _ = meter.advance([a], [], 1.0)
    assert math.isclose(cost, 0.1)
    cost, _, _ = meter.advance([a, b], [], 4.0)  # a: 3 s / 10, b: 2 s / 4
    assert math.isclose(cost, 0.3 + 0.5)
    a.status, a.finish = RequestStatus.COMPLETED, 5.0
    b.status = RequestStatus.FAILED  # refunds b's accrued 3 s / 4 and charges 9
    cost, per_token, failed = meter.advance([a, b], [a, b], 5.0)
    assert per_token == (0.5,) and failed == 1
    assert math.isclose(cost, 0.1 + (9.0 - 0.5))
    assert math.isclose(meter.total, 0.5 + 9.0)
    with pytest.raises(ValueError, match="unknown reward"):
        EpisodeCost("dense")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reward": "dense"}, "unknown reward 'dense'"),
        ({"time_limit_s": 0}, "time_limit_s must be a finite number > 0"),
        ({"time_limit_s": "1h"}, "time_limit_s must be a number"),
        ({"feature_set": "v9"}, "unknown feature_set 'v9'"),
    ],
)
def test_bad_reward_horizon_or_features_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(EnvConfigError, match=message):
        gym.make("PetalAlloc-v0", **kwargs)


# --------------------------------------------------------------------------------------------------
# Fixed horizon
# --------------------------------------------------------------------------------------------------
def test_time_limit_truncates_at_the_first_decision_past_it() -> None:
    over = {"workload.horizon_s": 3600.0, "workload.arrival_rate": 0.5, "workload.num_requests": None}
    env = gym.make(
        "PetalRouting-v0",
        scenario="bellcanada-26",
        reward="holding",
        time_limit_s=600.0,
        scenario_overrides=over,
    )
    _, rewards, infos = play(env, seed=1)
    times = [i["sim_time"] for i in infos]
    assert times[-1] >= 600.0 > times[-2]  # stopped at the first decision at or after the limit
    assert infos[-1]["decision"] != ""  # truncated, not terminated: a decision is still pending
    sim = env.unwrapped.sim
    in_system = [r for r in sim.requests if r.status not in (RequestStatus.COMPLETED, RequestStatus.FAILED)]
    assert in_system and infos[-1]["summary"]["in_flight"] == len(in_system)
    # the return is minus the holding cost up to the last decision: finished ones whole, the rest so far
    now = sim.now
    held = episode_cost(env, 50.0) + math.fsum((now - r.arrival) / r.l_out for r in in_system)
    assert math.isclose(sum(rewards), -held, rel_tol=1e-9)


# --------------------------------------------------------------------------------------------------
# Load counters and feature set v1
# --------------------------------------------------------------------------------------------------
def test_load_counters_follow_the_requests() -> None:
    over = {"workload.horizon_s": 900}
    env = gym.make("PetalAlloc-v0", scenario="bellcanada-26-churn", scenario_overrides=over)
    _, info = env.reset(seed=3)
    sim = env.unwrapped.sim
    checked = waited = 0
    done = False
    while not done:
        load = sim.view.load
        statuses = [r.status for r in sim.requests]
        assert load.arrived == len(sim.requests)
        assert load.in_flight == len(sim.requests) - len(sim.finished)
        assert load.running == statuses.count(RequestStatus.RUNNING)
        assert load.waiting == load.in_flight - load.running >= 0
        waited += load.waiting > 1
        checked += 1
        _, _, terminated, truncated, info = env.step(info["default_action"])
        done = terminated or truncated
    assert checked > 50 and waited > 0 and sim.load.running == sim.load.in_flight == 0


def test_smoothed_arrival_rate() -> None:
    load = RequestLoad(window_s=10.0)
    assert load.arrival_rate(5.0) == 0.0
    for k in range(200):  # 2 arrivals/s for 100 s: the smoothed rate converges to 2
        load.arrive(0.5 * k)
    assert math.isclose(load.arrival_rate(99.5), 2.0, rel_tol=0.05)
    assert math.isclose(load.arrival_rate(109.5), load.arrival_rate(99.5) / math.e, rel_tol=1e-12)


def test_feature_set_v1_adds_load_and_never_saturates() -> None:
    obs = {}
    for fs in ("v0", "v1"):
        env = gym.make("PetalRouting-v0", feature_set=fs, obs_mode="dict", scenario_overrides=LOADED)
        observations, _, _ = play(env, seed=2)
        obs[fs] = observations[:-1]
    slots = PART_FEATURES["blocks"].index("free_slots_per_R")
    assert np.mean([(o["blocks"][:, slots] >= OBS_CLIP).mean() for o in obs["v0"]]) > 0.1  # v0 saturates
    for o in obs["v1"]:
        for part, values in o.items():
            if part != "action_mask":
                assert values.max() < OBS_CLIP, part
    assert "context" not in obs["v0"][0]
    load = np.array([o["context"] for o in obs["v1"]])
    assert load.shape[1] == len(PART_FEATURES["context"])
    moving = [PART_FEATURES["context"][k] for k in np.flatnonzero(load.std(axis=0) > 1e-3)]
    assert moving == ["arrival_rate_per_mean", "in_flight_per_R", "running_per_R"]  # nobody waits here
    assert (load[:, 0] == 0).all()  # no REBALANCE decisions here
    # the shared parts differ only where v1 log-scales
    for o0, o1 in zip(obs["v0"], obs["v1"], strict=True):
        for part in o0:
            if part == "action_mask":
                continue
            cols = [PART_FEATURES[part].index(n) for n in LOG_SCALED.get(part, ())]
            keep = [k for k in range(len(PART_FEATURES[part])) if k not in cols]
            np.testing.assert_array_equal(o0[part][..., keep], o1[part][..., keep])
            raw = np.minimum(np.log1p(o0[part][..., cols]), OBS_CLIP)
            unclipped = o0[part][..., cols] < OBS_CLIP
            np.testing.assert_allclose(o1[part][..., cols][unclipped], raw[unclipped], rtol=1e-5, atol=1e-6)


def test_queue_features_move_when_memory_binds() -> None:
    """With 2,048-token outputs clustered-9's caches fill: requests wait on reservations, and v1 sees it."""
    over = {"workload.num_requests": 60, "workload.arrival_rate": 2.0, "workload.l_out": 2048}
    env = gym.make("PetalRouting-v0", feature_set="v1", obs_mode="dict", scenario_overrides=over)
    observations, _, _ = play(env, seed=0)
    load = np.array([o["context"] for o in observations[:-1]])
    waiting = PART_FEATURES["context"].index("waiting_per_R")
    reservations = PART_FEATURES["context"].index("reservations_per_R")
    assert load[:, waiting].max() > load[0, waiting] and load[:, reservations].max() > 0
    assert load.max() < OBS_CLIP


def test_candidate_rules_name_each_candidates_rule() -> None:
    env = gym.make(
        "PetalRouting-v0",
        feature_set="v1",
        candidate_set="mixed",
        num_candidates=6,
        obs_mode="dict",
        scenario="bellcanada-26-churn",
        scenario_overrides={"workload.horizon_s": 900},
    )
    _, info = env.reset(seed=2)
    columns = {"free-now": 0, "least-loaded": 1, "fewest-hops": 2, "ws-rr": 3}
    seen = set()
    done = False
    while not done:
        obs = env.unwrapped._observation()
        cands = env.unwrapped.pending.candidates
        rules = obs["candidate_rules"]
        for i, source in enumerate(cands.sources):
            expected = np.zeros(4)
            if source in columns:
                expected[columns[source]] = 1.0
                seen.add(source)
            np.testing.assert_array_equal(rules[i, :4], expected)
            servers = env.unwrapped.sim.servers
            load = sum(
                (servers[h.server].used_bytes + servers[h.server].reserved_bytes)
                / servers[h.server].cache_capacity
                for h in cands.chains[i]
            )
            assert rules[i, 4] == pytest.approx(math.log1p(load), rel=1e-5, abs=1e-6)
        assert not rules[len(cands.sources) :].any()  # padding rows
        _, _, terminated, truncated, info = env.step(info["default_action"])
        done = terminated or truncated
    assert {"least-loaded", "ws-rr"} <= seen
