"""The Gymnasium contract of PetalAlloc-v0 / PetalPlacement-v0 / PetalRouting-v0.

Registration, spaces, masks, rewards, reproducibility, errors, rendering, vectorisation, both env
checkers, and the candidate machinery (k best chains, placement levels).
"""

from __future__ import annotations

import functools
import itertools
import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from hypothesis import given, settings
from hypothesis import strategies as st

import petalgym
from petalgym.envs.candidates import fixed_levels, k_best_chains, level_names
from petalgym.envs.codec import EnvConfigError, InvalidActionError
from petalgym.envs.features import OBS_CLIP, PART_FEATURES
from petalgym.errors import ScenarioError
from petalgym.perfmodel import Hop
from petalgym.scenario import load_scenario
from petalgym.swarm import RequestStatus

ENV_IDS = ("PetalAlloc-v0", "PetalPlacement-v0", "PetalRouting-v0")
# bellcanada-26 with churn, shortened to ~10 minutes (~120 requests): recoveries, rejoins, failures
CHURN = {"scenario": "bellcanada-26-churn", "scenario_overrides": {"workload.horizon_s": 600}}


def random_masked(rng: np.random.Generator, mask: np.ndarray) -> int:
    """A uniformly random valid action; 0 when none is valid (an episode that needed no agent decision
    ends at its first step, whatever the action)."""
    valid = np.flatnonzero(mask)
    return int(valid[rng.integers(len(valid))]) if len(valid) else 0


def play(env: gym.Env, seed: int, policy: str = "default", rng_seed: int = 0, **reset_kw):
    """Play one episode; returns (observations, rewards, infos)."""
    rng = np.random.default_rng(rng_seed)
    obs, info = env.reset(seed=seed, **reset_kw)
    observations, rewards, infos = [obs], [], [info]
    done = False
    while not done:
        a = info["default_action"] if policy == "default" else random_masked(rng, info["action_mask"])
        obs, r, terminated, truncated, info = env.step(a)
        observations.append(obs)
        rewards.append(r)
        infos.append(info)
        done = terminated or truncated
    return observations, rewards, infos


# --------------------------------------------------------------------------------------------------
# Registration and spaces
# --------------------------------------------------------------------------------------------------
def test_registered_on_import() -> None:
    for env_id in ENV_IDS:
        assert env_id in gym.registry
    env = gym.make("PetalRouting-v0")
    assert env.unwrapped.control == "routing"
    assert env.unwrapped.scenario.name == "clustered-9"
    assert env.unwrapped.builtin.name == "cg-bp-ws-rr"  # the default built-in decider


def test_namespaced_make_without_importing_petalgym() -> None:
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'petalgym' not in sys.modules\n"
        "env = gym.make('petalgym:PetalAlloc-v0', control='routing')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(type(env.unwrapped).__name__, obs.shape[0] > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PetalAllocEnv", "True"]


def test_fixed_control_variants_reject_control() -> None:
    assert gym.make("PetalPlacement-v0").unwrapped.control == "placement"
    with pytest.raises(EnvConfigError, match="fixes control='routing'"):
        gym.make("PetalRouting-v0", control="joint")


@pytest.mark.parametrize("control", ["joint", "placement", "routing"])
def test_action_space_layout(control: str) -> None:
    env = gym.make("PetalAlloc-v0", control=control, num_candidates=5)
    u = env.unwrapped
    L = u.scenario.num_blocks
    n_levels = len(level_names((0.25, 0.5, 2.0, 4.0)))
    n_place = n_levels * L if control != "routing" else 0
    n_route = 5 if control != "placement" else 0
    assert env.action_space == gym.spaces.Discrete(n_place + n_route)
    assert u.codec.route_offset == n_place


