"""Deciders through the env (DeciderPolicy) and policies through the simulator (PolicyDecider).

The env must be a faithful view of the simulator: the built-in decider played through the env gives the
same requests as Simulator.run, and a policy played in the env gives the same requests (and sees the
same observations) as the same policy wrapped as a Decider in simulate().
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import RandomFeasibleDecider, small_scenarios

from petalgym.deciders import Decider, Route, make_decider
from petalgym.envs import DeciderPolicy, PolicyDecider
from petalgym.envs.adapter import sb3_policy
from petalgym.envs.candidates import k_best_chains
from petalgym.envs.codec import EnvConfigError, InvalidActionError
from petalgym.simulator import Simulator, simulate

CHURN = {"scenario": "bellcanada-26-churn", "scenario_overrides": {"workload.horizon_s": 600}}


def outcome(requests) -> list[tuple]:
    """Everything a request records, for exact comparison."""
    return [
        (
            r.id,
            r.client,
            r.arrival,
            r.start,
            r.first_token,
            r.finish,
            r.first_chain,
            r.chain,
            r.status,
            r.failure_reason,
            r.wait_s,
            r.recoveries,
            r.attempts,
        )
        for r in requests
    ]


def direct_run(env: gym.Env, decider: Decider):
    u = env.unwrapped
    sim = Simulator(u.scenario, seed=u.sim_seed, rebalance_period_s=decider.rebalance_period_s)
    return sim.run(decider)


def play_policy(env: gym.Env, policy, seed: int) -> tuple[int, float]:
    obs, info = env.reset(seed=seed)
    steps, ret, done = 0, 0.0, False
    while not done:
        obs, r, terminated, truncated, info = env.step(policy(obs, info["action_mask"]))
        steps += 1
        ret += r
        done = terminated or truncated
    return steps, ret


class RecordingRandomPolicy:
    """Uniform over valid actions, seeded; records (observation, mask, action)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.log: list[tuple] = []

    def __call__(self, obs, mask) -> int:
        valid = np.flatnonzero(mask)
        action = int(valid[self.rng.integers(len(valid))])
        self.log.append((obs, np.asarray(mask).copy(), action))
        return action


def assert_policy_in_simulate_equals_env(env: gym.Env, policy_seed: int, seed: int) -> list[tuple]:
    """Play a seeded random policy in ``env`` (episode ``seed``) and the same policy as a PolicyDecider in
    simulate() with the env's simulator seed: the same requests and, at every decision, the same action,
    mask and observation. Returns the env's log [(observation, mask, action)]."""
    in_env = RecordingRandomPolicy(policy_seed)
    play_policy(env, in_env, seed=seed)
    in_sim = RecordingRandomPolicy(policy_seed)
    result = simulate(
        env.unwrapped.scenario, PolicyDecider.from_env(in_sim, env), seed=env.unwrapped.sim_seed
    )
    assert outcome(env.unwrapped.sim.requests) == outcome(result.requests)
    assert len(in_env.log) == len(in_sim.log) > 0
    for (o1, m1, a1), (o2, m2, a2) in zip(in_env.log, in_sim.log, strict=True):
        assert a1 == a2
        np.testing.assert_array_equal(m1, m2)
        if isinstance(o1, dict):
            assert o1.keys() == o2.keys()
            for key in o1:
                np.testing.assert_array_equal(o1[key], o2[key])
        else:
            np.testing.assert_array_equal(o1, o2)
    return in_env.log


# --------------------------------------------------------------------------------------------------
# DeciderPolicy: the env reproduces Simulator.run
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("control", ["joint", "placement", "routing"])
@pytest.mark.parametrize("where", ["clustered-9", "churn"])
def test_builtin_through_env_equals_simulator_run(control: str, where: str) -> None:
    kwargs = CHURN if where == "churn" else {"scenario": where}
    env = gym.make("PetalAlloc-v0", control=control, **kwargs)  # built-in: CG-BP + WS-RR
    policy = DeciderPolicy(env, "cg-bp-ws-rr")
    steps, ret = play_policy(env, policy, seed=3)
    sim_requests = env.unwrapped.sim.requests
    direct = direct_run(env, make_decider("cg-bp-ws-rr"))
    assert steps > 0 and len(direct.requests) > 50
    assert outcome(sim_requests) == outcome(direct.requests)
    done = [r.per_token for r in direct.requests if r.status.name == "COMPLETED"]
    failed = sum(r.status.name == "FAILED" for r in direct.requests)
    assert math.isclose(ret, -(math.fsum(done) + 50.0 * failed), rel_tol=1e-12)


