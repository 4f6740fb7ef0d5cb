"""The Ray integration (petalgym.distributed): the evaluation backend and the RLlib registry and example.

Without Ray installed only the first tests run (the error names the extra; env creators work without
Ray); the backend tests need Ray core (``pip install ray``) and start one local Ray for the module; the
RLlib test needs ``ray[rllib]`` (``pip install "petalgym[ray]"``) and runs one tiny PPO iteration.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import petalgym
from petalgym.distributed import (
    TIMING_KEYS,
    RayNotInstalledError,
    register_rllib_envs,
    rllib_env_creator,
    rows_equal,
    run_grid_ray,
)
from petalgym.envs import ENV_IDS
from petalgym.errors import PetalgymError, ScenarioError
from petalgym.evaluation import DeciderSpec, RunSpec, evaluate, run_grid
from petalgym.scenario import load_scenario

pytestmark = pytest.mark.slow  # (Ray starts a session)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rllib_ppo.py"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _imports(module: str) -> bool:
    """True if ``module`` imports (Ray's wheel ships ray.rllib without RLlib's dependencies)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


needs_ray = pytest.mark.skipif(not _has("ray"), reason="Ray is not installed (pip install ray)")
needs_rllib = pytest.mark.skipif(
    not _has("ray") or not _imports("ray.rllib.algorithms.ppo"),
    reason='RLlib is not installed (pip install "petalgym[ray]")',
)


# --------------------------------------------------------------------------------------------------
# Without Ray
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def no_ray(monkeypatch):
    """Make ``import ray`` fail as if Ray were not installed."""
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_ray_names_the_extra(no_ray):
    specs = [RunSpec("clustered-9", DeciderSpec("random"), 0)]
    with pytest.raises(RayNotInstalledError, match=r"install petalgym\[ray\]") as info:
        run_grid(specs, backend="ray", progress=False)
    assert isinstance(info.value, PetalgymError) and isinstance(info.value, ImportError)
    with pytest.raises(RayNotInstalledError, match=r"petalgym\[ray\]"):
        register_rllib_envs()


def test_env_creators_build_the_registered_envs():
    for env_id in ENV_IDS:
        env = rllib_env_creator(env_id)(
            {"obs_mode": "rllib", "scenario_overrides": {"workload.num_requests": 5}}
        )
        assert env.spec is not None and env.spec.id == env_id
        assert isinstance(env.observation_space, gym.spaces.Dict)
        assert set(env.observation_space.spaces) == {"observations", "action_mask"}
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        assert np.array_equal(obs["action_mask"], info["action_mask"].astype(np.float32))
        env.close()
    assert rllib_env_creator("PetalRouting-v0")(None).unwrapped.control == "routing"
    with pytest.raises(PetalgymError, match="unknown petalgym env 'CartPole-v1'"):
        rllib_env_creator("CartPole-v1")


def test_rows_equal_ignores_only_timings():
    row = {"decider": "x", "per_token_s": 1.0, "ttft_s": math.nan, "wall_s": 0.1, "decide_s": 0.01}
    assert rows_equal(row, {**row, "wall_s": 9.0, "decide_s": 3.0})
    assert rows_equal(row, {**row, "ttft_s": float("nan")})
    assert not rows_equal(row, {**row, "per_token_s": 1.0 + 1e-12})
    assert not rows_equal(row, {k: v for k, v in row.items() if k != "ttft_s"})
    assert {"wall_s", "decide_s"} == TIMING_KEYS