def test_flat_and_dict_observations_agree() -> None:
    flat_env = gym.make("PetalAlloc-v0", obs_mode="flat")
    dict_env = gym.make("PetalAlloc-v0", obs_mode="dict")
    space = dict_env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    parts = [p for p in PART_FEATURES if p not in ("context", "candidate_rules")]  # v1 only
    assert set(space.spaces) == {*parts, "action_mask"}
    for name in parts:
        assert space[name].shape[-1] == len(PART_FEATURES[name])
    assert flat_env.observation_space.shape == (sum(int(np.prod(space[p].shape)) for p in parts),)
    f_obs, f_info = flat_env.reset(seed=4)
    d_obs, d_info = dict_env.reset(seed=4)
    for _ in range(15):
        parts = dict_env.unwrapped.codec.features.split(f_obs)
        for p in parts:
            np.testing.assert_array_equal(parts[p], d_obs[p])
        np.testing.assert_array_equal(d_obs["action_mask"], d_info["action_mask"].astype(np.float32))
        f_obs, *_, f_info = flat_env.step(f_info["default_action"])
        d_obs, *_, d_info = dict_env.step(d_info["default_action"])


def test_rllib_observation_wraps_flat_and_mask() -> None:
    flat_env = gym.make("PetalAlloc-v0", control="routing")
    rllib_env = gym.make("PetalAlloc-v0", control="routing", obs_mode="rllib")
    assert set(rllib_env.observation_space.spaces) == {"observations", "action_mask"}
    assert rllib_env.observation_space["observations"] == flat_env.observation_space
    f_obs, _ = flat_env.reset(seed=2)
    r_obs, r_info = rllib_env.reset(seed=2)
    np.testing.assert_array_equal(r_obs["observations"], f_obs)
    np.testing.assert_array_equal(r_obs["action_mask"], r_info["action_mask"])


def test_narrow_controls_drop_irrelevant_parts() -> None:
    routing = gym.make("PetalRouting-v0", obs_mode="dict").observation_space
    placement = gym.make("PetalPlacement-v0", obs_mode="dict").observation_space
    assert "candidates" in routing.spaces and "levels" not in routing.spaces
    assert "levels" in placement.spaces and "candidates" not in placement.spaces


def test_max_servers_pads_with_absent_rows() -> None:
    env = gym.make("PetalAlloc-v0", obs_mode="dict", max_servers=12)
    obs, _ = env.reset(seed=1)
    servers = obs["servers"]
    assert servers.shape == (12, len(PART_FEATURES["servers"]))
    assert np.all(servers[:9, 0] == 1.0)
    assert np.all(servers[9:] == 0.0)


# --------------------------------------------------------------------------------------------------
# Checkers and vectorisation
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("env_id", "obs_mode"), list(itertools.product(ENV_IDS, ["flat", "dict", "rllib"])))
def test_env_checkers(env_id: str, obs_mode: str) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    # the checkers step with unmasked random actions: the default configuration must take every one
    env = gym.make(env_id) if obs_mode == "flat" else gym.make(env_id, obs_mode=obs_mode)
    with warnings.catch_warnings():
        # SB3 recommends 1-D Boxes in Dict observations; our (rows, features) parts are deliberate
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)


@pytest.mark.parametrize(
    ("env_id", "scenario"),
    [(e, "bellcanada-26-churn") for e in ENV_IDS] + [("PetalRouting-v0", "clustered-9")],
)
def test_a_deep_copy_or_pickled_env_evolves_like_its_original(env_id: str, scenario: str) -> None:
    """A twin made mid-episode (copy.deepcopy, or a pickle round trip as SubprocVecEnv does) steps bit for
    bit like the original. (Before: the twin's observation never changed -- its views into the copied
    fill buffer looked into the original's -- and SB3 trained on a constant observation.)"""
    import copy
    import pickle

    env = gym.make(env_id, scenario=scenario, scenario_overrides={"workload.horizon_s": 900.0}).unwrapped
    obs, info = env.reset(seed=5)
    for _ in range(4):
        obs, *_, info = env.step(int(np.flatnonzero(info["action_mask"])[-1]))
    twins = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(80):
        valid = np.flatnonzero(info["action_mask"])
        if not len(valid):
            break
        a = int(rng.choice(valid))
        before = obs
        obs, reward, terminated, truncated, info = env.step(a)
        changed += not np.array_equal(before, obs)
        for twin in twins:
            t_obs, t_reward, t_term, t_trunc, t_info = twin.step(a)
            assert np.array_equal(t_obs, obs) and t_obs.dtype == obs.dtype
            assert t_reward == reward and (t_term, t_trunc) == (terminated, truncated)
            assert np.array_equal(t_info["action_mask"], info["action_mask"])
        if terminated or truncated:
            break
    assert changed > 10  # the observations do evolve