def test_petals_through_env_with_rebalancing_and_backoff() -> None:
    # clustered-9 at 0.3/s: PETALS' fixed cache budget and rebalancing moves make requests route again
    overrides = {"workload.arrival_rate": 0.3, "workload.num_requests": 60}
    env = gym.make("PetalAlloc-v0", decider="petals", scenario_overrides=overrides)
    policy = DeciderPolicy(env, "petals")
    play_policy(env, policy, seed=1)
    direct = direct_run(env, make_decider("petals"))
    assert direct.decisions["REBALANCE"] > 0 and direct.decisions["ROUTE"] > 2 * len(direct.requests)
    assert outcome(env.unwrapped.sim.requests) == outcome(direct.requests)


def test_decider_policy_matches_default_action() -> None:
    env = gym.make("PetalAlloc-v0", **CHURN)
    policy = DeciderPolicy(env, "cg-bp-ws-rr")
    _, info = env.reset(seed=9)
    for _ in range(200):
        action = policy(None, info["action_mask"])
        assert action == info["default_action"]
        assert policy.predict(None)[0] == action
        _, _, term, trunc, info = env.step(action)
        if term or trunc:
            break


def test_decider_policy_for_another_decider() -> None:
    # PETALS' chain is always a candidate, so a PETALS router can act in a CG-BP-placed swarm
    env = gym.make("PetalRouting-v0", scenario="bellcanada-26")
    policy = DeciderPolicy(env, "petals")
    _, info = env.reset(seed=0)
    differs = 0
    for _ in range(100):
        action = policy(None, info["action_mask"])
        assert info["action_mask"][action] == 1
        differs += action != info["default_action"]
        _, _, term, _, info = env.step(action)
        if term:
            break
    assert differs > 0


class SecondBestRouter(Decider):
    """Routes on the second-best chain: not a candidate when K = 1."""

    name = "second-best"

    def place(self, view, server):  # pragma: no cover - routing env
        raise AssertionError

    def route(self, view, request):
        fixed, per_block = view.time_model.hop_costs(request.client, request.l_in, request.l_out)
        found = k_best_chains(view.spans(), fixed, per_block, view.num_blocks, request.route_from, 2)
        return Route(found[-1][1])


def test_decider_policy_unrepresentable_answer() -> None:
    env = gym.make("PetalRouting-v0", num_candidates=1)
    policy = DeciderPolicy(env, SecondBestRouter())
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"second-best.*is not among the 1 candidates"):
        policy(None, None)
    with pytest.raises(EnvConfigError, match="needs a PetalAlloc env"):
        DeciderPolicy(gym.make("CartPole-v1"), "petals")


@pytest.mark.slow
@settings(max_examples=40)
@given(
    scenario=small_scenarios(),
    control=st.sampled_from(["joint", "placement", "routing"]),
    seed=st.integers(0, 2**16),
)
def test_default_actions_reproduce_a_random_decider(scenario, control: str, seed: int) -> None:
    """Random small worlds (churn, waits, retries, moves): a decider that draws from its stream at every
    decision, played through the env with default actions, gives exactly Simulator.run's requests; every
    observation is finite and in bounds and every mask offers its default action."""
    builtin = RandomFeasibleDecider(rebalance_period_s=5.0)
    env = gym.make("PetalAlloc-v0", scenario=scenario, control=control, decider=builtin, obs_mode="dict")
    obs, info = env.reset(seed=seed)
    done = False
    while not done:
        assert env.observation_space.contains(obs)
        if info["decision"]:
            assert info["action_mask"][info["default_action"]] == 1
        else:  # nothing to decide in this whole episode: the first step ends it
            assert not info["action_mask"].any() and not obs["action_mask"].any()
        obs, _, term, trunc, info = env.step(info["default_action"])
        done = term or trunc
    direct = direct_run(env, RandomFeasibleDecider(rebalance_period_s=5.0))
    assert outcome(env.unwrapped.sim.requests) == outcome(direct.requests)


# --------------------------------------------------------------------------------------------------
# PolicyDecider: a policy in simulate() equals the policy in the env
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("control", "obs_mode", "where", "options"),
    [
        ("joint", "flat", "churn", "v0"),
        ("placement", "dict", "churn", "v0"),
        ("routing", "rllib", "churn", "v0"),
        ("joint", "dict", "clustered-9", "v0"),
        ("joint", "flat", "churn", "v1"),
        ("routing", "dict", "clustered-9", "v1"),
        ("routing", "flat", "churn", "mixed"),
        ("joint", "dict", "churn", "v1+mixed"),
    ],
)
def test_policy_decider_equals_env(control: str, obs_mode: str, where: str, options: str) -> None:
    kwargs = dict(CHURN) if where == "churn" else {"scenario": where}  # (CHURN is shared)
    kwargs["feature_set"] = "v1" if "v1" in options else "v0"
    kwargs["candidate_set"] = "mixed" if "mixed" in options else "ws-rr"
    env = gym.make("PetalAlloc-v0", control=control, obs_mode=obs_mode, **kwargs)
    log = assert_policy_in_simulate_equals_env(env, policy_seed=5, seed=11)
    if obs_mode == "flat":
        assert all(o.shape == env.observation_space.shape for o, _, _ in log)


