"""Train an SB3 / sb3-contrib agent on a petalgym environment (``petalgym train``).

Output directory layout (``output``)::

    model.zip             the final model (SB3 zip; petalgym metadata embedded as ``petalgym.json``)
    model.json            the same metadata, readable without unzipping (JSON sidecar)
    best_model.zip/.json  the model with the best mean reward on the validation seeds (if evaluated)
    checkpoints/          periodic checkpoints (``checkpoint_freq`` timesteps)
    evaluations.npz       SB3's evaluation log (timesteps, rewards, episode lengths)
    tb/<algo>_1/          TensorBoard events (SB3's scalars + petal/* and eval/* domain metrics)

The metadata (:func:`build_metadata`) records everything needed to reuse or reproduce the model: env id,
env kwargs (scenario name or path + overrides, control, num_candidates, obs_mode, max_servers, ...), the
scenario's size (servers, blocks, clients) and the observation / action shapes, algorithm, resolved
hyper-parameters, timesteps, seed, n_envs, simulator seed pools, the command line and library versions.

Seeds: ``seed`` seeds the algorithm (torch, action sampling) and the training envs (env i gets seed + i);
each training episode's simulator seed is drawn from :data:`~petalgym.agents.config.TRAIN_SIM_SEEDS`, the
evaluation callback's from :data:`~petalgym.agents.config.VALIDATION_SIM_SEED_BASE` + i: both disjoint from
the seeds the evaluation harness tests on (< :data:`~petalgym.agents.config.TEST_SEED_LIMIT`). With the
same seed, n_envs, threads and library versions, training is deterministic.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import importlib
import inspect
import json
import platform
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import gymnasium as gym

from petalgym.agents.config import (
    ALGORITHMS,
    MASKABLE,
    TRAIN_SIM_SEEDS,
    VALIDATION_SIM_SEED_BASE,
    AgentConfigError,
    algo_kwargs,
    jsonable,
    load_hyperparams,
)
from petalgym.agents.wrappers import PetalMonitor, ScenarioMixture, SimSeedPool
from petalgym.envs import ENV_IDS
from petalgym.envs.petal_alloc import PetalAllocEnv
from petalgym.errors import PetalgymError

#: Name of the metadata file inside a model zip (SB3 ignores files that are not ``data`` or ``*.pth``).
METADATA_IN_ZIP = "petalgym.json"
#: Metadata format tag.
METADATA_FORMAT = "petalgym-agent/1"
#: Libraries whose versions are recorded.
VERSIONED = ("petalgym", "stable-baselines3", "sb3-contrib", "torch", "gymnasium", "numpy", "scipy")


@dataclass
class TrainResult:
    """What :func:`train` produced: paths, the metadata and the validation history."""

    output_dir: Path
    model_path: Path
    metadata_path: Path
    metadata: dict[str, Any]
    best_model_path: Path | None = None
    exported: Path | None = None
    eval_history: list[dict[str, float]] = field(default_factory=list)
    #: Checkpoint files written (``checkpoints/``) and, if none, why (e.g. the run was shorter than
    #: ``checkpoint_freq``).
    checkpoints: list[Path] = field(default_factory=list)
    checkpoint_note: str = ""


# --------------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------------
def make_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    seed_range: tuple[int, int] | None = None,
    seeds: list[int] | None = None,
    monitor: bool = False,
    mixture: list[dict[str, Any]] | None = None,
    cycle: bool = False,
) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` (or a :class:`ScenarioMixture` of the ``mixture`` variants, taken
    in turn if ``cycle``) wrapped in :class:`SimSeedPool` (training: ``seed_range``; evaluation: ``seeds``)
    and :class:`PetalMonitor` (and SB3's ``Monitor`` if ``monitor``; make_vec_env adds its own).
    Module-level, so subprocess workers can pickle it."""
    import petalgym  # noqa: F401  (registers the environments in a fresh worker)

    if mixture:
        env: gym.Env = ScenarioMixture(env_id, copy.deepcopy(env_kwargs), mixture, cycle=cycle)
    else:
        env = gym.make(env_id, **copy.deepcopy(env_kwargs))
    env = PetalMonitor(SimSeedPool(env, seed_range=seed_range, seeds=seeds))
    if monitor:
        from stable_baselines3.common.monitor import Monitor

        env = Monitor(env)
    return env