def test_errors_name_the_env_id_and_the_last_step_summarises_the_episode() -> None:
    with pytest.raises(EnvConfigError, match=r"^PetalRouting-v0: unknown obs_mode 'x'"):
        gym.make("PetalRouting-v0", obs_mode="x")
    env = gym.make("PetalPlacement-v0", invalid_action="raise")
    _, info = env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"^PetalPlacement-v0: action .* out of range"):
        env.step(env.action_space.n)
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(info["default_action"])
        done = terminated or truncated
        assert ("summary" in info) == done
    summary = info["summary"]
    sim = env.unwrapped.sim
    assert summary["arrived"] == len(sim.requests) == summary["completed"] + summary["failed"]
    assert summary["per_token_s"] == pytest.approx(np.mean([r.per_token for r in sim.requests]))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode: str) -> None:
    envs = gym.make_vec("PetalRouting-v0", num_envs=2, vectorization_mode=mode, obs_mode="dict")
    try:
        obs, info = envs.reset(seed=[3, 4])
        assert obs["servers"].shape[0] == 2 and info["action_mask"].shape == (2, 4)
        total = np.zeros(2)
        for _ in range(120):  # across one episode end (autoreset)
            acts = np.array([np.flatnonzero(m)[-1] if m.any() else 0 for m in info["action_mask"]])
            obs, rew, _, _, info = envs.step(acts)
            total += rew
        assert np.all(total < 0)
    finally:
        envs.close()


@pytest.mark.slow
@pytest.mark.parametrize("vec_cls", ["DummyVecEnv", "SubprocVecEnv"])
def test_sb3_vec_envs(vec_cls: str) -> None:
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common import vec_env

    # "petalgym:" imports petalgym in worker processes (forkserver workers do not inherit the registry)
    make = functools.partial(gym.make, "petalgym:PetalRouting-v0")
    venv = getattr(vec_env, vec_cls)([make, make])
    try:
        obs = venv.reset()
        assert obs.shape == (2, *venv.observation_space.shape)
        for _ in range(30):
            masks = get_action_masks(venv)
            assert masks.shape == (2, 4) and masks.any(axis=1).all()
            obs, rew, _, _ = venv.step(np.array([np.flatnonzero(m)[-1] for m in masks]))
            assert np.isfinite(obs).all() and np.all(rew <= 0)
    finally:
        venv.close()


# --------------------------------------------------------------------------------------------------
# Reset, seeds, reproducibility
# --------------------------------------------------------------------------------------------------
def test_sim_seed_drawn_from_np_random() -> None:
    a, b = gym.make("PetalRouting-v0"), gym.make("PetalRouting-v0")
    _, info_a = a.reset(seed=7)
    _, info_b = b.reset(seed=7)
    assert a.unwrapped.sim_seed == b.unwrapped.sim_seed == info_a["sim_seed"] == info_b["sim_seed"]
    a.reset(seed=8)
    assert a.unwrapped.sim_seed != b.unwrapped.sim_seed
    a.reset(seed=7)
    first = a.unwrapped.sim_seed
    a.reset()  # continues the np_random stream: a new episode
    assert a.unwrapped.sim_seed != first


