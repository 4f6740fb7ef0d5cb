"""Deciders <-> policies.

* :class:`DeciderPolicy`: any :class:`~petalgym.deciders.Decider` as a policy of a PetalAlloc env. It reads
  the unwrapped env's pending decision, asks the decider, and returns the action index expressing the
  decider's answer (the candidate chain, or the placement level and start). Use it to run a baseline
  through the env, to check an env against the simulator, or to collect demonstrations.
* :class:`PolicyDecider`: a policy over env observations (a callable ``(obs, mask) -> action``) as a
  Decider, usable by :func:`petalgym.simulator.simulate` and the evaluation harness. It builds the same
  candidates, masks and observations the env does (shared :class:`~petalgym.envs.codec.DecisionCodec`)
  and lets a built-in decider answer the decisions the policy does not control. Trained SB3 models plug
  in through :func:`sb3_policy`.

Same seed, same policy => the env episode and ``simulate(scenario, PolicyDecider(...), seed=sim_seed)``
produce identical requests (tested).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from petalgym.deciders import Decider, make_decider
from petalgym.envs.candidates import DEFAULT_LEVEL_MULTIPLIERS
from petalgym.envs.codec import DecisionCodec, EnvConfigError, InvalidActionError
from petalgym.envs.features import OBS_MODES
from petalgym.envs.petal_alloc import INVALID_ACTION_MODES, PetalAllocEnv
from petalgym.perfmodel import Chain, Placement
from petalgym.scenario import Scenario
from petalgym.simulator import Decision, DecisionKind
from petalgym.swarm import Request, SwarmView

#: A policy: (observation, action mask int8 (n,)) -> action index.
Policy = Callable[[Any, np.ndarray], int]


class DeciderPolicy:
    """A Decider acting in a PetalAlloc env: ``policy(obs, mask) -> action`` (obs and mask are ignored:
    the decider reads the env's swarm view and pending decision).

    The decider is reset at the start of every env episode with a copy of that episode's decider stream
    (:meth:`PetalAllocEnv.fresh_decider_rng`), so with the env's own built-in decider it reproduces
    :meth:`~petalgym.simulator.Simulator.run` exactly (the env still answers REBALANCE and uncontrolled
    decisions with its built-in decider). Raises :class:`~petalgym.envs.codec.InvalidActionError` if the
    decider's answer is not among the env's actions (e.g. a chain that is not a candidate).

    Args:
        env: a PetalAlloc env (wrapped or not).
        decider: a Decider or a registered name (built with ``decider_kwargs``).
    """

    def __init__(self, env: Any, decider: Decider | str, **decider_kwargs: Any):
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, PetalAllocEnv):
            raise EnvConfigError(f"DeciderPolicy needs a PetalAlloc env, got {type(unwrapped).__name__}")
        self.env = unwrapped
        self.decider = make_decider(decider, **decider_kwargs) if isinstance(decider, str) else decider
        self._episode = -1

    def answer(self) -> Any:
        """The decider's answer (Placement or Route) to the env's pending decision."""
        env = self.env
        pending = env.pending
        if pending is None:
            raise InvalidActionError("DeciderPolicy: the env has no pending decision (reset it first)")
        if self._episode != env.episode_id:
            self.decider.reset(env.scenario, env.fresh_decider_rng())
            self._episode = env.episode_id
        return pending.decision.ask(self.decider, env.view)

    def __call__(self, observation: Any = None, action_mask: np.ndarray | None = None) -> int:
        """The action index expressing the decider's answer to the pending decision."""
        env = self.env
        answer = self.answer()
        try:
            return env.codec.encode(env.pending, answer)
        except InvalidActionError as exc:
            raise InvalidActionError(f"DeciderPolicy ({self.decider.name}): {exc}") from None

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """SB3-style ``predict`` for a single (non-vectorised) env: (action array, state)."""
        return np.asarray(self(observation, action_masks), dtype=np.int64), state


def sb3_policy(model: Any, deterministic: bool = True) -> Policy:
    """A policy callable from an SB3 model: ``model.predict(obs, deterministic=...)``, passing the mask as
    ``action_masks`` when the model accepts it (sb3-contrib MaskablePPO)."""
    try:
        masked = "action_masks" in inspect.signature(model.predict).parameters
    except (TypeError, ValueError):
        masked = False

    def policy(obs: Any, mask: np.ndarray) -> int:
        if masked:
            action, _ = model.predict(obs, deterministic=deterministic, action_masks=mask.astype(bool))
        else:
            action, _ = model.predict(obs, deterministic=deterministic)
        return int(np.asarray(action).reshape(-1)[0])

    return policy


class PolicyDecider(Decider):
    """A policy over PetalAlloc observations as a Decider (for :func:`petalgym.simulator.simulate`).

    The configuration must match the env the policy was trained on (:meth:`from_env` copies it). The
    built-in ``decider`` answers the decisions outside ``control`` and REBALANCE ticks, and gives the
    default answer (candidate 0, and the action used when ``invalid_action="default"``).

    The keyword arguments ``control``, ``decider``, ``num_candidates``, ``obs_mode``, ``max_servers``,
    ``decider_kwargs``, ``level_multipliers``, ``invalid_action``, ``feature_set``, ``candidate_set``,
    ``rebalance_period_s`` and ``placement_starts`` are those of
    :class:`~petalgym.envs.petal_alloc.PetalAllocEnv`.

    Args:
        policy: ``policy(obs, mask) -> action`` (see :func:`sb3_policy` for SB3 models).
        name: the name shown in results.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        control: str = "joint",
        decider: str | Decider = "cg-bp-ws-rr",
        num_candidates: int = 4,
        obs_mode: str = "flat",
        max_servers: int | None = None,
        decider_kwargs: dict[str, Any] | None = None,
        level_multipliers: Sequence[float] = DEFAULT_LEVEL_MULTIPLIERS,
        invalid_action: str = "raise",
        feature_set: str = "v0",
        candidate_set: str = "ws-rr",
        rebalance_period_s: float | None = None,
        placement_starts: str = "any",
        name: str = "policy",
    ):
        if not callable(policy):
            raise EnvConfigError(
                f"PolicyDecider: policy must be callable (obs, mask) -> action, got {policy!r}"
            )
        if obs_mode not in OBS_MODES:
            raise EnvConfigError(f"unknown obs_mode {obs_mode!r} (known: {', '.join(OBS_MODES)})")
        if invalid_action not in INVALID_ACTION_MODES:
            raise EnvConfigError(
                f"unknown invalid_action {invalid_action!r} (known: {', '.join(INVALID_ACTION_MODES)})"
            )
        if isinstance(decider, str):
            self.builtin = make_decider(decider, **(decider_kwargs or {}))
        elif isinstance(decider, Decider):
            self.builtin = decider
        else:
            raise EnvConfigError(f"decider must be a registered name or a Decider, got {decider!r}")
        self.policy = policy
        self.control = control
        self.num_candidates = num_candidates
        self.obs_mode = obs_mode
        self.max_servers = max_servers
        self.level_multipliers = tuple(level_multipliers)
        self.invalid_action = invalid_action
        self.feature_set = feature_set
        self.candidate_set = candidate_set
        self.name = name
        self.controls_rebalance = rebalance_period_s is not None  # the policy takes REBALANCE decisions
        self.placement_starts = placement_starts
        self.agent_rebalance_period_s = None if rebalance_period_s is None else float(rebalance_period_s)
        self.rebalance_period_s = self.agent_rebalance_period_s or self.builtin.rebalance_period_s
        self.allocation_delay_s = self.builtin.allocation_delay_s  # the env uses the built-in method's
        self.codec: DecisionCodec | None = None
        self.invalid_actions = 0  # replaced actions (invalid_action="default"), over all episodes

    @classmethod
    def from_env(cls, policy: Policy, env: Any, name: str = "policy") -> PolicyDecider:
        """A PolicyDecider with the configuration of ``env`` (a PetalAlloc env, wrapped or not) and a fresh
        copy of its built-in decider."""
        u = env.unwrapped
        if not isinstance(u, PetalAllocEnv):
            raise EnvConfigError(f"PolicyDecider.from_env needs a PetalAlloc env, got {type(u).__name__}")
        decider, kwargs = u.decider_spec
        return cls(
            policy,
            control=u.control,
            decider=copy.deepcopy(decider) if isinstance(decider, Decider) else decider,
            decider_kwargs=kwargs,
            num_candidates=u.num_candidates,
            obs_mode=u.obs_mode,
            max_servers=u.max_servers,
            level_multipliers=u.codec_level_multipliers,
            invalid_action=u.invalid_action,
            feature_set=u.feature_set,
            candidate_set=u.candidate_set,
            rebalance_period_s=u.agent_rebalance_period_s,
            placement_starts=u.placement_starts,
            name=name,
        )

    # Decider API -----------------------------------------------------------------------------------
    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        self.builtin.reset(scenario, rng)
        # read by Simulator.run after this reset; the built-in decider may set its own in reset
        self.rebalance_period_s = self.agent_rebalance_period_s or self.builtin.rebalance_period_s
        if self.codec is None or self.codec.scenario is not scenario:
            self.codec = self.make_codec(scenario)
        self.codec.reset()

    def make_codec(self, scenario: Scenario) -> DecisionCodec:
        """The action / observation codec of this configuration on ``scenario`` (what the env builds)."""
        return DecisionCodec(
            scenario,
            self.control,
            self.builtin,
            self.num_candidates,
            self.max_servers,
            self.level_multipliers,
            feature_set=self.feature_set,
            candidate_set=self.candidate_set,
            rebalance=self.controls_rebalance,
            placement_starts=self.placement_starts,
        )

    def place(self, view: SwarmView, server: int) -> Placement:
        initial = view.now == 0.0 and view.servers[server].placements == 0
        return self._decide(view, Decision(DecisionKind.PLACE, view.now, server=server, initial=initial))

    def route(self, view: SwarmView, request: Request) -> Any:
        return self._decide(view, Decision(DecisionKind.ROUTE, view.now, request=request))

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        return self._decide(view, Decision(DecisionKind.REBALANCE, view.now, server=server))

    def route_ended(self, view: SwarmView, request: Request) -> None:
        self.builtin.route_ended(view, request)  # its job counts, as in the env

    def describe(self) -> str:
        return f"{self.name} (control={self.control}, built-in {self.builtin.describe()})"

    # -----------------------------------------------------------------------------------------------
    def _decide(self, view: SwarmView, decision: Decision) -> Placement | Chain | Any:
        codec = self.codec
        if codec is None:
            raise EnvConfigError("PolicyDecider: reset() must be called before deciding")
        answer = codec.ask_builtin(view, decision)
        if not codec.controls(decision.kind):
            return answer
        pending = codec.prepare(view, decision, answer)
        if pending is None:
            return answer
        flat = codec.observe(view, pending)
        obs = codec.features.format(flat, pending.mask, self.obs_mode)
        raw = self.policy(obs, pending.mask.copy())
        if isinstance(raw, np.ndarray) and raw.size == 1:
            raw = raw.reshape(()).item()
        if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, (int, np.integer)):
            raise InvalidActionError(f"{self.name}: the policy returned {raw!r}, expected an action index")
        action = int(raw)
        reason = codec.check(pending, action)
        if reason is not None:
            if self.invalid_action == "raise":
                raise InvalidActionError(f"{self.name}: action {action} {reason}")
            self.invalid_actions += 1
            action = pending.default_action
        return codec.decode(pending, action)


class RandomValidPolicy:
    """Uniform over the valid actions of each decision, drawn from ``rng`` (set by the decider's reset)."""

    def __init__(self, rng: np.random.Generator | None = None):
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def __call__(self, obs: Any, mask: np.ndarray) -> int:
        valid = np.flatnonzero(mask)
        return int(valid[self.rng.integers(len(valid))])


class RandomActionsDecider(PolicyDecider):
    """Uniformly random valid actions of a petalgym-bench task's environment, as a Decider: the 0 of the
    task's normalised score. What the agent does not control (and REBALANCE ticks, unless the task gives
    the agent them) the task's built-in decider does, as in the env.

    Args:
        task: the task's name (:func:`petalgym.tasks.get_task`); None: joint control with the tasks'
            default environment options (:data:`petalgym.tasks.DEFAULT_ENV_OPTIONS`), on any scenario.
    """

    def __init__(self, task: str | None = None):
        from petalgym.tasks import DEFAULT_ENV_OPTIONS, get_task

        if task is None:
            fixed, self.task = {"control": "joint", **DEFAULT_ENV_OPTIONS}, None
        else:
            t = get_task(task)
            fixed, self.task = t.env_kwargs(), t.name
        known = set(inspect.signature(PolicyDecider.__init__).parameters) - {"self", "policy", "name"}
        super().__init__(
            RandomValidPolicy(), name="random-actions", **{k: v for k, v in fixed.items() if k in known}
        )

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        self.policy.rng = np.random.default_rng(int(rng.integers(2**63)))  # from the episode's decider stream

    def describe(self) -> str:
        where = f"task {self.task}" if self.task else "the tasks' default env"
        return f"random valid actions of {where} (control={self.control})"


__all__ = [
    "DeciderPolicy",
    "Policy",
    "PolicyDecider",
    "RandomActionsDecider",
    "RandomValidPolicy",
    "sb3_policy",
]