def check_env_id(env_id: str) -> None:
    """PetalgymError unless ``env_id`` is a petalgym environment."""
    if env_id not in ENV_IDS:
        raise AgentConfigError(
            f"unknown environment {env_id!r} (petalgym environments: {', '.join(ENV_IDS)})"
        )


def resolve_env_kwargs(
    env_id: str,
    algo: str,
    params: dict[str, Any],
    scenario: str | None = None,
    scenario_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The env kwargs of a training run: ``params["env_kwargs"]`` + ``scenario`` + ``scenario_overrides``
    (merged over any in the config). Algorithms without masks get ``invalid_action="default"`` (an explicit
    ``"raise"`` is an error: the first masked action would stop training)."""
    kwargs = copy.deepcopy(params.get("env_kwargs") or {})
    if scenario is not None:
        kwargs["scenario"] = str(scenario)
    kwargs.setdefault("scenario", "clustered-9")
    if scenario_overrides:
        kwargs["scenario_overrides"] = {**(kwargs.get("scenario_overrides") or {}), **scenario_overrides}
    if algo not in MASKABLE:
        if kwargs.get("invalid_action", "default") != "default":
            raise AgentConfigError(
                f"{algo} does not use action masks: it needs env_kwargs.invalid_action='default' (masked "
                f"actions replaced by the built-in decider's and penalised), got {kwargs['invalid_action']!r}"
            )
        kwargs["invalid_action"] = "default"
    return kwargs


def build_vec_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    n_envs: int,
    seed: int,
    seed_range: tuple[int, int] = TRAIN_SIM_SEEDS,
    mixture: list[dict[str, Any]] | None = None,
) -> Any:
    """``n_envs`` training envs: a DummyVecEnv for 1, else a SubprocVecEnv; env i is seeded ``seed + i``
    (with ``mixture``: each a :class:`ScenarioMixture` of those scenario-override variants)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    factory = partial(make_env, env_id, env_kwargs, seed_range, None, False, mixture)
    return make_vec_env(
        factory, n_envs=n_envs, seed=seed, vec_env_cls=SubprocVecEnv if n_envs > 1 else DummyVecEnv
    )


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries in :data:`VERSIONED` (``"missing"`` if not installed)."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def scenario_record(
    env: PetalAllocEnv, scenario_arg: Any, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    """Name, source (built-in name or YAML path + sha256), overrides and size of the env's scenario."""
    sc = env.scenario
    rec: dict[str, Any] = {
        "name": sc.name,
        "source": str(scenario_arg),
        "overrides": jsonable(overrides or {}),
    }
    path = Path(str(scenario_arg))
    if path.suffix in (".yaml", ".yml") and path.is_file():
        rec["source"] = str(path.resolve())
        rec["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    rec.update(num_servers=sc.num_servers, num_blocks=sc.num_blocks, num_clients=sc.num_clients)
    return rec


def resolved_env(env: PetalAllocEnv) -> dict[str, Any]:
    """The env settings :class:`~petalgym.envs.adapter.PolicyDecider` needs, resolved (defaults included)."""
    decider, decider_kwargs = env.decider_spec
    return {
        "control": env.control,
        "decider": decider if isinstance(decider, str) else type(decider).__name__,
        "decider_kwargs": jsonable(decider_kwargs),
        "num_candidates": env.num_candidates,
        "obs_mode": env.obs_mode,
        "max_servers": env.max_servers,
        "level_multipliers": list(env.codec_level_multipliers),
        "invalid_action": env.invalid_action,
        "feature_set": env.feature_set,
        "candidate_set": env.candidate_set,
        "rebalance_period_s": env.agent_rebalance_period_s,
        "placement_starts": env.placement_starts,
    }


def build_metadata(
    env_id: str,
    env_kwargs: dict[str, Any],
    env: PetalAllocEnv,
    algo: str,
    params: dict[str, Any],
    timesteps: int,
    seed: int,
    n_envs: int,
    n_eval_episodes: int,
    command: str | None,
) -> dict[str, Any]:
    """The JSON metadata of a model (see the module docstring)."""
    return {
        "format": METADATA_FORMAT,
        "env_id": env_id,
        "control": env.control,
        "env_kwargs": jsonable(env_kwargs),
        "scenario": scenario_record(env, env_kwargs.get("scenario"), env_kwargs.get("scenario_overrides")),
        "max_servers": env.max_servers,
        "num_candidates": env.num_candidates,
        "obs_mode": env.obs_mode,
        "resolved_env": resolved_env(env),
        "observation_shape": list(env.observation_space.shape or ()),
        "action_n": int(env.action_space.n),
        "algo": algo,
        "policy": params.get("policy", "MlpPolicy"),
        "hyperparams": jsonable(params),
        "timesteps": int(timesteps),
        "seed": int(seed),
        "n_envs": int(n_envs),
        "sim_seed_pools": {
            "train": list(TRAIN_SIM_SEEDS),
            "validation": [VALIDATION_SIM_SEED_BASE, VALIDATION_SIM_SEED_BASE + n_eval_episodes],
        },
        "command": command,
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_model_metadata(model_path: Path, metadata: dict[str, Any]) -> Path:
    """Embed ``metadata`` in the model zip (as ``petalgym.json``) and write the sidecar ``<stem>.json``;
    returns the sidecar's path."""
    text = json.dumps(metadata, indent=1, sort_keys=False)
    with zipfile.ZipFile(model_path, "a") as zf:
        if METADATA_IN_ZIP not in zf.namelist():
            zf.writestr(METADATA_IN_ZIP, text)
    sidecar = model_path.with_suffix(".json")
    sidecar.write_text(text + "\n")
    return sidecar


def algo_class(algo: str) -> type:
    """The SB3 / sb3-contrib class of ``algo`` (imported here)."""
    module, name = ALGORITHMS[algo]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise PetalgymError(f"{algo} needs {module} (pip install 'petalgym[rl]'): {exc}") from None


# --------------------------------------------------------------------------------------------------
# Warm start: behaviour cloning of the built-in decider (and other experts)
# --------------------------------------------------------------------------------------------------
#: Defaults of the ``warm_start`` hyper-parameter.
WARM_START_DEFAULTS: dict[str, Any] = {
    "decisions": 20_000,
    "epochs": 10,
    "batch_size": 256,
    "learning_rate": 1e-3,
    "value": True,
    "experts": ["builtin"],
}


def expert_policy(env: gym.Env, expert: str) -> Any:
    """A policy ``(obs, info) -> action`` playing ``expert`` in ``env`` (a PetalAlloc env, wrapped or not).

    ``expert``: ``"builtin"`` (the env's default action), ``"candidate:<rule>"`` (at a ROUTE decision the
    candidate of that rule, e.g. ``"candidate:least-loaded"`` with ``candidate_set="mixed"``, when it is
    offered; else the default action), ``"cg-bp-x<f>"`` (CG-BP + WS-RR designed for
    round(f x the design |R|) sessions: its placements are the env's ``cg-bp-x<f>`` level) or a registered
    decider name, optionally with ``:key=value`` arguments (``"petals"``, ``"cg-bp-ws-rr:num_sessions=20"``).
    Answers the env cannot express (e.g. a chain that is not a candidate) fall back to the default action.
    """
    from petalgym.envs.adapter import DeciderPolicy
    from petalgym.envs.codec import InvalidActionError, design_sessions_for
    from petalgym.evaluation import DeciderSpec

    if expert == "builtin":
        return lambda obs, info: int(info["default_action"])
    if expert.startswith("candidate:"):
        rule = expert.removeprefix("candidate:")

        def take_rule(obs: Any, info: dict[str, Any]) -> int:
            u = env.unwrapped
            pending = u.pending
            if pending is not None and pending.candidates is not None and rule in pending.candidates.sources:
                return u.codec.route_offset + pending.candidates.sources.index(rule)
            return int(info["default_action"])

        return take_rule
    factor = None
    if expert.startswith("cg-bp-x"):
        try:
            factor = float(expert[len("cg-bp-x") :])
        except ValueError:
            raise AgentConfigError(f"warm_start expert {expert!r}: expected cg-bp-x<factor>") from None
    players: dict[int, DeciderPolicy] = {}  # per scenario (a ScenarioMixture switches scenarios)

    def act(obs: Any, info: dict[str, Any]) -> int:
        u = env.unwrapped
        player = players.get(id(u.scenario))
        if player is None:
            if factor is not None:
                sessions = max(1, round(factor * design_sessions_for(u.scenario)))
                spec = DeciderSpec("cg-bp-ws-rr", {"num_sessions": sessions})
            else:
                spec = DeciderSpec.parse(expert)
            player = players[id(u.scenario)] = DeciderPolicy(u, spec.build())
        try:
            return int(player())
        except InvalidActionError:
            return int(info["default_action"])

    return act


def collect_expert_play(
    env_id: str,
    env_kwargs: dict[str, Any],
    decisions: int,
    seed: int,
    gamma: float,
    experts: list[str] | tuple[str, ...] = ("builtin",),
    mixture: list[dict[str, Any]] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Play ``experts`` (:func:`expert_policy`; episode i is played by expert i mod len(experts)) on
    training-pool episodes until at least ``decisions`` decisions (whole episodes). Experts that cannot run
    on the scenario (e.g. CG-BP infeasible at their |R|) are dropped. Returns arrays ``obs`` (n, d),
    ``masks`` (n, A) bool, ``actions`` (n,), ``returns`` (n,): discounted (``gamma``) returns-to-go within
    each episode, and ``experts``: the experts used. ``on_progress(n)`` hears the decisions collected so far
    after every episode."""
    import numpy as np

    env = make_env(env_id, env_kwargs, seed_range=TRAIN_SIM_SEEDS, mixture=mixture)
    obs_l, mask_l, act_l, ret_l = [], [], [], []
    n, episode = 0, 0
    players = {e: expert_policy(env, e) for e in experts}
    order = list(players)
    failures: dict[str, int] = {}
    worked: set[str] = set()
    while n < decisions:
        if not order:
            raise AgentConfigError(f"warm_start: no expert of {list(experts)} can run on this scenario")
        name = order[episode % len(order)]
        obs, info = env.reset(seed=seed if episode == 0 else None)
        episode += 1
        rows: list[tuple[Any, Any, int]] = []
        rewards: list[float] = []
        done = False
        try:
            while not done:
                mask = env.unwrapped.action_masks()
                if not mask.any():  # an episode without agent decisions
                    break
                action = players[name](obs, info)
                rows.append((obs, mask, action))
                obs, reward, terminated, truncated, info = env.step(action)
                rewards.append(reward)
                done = terminated or truncated
        except PetalgymError:  # e.g. CG-BP infeasible for this expert's |R| here: skip the episode
            failures[name] = failures.get(name, 0) + 1
            if failures[name] >= max(1, len(mixture or ())) and name not in worked:  # never works
                order.remove(name)
            continue
        worked.add(name)
        g, back = 0.0, []
        for r in reversed(rewards):
            g = r + gamma * g
            back.append(g)
        for (o, m, a), ret in zip(rows, reversed(back), strict=True):
            obs_l.append(o)
            mask_l.append(m)
            act_l.append(a)
            ret_l.append(ret)
        n += len(rewards)
        if on_progress is not None:
            on_progress(n)
    env.close()
    return {
        "obs": np.asarray(obs_l, dtype=np.float32),
        "masks": np.asarray(mask_l, dtype=bool),
        "actions": np.asarray(act_l, dtype=np.int64),
        "returns": np.asarray(ret_l, dtype=np.float32),
        "episodes": episode,
        "experts": order,
    }


def warm_start(
    model: Any,
    data: dict[str, Any],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    value: bool,
    seed: int,
    on_epoch: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Behaviour cloning: fit the policy to the built-in decider's actions in ``data`` (masked
    cross-entropy) and, if ``value``, the value function to the returns-to-go (MSE, weighted by ``vf_coef``),
    with the model's own optimizer at ``learning_rate`` (restored afterwards). Only actor-critic models (PPO,
    MaskablePPO, A2C). Returns the last epoch's mean losses and ``accuracy``: the share of decisions where
    the cloned policy's most likely action is the expert's. ``on_epoch()`` is called after every epoch."""
    import numpy as np
    import torch

    policy = model.policy
    if not hasattr(policy, "get_distribution") or not hasattr(policy, "predict_values"):
        raise AgentConfigError(
            f"warm_start needs an actor-critic algorithm (ppo, maskable-ppo, a2c), got {type(model).__name__}"
        )
    masked = "action_masks" in inspect.signature(policy.get_distribution).parameters
    obs = torch.as_tensor(data["obs"])
    masks = data["masks"]
    actions = torch.as_tensor(data["actions"])
    returns = torch.as_tensor(data["returns"])
    vf_coef = float(getattr(model, "vf_coef", 0.5))
    max_norm = float(getattr(model, "max_grad_norm", 0.5))
    rng = np.random.default_rng(seed)
    n = len(actions)
    saved = [g["lr"] for g in policy.optimizer.param_groups]
    for g in policy.optimizer.param_groups:
        g["lr"] = float(learning_rate)
    policy.set_training_mode(True)
    stats: dict[str, Any] = {}
    for _ in range(max(0, int(epochs))):
        order = rng.permutation(n)
        pi_losses, v_losses = [], []
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            if masked:
                dist = policy.get_distribution(obs[idx], action_masks=masks[idx])
            else:
                dist = policy.get_distribution(obs[idx])
            loss_pi = -dist.log_prob(actions[idx]).mean()
            _optimizer_step(policy, loss_pi, max_norm)
            if value:  # a separate step: the value loss (seconds squared) would swamp the clipped gradient
                loss_v = torch.nn.functional.mse_loss(policy.predict_values(obs[idx]).flatten(), returns[idx])
                _optimizer_step(policy, vf_coef * loss_v, max_norm)
                v_losses.append(float(loss_v.detach()))
            pi_losses.append(float(loss_pi.detach()))
        stats = {
            "policy_loss": float(np.mean(pi_losses)),
            "value_loss": float(np.mean(v_losses)) if v_losses else 0.0,
        }
        if on_epoch is not None:
            on_epoch()
    policy.set_training_mode(False)
    for g, lr in zip(policy.optimizer.param_groups, saved, strict=True):
        g["lr"] = lr
    with torch.no_grad():
        dist = policy.get_distribution(obs, action_masks=masks) if masked else policy.get_distribution(obs)
        greedy = dist.distribution.probs.argmax(dim=1)
    stats["accuracy"] = float((greedy == actions).float().mean())
    stats["decisions"] = float(n)
    stats["episodes"] = float(data["episodes"])
    stats["experts"] = list(data.get("experts", ["builtin"]))
    return stats


def _optimizer_step(policy: Any, loss: Any, max_norm: float) -> None:
    import torch

    policy.optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
    policy.optimizer.step()


#: Policy names resolved by petalgym (others go to SB3 as given).
CUSTOM_POLICIES = {"FactoredMlpPolicy", "ScoredMlpPolicy"}


def resolve_policy(
    name: str, algo: str, env: PetalAllocEnv, policy_kwargs: dict[str, Any] | None
) -> tuple[Any, dict]:
    """(policy class or name, policy_kwargs): ``FactoredMlpPolicy`` becomes the factored class of
    :mod:`petalgym.agents.networks` with ``num_levels`` / ``num_blocks`` from the env."""
    kwargs = dict(policy_kwargs or {})
    if name not in CUSTOM_POLICIES:
        return name, kwargs
    if algo == "dqn":
        raise AgentConfigError(f"{name} is an actor-critic policy: use ppo, maskable-ppo or a2c")
    if env.codec.n_place == 0:
        raise AgentConfigError(f"{name} needs PLACE actions; control {env.control!r} has none")
    from petalgym.agents import networks

    kwargs.update(num_levels=env.codec.num_levels, num_blocks=env.codec.num_blocks)
    if name == "FactoredMlpPolicy":
        cls = networks.FactoredMaskablePolicy if algo in MASKABLE else networks.FactoredActorCriticPolicy
        return cls, kwargs
    if env.obs_mode != "flat":
        raise AgentConfigError(f"{name} needs obs_mode='flat', got {env.obs_mode!r}")
    features = env.codec.features
    kwargs["obs_layout"] = {
        p: [
            features.slices[p].start,
            *(features.shapes[p] if len(features.shapes[p]) == 2 else (1, features.shapes[p][0])),
        ]
        for p in features.parts
    }
    cls = networks.ScoredMaskablePolicy if algo in MASKABLE else networks.ScoredActorCriticPolicy
    return cls, kwargs


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def train(
    env_id: str,
    *,
    output: str | Path,
    scenario: str | None = None,
    algo: str = "maskable-ppo",
    timesteps: int | None = None,
    seed: int = 0,
    n_envs: int | None = None,
    config: str | Path | None = None,
    hyperparams: dict[str, Any] | None = None,
    scenario_overrides: dict[str, Any] | None = None,
    scenario_mixture: list[dict[str, Any]] | None = None,
    eval_freq: int | None = None,
    n_eval_episodes: int | None = None,
    checkpoint_freq: int | None = None,
    tensorboard: bool = True,
    progress: bool = True,
    export: str | Path | None = None,
    export_best: bool = False,
    threads: int = 1,
    verbose: int = 0,
    command: str | None = None,
) -> TrainResult:
    """Train ``algo`` on ``env_id`` and save the model with its metadata under ``output``.

    Args:
        env_id: ``PetalRouting-v0``, ``PetalPlacement-v0`` or ``PetalAlloc-v0``.
        output: output directory (created).
        scenario: scenario name or YAML path (default: the config's ``env_kwargs.scenario``, or
            clustered-9).
        algo: ``maskable-ppo``, ``ppo``, ``a2c`` or ``dqn`` (:data:`~petalgym.agents.config.ALGORITHMS`).
        timesteps: agent decisions to train for (default: the config's ``n_timesteps``).
        seed: seeds the algorithm and the training envs.
        n_envs: parallel training envs (default: the config's ``n_envs``); > 1 uses SubprocVecEnv.
        config: a YAML file merged over the shipped ``configs/agents/<algo>.yaml``.
        hyperparams: dotted-key overrides (``{"policy_kwargs.net_arch": [128, 128]}``), applied last.
        scenario_overrides: scenario overrides (``{"workload.arrival_rate": 0.5}``).
        scenario_mixture: train (and validate) on several variants of the scenario, one per episode: a list
            of override dicts merged over ``scenario_overrides`` (default: the config's ``scenario_mixture``),
            e.g. ``[{"workload.arrival_rate": 1.0}, {"workload.arrival_rate": 2.0}]``.
        eval_freq, n_eval_episodes, checkpoint_freq: in timesteps (summed over envs); 0 disables. Default:
            the config's.
        tensorboard: write TensorBoard events under ``output/tb``.
        progress: show a rich progress bar.
        export: also copy the model (with its ``.json`` sidecar) to this ``.zip`` path, or export its actor
            to this ``.npz`` path (:mod:`petalgym.agents.exported`: numpy, no pickle).
        export_best: export the best validation model instead of the final one (if evaluated).
        threads: torch threads (1 keeps training deterministic and leaves cores to the env workers).
        verbose: SB3 verbosity.
        command: the command line recorded in the metadata.
    """
    check_env_id(env_id)
    if algo not in ALGORITHMS:
        raise AgentConfigError(f"unknown algorithm {algo!r} (known: {', '.join(ALGORITHMS)})")
    params = load_hyperparams(algo, env_id, config, hyperparams)
    timesteps = int(timesteps if timesteps is not None else params.get("n_timesteps", 100_000))
    n_envs = int(n_envs if n_envs is not None else params.get("n_envs", 1))
    eval_freq = int(eval_freq if eval_freq is not None else params.get("eval_freq", 10_000))
    n_eval = int(n_eval_episodes if n_eval_episodes is not None else params.get("n_eval_episodes", 5))
    ckpt_freq = int(checkpoint_freq if checkpoint_freq is not None else params.get("checkpoint_freq", 0))
    for name, value, low in (
        ("timesteps", timesteps, 1),
        ("n_envs", n_envs, 1),
        ("n_eval_episodes", n_eval, 1),
    ):
        if value < low:
            raise AgentConfigError(f"{name} must be >= {low}, got {value}")
    params.update(n_timesteps=timesteps, n_envs=n_envs, eval_freq=eval_freq, n_eval_episodes=n_eval)
    params["checkpoint_freq"] = ckpt_freq
    env_kwargs = resolve_env_kwargs(env_id, algo, params, scenario, scenario_overrides)
    params["env_kwargs"] = env_kwargs
    mixture = scenario_mixture if scenario_mixture is not None else params.get("scenario_mixture")
    if mixture is not None:
        if not isinstance(mixture, list) or not all(isinstance(v, dict) for v in mixture) or not mixture:
            raise AgentConfigError(
                f"scenario_mixture must be a non-empty list of override dicts, got {mixture!r}"
            )
        params["scenario_mixture"] = mixture = [dict(v) for v in mixture]
    cls = algo_class(algo)
    kwargs = algo_kwargs(params)
    accepted = set(inspect.signature(cls.__init__).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise AgentConfigError(
            f"{algo}: unknown hyper-parameter {unknown[0]!r} (not a {cls.__name__} argument)"
        )

    import torch
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    from petalgym.agents.callbacks import PetalMetricsCallback, RichProgressCallback, make_eval_callback

    torch.set_num_threads(max(1, int(threads)))
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    # fails fast on bad kwargs (and on mixture variants with other spaces)
    try:
        probe = make_env(env_id, env_kwargs, seeds=[VALIDATION_SIM_SEED_BASE], mixture=mixture)
    except ValueError as exc:
        if isinstance(exc, PetalgymError):
            raise
        raise AgentConfigError(str(exc)) from None
    metadata = build_metadata(
        env_id, env_kwargs, probe.unwrapped, algo, params, timesteps, seed, n_envs, n_eval, command
    )
    policy, kwargs["policy_kwargs"] = resolve_policy(
        params.get("policy", "MlpPolicy"), algo, probe.unwrapped, kwargs.get("policy_kwargs")
    )
    probe.close()
    warm = params.get("warm_start")
    if warm is not None:
        if not isinstance(warm, dict) or set(warm) - set(WARM_START_DEFAULTS):
            raise AgentConfigError(
                f"warm_start must be a mapping with keys {', '.join(WARM_START_DEFAULTS)}, got {warm!r}"
            )
        warm = {**WARM_START_DEFAULTS, **warm}
        params["warm_start"] = warm
        metadata["hyperparams"]["warm_start"] = jsonable(warm)

    if mixture:
        metadata["scenario"]["mixture"] = jsonable(mixture)
    vec_env = build_vec_env(env_id, env_kwargs, n_envs, seed, mixture=mixture)
    callbacks: list[Any] = [PetalMetricsCallback()]
    eval_cb = None
    if eval_freq > 0:
        seeds = [VALIDATION_SIM_SEED_BASE + i for i in range(n_eval)]
        eval_env = DummyVecEnv([partial(make_env, env_id, env_kwargs, None, seeds, True, mixture, True)])
        eval_cb = make_eval_callback(
            eval_env,
            algo in MASKABLE,
            n_eval_episodes=n_eval,
            eval_freq=max(eval_freq // n_envs, 1),
            deterministic=True,
            best_model_save_path=str(out),
            log_path=str(out),
            verbose=verbose,
        )
        callbacks.append(eval_cb)
    if ckpt_freq > 0:
        callbacks.append(
            CheckpointCallback(max(ckpt_freq // n_envs, 1), str(out / "checkpoints"), name_prefix="model")
        )
    if progress:
        callbacks.append(RichProgressCallback(timesteps, f"{algo} on {env_id}"))
    model = cls(
        policy,
        vec_env,
        seed=seed,
        verbose=verbose,
        device="cpu",
        tensorboard_log=str(out / "tb") if tensorboard else None,
        **kwargs,
    )
    if warm is not None and int(warm["decisions"]) > 0:
        with _phases(progress) as bar:
            playing = bar.add_task("warm start: expert decisions", total=int(warm["decisions"]))
            data = collect_expert_play(
                env_id,
                env_kwargs,
                int(warm["decisions"]),
                seed + 7919,
                float(kwargs.get("gamma", 0.99)),
                list(warm["experts"]),
                mixture,
                on_progress=lambda n: bar.update(playing, completed=min(n, int(warm["decisions"]))),
            )
            cloning = bar.add_task("warm start: behaviour cloning epochs", total=int(warm["epochs"]))
            metadata["warm_start"] = warm_start(
                model,
                data,
                int(warm["epochs"]),
                int(warm["batch_size"]),
                float(warm["learning_rate"]),
                bool(warm["value"]),
                seed,
                on_epoch=lambda: bar.advance(cloning),
            )
    try:
        model.learn(total_timesteps=timesteps, callback=CallbackList(callbacks), tb_log_name=algo)
    finally:
        vec_env.close()
    model_path = out / "model.zip"
    model.save(model_path)
    metadata_path = write_model_metadata(model_path, metadata)
    best = out / "best_model.zip"
    best_path = None
    if best.is_file():
        write_model_metadata(best, {**metadata, "selected": "best validation mean reward"})
        best_path = best
    history = list(eval_cb.petal_history) if eval_cb is not None else []
    checkpoints = sorted((out / "checkpoints").glob("*.zip")) if ckpt_freq > 0 else []
    if ckpt_freq <= 0:
        note = "none: checkpoint_freq is 0"
    elif not checkpoints:
        note = f"none: the run's {timesteps} timesteps are fewer than checkpoint_freq {ckpt_freq}"
    else:
        note = ""
    exported = None
    if export is not None:
        source = best_path if (export_best and best_path is not None) else model_path
        exported = Path(export)
        exported.parent.mkdir(parents=True, exist_ok=True)
        if exported.suffix == ".npz":  # the actor's weights as plain arrays (runs without torch)
            from petalgym.agents.exported import export_file

            export_file(source, exported)
        else:
            shutil.copyfile(source, exported)
            shutil.copyfile(source.with_suffix(".json"), exported.with_suffix(".json"))
    return TrainResult(
        out, model_path, metadata_path, metadata, best_path, exported, history, checkpoints, note
    )


def _phases(progress: bool) -> Any:
    """A rich progress display for the phases before training (it shows nothing unless ``progress``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, disable=not progress)


__all__ = [
    "METADATA_FORMAT",
    "METADATA_IN_ZIP",
    "TrainResult",
    "build_metadata",
    "build_vec_env",
    "check_env_id",
    "library_versions",
    "make_env",
    "resolve_env_kwargs",
    "train",
    "write_model_metadata",
]