def test_reset_option_sim_seed_matches_simulate() -> None:
    env = gym.make("PetalRouting-v0")
    _, rewards, _ = play(env, seed=0, options={"sim_seed": 12})
    assert env.unwrapped.sim_seed == 12
    direct = petalgym.simulate(load_scenario("clustered-9"), petalgym.make_decider("cg-bp-ws-rr"), seed=12)
    assert math.isclose(sum(rewards), -sum(r.per_token for r in direct.requests), rel_tol=1e-12)
    with pytest.raises(EnvConfigError, match="unknown option 'seed'"):
        env.reset(options={"seed": 1})


@settings(max_examples=6)
@given(seed=st.integers(0, 2**31 - 1), control=st.sampled_from(["joint", "placement", "routing"]))
def test_reset_seed_reproduces_the_episode(seed: int, control: str) -> None:
    env = gym.make("PetalAlloc-v0", control=control, max_decisions=60)
    obs1, rew1, inf1 = play(env, seed, policy="random", rng_seed=seed)
    obs2, rew2, inf2 = play(env, seed, policy="random", rng_seed=seed)
    assert rew1 == rew2
    assert len(obs1) == len(obs2)
    for a, b in zip(obs1, obs2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [i["sim_time"] for i in inf1] == [i["sim_time"] for i in inf2]


# --------------------------------------------------------------------------------------------------
# Steps, masks, rewards
# --------------------------------------------------------------------------------------------------
def test_return_is_minus_total_per_token_time() -> None:
    env = gym.make("PetalRouting-v0", scenario="bellcanada-26", reward_scale=0.5)
    _, rewards, infos = play(env, seed=2, policy="random")
    requests = env.unwrapped.sim.requests
    assert len(requests) == 100 and all(r.status == RequestStatus.COMPLETED for r in requests)
    total = math.fsum(r.per_token for r in requests)
    assert math.isclose(sum(rewards), -0.5 * total, rel_tol=1e-12)
    assert sum(i.get("completed", 0) for i in infos) == 100
    per_token = [x for i in infos for x in i.get("per_token_s", ())]
    assert math.isclose(math.fsum(per_token), total, rel_tol=1e-12)


def test_failures_are_penalised() -> None:
    # random placements on clustered-9 leave blocks uncovered: requests find no chain and fail
    env = gym.make("PetalPlacement-v0", failure_penalty=7.0)
    _, rewards, infos = play(env, seed=0, policy="random", rng_seed=1)
    requests = env.unwrapped.sim.requests
    failed = sum(r.status == RequestStatus.FAILED for r in requests)
    done = [r.per_token for r in requests if r.status == RequestStatus.COMPLETED]
    assert failed > 0
    assert sum(i.get("failed", 0) for i in infos) == failed
    assert math.isclose(sum(rewards), -(math.fsum(done) + 7.0 * failed), rel_tol=1e-12)


@pytest.mark.parametrize("control", ["joint", "placement", "routing"])
def test_masks_select_the_pending_kind(control: str) -> None:
    env = gym.make("PetalAlloc-v0", control=control, **CHURN)
    u = env.unwrapped
    L = u.scenario.num_blocks
    off = u.codec.route_offset
    rng = np.random.default_rng(0)
    _, info = env.reset(seed=5)
    kinds = set()
    for _ in range(150):
        mask = info["action_mask"]
        np.testing.assert_array_equal(u.action_masks(), mask.astype(bool))
        assert mask.dtype == np.int8 and mask[info["default_action"]] == 1
        kinds.add(info["decision"])
        if info["decision"] == "PLACE":
            assert not mask[off:].any()
            for level, lv in enumerate(u.pending.levels):
                row = mask[level * L : (level + 1) * L]
                if lv.valid:  # every start whose window fits, and no other
                    assert row[: L - lv.num_blocks + 1].all() and not row[L - lv.num_blocks + 1 :].any()
                else:
                    assert not row.any()
        else:
            assert not mask[:off].any()
            n = len(u.pending.candidates.chains)
            assert mask[off : off + n].all() and not mask[off + n :].any()
        _, _, term, trunc, info = env.step(random_masked(rng, mask))
        if term or trunc:
            assert not info["action_mask"].any() and not u.action_masks().any()
            break
    assert kinds == {"joint": {"PLACE", "ROUTE"}, "placement": {"PLACE"}, "routing": {"ROUTE"}}[control]


def test_route_candidates_are_distinct_feasible_chains() -> None:
    env = gym.make("PetalRouting-v0", scenario="bellcanada-26", num_candidates=6)
    u = env.unwrapped
    env.reset(seed=3)
    for _ in range(40):
        cands = u.pending.candidates
        req = u.pending.decision.request
        assert cands.sources[0] == "builtin" and len(set(cands.chains)) == len(cands.chains) <= 6
        assert cands.chains[0] == tuple(u.pending.answer.chain)
        for chain in cands.chains:
            assert u.view.chain_error(chain, req.route_from) is None
        if cands.petals_index >= 0:
            assert "petals" in cands.sources or cands.petals_index == 0
        _, _, term, _, _ = env.step(u.codec.route_offset + len(cands.chains) - 1)
        if term:
            break


def test_max_decisions_truncates() -> None:
    env = gym.make("PetalRouting-v0", max_decisions=5)
    _, info = env.reset(seed=0)
    flags = []
    for _ in range(5):
        _, _, term, trunc, info = env.step(info["default_action"])
        flags.append((term, trunc))
    assert flags == [(False, False)] * 4 + [(False, True)]
    with pytest.raises(ResetNeeded, match="episode ended"):
        env.unwrapped.step(0)


def test_invalid_actions() -> None:
    env = gym.make("PetalAlloc-v0", invalid_action="raise")
    u = env.unwrapped
    with pytest.raises(ResetNeeded, match="before reset"):
        u.step(0)
    _, info = env.reset(seed=0)
    assert info["decision"] == "PLACE"
    masked = int(np.flatnonzero(info["action_mask"] == 0)[0])
    with pytest.raises(InvalidActionError, match=f"action {masked} is masked out for this PLACE decision"):
        env.step(masked)
    with pytest.raises(InvalidActionError, match="out of range"):
        env.step(env.action_space.n)
    with pytest.raises(InvalidActionError, match="must be an integer"):
        env.step(1.5)

    lenient = gym.make("PetalAlloc-v0", invalid_action_penalty=3.0)  # the default replaces invalid actions
    _, info = lenient.reset(seed=0)
    default = info["default_action"]
    _, r_bad, *_, info_bad = lenient.step(masked)
    _, info = lenient.reset(seed=0)
    _, r_ok, *_, info_ok = lenient.step(default)
    assert info_bad["invalid_action"] and not info_ok["invalid_action"]
    assert info_bad["applied_action"] == default
    assert math.isclose(r_bad, r_ok - 3.0)


class NoChainDecider(petalgym.deciders.ShortestChainDecider):
    """Places like ``shortest`` but never finds a chain: every request stalls and fails."""

    def route(self, view, request):
        return None


def test_episode_without_agent_decisions() -> None:
    env = gym.make("PetalRouting-v0", decider=NoChainDecider(), failure_penalty=2.0)
    obs, info = env.reset(seed=0)
    assert info["decision"] == "" and not info["action_mask"].any() and not obs.any()
    assert info["requests_finished"] == 100  # all failed while reset ran the episode
    _, reward, terminated, truncated, info = env.step(0)  # any action ends it, with the episode's reward
    assert terminated and not truncated and info["failed"] == 100 and reward == -200.0
    with pytest.raises(ResetNeeded):
        env.step(0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scenario": "no-such-scenario"}, ScenarioError, "no-such-scenario"),
        ({"control": "both"}, EnvConfigError, "unknown control mode 'both'"),
        ({"obs_mode": "graph"}, EnvConfigError, "unknown obs_mode 'graph'"),
        ({"invalid_action": "ignore"}, EnvConfigError, "unknown invalid_action 'ignore'"),
        ({"num_candidates": 0}, EnvConfigError, "num_candidates"),
        ({"max_servers": 3}, EnvConfigError, "max_servers"),
        ({"max_decisions": 0}, EnvConfigError, "max_decisions"),
        ({"reward_scale": -1.0}, EnvConfigError, "reward_scale"),
        ({"failure_penalty": math.nan}, EnvConfigError, "failure_penalty"),
        ({"decider": "no-such-decider"}, petalgym.DeciderError, "unknown decider 'no-such-decider'"),
        ({"scenario_overrides": {"workload.arrival_rate": -1}}, ScenarioError, "arrival_rate"),
    ],
)
def test_config_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gym.make("PetalAlloc-v0", **kwargs)


