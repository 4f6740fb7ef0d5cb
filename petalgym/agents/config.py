"""Hyper-parameters of the learned agents, rl-zoo3 style, and the seed pools that keep evaluation honest.

Hyper-parameters live in ``configs/agents/<algo>.yaml`` (installed as ``petalgym.configs``), one file per
algorithm, keyed by environment id, with a ``default`` entry for ids that are not listed::

    default:                      # every env id not listed below
      policy: MlpPolicy
      n_timesteps: 100000
      n_envs: 1
      learning_rate: 3.0e-4       # or "lin_3e-4": linear decay to 0 (rl-zoo3's schedule strings)
      policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}
      env_kwargs: {max_servers: 32}
    PetalRouting-v0:              # merged over ``default`` (dicts merge key by key)
      n_steps: 1024

Resolution order (later wins): ``default`` -> the env id's entry -> a user ``--config`` file (same layout,
or a flat mapping applied to every env id) -> ``--hp key=value`` overrides (dotted keys reach into dicts:
``policy_kwargs.net_arch=[128,128]``, ``env_kwargs.reward_scale=0.1``).

Keys that are not constructor arguments of the algorithm (:data:`TRAINING_KEYS`): ``policy`` (an SB3
policy name, or ``FactoredMlpPolicy``: :mod:`petalgym.agents.networks`), ``n_timesteps``, ``n_envs``,
``env_kwargs``, ``eval_freq``, ``n_eval_episodes``, ``checkpoint_freq``, ``scenario_mixture`` (a list of
scenario-override dicts: one is drawn per episode, see :class:`petalgym.agents.wrappers.ScenarioMixture`)
and ``warm_start`` (behaviour
cloning before RL: ``{decisions: 20000, epochs: 10, batch_size: 256, learning_rate: 1e-3, value: true,
experts: [builtin]}``; experts are ``builtin``, ``cg-bp-x<f>`` or decider names, see
:func:`petalgym.agents.train.collect_expert_play` and :func:`petalgym.agents.train.warm_start`).

Seed pools (simulator seeds, :class:`~petalgym.envs.petal_alloc.PetalAllocEnv` ``sim_seed``): training
episodes draw from :data:`TRAIN_SIM_SEEDS`, the evaluation callback cycles through
:data:`VALIDATION_SIM_SEED_BASE` + 0, 1, ..., and the evaluation harness (``petalgym evaluate``,
:mod:`petalgym.agents.study`) uses seeds below :data:`VALIDATION_SIM_SEED_BASE`: the three sets are disjoint,
so a model is always tested on episodes it never trained or was selected on.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from petalgym.errors import PetalgymError

#: Algorithm names accepted by ``petalgym train --algo`` -> (module, class). Only MaskablePPO uses masks.
ALGORITHMS: dict[str, tuple[str, str]] = {
    "maskable-ppo": ("sb3_contrib", "MaskablePPO"),
    "ppo": ("stable_baselines3", "PPO"),
    "a2c": ("stable_baselines3", "A2C"),
    "dqn": ("stable_baselines3", "DQN"),
}

#: Algorithms that take the action mask (the others act on the whole Discrete space, see ``invalid_action``).
MASKABLE = frozenset({"maskable-ppo"})

#: Config keys consumed by the training loop, not passed to the algorithm's constructor.
TRAINING_KEYS = frozenset(
    {
        "policy",
        "n_timesteps",
        "n_envs",
        "env_kwargs",
        "eval_freq",
        "n_eval_episodes",
        "checkpoint_freq",
        "warm_start",
        "scenario_mixture",
    }
)

#: Simulator seeds of training episodes: [low, high).
TRAIN_SIM_SEEDS: tuple[int, int] = (1_000_000, 2**31 - 1)
#: The evaluation callback uses simulator seeds VALIDATION_SIM_SEED_BASE + i, i < n_eval_episodes.
VALIDATION_SIM_SEED_BASE = 100_000
#: Seeds a model is tested on (evaluation harness) must be below this (disjoint from the two pools above).
TEST_SEED_LIMIT = VALIDATION_SIM_SEED_BASE

#: Activation functions accepted in ``policy_kwargs.activation_fn`` (names -> torch.nn classes).
ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu", "gelu")


_ENV_ID = re.compile(r"^[\w.:/-]+-v\d+$")  # Gymnasium ids end in -v<version>


class AgentConfigError(PetalgymError, ValueError):
    """A hyper-parameter file, key or value is invalid (the message names it)."""


def config_dir() -> Path:
    """The directory of the shipped ``<algo>.yaml`` files (``petalgym.configs/agents``)."""
    return Path(str(resources.files("petalgym.configs") / "agents"))


def algo_names() -> list[str]:
    """Algorithm names ``petalgym train --algo`` accepts."""
    return list(ALGORITHMS)


def _check_algo(algo: str) -> None:
    if algo not in ALGORITHMS:
        raise AgentConfigError(f"unknown algorithm {algo!r} (known: {', '.join(ALGORITHMS)})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; AgentConfigError naming the file if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise AgentConfigError(f"hyper-parameter file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AgentConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AgentConfigError(f"{path}: expected a mapping of env id -> hyper-parameters")
    return data


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, recursively for nested dicts (neither input is modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _section(data: Mapping[str, Any], env_id: str, where: str) -> dict[str, Any]:
    """``default`` merged with ``env_id``'s entry of an env-keyed file (or the whole flat file)."""
    env_keyed = "default" in data or any(_ENV_ID.match(str(k)) for k in data)
    if not env_keyed:
        return dict(data)
    out: dict[str, Any] = {}
    for key in ("default", env_id):
        entry = data.get(key)
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise AgentConfigError(f"{where}: entry {key!r} must be a mapping of hyper-parameters")
        out = merge(out, entry)
    return out


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config[a][b]... = value`` for the dotted ``key`` ``"a.b"`` (creating dicts on the way)."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise AgentConfigError(f"hyper-parameter {key!r}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def load_hyperparams(
    algo: str,
    env_id: str,
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The resolved hyper-parameters of ``algo`` on ``env_id`` (see the module docstring for the order).

    Returns a plain dict: the training keys (:data:`TRAINING_KEYS`) and the algorithm's keyword arguments.
    """
    _check_algo(algo)
    shipped = config_dir() / f"{algo}.yaml"
    params = _section(read_yaml(shipped), env_id, str(shipped)) if shipped.is_file() else {}
    if config is not None:
        params = merge(params, _section(read_yaml(config), env_id, str(config)))
    for key, value in (overrides or {}).items():
        set_dotted(params, key, value)
    params.setdefault("policy", "MlpPolicy")
    params.setdefault("env_kwargs", {})
    if not isinstance(params["env_kwargs"], dict):
        raise AgentConfigError(f"env_kwargs must be a mapping, got {params['env_kwargs']!r}")
    return params


def schedule(value: Any, key: str) -> Any:
    """A constant, or rl-zoo3's ``"lin_<x>"``: a linear schedule from x (start) to 0 (end of training)."""
    if isinstance(value, str):
        if not value.startswith("lin_"):
            raise AgentConfigError(f"{key}: expected a number or 'lin_<number>', got {value!r}")
        try:
            start = float(value[4:])
        except ValueError:
            raise AgentConfigError(f"{key}: expected a number or 'lin_<number>', got {value!r}") from None
        return LinearSchedule(start)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AgentConfigError(f"{key}: expected a number or 'lin_<number>', got {value!r}")
    return float(value)


class LinearSchedule:
    """progress_remaining (1 -> 0) -> ``start`` x progress_remaining (picklable, unlike a lambda)."""

    def __init__(self, start: float):
        self.start = float(start)

    def __call__(self, progress_remaining: float) -> float:
        return self.start * progress_remaining

    def __repr__(self) -> str:
        return f"lin_{self.start:g}"


def algo_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The algorithm's keyword arguments from resolved ``params``: schedules and ``policy_kwargs`` resolved
    (``activation_fn`` by name; torch is imported here)."""
    out = {k: copy.deepcopy(v) for k, v in params.items() if k not in TRAINING_KEYS}
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        if key in out and out[key] is not None:
            out[key] = schedule(out[key], key)
    pk = out.get("policy_kwargs")
    if pk is not None:
        if not isinstance(pk, dict):
            raise AgentConfigError(f"policy_kwargs must be a mapping, got {pk!r}")
        pk = dict(pk)
        act = pk.get("activation_fn")
        if isinstance(act, str):
            if act not in ACTIVATIONS:
                raise AgentConfigError(
                    f"policy_kwargs.activation_fn: unknown {act!r} (known: {', '.join(ACTIVATIONS)})"
                )
            import torch.nn as nn

            names = {
                "tanh": nn.Tanh,
                "relu": nn.ReLU,
                "elu": nn.ELU,
                "leaky_relu": nn.LeakyReLU,
                "gelu": nn.GELU,
            }
            pk["activation_fn"] = names[act]
        out["policy_kwargs"] = pk
    return out


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and anything else non-JSON as its repr (for metadata files)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return repr(value)


__all__ = [
    "ALGORITHMS",
    "MASKABLE",
    "TEST_SEED_LIMIT",
    "TRAINING_KEYS",
    "TRAIN_SIM_SEEDS",
    "VALIDATION_SIM_SEED_BASE",
    "AgentConfigError",
    "LinearSchedule",
    "algo_kwargs",
    "algo_names",
    "config_dir",
    "jsonable",
    "load_hyperparams",
    "merge",
    "read_yaml",
    "schedule",
    "set_dotted",
]
