"""Learned agents: training (CLI and API), TensorBoard domain scalars, metadata, AgentDecider, the shipped
models and the errors for bad model files. Kept short: training runs are a few hundred decisions."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

pytest.importorskip("sb3_contrib")
pytest.importorskip("tensorboard")

import petalgym
from petalgym.agents import AGENTS, TASK_AGENTS
from petalgym.agents.config import (
    TEST_SEED_LIMIT,
    TRAIN_SIM_SEEDS,
    VALIDATION_SIM_SEED_BASE,
    AgentConfigError,
    LinearSchedule,
    algo_kwargs,
    load_hyperparams,
)
from petalgym.agents.exported import read_export_metadata
from petalgym.agents.policy import PRETRAINED, AgentDecider, AgentLoadError, pretrained_path
from petalgym.agents.train import train
from petalgym.agents.wrappers import PetalMonitor, SimSeedPool
from petalgym.bench import grid_points
from petalgym.cli import DEFAULT_DECIDERS, main
from petalgym.evaluation import DeciderSpec, evaluate

pytestmark = pytest.mark.slow  # (trains models)

SMALL = {"workload.num_requests": 12}  # short episodes: ~12 ROUTE decisions on clustered-9
FAST_PPO = {"n_steps": 128, "batch_size": 64, "n_epochs": 2, "warm_start": None}


@pytest.fixture(scope="module")
def routing_run(tmp_path_factory):
    """A short MaskablePPO run on PetalRouting-v0 (clustered-9, 12-request episodes), validated and
    checkpointed every 256 decisions."""
    out = tmp_path_factory.mktemp("routing")
    return train(
        "PetalRouting-v0",
        output=out,
        scenario="clustered-9",
        timesteps=512,
        seed=3,
        hyperparams={**FAST_PPO, "env_kwargs.max_servers": 9, "warm_start": {"decisions": 120, "epochs": 2}},
        scenario_overrides=SMALL,
        eval_freq=256,
        n_eval_episodes=2,
        checkpoint_freq=256,
        progress=False,
    )


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = list((run_dir / "tb").glob("*/events.out.tfevents.*"))
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# --------------------------------------------------------------------------------------------------
# training run: files, TensorBoard, metadata
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_writes_model_metadata_checkpoints_and_validation(routing_run):
    out = routing_run.output_dir
    assert routing_run.model_path == out / "model.zip" and routing_run.model_path.is_file()
    assert (out / "best_model.zip").is_file() and (out / "evaluations.npz").is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("*.zip")) == [
        "model_256_steps.zip",
        "model_512_steps.zip",
    ]
    meta = json.loads(routing_run.metadata_path.read_text())
    with zipfile.ZipFile(routing_run.model_path) as zf:
        assert json.loads(zf.read("petalgym.json")) == meta  # embedded == sidecar
    env = gym.make("PetalRouting-v0", scenario="clustered-9", max_servers=9, scenario_overrides=SMALL)
    assert meta["env_id"] == "PetalRouting-v0" and meta["control"] == "routing"
    assert meta["observation_shape"] == list(env.observation_space.shape)
    assert meta["action_n"] == env.action_space.n == 4
    assert meta["scenario"] == {
        "name": "clustered-9",
        "source": "clustered-9",
        "overrides": SMALL,
        "num_servers": 9,
        "num_blocks": 70,
        "num_clients": 1,
    }
    assert meta["env_kwargs"]["scenario_overrides"] == SMALL and meta["env_kwargs"]["max_servers"] == 9
    assert meta["algo"] == "maskable-ppo" and meta["timesteps"] == 512 and meta["seed"] == 3
    assert meta["hyperparams"]["n_steps"] == 128 and meta["n_envs"] == 1
    # behaviour cloning of the built-in decider ran on whole episodes before RL
    assert meta["hyperparams"]["warm_start"]["decisions"] == 120
    assert meta["warm_start"]["decisions"] >= 120 and meta["warm_start"]["episodes"] >= 10
    assert 0.0 <= meta["warm_start"]["accuracy"] <= 1.0 and meta["warm_start"]["experts"] == ["builtin"]
    for lib in ("stable-baselines3", "sb3-contrib", "torch", "gymnasium", "petalgym", "python"):
        assert meta["versions"][lib] not in ("", "missing")
    # the validation history: per-token times of completed requests on held-out seeds
    assert [h["timesteps"] for h in routing_run.eval_history] == [256.0, 512.0]
    assert all(0.0 < h["per_token_s"] < 100.0 for h in routing_run.eval_history)


def test_tensorboard_has_domain_scalars(routing_run):
    scalars = _scalars(routing_run.output_dir)
    for tag in (
        "petal/per_token_s",
        "petal/wait_s",
        "petal/failed_share",
        "petal/default_action_share",
        "petal/episode_per_token_s",
        "eval/per_token_s",
        "eval/default_action_share",
        "eval/mean_reward",
        "train/loss",
    ):
        assert tag in scalars, f"missing TensorBoard scalar {tag}"
    assert all(0.0 < v < 100.0 for v in scalars["petal/per_token_s"])
    assert all(0.0 <= v <= 1.0 for v in scalars["petal/default_action_share"])
    assert len(scalars["eval/per_token_s"]) == 2


# --------------------------------------------------------------------------------------------------
# the trained model as a decider
# --------------------------------------------------------------------------------------------------
def test_reloaded_model_acts_within_the_mask(routing_run):
    from sb3_contrib import MaskablePPO

    model = MaskablePPO.load(routing_run.model_path, device="cpu")
    env = gym.make(
        "PetalRouting-v0",
        scenario="clustered-9",
        max_servers=9,
        scenario_overrides=SMALL,
        invalid_action="raise",
    )
    obs, _ = env.reset(seed=7)
    done, steps = False, 0
    while not done:
        mask = env.unwrapped.action_masks()
        action, _ = model.predict(obs, deterministic=False, action_masks=mask)
        assert mask[int(action)]
        obs, _, terminated, truncated, _ = env.step(int(action))  # strict: a masked action would raise
        done, steps = terminated or truncated, steps + 1
    assert steps >= 12


def test_agent_decider_through_the_harness_is_deterministic_per_seed(routing_run):
    spec = DeciderSpec("agent", {"path": str(routing_run.model_path)}, label="trained")
    runs = [
        evaluate("clustered-9", [spec, "cg-bp-ws-rr"], [0, 1], settings={"small": SMALL}, progress=False)
        for _ in range(2)
    ]
    rows = [[(r["decider"], r["seed"], r["per_token_s"], r["wait_s"]) for r in ev.rows] for ev in runs]
    assert rows[0] == rows[1]
    trained = [r for r in runs[0].rows if r["decider"] == "trained"]
    assert len(trained) == 2 and all(
        r["completed"] == 12 and math.isfinite(r["per_token_s"]) for r in trained
    )


def test_agent_decider_matches_the_env_episode(routing_run):
    """Same model, same simulator seed: the env episode and the AgentDecider simulation agree."""
    from sb3_contrib import MaskablePPO

    model = MaskablePPO.load(routing_run.model_path, device="cpu")
    env = gym.make("PetalRouting-v0", scenario="clustered-9", max_servers=9, scenario_overrides=SMALL)
    obs, info = env.reset(options={"sim_seed": 5})
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True, action_masks=env.unwrapped.action_masks())
        obs, reward, terminated, truncated, info = env.step(int(action))
        total, done = total + reward, terminated or truncated
    decider = AgentDecider(routing_run.model_path)
    result = petalgym.simulate(env.unwrapped.scenario, decider, seed=5).summary()
    assert -total / info["requests_finished"] == pytest.approx(result["per_token_s"], rel=1e-9)


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
def test_missing_corrupt_and_foreign_files_raise_clear_errors(tmp_path, routing_run):
    with pytest.raises(AgentLoadError, match="does not exist"):
        petalgym.make_decider("agent", path=str(tmp_path / "nope.zip"))
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(AgentLoadError, match="not a valid model zip"):
        AgentDecider(garbage)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(AgentLoadError, match="not a stable-baselines3 model"):
        AgentDecider(other)
    # an SB3 zip without petalgym metadata
    bare = tmp_path / "bare.zip"
    with zipfile.ZipFile(routing_run.model_path) as src, zipfile.ZipFile(bare, "w") as dst:
        for item in src.namelist():
            if item != "petalgym.json":
                dst.writestr(item, src.read(item))
    with pytest.raises(AgentLoadError, match="no petalgym metadata"):
        AgentDecider(bare)
    # a truncated model payload
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(routing_run.model_path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.namelist():
            dst.writestr(item, src.read(item)[:40] if item.endswith(".pth") else src.read(item))
    with pytest.raises(AgentLoadError, match="cannot load"):
        AgentDecider(broken)
    assert issubclass(AgentLoadError, petalgym.PetalgymError)


def test_wrong_env_id_and_wrong_scenario_size_name_the_mismatch(routing_run):
    with pytest.raises(AgentLoadError, match="trained on PetalRouting-v0, not PetalPlacement-v0"):
        AgentDecider(routing_run.model_path, env_id="PetalPlacement-v0")
    decider = AgentDecider(routing_run.model_path)
    shape = tuple(routing_run.metadata["observation_shape"])
    # 26 servers > max_servers = 9
    with pytest.raises(AgentLoadError, match=r"max_servers=9.*bellcanada-26 has 26 servers"):
        petalgym.simulate(petalgym.load_scenario("bellcanada-26"), decider, seed=0)
    # another number of blocks: another observation shape
    fewer = petalgym.load_scenario(
        "clustered-9", {"model": {"base": "bloom-176b", "num_blocks": 40}, **SMALL}
    )
    with pytest.raises(AgentLoadError, match=rf"observation shape \({shape[0]},\).*gives \(\d+,\)"):
        petalgym.simulate(fewer, decider, seed=0)
    # the CLI prints the error and exits with status 2
    assert (
        main(
            [
                "evaluate",
                "--deciders",
                "petals",
                "--agent",
                "/no/such/model.zip",
                "--seeds",
                "1",
                "--no-progress",
            ]
        )
        == 2
    )


# --------------------------------------------------------------------------------------------------
# shipped models
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(set(PRETRAINED) - set(TASK_AGENTS.values())))
def test_pretrained_models_load_and_act_within_the_mask(name):
    path = pretrained_path(name)
    assert path.suffix == ".npz" and path.stat().st_size < 5_000_000  # numpy exports: no torch, no pickle
    meta = json.loads(path.with_suffix(".json").read_text())
    assert read_export_metadata(path) == meta
    assert meta["scenario"]["name"] == "clustered-9" and meta["command"].startswith("petalgym train")
    # (trained and exported before the package layout moved agents/ into petalgym/)
    assert f"--export agents/pretrained/{path.stem}.zip" in meta["command"] and meta["max_servers"] == 32
    zipped = f"agents/pretrained/{path.stem}.zip"
    assert meta["export_command"] == f"petalgym export {zipped} agents/pretrained/{path.name}"
    assert name in AGENTS and (name in DEFAULT_DECIDERS) == (name in ("ppo-routing", "ppo-placement"))
    decider = petalgym.make_decider(name)
    assert decider.inner.invalid_action == "raise"  # a masked action would raise, not be replaced
    for scenario in ("clustered-9", "bellcanada-26"):  # max_servers=32: runs on every built-in scenario
        sc = petalgym.load_scenario(scenario, {"workload.num_requests": 15})
        summary = petalgym.simulate(sc, decider, seed=0).summary()
        assert summary["completed"] + summary["failed"] == 15
        if scenario == "clustered-9" and name in ("ppo-routing", "ppo-placement"):
            assert summary["completed"] == 15 and summary["per_token_s"] > 0


# --------------------------------------------------------------------------------------------------
# other algorithms, CLI, reproducibility
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_unmasked_algorithms_train_with_default_replacement(tmp_path, algo):
    hp = {"env_kwargs.max_servers": 9}
    hp.update(FAST_PPO if algo == "ppo" else {"learning_starts": 64, "buffer_size": 1000})
    result = train(
        "PetalRouting-v0",
        output=tmp_path,
        algo=algo,
        timesteps=256,
        hyperparams=hp,
        scenario_overrides=SMALL,
        eval_freq=0,
        checkpoint_freq=0,
        tensorboard=False,
        progress=False,
    )
    assert result.metadata["resolved_env"]["invalid_action"] == "default"
    decider = AgentDecider(result.model_path)
    summary = petalgym.simulate(petalgym.load_scenario("clustered-9", SMALL), decider, seed=0).summary()
    assert summary["completed"] == 12
    assert 0 <= decider.invalid_actions <= 12  # replaced masked actions are counted, not raised
    with pytest.raises(AgentConfigError, match="invalid_action='default'"):
        train(
            "PetalRouting-v0",
            output=tmp_path / "x",
            algo=algo,
            hyperparams={"env_kwargs.invalid_action": "raise"},
        )


@pytest.mark.slow
def test_cli_train_subprocess_envs_and_reproducibility(tmp_path, capsys):
    from sb3_contrib import MaskablePPO

    args = ["train", "--env", "PetalRouting-v0", "--scenario", "clustered-9", "--algo", "maskable-ppo"]
    args += ["--timesteps", "256", "--seed", "1", "--n-envs", "2", "--set", "workload.num_requests=12"]
    args += ["--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=1", "--eval-freq", "0"]
    args += ["--checkpoint-freq", "0", "--no-progress", "--no-tensorboard"]
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    assert main([*args, "--output", str(tmp_path / "b"), "--export", str(tmp_path / "exp" / "m.zip")]) == 0
    out = capsys.readouterr().out
    assert "metadata" in out and "exported" in out
    meta = json.loads((tmp_path / "a" / "model.json").read_text())
    assert meta["n_envs"] == 2 and meta["command"].startswith("petalgym train --env PetalRouting-v0")
    assert (tmp_path / "exp" / "m.zip").is_file() and (tmp_path / "exp" / "m.json").is_file()
    pa = MaskablePPO.load(tmp_path / "a" / "model.zip", device="cpu").policy.state_dict()
    pb = MaskablePPO.load(tmp_path / "b" / "model.zip", device="cpu").policy.state_dict()
    assert all(np.array_equal(pa[k].numpy(), pb[k].numpy()) for k in pa)  # same seed => same weights
    # bad input: exit status 2 with one error line
    assert main(["train", "--env", "CartPole-v1", "--output", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "unknown environment 'CartPole-v1'" in capsys.readouterr().err
    assert main(["train", "--hp", "n_stepz=3", "--output", str(tmp_path / "d"), "--no-progress"]) == 2
    assert "n_stepz" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# configuration and seed pools
# --------------------------------------------------------------------------------------------------
def test_hyperparameters_merge_default_env_file_and_overrides(tmp_path):
    base = load_hyperparams("maskable-ppo", "PetalRouting-v0")
    default = load_hyperparams("maskable-ppo", "NoSuchEnv-v0")
    assert base["n_steps"] != default["n_steps"]  # the env entry overrides `default`
    user = tmp_path / "hp.yaml"
    user.write_text("PetalRouting-v0:\n  n_epochs: 3\n  policy_kwargs: {net_arch: [32]}\n")
    merged = load_hyperparams("maskable-ppo", "PetalRouting-v0", user, {"learning_rate": "lin_1e-3"})
    assert merged["n_epochs"] == 3 and merged["policy_kwargs"]["net_arch"] == [32]
    assert merged["policy_kwargs"]["activation_fn"] == base["policy_kwargs"]["activation_fn"]  # deep merge
    kwargs = algo_kwargs(merged)
    assert isinstance(kwargs["learning_rate"], LinearSchedule) and kwargs["learning_rate"](0.5) == 5e-4
    assert "env_kwargs" not in kwargs and "n_timesteps" not in kwargs
    with pytest.raises(AgentConfigError, match="unknown algorithm"):
        load_hyperparams("sac", "PetalRouting-v0")
    with pytest.raises(AgentConfigError, match="does not exist"):
        load_hyperparams("ppo", "PetalRouting-v0", tmp_path / "missing.yaml")
    with pytest.raises(AgentConfigError, match="lin_"):
        algo_kwargs({"learning_rate": "cosine"})


def test_seed_pools_are_disjoint_and_monitor_counts_default_actions():
    assert TEST_SEED_LIMIT <= VALIDATION_SIM_SEED_BASE < TRAIN_SIM_SEEDS[0]
    env = PetalMonitor(
        SimSeedPool(gym.make("PetalRouting-v0", scenario_overrides=SMALL), seed_range=TRAIN_SIM_SEEDS)
    )
    seeds = []
    for ep in range(3):
        _, info = env.reset(seed=ep if ep == 0 else None)
        seeds.append(info["sim_seed"])
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(info["default_action"])
            assert info["petal"]["took_default"] and not info["petal"]["invalid"]
            done = terminated or truncated
        assert info["petal_episode"]["completed"] == 12
    assert all(TRAIN_SIM_SEEDS[0] <= s < TRAIN_SIM_SEEDS[1] for s in seeds) and len(set(seeds)) == 3
    evalenv = SimSeedPool(gym.make("PetalRouting-v0", scenario_overrides=SMALL), seeds=[100_000, 100_001])
    got = [evalenv.reset()[1]["sim_seed"] for _ in range(3)]
    assert got == [100_000, 100_001, 100_000]


def test_scenario_mixture_switches_variants_and_checks_spaces():
    from petalgym.agents.wrappers import ScenarioMixture

    rates = [0.1, 2.0]
    env = ScenarioMixture(
        "PetalPlacement-v0",
        {"scenario_overrides": {"workload.num_requests": 5}},
        [{"workload.arrival_rate": r} for r in rates],
        cycle=True,
    )
    seen = []
    for _ in range(4):
        _, info = env.reset()
        seen.append(env.unwrapped.scenario.workload.arrival_rate)
        assert info["variant"] == rates.index(seen[-1])
        assert env.action_masks().any() and env.unwrapped.scenario.workload.num_requests == 5
    assert seen == [0.1, 2.0, 0.1, 2.0]
    with pytest.raises(ValueError, match="spaces"):
        ScenarioMixture("PetalPlacement-v0", {}, [{}, {"model": {"base": "bloom-176b", "num_blocks": 40}}])


def test_expert_play_clones_several_deciders_within_the_mask():
    from petalgym.agents.train import collect_expert_play

    experts = ["builtin", "cg-bp-x0.5", "petals", "cg-bp-x1000"]  # the last is infeasible: dropped
    data = collect_expert_play(
        "PetalPlacement-v0", {"scenario_overrides": {"workload.num_requests": 3}}, 60, 0, 1.0, experts
    )
    assert data["experts"] == ["builtin", "cg-bp-x0.5", "petals"]
    n = len(data["actions"])
    assert n >= 60 and data["obs"].shape[0] == data["masks"].shape[0] == data["returns"].shape[0] == n
    assert data["masks"][np.arange(n), data["actions"]].all()
    assert (data["returns"] <= 0).all()  # minus per-token times
    # the experts disagree: CG-BP at half its design |R| places other windows than the built-in CG-BP
    assert len(set(data["actions"].tolist())) > 9


def test_an_agent_trained_with_the_task_options_loads_and_replays(tmp_path):
    """An agent trained on an env with feature set v1, mixed candidates, gap starts and REBALANCE control
    records them and is rebuilt with them (the observation and action shapes depend on them)."""
    options = {
        "env_kwargs.max_servers": 9,
        "env_kwargs.feature_set": "v1",
        "env_kwargs.candidate_set": "mixed",
        "env_kwargs.placement_starts": "gaps",
        "env_kwargs.rebalance_period_s": 60.0,
        "env_kwargs.reward": "holding",
    }
    run = train(
        "PetalAlloc-v0",
        output=tmp_path,
        scenario="clustered-9",
        timesteps=128,
        seed=1,
        hyperparams={**FAST_PPO, **options},
        scenario_overrides=SMALL,
        eval_freq=0,
        checkpoint_freq=0,
        tensorboard=False,
        progress=False,
    )
    meta = json.loads(run.model_path.with_suffix(".json").read_text())
    resolved = meta["resolved_env"]
    assert resolved["feature_set"] == "v1" and resolved["candidate_set"] == "mixed"
    assert resolved["placement_starts"] == "gaps" and resolved["rebalance_period_s"] == 60.0
    decider = AgentDecider(run.model_path)
    assert decider.inner.controls_rebalance and decider.inner.rebalance_period_s == 60.0
    result = petalgym.simulate(petalgym.load_scenario("clustered-9", SMALL), decider, seed=2)
    assert result.decisions["REBALANCE"] > 0
    assert result.summary()["arrived"] == 12


def test_a_candidate_rule_expert_takes_its_rules_chain():
    from petalgym.agents.train import collect_expert_play, make_env

    kwargs = {
        "scenario": "bellcanada-26-churn",
        "candidate_set": "mixed",
        "num_candidates": 6,
        "scenario_overrides": {"workload.horizon_s": 600},
    }
    data = collect_expert_play("PetalRouting-v0", kwargs, 100, 0, 1.0, ["candidate:least-loaded"])
    n = len(data["actions"])
    assert n >= 100 and data["masks"][np.arange(n), data["actions"]].all()
    assert (data["actions"] != 0).mean() > 0.3  # the least-loaded chain is often not the built-in one
    env = make_env("PetalRouting-v0", kwargs, seeds=[3])
    from petalgym.agents.train import expert_policy

    act = expert_policy(env, "candidate:least-loaded")
    obs, info = env.reset()
    for _ in range(30):
        a = act(obs, info)
        cands = env.unwrapped.pending.candidates
        if "least-loaded" in cands.sources:
            assert cands.sources[a - env.unwrapped.codec.route_offset] == "least-loaded"
        else:
            assert a == info["default_action"]
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break


def test_an_agent_over_a_central_queue_builtin_matches_the_env_episode(tmp_path):
    """With Parallax as the built-in decider (job counts released at route ends, its balance period set in
    reset) the AgentDecider simulation equals the env episode: before the fix the harness never released
    Parallax's counts and its requests waited for hours."""
    from sb3_contrib import MaskablePPO

    over = {"workload.num_requests": 40, "workload.arrival_rate": 1.0, "contention": "fifo"}
    kwargs = {"decider": "parallax", "candidate_set": "mixed", "feature_set": "v1", "max_servers": 26}
    run = train(
        "PetalRouting-v0",
        output=tmp_path,
        scenario="bellcanada-26",
        timesteps=128,
        seed=0,
        hyperparams={**FAST_PPO, **{f"env_kwargs.{k}": v for k, v in kwargs.items()}},
        scenario_overrides=over,
        eval_freq=0,
        checkpoint_freq=0,
        tensorboard=False,
        progress=False,
    )
    model = MaskablePPO.load(run.model_path, device="cpu")
    env = gym.make("PetalRouting-v0", scenario="bellcanada-26", scenario_overrides=over, **kwargs)
    obs, _ = env.reset(options={"sim_seed": 7})
    done = False
    while not done:
        action, _ = model.predict(obs, deterministic=True, action_masks=env.unwrapped.action_masks())
        obs, _, terminated, truncated, _ = env.step(int(action))
        done = terminated or truncated
    result = petalgym.simulate(env.unwrapped.scenario, AgentDecider(run.model_path), seed=7)
    in_env = [(r.id, r.start, r.finish, r.first_chain) for r in env.unwrapped.sim.requests]
    assert in_env == [(r.id, r.start, r.finish, r.first_chain) for r in result.requests]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MixedSpot", "LargeSwarm", "DiurnalLoad", "LoadFollowing"])