def test_unknown_render_mode() -> None:
    from petalgym.envs import PetalAllocEnv

    # (gym.make turns "human" into HumanRendering over "rgb_array"; the class itself only knows its modes)
    with pytest.raises(EnvConfigError, match="unknown render_mode 'video'"):
        PetalAllocEnv(render_mode="video")


# --------------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------------
@settings(max_examples=5)
@given(seed=st.integers(0, 10_000), control=st.sampled_from(["joint", "placement", "routing"]))
def test_observations_finite_and_bounded_under_churn(seed: int, control: str) -> None:
    env = gym.make("PetalAlloc-v0", control=control, obs_mode="dict", max_decisions=80, **CHURN)
    observations, rewards, infos = play(env, seed, policy="random", rng_seed=seed)
    space = env.observation_space
    for obs, info in zip(observations, infos, strict=True):
        assert space.contains(obs)
        for part in obs.values():
            assert np.isfinite(part).all() and part.min() >= 0.0 and part.max() <= OBS_CLIP
        if info["decision"]:
            kind = obs["decision"][:2]
            assert kind.tolist() == ([1.0, 0.0] if info["decision"] == "PLACE" else [0.0, 1.0])
    assert all(np.isfinite(rewards)) and all(r <= 0 for r in rewards)


def test_route_observation_describes_request_and_candidates() -> None:
    env = gym.make("PetalRouting-v0", obs_mode="dict")
    obs, _ = env.reset(seed=0)
    req = env.unwrapped.pending.decision.request
    T = env.unwrapped.scenario.workload.max_tokens
    assert obs["request"][:2].tolist() == pytest.approx([req.l_in / T, req.l_out / T])
    n = len(env.unwrapped.pending.candidates.chains)
    assert obs["candidates"][:n, 0].tolist() == [1.0] * n and not obs["candidates"][n:].any()
    assert obs["candidates"][0, 1] == 1.0  # candidate 0 is the built-in chain
    on_chain = {h.server for h in env.unwrapped.pending.candidates.chains[0]}
    assert (
        set(np.flatnonzero(obs["servers"][:, PART_FEATURES["servers"].index("on_builtin_chain")])) == on_chain
    )


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
def test_render_modes() -> None:
    text_env = gym.make("PetalAlloc-v0", render_mode="ansi")
    assert "not reset" in text_env.unwrapped.render()
    _, info = text_env.reset(seed=0)
    for _ in range(12):
        _, _, _, _, info = text_env.step(info["default_action"])
    text = text_env.render()
    assert (
        info["decision"] == "ROUTE" and "decision: ROUTE request" in text and "candidate 0 (builtin)" in text
    )
    assert text.count("\n") >= 9 + 3

    rgb_env = gym.make("PetalAlloc-v0", scenario="bellcanada-26", render_mode="rgb_array")
    blank = rgb_env.unwrapped.render()
    rgb_env.reset(seed=0)
    img = rgb_env.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape == blank.shape
    assert (img != blank).any()  # placed servers are drawn
    from petalgym.envs.render import LEGEND, render_rgb

    raw = render_rgb(None, None, 26, 70)
    assert img.shape[0] > raw.shape[0] and img.shape[1] == raw.shape[1]  # the legend strip below
    legend = img[raw.shape[0] :]
    assert (legend.max(axis=2) - legend.min(axis=2) > 100).any() and len(LEGEND) == 8  # coloured swatches
    assert (legend.max(axis=2) < 80).any()  # dark text
    with pytest.warns(UserWarning, match="without a render_mode"):
        assert gym.make("PetalAlloc-v0").unwrapped.render() is None


