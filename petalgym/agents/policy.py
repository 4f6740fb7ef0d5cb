"""A trained model as a :class:`~petalgym.deciders.Decider`: ``make_decider("agent", path="model.zip")``.

:class:`AgentDecider` loads an SB3 / sb3-contrib model saved by ``petalgym train`` (its metadata, embedded
in the zip and in the ``.json`` sidecar, gives the env configuration) and runs it through
:class:`~petalgym.envs.adapter.PolicyDecider` with deterministic actions: the same candidates, masks and
observations as the env it was trained on; the built-in decider answers the decisions the model does not
control (routing for a placement model, placement for a routing model) and REBALANCE ticks.

The scenario comes from the simulation (``petalgym evaluate --scenario``), not from the model: a model runs
on any scenario whose observation and action shapes match those it was trained with (same number of blocks
L, at most ``max_servers`` servers). Anything else raises :class:`AgentLoadError` naming the mismatch.

Loading a model zip imports torch and stable-baselines3 (the ``rl`` extra) and unpickles parts of it: load
only zips from a trusted source. A numpy export (``.npz``, :mod:`petalgym.agents.exported`) needs neither
torch nor unpickling; the shipped models are exports.
"""

from __future__ import annotations

import json
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from petalgym.agents import TASK_AGENTS
from petalgym.deciders import Decider
from petalgym.errors import PetalgymError
from petalgym.perfmodel import Placement
from petalgym.scenario import Scenario
from petalgym.swarm import Request, SwarmView

#: Name of the metadata file inside a model zip (the same as :data:`petalgym.agents.train.METADATA_IN_ZIP`).
METADATA_IN_ZIP = "petalgym.json"
#: Env id -> control mode.
ENV_CONTROL = {"PetalRouting-v0": "routing", "PetalPlacement-v0": "placement", "PetalAlloc-v0": None}
#: Algorithm name -> (module, class), as in :data:`petalgym.agents.config.ALGORITHMS`.
_ALGOS = {
    "maskable-ppo": ("sb3_contrib", "MaskablePPO"),
    "ppo": ("stable_baselines3", "PPO"),
    "a2c": ("stable_baselines3", "A2C"),
    "dqn": ("stable_baselines3", "DQN"),
}


class AgentLoadError(PetalgymError, ValueError):
    """A model file is missing, corrupt, or incompatible with the env id or scenario it is used on."""


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The petalgym metadata of a model: a zip's embedded ``petalgym.json``, else its ``.json`` sidecar;
    a numpy export's (``.npz``) embedded metadata.

    Raises AgentLoadError if the file is missing, not a zip or an export, not an SB3 model, or has no
    metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise AgentLoadError(f"model file {path} does not exist")
    if path.suffix == ".npz":  # a numpy export (petalgym.agents.exported): arrays only, no pickle
        from petalgym.agents.exported import read_export_metadata

        meta = read_export_metadata(path)
        return _checked_metadata(path, meta)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "data" not in names:
                raise AgentLoadError(f"{path.name} is not a stable-baselines3 model zip (no 'data' entry)")
            text = zf.read(METADATA_IN_ZIP).decode() if METADATA_IN_ZIP in names else None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise AgentLoadError(f"{path.name} is not a valid model zip ({exc})") from None
    if text is None:
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise AgentLoadError(
                f"{path.name} has no petalgym metadata ({METADATA_IN_ZIP} inside the zip or {sidecar.name} "
                "beside it): train it with `petalgym train`"
            )
        text = sidecar.read_text()
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AgentLoadError(f"{path.name}: its metadata is not valid JSON ({exc})") from None
    return _checked_metadata(path, meta)