def test_task_agent_configs_build_their_tasks_env(name):
    """configs/agents/tasks/<Task>.yaml: the task's scenario, overrides and env options, with the task's
    reference baseline (replicas-first; CG-BP + WS-RR on LoadFollowing) built in at a point of the task's
    grid (the agents route only: placement and REBALANCE ticks stay the built-in decider's)."""
    from petalgym.agents.config import config_dir, load_hyperparams
    from petalgym.tasks import get_task

    path = config_dir() / "tasks" / f"{name}.yaml"
    params = load_hyperparams("maskable-ppo", "PetalAlloc-v0", path)
    kwargs = params["env_kwargs"]
    task = get_task(name)
    assert kwargs["scenario"] == task.scenario and kwargs["control"] == "routing"
    assert kwargs.get("scenario_overrides", {}) == dict(task.overrides)
    for key, value in task.env_options.items():
        if key != "rebalance_period_s":  # agent REBALANCE control needs placement control
            assert kwargs[key] == value, key
    reference = "cg-bp-ws-rr" if name == "LoadFollowing" else "replicas-first"
    assert kwargs["decider"] == reference and reference in task.baselines
    assert kwargs["decider_kwargs"] in grid_points(task.grid[reference])
    env = gym.make("PetalAlloc-v0", **kwargs)
    _, info = env.reset(seed=0)
    assert info["decision"] == "ROUTE" and info["action_mask"].any()
    if name == "DiurnalLoad":  # PPO from scratch (it learns to take the built-in decider's chain)
        assert params["warm_start"]["decisions"] == 0
    else:  # the warm start clones the built-in decider
        assert params["warm_start"]["experts"] == ["builtin"]