# --------------------------------------------------------------------------------------------------
# Candidate machinery
# --------------------------------------------------------------------------------------------------
def _all_chains(spans, fixed, per_block, L, start):
    """Brute force: every chain from ``start`` to L with its cost."""
    out = []

    def extend(pos, hops, cost):
        if pos == L:
            out.append((cost, tuple(hops)))
            return
        for j, a, e in spans:
            if a <= pos < e:
                extend(e, [*hops, Hop(j, pos, e)], cost + fixed[j] + per_block[j] * (e - pos))

    extend(start, [], 0.0)
    return out


@settings(max_examples=60)
@given(
    data=st.data(),
    L=st.integers(1, 8),
    n=st.integers(1, 7),
    k=st.integers(1, 6),
)
def test_k_best_chains_match_brute_force(data: st.DataObject, L: int, n: int, k: int) -> None:
    spans = []
    for j in range(n):
        a = data.draw(st.integers(0, L - 1))
        spans.append((j, a, data.draw(st.integers(a + 1, L))))
    fixed = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    per_block = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    start = data.draw(st.integers(0, L - 1))
    got = k_best_chains(spans, [float(x) for x in fixed], [float(x) for x in per_block], L, start, k)
    brute = sorted(_all_chains(spans, fixed, per_block, L, start), key=lambda c: c[0])
    assert [c for c, _ in got] == [float(c) for c, _ in brute[:k]]  # the k smallest costs, in order
    assert len({ch for _, ch in got}) == len(got)
    for cost, chain in got:
        assert (cost, chain) in [(float(c), ch) for c, ch in brute]