def _checked_metadata(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` if it has the keys a loader needs and names a petalgym env and a known algorithm."""
    for key in ("env_id", "algo", "observation_shape", "action_n", "env_kwargs"):
        if key not in meta:
            raise AgentLoadError(f"{path.name}: its metadata lacks {key!r}")
    if meta["env_id"] not in ENV_CONTROL:
        raise AgentLoadError(
            f"{path.name} was trained on {meta['env_id']!r}, not a petalgym environment "
            f"({', '.join(ENV_CONTROL)})"
        )
    if meta["algo"] not in _ALGOS:
        raise AgentLoadError(f"{path.name}: unknown algorithm {meta['algo']!r} in its metadata")
    return meta


@lru_cache(maxsize=16)
def _load_model(path: str, mtime_ns: int, algo: str) -> Any:
    """The SB3 model at ``path`` on CPU (cached per path and modification time)."""
    import importlib

    module, name = _ALGOS[algo]
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise AgentLoadError(
            f"loading a {algo} model needs {module} (pip install 'petalgym[rl]'): {exc}"
        ) from None
    # schedules are pickled closures: replace them so that models load across Python versions (rl-zoo3 does)
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    try:
        return cls.load(path, device="cpu", custom_objects=custom)
    except Exception as exc:  # corrupt payloads raise anything from zipfile, pickle, json or torch
        raise AgentLoadError(
            f"{Path(path).name}: cannot load the {algo} model ({type(exc).__name__}: {exc})"
        ) from None


def _shape(space: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in (getattr(space, "shape", None) or ()))


class AgentDecider(Decider):
    """A model trained by ``petalgym train`` as a Decider (deterministic actions).

    Args:
        path: the model zip (SB3; trusted source only) or its numpy export (``.npz``).
        env_id: if given, the env id the model must have been trained on (AgentLoadError otherwise).
        name: the name shown in results (default: ``agent:<file stem>``).
        deterministic: take the most likely action (default) instead of sampling.

    Raises AgentLoadError (a :class:`~petalgym.errors.PetalgymError`) at construction for a missing, corrupt
    or non-petalgym file, an env id other than ``env_id``, or a model whose spaces disagree with its
    metadata; and at :meth:`reset` if the scenario gives other observation or action shapes than the model's
    (e.g. another number of blocks, or more servers than ``max_servers``).
    """

    def __init__(
        self,
        path: str | Path,
        env_id: str | None = None,
        name: str | None = None,
        deterministic: bool = True,
    ):
        self.path = Path(path)
        self.metadata = meta = read_metadata(self.path)
        file = self.path.name
        if env_id is not None and env_id != meta["env_id"]:
            raise AgentLoadError(f"{file} was trained on {meta['env_id']}, not {env_id}")
        self.env_id: str = meta["env_id"]
        self.name = name or f"agent:{self.path.stem}"
        self.deterministic = bool(deterministic)
        obs_shape, n_actions = tuple(meta["observation_shape"]), int(meta["action_n"])
        self._rng = np.random.default_rng(0)
        if self.path.suffix == ".npz":  # numpy: no torch, nothing unpickled
            from petalgym.agents.exported import ExportedPolicy

            self.model = None
            exported = ExportedPolicy.load(self.path)
            model_obs = (exported.observation_size,)
            model_n = int(exported.logits(np.zeros(exported.observation_size, dtype=np.float32)).shape[0])

            def policy(obs: Any, mask: np.ndarray) -> int:
                return exported.action(obs, mask, self.deterministic, self._rng)

        else:
            self.model = _load_model(str(self.path.resolve()), self.path.stat().st_mtime_ns, meta["algo"])
            model_obs = _shape(self.model.observation_space)
            model_n = int(getattr(self.model.action_space, "n", -1))
            policy = None
        if model_obs != obs_shape or model_n != n_actions:
            raise AgentLoadError(
                f"{file}: the model's spaces (observation {model_obs}, {model_n} actions) disagree with its "
                f"metadata (observation {obs_shape}, {n_actions} actions)"
            )
        env = meta.get("resolved_env") or meta["env_kwargs"]
        control = env.get("control") or ENV_CONTROL[self.env_id] or "joint"
        builtin = env.get("decider", "cg-bp-ws-rr")
        if not isinstance(builtin, str) or not builtin:
            raise AgentLoadError(f"{file}: its built-in decider is not a registered name ({builtin!r})")
        from petalgym.envs.adapter import PolicyDecider, sb3_policy

        self.inner = PolicyDecider(
            policy if policy is not None else sb3_policy(self.model, deterministic=self.deterministic),
            control=control,
            decider=builtin,
            decider_kwargs=env.get("decider_kwargs") or None,
            num_candidates=int(env.get("num_candidates", 4)),
            obs_mode=env.get("obs_mode", "flat"),
            max_servers=env.get("max_servers", meta.get("max_servers")),
            level_multipliers=tuple(env["level_multipliers"])
            if "level_multipliers" in env
            else _default_levels(),
            invalid_action=env.get("invalid_action", "raise"),
            feature_set=env.get("feature_set", "v0"),
            candidate_set=env.get("candidate_set", "ws-rr"),
            rebalance_period_s=env.get("rebalance_period_s"),
            placement_starts=env.get("placement_starts", "any"),
            name=self.name,
        )
        self.rebalance_period_s = self.inner.rebalance_period_s
        self._checked: Scenario | None = None

    # Decider API -----------------------------------------------------------------------------------
    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        if not self.deterministic:  # an export's sampled actions (a zip samples with torch's generator)
            self._rng = np.random.default_rng(rng.integers(2**63))
        self.check_scenario(scenario)
        self.inner.reset(scenario, rng)
        # what Simulator.run reads after this reset (the built-in decider may set its period in reset)
        self.rebalance_period_s = self.inner.rebalance_period_s
        self.allocation_delay_s = self.inner.allocation_delay_s

    def place(self, view: SwarmView, server: int) -> Placement:
        return self.inner.place(view, server)

    def route(self, view: SwarmView, request: Request) -> Any:
        return self.inner.route(view, request)

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        return self.inner.rebalance(view, server)

    def route_ended(self, view: SwarmView, request: Request) -> None:
        self.inner.route_ended(view, request)  # the built-in decider's job counts (Parallax, JFFC)

    def describe(self) -> str:
        m = self.metadata
        steps, seed = m.get("timesteps", "?"), m.get("seed", "?")
        return f"{self.name} ({m['algo']} on {m['env_id']}, {steps} steps, seed {seed})"

    @property
    def invalid_actions(self) -> int:
        """Masked actions replaced by the built-in decider's (models trained without masks), all episodes."""
        return self.inner.invalid_actions

    # ------------------------------------------------------------------------------------------------
    def check_scenario(self, scenario: Scenario) -> None:
        """AgentLoadError unless ``scenario`` gives the model's observation and action shapes."""
        if self._checked is scenario:
            return
        m = self.metadata
        file = self.path.name
        trained = m.get("scenario", {})
        max_servers = m.get("max_servers")
        if max_servers is not None and scenario.num_servers > int(max_servers):
            raise AgentLoadError(
                f"{file} was trained on {m['env_id']} with max_servers={max_servers} (scenario "
                f"{trained.get('name', '?')}); scenario {scenario.name} has {scenario.num_servers} servers"
            )
        from petalgym.envs.features import OBS_MODES  # noqa: F401  (validates the import path)

        inner = self.inner
        try:
            codec = inner.make_codec(scenario)
        except PetalgymError as exc:
            raise AgentLoadError(f"{file}: cannot run on scenario {scenario.name}: {exc}") from None
        obs = _shape(codec.features.space(inner.obs_mode, codec.n_actions))
        want_obs = tuple(m["observation_shape"])
        if obs != want_obs:
            raise AgentLoadError(
                f"{file} was trained on {m['env_id']} with observation shape {want_obs} (scenario "
                f"{trained.get('name', '?')}: {trained.get('num_servers', '?')} servers, "
                f"{trained.get('num_blocks', '?')} blocks), scenario {scenario.name} gives {obs} "
                f"({scenario.num_servers} servers, {scenario.num_blocks} blocks)"
            )
        if codec.n_actions != int(m["action_n"]):
            raise AgentLoadError(
                f"{file} was trained on {m['env_id']} with {m['action_n']} actions (scenario "
                f"{trained.get('name', '?')}: {trained.get('num_blocks', '?')} blocks), scenario "
                f"{scenario.name} gives {codec.n_actions} ({scenario.num_blocks} blocks)"
            )
        self._checked = scenario


def _default_levels() -> tuple[float, ...]:
    from petalgym.envs.candidates import DEFAULT_LEVEL_MULTIPLIERS

    return DEFAULT_LEVEL_MULTIPLIERS


# --------------------------------------------------------------------------------------------------
# Shipped models
# --------------------------------------------------------------------------------------------------
#: Registry name -> file in ``agents/pretrained/`` (installed as ``petalgym.agents/pretrained``).
PRETRAINED: dict[str, str] = {
    "ppo-routing": "ppo-routing.npz",
    "ppo-placement": "ppo-placement.npz",
    "ppo-placement-2rps": "ppo-placement-2rps.npz",
    "ppo-placement-load": "ppo-placement-load.npz",
    **{name: f"tasks/{task}.npz" for task, name in TASK_AGENTS.items()},
}


def pretrained_path(name: str) -> Path:
    """The path of the shipped model registered as ``name`` (AgentLoadError if unknown or not installed)."""
    if name not in PRETRAINED:
        raise AgentLoadError(f"unknown pretrained model {name!r} (known: {', '.join(PRETRAINED)})")
    path = Path(__file__).parent / "pretrained" / PRETRAINED[name]
    if not path.is_file():
        raise AgentLoadError(f"pretrained model {name!r} is not installed ({path} is missing)")
    return path


def pretrained(name: str, **kwargs: Any) -> AgentDecider:
    """The shipped model ``name`` as an :class:`AgentDecider` named ``name``."""
    kwargs.setdefault("name", name)
    return AgentDecider(pretrained_path(name), **kwargs)


def ppo_routing(**kwargs: Any) -> AgentDecider:
    """``"ppo-routing"``: MaskablePPO routing on clustered-9 (see agents/pretrained/README.md)."""
    return pretrained("ppo-routing", **kwargs)


def ppo_placement(**kwargs: Any) -> AgentDecider:
    """``"ppo-placement"``: MaskablePPO placement on clustered-9 (see agents/pretrained/README.md)."""
    return pretrained("ppo-placement", **kwargs)


def ppo_placement_2rps(**kwargs: Any) -> AgentDecider:
    """``"ppo-placement-2rps"``: MaskablePPO placement on clustered-9 at 2 requests/s (agents/STUDY.md)."""
    return pretrained("ppo-placement-2rps", **kwargs)


def ppo_placement_load(**kwargs: Any) -> AgentDecider:
    """``"ppo-placement-load"``: MaskablePPO placement on clustered-9, 0.1-4 requests/s (agents/STUDY.md)."""
    return pretrained("ppo-placement-load", **kwargs)


__all__ = [
    "PRETRAINED",
    "AgentDecider",
    "AgentLoadError",
    "ppo_placement",
    "ppo_placement_2rps",
    "ppo_placement_load",
    "ppo_routing",
    "pretrained",
    "pretrained_path",
    "read_metadata",
]
