"""Numpy exports of trained policies (petalgym.agents.exported): the same actions as torch on many
observations, the same episodes through AgentDecider, loading without torch or pickle, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("sb3_contrib")

import petalgym
from petalgym.agents.exported import ExportedPolicy, ExportError, export_file, read_export_metadata
from petalgym.agents.policy import AgentDecider, _load_model
from petalgym.agents.train import train
from petalgym.cli import main

pytestmark = pytest.mark.slow  # (trains models)

SMALL = {"workload.num_requests": 12}
FAST_PPO = {"n_steps": 128, "batch_size": 64, "n_epochs": 2, "warm_start": None}


@pytest.fixture(scope="module", params=["PetalRouting-v0", "PetalPlacement-v0"])
def run(request, tmp_path_factory):
    """A short run per network kind: MlpPolicy (routing) and FactoredMlpPolicy (placement), exported."""
    env_id = request.param
    out = tmp_path_factory.mktemp(env_id.split("-")[0])
    hp = {
        **FAST_PPO,
        "env_kwargs.max_servers": 9,
        "policy_kwargs": {"net_arch": [16, 16], "activation_fn": "relu"},
    }
    if env_id == "PetalPlacement-v0":
        hp["policy"] = "FactoredMlpPolicy"
    result = train(
        env_id,
        output=out,
        scenario="clustered-9",
        timesteps=256,
        seed=1,
        hyperparams=hp,
        scenario_overrides=SMALL,
        eval_freq=0,
        checkpoint_freq=0,
        tensorboard=False,
        progress=False,
        export=out / "exported.npz",
    )
    return env_id, result


def _observations(env_id: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(observation, mask) pairs from episodes played with random valid actions, plus random masks."""
    env = gym.make(env_id, scenario="clustered-9", max_servers=9, scenario_overrides=SMALL)
    rng = np.random.default_rng(0)
    pairs = []
    seed = 0
    while len(pairs) < n:
        obs, _ = env.reset(seed=seed)
        seed += 1
        done = False
        while not done and len(pairs) < n:
            mask = env.unwrapped.action_masks()
            pairs.append((obs, mask))
            other = rng.random(mask.shape) < 0.5
            other[rng.integers(len(other))] = True
            pairs.append((obs * rng.uniform(0.0, 2.0, obs.shape).astype(obs.dtype), other))
            obs, _, terminated, truncated, _ = env.step(int(rng.choice(np.flatnonzero(mask))))
            done = terminated or truncated
    return pairs


@pytest.mark.slow
def test_exported_actions_and_logits_equal_torchs(run):
    import torch

    env_id, result = run
    model = _load_model(
        str(result.model_path.resolve()), result.model_path.stat().st_mtime_ns, "maskable-ppo"
    )
    policy = ExportedPolicy.load(result.exported)
    assert policy.kind == ("factored" if env_id == "PetalPlacement-v0" else "mlp")
    pairs = _observations(env_id, 300)
    assert len(pairs) >= 300
    for obs, mask in pairs:
        torch_action, _ = model.predict(obs, deterministic=True, action_masks=mask)
        assert policy.action(obs, mask) == int(torch_action)
        with torch.no_grad():
            dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution
            want = dist.logits.numpy().reshape(-1)  # log-softmax of the unmasked logits
        got = policy.logits(obs).astype(np.float64)
        got = got - got.max() - np.log(np.exp(got - got.max()).sum())
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_an_export_plays_the_models_episodes_and_keeps_its_metadata(run):
    _, result = run
    meta = read_export_metadata(result.exported)
    assert json.loads(result.exported.with_suffix(".json").read_text()) == meta
    zipped = json.loads(result.model_path.with_suffix(".json").read_text())
    assert {k: v for k, v in meta.items() if k not in ("network", "export_command")} == zipped
    assert meta["network"]["activation"] == "relu" and meta["network"]["hidden"] == 2
    scenario = petalgym.load_scenario("clustered-9", {"workload.num_requests": 20})
    for seed in (0, 1):
        a = petalgym.simulate(scenario, AgentDecider(result.model_path), seed=seed).summary()
        b = petalgym.simulate(scenario, AgentDecider(result.exported), seed=seed).summary()
        clock = ("wall_s", "decide_s")  # wall-clock times differ (numpy is faster)
        assert {k: v for k, v in a.items() if k not in clock} == {
            k: v for k, v in b.items() if k not in clock
        }
        assert a["completed"] + a["failed"] == 20


@pytest.mark.slow
def test_loading_an_export_imports_no_torch_and_runs_an_episode(run):
    _, result = run
    code = (
        "import sys, petalgym\n"
        "from petalgym.agents.policy import AgentDecider\n"
        f"d = AgentDecider({str(result.exported)!r})\n"
        "sc = petalgym.load_scenario('clustered-9', {'workload.num_requests': 5})\n"
        "s = petalgym.simulate(sc, d, seed=0)\n"
        "assert s.summary()['completed'] + s.summary()['failed'] == 5\n"
        "print(sorted(m for m in ('torch', 'stable_baselines3', 'sb3_contrib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pickled_corrupt_and_foreign_files_are_refused(tmp_path, run):
    _, result = run
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __metadata__=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ExportError, match="not a numpy policy export"):
        ExportedPolicy.load(pickled)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(result.exported.read_bytes()[:100])
    with pytest.raises(ExportError, match=r"corrupt\.npz"):
        AgentDecider(corrupt)
    bare = tmp_path / "bare.npz"
    np.savez(bare, w=np.zeros(3))
    with pytest.raises(ExportError, match="__metadata__"):
        AgentDecider(bare)
    with pytest.raises(ExportError, match="already a numpy export"):
        export_file(result.exported, tmp_path / "again.npz")
    with pytest.raises(ExportError, match=r"\.npz"):
        export_file(result.model_path, tmp_path / "x.zip")


def test_cli_export_writes_once_and_rejects_bad_output(tmp_path, run, capsys):
    _, result = run
    out = tmp_path / "cli.npz"
    assert main(["export", str(result.model_path), str(out)]) == 0
    assert ExportedPolicy.load(out).observation_size == read_export_metadata(out)["observation_shape"][0]
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["export", str(result.model_path), str(out)]) == 2
    assert "error:" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export", str(result.model_path), str(tmp_path / "cli.zip")]) == 2
    assert not (tmp_path / "cli.zip").exists()
    assert main(["export", str(tmp_path / "missing.zip"), str(tmp_path / "m.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_models_without_an_actor_mlp_are_not_exported(tmp_path):
    result = train(
        "PetalRouting-v0",
        output=tmp_path / "dqn",
        scenario="clustered-9",
        algo="dqn",
        timesteps=64,
        seed=0,
        hyperparams={"env_kwargs.max_servers": 9, "learning_starts": 16, "warm_start": None},
        scenario_overrides=SMALL,
        eval_freq=0,
        checkpoint_freq=0,
        tensorboard=False,
        progress=False,
    )
    with pytest.raises(ExportError, match="only actor-critic"):
        export_file(result.model_path, tmp_path / "dqn.npz")
    assert not (tmp_path / "dqn.npz").exists()
