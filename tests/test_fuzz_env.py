"""Fuzzing the environments with random actions: valid, masked, out of range and of the wrong type.

Across env ids, control modes, observation modes, built-in deciders (with and without rebalancing) and
scenarios (the paper's testbed, churn on a 26-server topology, random small swarms with churn):

* the only exception is the documented :class:`InvalidActionError`: for a masked or out-of-range action
  with ``invalid_action="raise"`` (the env is left untouched: same pending decision, same time), and for
  an action that is not an integer in either mode;
* with ``invalid_action="default"`` a masked or out-of-range action is replaced by the default action
  and charged ``invalid_action_penalty`` (``info["invalid_action"]``, ``info["applied_action"]``);
* every observation is finite and inside the observation space; every reward is finite and equals minus
  the per-token times, failure and invalid-action penalties of its step; while a decision is pending at
  least one action is valid, and without one the observation and mask are zero;
* the simulator's invariants (memory, chains, conservation) hold on a subsample of steps, and after every
  episode every request ended and no server holds cache or reservations.

:func:`fuzz_env` is also what ``benchmarks/long_run.py --fuzz-steps N`` runs (with a table); this file runs
100,000 steps over the fixed configurations (``PETALGYM_FUZZ_STEPS``) plus the random small swarms.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import scenario_dicts

import petalgym  # (also registers the environments)
from petalgym.envs.codec import InvalidActionError
from petalgym.envs.petal_alloc import PetalAllocEnv
from petalgym.scenario import scenario_from_dict
from petalgym.swarm import RequestStatus

#: Actions that are not integers: InvalidActionError in both invalid_action modes.
NOT_INTEGERS: tuple[Any, ...] = (1.5, None, "0", True, np.float32(2.0), np.array([0, 1]), [0])


@dataclass
class FuzzStats:
    """What a fuzz run did."""

    steps: int = 0
    episodes: int = 0
    raised: int = 0  # InvalidActionError, env untouched
    replaced: int = 0  # invalid action replaced by the default (invalid_action="default")
    invariant_checks: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, other: FuzzStats) -> None:
        self.steps += other.steps
        self.episodes += other.episodes
        self.raised += other.raised
        self.replaced += other.replaced
        self.invariant_checks += other.invariant_checks
        for k, v in other.kinds.items():
            self.kinds[k] = self.kinds.get(k, 0) + v


def _finite(obs: Any) -> bool:
    if isinstance(obs, dict):
        return all(bool(np.all(np.isfinite(v))) for v in obs.values())
    return bool(np.all(np.isfinite(obs)))


def _check_obs(env: gym.Env, obs: Any, info: dict[str, Any]) -> None:
    u: PetalAllocEnv = env.unwrapped
    assert _finite(obs), "non-finite observation"
    assert env.observation_space.contains(obs), "observation outside the observation space"
    mask = info["action_mask"]
    assert mask.dtype == np.int8 and mask.shape == (env.action_space.n,)
    assert np.array_equal(mask.astype(bool), u.action_masks())
    if u.pending is not None:
        assert mask.any(), "a pending decision without any valid action"
        assert mask[info["default_action"]], "the default action is masked"
    else:
        assert not mask.any() and info["decision"] == ""
        flat = obs["observations"] if u.obs_mode == "rllib" else obs
        if isinstance(flat, dict):
            assert all(not np.any(v) for k, v in flat.items() if k != "action_mask")
        else:
            assert not np.any(flat)
    if isinstance(obs, dict) and "action_mask" in obs:
        assert np.array_equal(obs["action_mask"], mask.astype(np.float32))


def _check_episode_end(u: PetalAllocEnv) -> None:
    """Every request ended (completed, or failed with a reason); no server holds cache or reservations."""
    sim = u.sim
    assert sim.in_flight == 0 and len(sim.requests) == sim.num_arrivals_planned == len(sim.finished)
    for r in sim.requests:
        assert r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED)
        assert (r.status == RequestStatus.FAILED) == bool(r.failure_reason)
    for s in sim.servers:
        assert s.used_bytes == 0 and not s.sessions and not s.reservations, f"server {s.id} leaks cache"
    sim.check_invariants()


def _bad_action(rng: np.random.Generator, n: int, mask: np.ndarray) -> tuple[str, Any]:
    """A masked, out-of-range or non-integer action (the kind, the action)."""
    roll = rng.random()
    masked = np.flatnonzero(mask == 0)
    if roll < 0.45 and len(masked):
        return "masked", int(rng.choice(masked))
    if roll < 0.8:
        return "out_of_range", [n, n + 7, -1, -n, 2**40, np.int64(n)][int(rng.integers(6))]
    return "not_integer", NOT_INTEGERS[int(rng.integers(len(NOT_INTEGERS)))]


def fuzz_env(
    env: gym.Env,
    steps: int,
    seed: int,
    *,
    bad_prob: float = 0.15,
    check_every: int = 25,
    full_check_episodes: int = 1,
) -> FuzzStats:
    """Play ``steps`` steps of ``env`` (resets included) with random valid actions, and with probability
    ``bad_prob`` an invalid one first; assert the contract of the module docstring at every step. The
    simulator's invariants are checked every ``check_every`` steps, after every event during the first
    ``full_check_episodes`` episodes, and at the end of every episode."""
    u: PetalAllocEnv = env.unwrapped
    rng = np.random.default_rng(seed)
    n = int(env.action_space.n)
    stats = FuzzStats()
    mode = u.invalid_action
    while stats.steps < steps:
        obs, info = env.reset(seed=int(rng.integers(2**31)))
        u.sim.check = stats.episodes < full_check_episodes
        stats.episodes += 1
        _check_obs(env, obs, info)
        done = False
        while not done and stats.steps < steps:
            mask = info["action_mask"]
            expected_penalty = 0.0
            if u.pending is not None and rng.random() < bad_prob:
                kind, action = _bad_action(rng, n, mask)
                stats.kinds[kind] = stats.kinds.get(kind, 0) + 1
                if kind == "not_integer" or mode == "raise":
                    pending, before = u.pending, (u.sim.now, len(u.sim.finished), u.sim.events)
                    with pytest.raises(InvalidActionError):
                        env.step(action)
                    assert u.pending is pending and (u.sim.now, len(u.sim.finished), u.sim.events) == before
                    stats.raised += 1
                    action = int(rng.choice(np.flatnonzero(mask)))
                else:
                    expected_penalty = u.invalid_action_penalty
            elif mask.any():
                action = int(rng.choice(np.flatnonzero(mask)))
            else:  # no decision pending (an episode that needed none): any action ends it
                action = int(rng.integers(n))
            default = info["default_action"]
            obs, reward, terminated, truncated, info = env.step(action)
            stats.steps += 1
            assert isinstance(reward, float) and math.isfinite(reward)
            assert isinstance(terminated, bool) and isinstance(truncated, bool)
            if expected_penalty:
                stats.replaced += 1
                assert info["invalid_action"] and info["applied_action"] == default
            else:
                assert not info["invalid_action"]
            cost = math.fsum(info["per_token_s"]) + u.failure_penalty * info["failed"] + expected_penalty
            assert math.isclose(reward, -u.reward_scale * cost, rel_tol=1e-9, abs_tol=1e-9)
            assert info["completed"] == len(info["per_token_s"])
            _check_obs(env, obs, info)
            if stats.steps % check_every == 0:
                u.sim.check_invariants()
                stats.invariant_checks += 1
            done = terminated or truncated
            if terminated:
                _check_episode_end(u)
                stats.invariant_checks += 1
    return stats


# --------------------------------------------------------------------------------------------------
# Configurations: (id, env id, keyword arguments, steps in the test)
# --------------------------------------------------------------------------------------------------
SMALL = {"workload.num_requests": 40}
CHURN = {"workload.horizon_s": 900}
CONFIGS: list[tuple[str, str, dict[str, Any], int]] = [
    ("routing-flat-raise", "PetalRouting-v0", {"scenario_overrides": SMALL, "invalid_action": "raise"}, 3000),
    ("routing-rllib-default", "PetalRouting-v0", {"obs_mode": "rllib", "invalid_action": "default"}, 3000),
    ("routing-petals-dict", "PetalRouting-v0", {"decider": "petals", "obs_mode": "dict"}, 1500),
    ("placement-flat-raise", "PetalPlacement-v0", {"scenario_overrides": SMALL, "invalid_action": "raise"},
     1500),
    ("placement-dict-default", "PetalPlacement-v0", {"obs_mode": "dict", "invalid_action": "default"}, 1200),
    ("joint-flat-raise", "PetalAlloc-v0", {"scenario_overrides": SMALL, "invalid_action": "raise"}, 1500),
    ("joint-rllib-default-trunc", "PetalAlloc-v0",
     {"obs_mode": "rllib", "invalid_action": "default", "max_decisions": 30}, 1200),
    ("routing-churn-raise", "PetalRouting-v0",
     {"scenario": "bellcanada-26-churn", "scenario_overrides": CHURN, "num_candidates": 8,
      "invalid_action": "raise"}, 2000),
    ("joint-churn-petals-default", "PetalAlloc-v0",
     {"scenario": "bellcanada-26-churn", "scenario_overrides": CHURN, "decider": "petals",
      "invalid_action": "default"}, 1500),
    ("placement-churn-dict", "PetalPlacement-v0",
     {"scenario": "bellcanada-26-churn", "scenario_overrides": CHURN, "obs_mode": "dict"}, 800),
    ("joint-abovenet-raise", "PetalAlloc-v0",
     {"scenario": "abovenet", "scenario_overrides": SMALL, "invalid_action": "raise"}, 800),
]  # fmt: skip


#: Steps over all configurations together (the weights above scaled): 100,000 by default;
#: ``PETALGYM_FUZZ_STEPS`` changes it (e.g. lower for a quick local run, higher for a soak).
FUZZ_STEPS = int(os.environ.get("PETALGYM_FUZZ_STEPS", "100000"))
SCALED = [
    (label, env_id, kwargs, max(200, round(steps * FUZZ_STEPS / sum(c[3] for c in CONFIGS))))
    for label, env_id, kwargs, steps in CONFIGS
]


@pytest.mark.slow
@pytest.mark.parametrize(("label", "env_id", "kwargs", "steps"), SCALED, ids=[c[0] for c in SCALED])
def test_random_actions_keep_the_contract(label, env_id, kwargs, steps):
    env = gym.make(env_id, **kwargs)
    stats = fuzz_env(env, steps, seed=zlib.crc32(label.encode()), bad_prob=0.15)
    assert stats.steps == steps and stats.episodes >= 1
    assert stats.invariant_checks >= steps // 25
    mode = kwargs.get("invalid_action", "default")  # the env's default replaces invalid actions
    # invalid actions were actually tried, and handled as documented
    assert stats.raised > 0
    if mode == "default":
        assert stats.replaced > 0
    else:
        assert stats.replaced == 0
    env.close()


# --------------------------------------------------------------------------------------------------
# Random small swarms (every kind of churn, tiny caches)
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=40)
@given(
    data=scenario_dicts(churn=None, max_requests=30),
    env_id=st.sampled_from(["PetalRouting-v0", "PetalPlacement-v0", "PetalAlloc-v0"]),
    obs_mode=st.sampled_from(["flat", "dict", "rllib"]),
    invalid=st.sampled_from(["raise", "default"]),
    decider=st.sampled_from(["cg-bp-ws-rr", "random", "round-robin", "shortest"]),  # (petals needs big GPUs)
    seed=st.integers(0, 2**31 - 1),
)
def test_random_actions_on_random_swarms(data, env_id, obs_mode, invalid, decider, seed):
    scenario = scenario_from_dict(data, source="fuzz")
    env = gym.make(env_id, scenario=scenario, obs_mode=obs_mode, invalid_action=invalid, decider=decider)
    stats = fuzz_env(env, 150, seed, bad_prob=0.2, check_every=5, full_check_episodes=2)
    assert stats.steps == 150 and stats.episodes >= 1
    env.close()


# --------------------------------------------------------------------------------------------------
# Found by this fuzzing: a decider reused across episodes (as the env's built-in decider is) must behave
# as a fresh one. ShortestChainDecider kept its chain cache, keyed by placement version, across resets; the
# versions restart with every simulator, so the next episode got chains of the previous placement.
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["shortest", "cg-bp-ws-rr", "cg-bprr", "petals", "random", "round-robin"])
def test_a_reused_decider_behaves_as_a_fresh_one(name):
    sc = petalgym.load_scenario("clustered-9", {"workload.num_requests": 30})
    shared = petalgym.make_decider(name)
    for seed in range(4):
        fresh = petalgym.simulate(sc, petalgym.make_decider(name), seed).records()
        reused = petalgym.simulate(sc, shared, seed).records()
        assert len(fresh) == len(reused) == 30
        for a, b in zip(fresh, reused, strict=True):
            assert all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a), (seed, a, b)