def test_policy_decider_default_policy_equals_builtin() -> None:
    scenario = gym.make("PetalAlloc-v0", **CHURN).unwrapped.scenario
    decider = PolicyDecider(lambda obs, mask: int(np.flatnonzero(mask)[0]), control="routing", name="first")
    result = simulate(scenario, decider, seed=4)
    builtin = simulate(scenario, make_decider("cg-bp-ws-rr"), seed=4)
    # candidate 0 is the built-in chain, the first valid ROUTE action
    assert outcome(result.requests) == outcome(builtin.requests)
    assert decider.describe().startswith("first (control=routing")


def test_policy_decider_invalid_actions() -> None:
    scenario = gym.make("PetalRouting-v0").unwrapped.scenario

    def first_masked(obs, mask):
        return int(np.flatnonzero(mask == 0)[0])

    with pytest.raises(InvalidActionError, match=r"action \d+ is masked out for this ROUTE decision \(ROUTE"):
        simulate(scenario, PolicyDecider(first_masked, control="routing", num_candidates=50), seed=0)
    lenient = PolicyDecider(lambda obs, mask: 99, control="routing", invalid_action="default")
    result = simulate(scenario, lenient, seed=0)
    assert lenient.invalid_actions == len(result.requests) == 100
    assert outcome(result.requests) == outcome(
        simulate(scenario, make_decider("cg-bp-ws-rr"), seed=0).requests
    )
    with pytest.raises(InvalidActionError, match="expected an action index"):
        simulate(scenario, PolicyDecider(lambda obs, mask: "left", control="routing"), seed=0)
    with pytest.raises(EnvConfigError, match="unknown control mode"):
        simulate(scenario, PolicyDecider(lambda obs, mask: 0, control="all"), seed=0)


def test_sb3_model_as_decider() -> None:
    from sb3_contrib import MaskablePPO

    env = gym.make("PetalRouting-v0")
    model = MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    decider = PolicyDecider.from_env(sb3_policy(model), env, name="maskable-ppo")
    result = simulate(env.unwrapped.scenario, decider, seed=1)
    assert len(result.requests) == 100 and all(r.status.name == "COMPLETED" for r in result.requests)
    assert result.decider == "maskable-ppo"


@pytest.mark.parametrize("builtin", ["parallax", "gbp-cr-jffc"])
def test_central_queue_builtins_run_through_the_env(builtin: str) -> None:
    """A built-in decider that enqueues requests (client-side dispatch queues): its Enqueue answers pass
    through, the agent routes a request when the queue offers it; default actions give its own episode."""
    over = {"workload.num_requests": 120, "workload.arrival_rate": 1.0, "contention": "fifo"}
    env = gym.make(
        "PetalRouting-v0",
        scenario="bellcanada-26",
        decider=builtin,
        candidate_set="mixed",
        scenario_overrides=over,
    )
    steps, _ = play_policy(env, lambda obs, mask: 0, seed=4)  # candidate 0 is the built-in chain
    direct = direct_run(env, make_decider(builtin))
    assert steps > 0
    assert outcome(env.unwrapped.sim.requests) == outcome(direct.requests)


def test_policy_decider_over_a_central_queue_builtin_equals_env() -> None:
    over = {"workload.num_requests": 120, "workload.arrival_rate": 1.0, "contention": "fifo"}
    env = gym.make(
        "PetalRouting-v0",
        scenario="bellcanada-26",
        decider="parallax",
        candidate_set="mixed",
        feature_set="v1",
        scenario_overrides=over,
    )
    assert len(assert_policy_in_simulate_equals_env(env, policy_seed=7, seed=2)) > 100


@pytest.mark.slow
@pytest.mark.parametrize("control", ["placement", "routing"])
def test_a_builtin_that_sets_its_balance_period_in_reset_is_reproduced(control: str) -> None:
    """Parallax sets its rebalance period in reset() (from the scenario); the env must read it after the
    reset, as Simulator.run does, or its episodes drift from simulate()'s (they did: 1.66 vs 0.54 s per
    token on MixedSpot seed 101)."""
    over = {"workload.trace.duration_s": 60, "workload.warmup_s": 0}
    env = gym.make(
        "PetalAlloc-v0",
        scenario="llama70b-mixed-spot",
        control=control,
        decider="parallax",
        scenario_overrides=over,
    )
    _, info = env.reset(seed=0)
    assert env.unwrapped.sim.rebalance_period_s == env.unwrapped.builtin.rebalance_period_s is not None
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(info["default_action"])
        done = terminated or truncated
    direct = direct_run(env, make_decider("parallax"))
    assert outcome(env.unwrapped.sim.requests) == outcome(direct.requests)
    assert direct.extra["moves"] > 0 or direct.decisions["REBALANCE"] > 0