@pytest.mark.slow
@pytest.mark.parametrize("task_name", sorted(TASK_AGENTS))
def test_each_task_ships_a_small_agent_for_its_own_environment(task_name):
    from petalgym.tasks import get_task

    task = get_task(task_name)
    assert task.agent == TASK_AGENTS[task_name]
    path = pretrained_path(task.agent)
    assert path.suffix == ".npz" and path.stat().st_size < 5_000_000
    meta = read_export_metadata(path)
    assert json.loads(path.with_suffix(".json").read_text()) == meta
    # trained with the committed config (every value it sets is the one recorded)
    from petalgym.agents.config import config_dir

    config_file = config_dir() / "tasks" / f"{task_name}.yaml"
    config = yaml.safe_load(config_file.read_text())

    def within(small, big):
        if isinstance(small, dict):
            return isinstance(big, dict) and all(k in big and within(v, big[k]) for k, v in small.items())
        return small == big

    assert within(config, meta["hyperparams"])
    env = meta["resolved_env"]
    for key, value in task.env_options.items():  # the task's own env options (v1, holding, mixed, gaps)
        if key in env and key != "rebalance_period_s":
            assert env[key] == value, key
    scenario = task.load_scenario()
    assert meta["scenario"]["name"] == scenario.name
    decider = petalgym.make_decider(task.agent)
    decider.check_scenario(scenario)  # its observation and action shapes are the task's
    length = "horizon_s" if scenario.workload.horizon_s is not None else "num_requests"
    short = scenario.with_overrides({f"workload.{length}": 600 if length == "horizon_s" else 30})
    short = short.with_overrides({"workload.warmup_s": 0.0})
    summary = petalgym.simulate(short, decider, seed=100).summary()
    assert summary["completed"] > 0 and summary["failed"] == 0 and decider.invalid_actions == 0


def test_train_says_why_no_checkpoint_was_written_and_shows_the_warm_start(tmp_path, routing_run, capsys):
    assert len(routing_run.checkpoints) == 2 and routing_run.checkpoint_note == ""  # 512 steps, every 256
    argv = ["train", "--env", "PetalRouting-v0", "--timesteps", "128", "--set", "workload.num_requests=12"]
    argv += ["--hp", "n_steps=128", "--hp", "warm_start.decisions=40", "--hp", "warm_start.epochs=2"]
    argv += ["--checkpoint-freq", "1000", "--eval-freq", "0", "--no-tensorboard", "--output", str(tmp_path)]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())  # (table cells wrap)
    assert "warm start: expert decisions" in out and "warm start: behaviour cloning epochs" in out
    assert "none: the run's 128 timesteps are fewer than checkpoint_freq 1000" in out
    assert not list((tmp_path / "checkpoints").glob("*.zip"))