def test_placement_levels_express_cg_bp_and_petals() -> None:
    from petalgym.baselines.cg import design_num_sessions

    sc = load_scenario("clustered-9")
    env = gym.make("PetalPlacement-v0")
    R = design_num_sessions(sc)
    assert env.unwrapped.codec.design_sessions == R
    a100 = fixed_levels(sc, 0, R, env.unwrapped.codec.place_session_bytes, (0.5, 2.0))
    assert [lv.name for lv in a100] == ["cg-bp", "petals", "cg-bp-x0.5", "cg-bp-x2"]
    assert a100[1].num_blocks == 53  # PETALS' count on an A100 with 4096 cache tokens
    assert a100[0].num_blocks > a100[3].num_blocks  # more sessions reserved -> fewer blocks
    for lv in a100:
        if lv.valid:
            assert lv.num_blocks * sc.model.block_bytes + lv.cache_bytes <= sc.servers[0].profile.memory_bytes
    mig = fixed_levels(sc, 8, R, env.unwrapped.codec.place_session_bytes, (0.5, 2.0))
    # a MIG slice is capped at 4 blocks: most rules coincide, duplicates are masked
    valid = [(lv.num_blocks, lv.cache_bytes) for lv in mig if lv.valid]
    assert len(valid) == len(set(valid)) < len(mig)


# --------------------------------------------------------------------------------------------------
# The environment page's examples run (and print what they claim)
# --------------------------------------------------------------------------------------------------
def test_environment_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "environments.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) == 2 and len(blocks[0].strip().splitlines()) <= 13
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "environments.md", "exec"), namespace)
    printed = capsys.readouterr().out.split()
    assert printed[:3] == ["mean", "per-token", "time:"] and 0.0 < float(printed[3]) < 10.0
    assert 0.0 < float(printed[-1]) < 10.0  # the trained policy's mean per-token time (s)