# --------------------------------------------------------------------------------------------------
# The Ray backend
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the module; run_grid_ray reuses it instead of starting its own."""
    if not _has("ray"):
        pytest.skip("Ray is not installed")
    from petalgym.distributed import ensure_ray

    ray, started = ensure_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


def small_grid() -> list[RunSpec]:
    """12 runs: 3 deciders x 2 seeds on clustered-9 (a Scenario object, shared), 2 with overrides, 2 by
    name, and 4 with churn (a second Scenario object), in a deliberately mixed order."""
    sc = load_scenario("clustered-9", {"workload.num_requests": 40})
    churn = load_scenario("bellcanada-26-churn", {"workload.horizon_s": 400})
    specs = [
        RunSpec(sc, DeciderSpec(d), seed) for d in ("petals", "cg-bp-ws-rr", "random") for seed in (0, 1)
    ]
    specs += [RunSpec(sc, DeciderSpec("cg-bprr"), 2, {"workload.arrival_rate": 0.5}, "fast") for _ in (0,)]
    specs += [RunSpec(sc, DeciderSpec("round-robin"), 3, {"workload.l_out": 64}, "short")]
    specs += [
        RunSpec("clustered-9", DeciderSpec("shortest"), s, {"workload.num_requests": 20}) for s in (4, 5)
    ]
    specs += [RunSpec(churn, DeciderSpec(d), 6) for d in ("petals", "cg-bp-ws-rr")]
    specs += [RunSpec(churn, DeciderSpec("random"), s) for s in (7, 8)]
    return specs[::-1]


@pytest.mark.slow
@needs_ray
def test_ray_rows_equal_local_rows_in_spec_order(local_ray, monkeypatch):
    specs = small_grid()
    local = run_grid(specs, progress=False)
    puts: list[Any] = []
    real_put = local_ray.put
    monkeypatch.setattr(local_ray, "put", lambda obj, **kw: puts.append(obj) or real_put(obj, **kw))
    seen: list[dict[str, Any]] = []
    rows = run_grid_ray(specs, on_row=seen.append)
    assert len(rows) == len(local) == len(specs)
    for spec, a, b in zip(specs, local, rows, strict=True):
        assert (b["decider"], b["seed"]) == (spec.decider.display, spec.seed)  # spec order
        assert rows_equal(a, b), {k: (a[k], b.get(k)) for k in a if k not in TIMING_KEYS and a[k] != b.get(k)}
        assert b.keys() >= TIMING_KEYS and b["wall_s"] > 0
    # progress: one callback per finished task, with the rows themselves
    assert len(seen) == len(specs) and sorted(map(id, seen)) == sorted(map(id, rows))
    # each distinct Scenario object went to the object store once; names were passed by value
    assert len(puts) == 2 and {p.name for p in puts} == {"clustered-9", "bellcanada-26-churn"}
    assert any(r["failed"] > 0 or r["recoveries"] > 0 for r in rows)  # the churn runs did churn


@needs_ray
def test_ray_backend_through_evaluate_and_reuses_the_session(local_ray):
    ev_local = evaluate(
        "clustered-9",
        ["petals", "cg-bp-ws-rr"],
        range(2),
        reference="petals",
        progress=False,
        settings={"a": {"workload.num_requests": 15}, "b": {"workload.num_requests": 25}},
    )
    ev_ray = evaluate("clustered-9", ["petals", "cg-bp-ws-rr"], range(2), reference="petals", progress=False,
                      settings={"a": {"workload.num_requests": 15}, "b": {"workload.num_requests": 25}},
                      backend="ray")  # fmt: skip
    assert local_ray.is_initialized()  # the module's session was reused, not shut down
    assert all(rows_equal(a, b) for a, b in zip(ev_local.rows, ev_ray.rows, strict=True))
    agg_l, agg_r = ev_local.aggregate(), ev_ray.aggregate()
    for a, b in zip(agg_l, agg_r, strict=True):
        assert rows_equal(a, b, ignore=frozenset({"decide_s", "decide_s_ci95"}))


@needs_ray
def test_ray_backend_raises_the_runs_error(local_ray):
    specs = [RunSpec("clustered-9", DeciderSpec("random"), 0, {"workload.num_requests": 5})] * 3
    specs.append(RunSpec("clustered-9", DeciderSpec("random"), 1, {"workload.arrival_rate": -1}))
    with pytest.raises(ScenarioError, match=r"workload\.arrival_rate: must be > 0, got -1"):
        run_grid(specs, backend="ray", progress=False)
    # and the session still works afterwards
    assert len(run_grid_ray(specs[:2])) == 2


# --------------------------------------------------------------------------------------------------
# RLlib
# --------------------------------------------------------------------------------------------------
def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("petalgym_rllib_ppo_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_rllib
def test_rllib_masked_module_never_picks_a_masked_action():
    import torch
    from ray.rllib.core.columns import Columns

    example = load_example()
    env = gym.make("PetalRouting-v0", obs_mode="rllib")
    cls = example.masked_module_class()
    module = cls(observation_space=env.observation_space, action_space=env.action_space,
                 model_config={"fcnet_hiddens": [16], "head_fcnet_hiddens": [16]})  # fmt: skip
    rng = np.random.default_rng(0)
    n = env.action_space.n
    obs = torch.as_tensor(rng.uniform(0, 1, (256, env.observation_space["observations"].shape[0])),
                          dtype=torch.float32)  # fmt: skip
    mask = torch.as_tensor(rng.random((256, n)) < 0.4, dtype=torch.float32)
    mask[:, 0] = 1.0  # at least one valid action per row
    batch = {Columns.OBS: {"observations": obs, "action_mask": mask}}
    for forward in (module.forward_exploration, module.forward_inference, module.forward_train):
        logits = forward(dict(batch))[Columns.ACTION_DIST_INPUTS]
        probs = torch.softmax(logits, dim=-1)
        assert torch.all(probs[mask == 0] == 0.0) and torch.allclose(probs.sum(-1), torch.ones(256))
    assert batch[Columns.OBS]["action_mask"] is mask  # the input batch was not modified
    values = module.compute_values(dict(batch))
    assert values.shape == (256,) and torch.all(torch.isfinite(values))


@pytest.mark.slow
@needs_rllib
@pytest.mark.parametrize("env_id", ["PetalRouting-v0", "PetalAlloc-v0"])
def test_rllib_ppo_trains_one_iteration_with_env_runners(local_ray, env_id):
    """One tiny PPO iteration in a remote env runner. The envs keep invalid_action="raise", so sampling a
    masked action would crash the runner: PetalAlloc-v0 (joint control) masks most actions at every step."""
    example = load_example()
    assert set(register_rllib_envs()) == set(ENV_IDS)
    config = example.build_config(
        env_id=env_id, num_requests=12, env_runners=1, batch=64, minibatch=32, epochs=1, seed=0
    )
    algo = config.build_algo()
    try:
        result = algo.train()
        summary = example.iteration_summary(result)
        module = algo.get_module()
    finally:
        algo.stop()
    assert summary["steps"] >= 64
    assert summary["episodes"] >= 1 and math.isfinite(summary["return"]) and summary["return"] < 0
    # the trained module drives the simulator through PolicyDecider on a held-out seed
    env = gym.make(env_id, scenario="clustered-9", obs_mode="flat")
    calls = []
    policy = example.greedy_policy(module)

    def counted(obs: np.ndarray, mask: np.ndarray) -> int:
        a = policy(obs, mask)
        assert mask[a], "the policy chose a masked action"
        calls.append(a)
        return a

    decider = petalgym.envs.PolicyDecider.from_env(counted, env, name="rllib")
    sc = load_scenario("clustered-9", {"workload.num_requests": 10})
    summary = petalgym.simulate(sc, decider, seed=5).summary()
    assert len(calls) >= (10 if env_id == "PetalRouting-v0" else 9)  # a decision per request / server
    assert summary["completed"] + summary["failed"] == 10
