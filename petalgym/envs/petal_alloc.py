"""PetalAlloc-v0: block placement and request routing as a Gymnasium environment.

One step = one decision of a kind the agent controls: PLACE (a server joins or rejoins and needs blocks)
or ROUTE (a request arrives, retries after backing off, or recovers from a lost server). Every other
decision -- the kinds the agent does not control, and REBALANCE ticks -- is answered inside the step by
the built-in decider (``decider``, default CG-BP + WS-RR), which is also asked about every controlled
decision: its answer is the default action (``info["default_action"]``) and its chain is candidate 0.

Action: ``Discrete(n)`` with a mask (``info["action_mask"]``, ``env.action_masks()``); layout in
:mod:`petalgym.envs.codec`. Observation: :mod:`petalgym.envs.features`.

Reward (:class:`petalgym.metrics.EpisodeCost`): minus ``reward_scale`` times the cost charged during the
step, plus ``invalid_action_penalty`` if the action was invalid and replaced. ``reward="completion"``
(default) charges a request its per-token time in seconds when it completes and ``failure_penalty`` when it
fails; ``reward="holding"`` charges every request in the system 1 / l_out per second it spends there
(dense under load; a failure refunds it and charges the penalty). Costs accrued before the first decision
are paid at the first step, so in both cases the undiscounted return of a finished episode is exactly minus
the scaled sum of per-token times (and penalties) of all its requests.

The episode ends (``terminated``) when every request has completed or failed; ``max_decisions`` truncates
it after that many agent steps, ``time_limit_s`` at the first decision at or after that simulated time
(a fixed-horizon, steady-state episode: with ``reward="holding"`` its return is minus the holding cost
of the requests up to that decision). The last step's ``info["summary"]`` holds the episode's metrics
(:func:`petalgym.metrics.summarise`: mean per-token time, TTFT, waits, failures, ...). When no decision
is pending (``info["decision"] == ""``: after the end, or after a reset whose whole episode needed no
agent decision, e.g. routing control when no chain ever exists) the observation is all zeros, the mask
all False and ``info["default_action"]`` is 0; in the second case the first step ignores its action and
ends the episode with its reward.

``reset(seed)`` draws the simulator's seed from ``self.np_random`` (kept as ``sim_seed``), so the seed
fixes the whole episode: arrivals, lengths, churn, join order and the built-in decider's random stream;
``reset(options={"sim_seed": s})`` uses simulator seed ``s`` directly (common random numbers with
:func:`petalgym.simulator.simulate`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from petalgym.deciders import Decider, make_decider
from petalgym.envs.candidates import DEFAULT_LEVEL_MULTIPLIERS
from petalgym.envs.codec import CONTROLS, DecisionCodec, EnvConfigError, InvalidActionError, Pending
from petalgym.envs.features import OBS_MODES
from petalgym.envs.render import legend_strip, render_rgb, render_text
from petalgym.errors import PetalgymError
from petalgym.metrics import REWARDS, EpisodeCost, summarise
from petalgym.scenario import Scenario, load_scenario
from petalgym.simulator import DecisionKind, Simulator
from petalgym.swarm import SwarmView

INVALID_ACTION_MODES = ("raise", "default")

_ROUTE, _PLACE, _REBALANCE = DecisionKind.ROUTE, DecisionKind.PLACE, DecisionKind.REBALANCE


def _number(name: str, value: Any, minimum: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EnvConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        raise EnvConfigError(
            f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}"
        )
    return v


class PetalAllocEnv(gym.Env):
    """Joint / placement-only / routing-only control of a simulated PETALS-style swarm.

    Args:
        scenario: a built-in scenario name (``petalgym.list_scenarios()``), a YAML path or a Scenario.
        control: ``"joint"`` (PLACE and ROUTE), ``"placement"`` or ``"routing"``.
        decider: the built-in decider: a registered name, or a :class:`~petalgym.deciders.Decider` (the env
            works on a deep copy of it).
        max_decisions: truncate after this many agent steps (None: run to the end of the episode).
        num_candidates: K candidate chains per ROUTE decision.
        reward_scale: multiplies every reward term.
        obs_mode: ``"flat"`` (one Box), ``"dict"`` (a Dict of Boxes with the mask under ``"action_mask"``)
            or ``"rllib"`` (``{"observations": flat Box, "action_mask": Box}``, RLlib's action masking).
        failure_penalty: seconds-per-token equivalent charged per failed request.
        reward: ``"completion"`` or ``"holding"`` (module docstring; :data:`petalgym.metrics.REWARDS`).
        feature_set: the observation's features: ``"v0"`` (what the shipped agents observe) or ``"v1"``
            (adds load features and log-scales counts; :data:`petalgym.envs.features.FEATURE_SETS`).
        candidate_set: ROUTE candidates: ``"ws-rr"`` (the built-in chain, WS-RR's k best, PETALS') or
            ``"mixed"`` (built-in, free now without waiting, PETALS', least-loaded, fewest hops, then
            WS-RR's; :data:`petalgym.envs.candidates.CANDIDATE_SETS`).
        rebalance_period_s: give the agent REBALANCE decisions too (needs control ``"joint"`` or
            ``"placement"``): every ONLINE server is offered one at intervals uniform in [0, 2 x period] s
            (replacing the built-in decider's own period); the action KEEP (the last) keeps it, a PLACE
            action moves it (it reloads). None: the built-in decider answers its own ticks, if any.
        placement_starts: ``"any"`` or ``"gaps"`` (PLACE / REBALANCE starts aligned with the first
            coverage gap, so that random valid placements cover the model;
            :data:`petalgym.envs.codec.PLACEMENT_STARTS`).
        time_limit_s: truncate the episode at the first agent decision at or after this simulated time (s);
            None: run to the end.
        invalid_action: ``"default"`` (the default: a masked or out-of-range action is replaced by the
            built-in decider's choice and penalised, so every action of ``action_space`` can be stepped,
            as Gymnasium's contract asks) or ``"raise"`` (strict: it raises InvalidActionError).
        invalid_action_penalty: seconds-per-token equivalent charged for a replaced action.
        scenario_overrides: dotted-path overrides of the scenario (``{"workload.arrival_rate": 0.5}``).
        max_servers: rows of the per-server observation (default: the scenario's servers).
        decider_kwargs: keyword arguments of a decider given by name.
        level_multipliers: |R| multipliers of the extra CG-BP placement levels.
        render_mode: None, ``"ansi"`` or ``"rgb_array"``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    #: The registered id this class is made by (error messages name ``spec.id`` once gym.make set it).
    env_id: ClassVar[str] = "PetalAlloc-v0"

    def __init__(
        self,
        scenario: str | Scenario = "clustered-9",
        control: str = "joint",
        decider: str | Decider = "cg-bp-ws-rr",
        max_decisions: int | None = None,
        num_candidates: int = 4,
        reward_scale: float = 1.0,
        obs_mode: str = "flat",
        failure_penalty: float = 50.0,
        invalid_action: str = "default",
        invalid_action_penalty: float = 1.0,
        scenario_overrides: dict[str, Any] | None = None,
        max_servers: int | None = None,
        decider_kwargs: dict[str, Any] | None = None,
        level_multipliers: Sequence[float] = DEFAULT_LEVEL_MULTIPLIERS,
        render_mode: str | None = None,
        reward: str = "completion",
        time_limit_s: float | None = None,
        feature_set: str = "v0",
        candidate_set: str = "ws-rr",
        rebalance_period_s: float | None = None,
        placement_starts: str = "any",
    ):
        try:
            self._configure(
                scenario=scenario,
                control=control,
                decider=decider,
                max_decisions=max_decisions,
                num_candidates=num_candidates,
                reward_scale=reward_scale,
                obs_mode=obs_mode,
                failure_penalty=failure_penalty,
                invalid_action=invalid_action,
                invalid_action_penalty=invalid_action_penalty,
                scenario_overrides=scenario_overrides,
                max_servers=max_servers,
                decider_kwargs=decider_kwargs,
                level_multipliers=level_multipliers,
                render_mode=render_mode,
                reward=reward,
                time_limit_s=time_limit_s,
                feature_set=feature_set,
                candidate_set=candidate_set,
                rebalance_period_s=rebalance_period_s,
                placement_starts=placement_starts,
            )
        except PetalgymError as exc:  # name the env id that was made
            raise type(exc)(f"{self.env_id}: {exc}") from None

        self.sim: Simulator | None = None
        self.sim_seed: int | None = None
        self.episode_id = 0
        self.pending: Pending | None = None
        self._decider_rng_state: dict | None = None
        self._no_mask = np.zeros(self.codec.n_actions, dtype=np.int8)
        self._mask = self._no_mask
        self._steps = 0
        self._ended = False

    def _configure(
        self,
        *,
        scenario: str | Scenario,
        control: str,
        decider: str | Decider,
        max_decisions: int | None,
        num_candidates: int,
        reward_scale: float,
        obs_mode: str,
        failure_penalty: float,
        invalid_action: str,
        invalid_action_penalty: float,
        scenario_overrides: dict[str, Any] | None,
        max_servers: int | None,
        decider_kwargs: dict[str, Any] | None,
        level_multipliers: Sequence[float],
        render_mode: str | None,
        reward: str,
        time_limit_s: float | None,
        feature_set: str,
        candidate_set: str,
        rebalance_period_s: float | None,
        placement_starts: str,
    ) -> None:
        """Check and store the arguments (see the class docstring), build the codec and the spaces."""
        if control not in CONTROLS:
            raise EnvConfigError(f"unknown control mode {control!r} (known: {', '.join(CONTROLS)})")
        if obs_mode not in OBS_MODES:
            raise EnvConfigError(f"unknown obs_mode {obs_mode!r} (known: {', '.join(OBS_MODES)})")
        if invalid_action not in INVALID_ACTION_MODES:
            raise EnvConfigError(
                f"unknown invalid_action {invalid_action!r} (known: {', '.join(INVALID_ACTION_MODES)})"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise EnvConfigError(
                f"unknown render_mode {render_mode!r} (known: {', '.join(self.metadata['render_modes'])})"
            )
        if max_decisions is not None and (
            isinstance(max_decisions, bool)
            or not isinstance(max_decisions, (int, np.integer))
            or max_decisions < 1
        ):
            raise EnvConfigError(f"max_decisions must be an integer >= 1 or None, got {max_decisions!r}")
        self.reward_scale = _number("reward_scale", reward_scale, 0.0, strict=True)
        self.failure_penalty = _number("failure_penalty", failure_penalty, 0.0)
        if reward not in REWARDS:
            raise EnvConfigError(f"unknown reward {reward!r} (known: {', '.join(REWARDS)})")
        self.reward = reward
        self.time_limit_s = (
            None if time_limit_s is None else _number("time_limit_s", time_limit_s, 0.0, strict=True)
        )
        self.cost = EpisodeCost(reward, self.failure_penalty)
        self.invalid_action_penalty = _number("invalid_action_penalty", invalid_action_penalty, 0.0)
        if scenario_overrides is not None and not isinstance(scenario_overrides, dict):
            raise EnvConfigError(f"scenario_overrides must be a dict or None, got {scenario_overrides!r}")
        self.scenario = load_scenario(scenario, scenario_overrides)
        self.decider_spec: tuple[str | Decider, dict[str, Any]] = (decider, dict(decider_kwargs or {}))
        self.codec_level_multipliers = tuple(level_multipliers)
        if isinstance(decider, Decider):
            if decider_kwargs:
                raise EnvConfigError("decider_kwargs is only for a decider given by name")
            self.builtin = copy.deepcopy(decider)  # the env's own: sub-envs of a vector env never share one
        elif isinstance(decider, str):
            self.builtin = make_decider(decider, **(decider_kwargs or {}))
        else:
            raise EnvConfigError(f"decider must be a registered name or a Decider, got {decider!r}")
        self.control = control
        self.obs_mode = obs_mode
        self.invalid_action = invalid_action
        self.max_decisions = None if max_decisions is None else int(max_decisions)
        self.render_mode = render_mode
        self._legend: np.ndarray | None = None  # the rgb picture's key (legend_strip), drawn once
        self.codec = DecisionCodec(
            self.scenario,
            control,
            self.builtin,
            num_candidates,
            max_servers,
            level_multipliers,
            feature_set=feature_set,
            candidate_set=candidate_set,
            rebalance=rebalance_period_s is not None,
            placement_starts=placement_starts,
        )
        self.agent_rebalance_period_s = (  # the agent's REBALANCE ticks (None: the built-in decider's own)
            None
            if rebalance_period_s is None
            else _number("rebalance_period_s", rebalance_period_s, 0.0, strict=True)
        )
        self.placement_starts = placement_starts
        self.feature_set = feature_set
        self.candidate_set = candidate_set
        self.num_candidates = self.codec.num_candidates
        self.max_servers = self.codec.max_servers
        self.action_space = spaces.Discrete(self.codec.n_actions)
        self.observation_space = self.codec.features.space(obs_mode, self.codec.n_actions)

    # ----------------------------------------------------------------------------------------------
    # Gymnasium API
    # ----------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray | dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode: draw ``sim_seed`` from ``np_random`` (or take ``options["sim_seed"]``) and
        advance to the first decision the agent controls."""
        super().reset(seed=seed)
        sim_seed = int(self.np_random.integers(0, 2**31 - 1))
        if options:
            unknown = sorted(set(options) - {"sim_seed"})
            if unknown:
                raise EnvConfigError(f"reset: unknown option {unknown[0]!r} (known: sim_seed)")
            if options.get("sim_seed") is not None:
                s = options["sim_seed"]
                if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
                    raise EnvConfigError(f"reset: options['sim_seed'] must be an integer >= 0, got {s!r}")
                sim_seed = int(s)
        self.sim_seed = sim_seed
        self.sim = Simulator(self.scenario, sim_seed)
        self._decider_rng_state = copy.deepcopy(self.sim.decider_rng.bit_generator.state)
        # the built-in decider drives the episode as in Simulator.run (it hears every ended route: JFFC's
        # and Parallax's job counts), except the retries the agent routes and the agent's REBALANCE ticks
        self.sim.attach(
            self.builtin,
            retries=_ROUTE not in self.codec.controlled,
            rebalance_period_s=self.agent_rebalance_period_s,
        )
        self.codec.reset()
        self.cost.reset()
        self.episode_id += 1
        self._steps = 0
        self._advance()
        self._ended = False  # an episode without agent decisions ends at the first step
        info = self._info()
        info["sim_seed"] = sim_seed
        return self._observation(), info

    def step(
        self, action: Any
    ) -> tuple[np.ndarray | dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply ``action`` to the pending decision, run the swarm to the next decision the agent controls,
        and return (observation, reward, terminated, truncated, info)."""
        if self.sim is None:
            raise ResetNeeded(f"{self.id}: step() called before reset()")
        if self._ended:
            raise ResetNeeded(f"{self.id}: step() called after the episode ended; call reset() first")
        pending = self.pending
        a = self._action_index(action)
        invalid = False
        if pending is not None:
            reason = self.codec.check(pending, a)
            invalid = reason is not None
            if invalid:
                if self.invalid_action == "raise":
                    raise InvalidActionError(
                        f"{self.id}: action {a} {reason}; valid actions: {self._valid_summary()} (use "
                        "env.action_masks() or info['action_mask'], or invalid_action='default')"
                    )
                a = pending.default_action
            self.sim.apply(self.codec.decode(pending, a), "agent")
            self._advance()
        # else: the episode needed no decision from the agent (reset ran it to the end); any action ends it
        self._steps += 1
        sim = self.sim
        cost, per_token, failed = self.cost.advance(sim.requests, sim.finished, sim.now)
        if invalid:
            cost += self.invalid_action_penalty
        reward = -self.reward_scale * cost
        terminated = self.pending is None
        truncated = not terminated and (
            (self.max_decisions is not None and self._steps >= self.max_decisions)
            or (self.time_limit_s is not None and sim.now >= self.time_limit_s)
        )
        self._ended = terminated or truncated
        info = self._info()
        info.update(
            completed=len(per_token),
            failed=failed,
            per_token_s=per_token,
            invalid_action=invalid,
            applied_action=a,
        )
        if self._ended:  # the episode's outcome so far (all of it when terminated)
            info["summary"] = summarise(self.sim.requests, self.sim.scenario.workload.warmup_s)
        return self._observation(), float(reward), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Valid actions of the pending decision, bool (n_actions,) (sb3-contrib MaskablePPO convention);
        all False when no decision is pending."""
        return self._mask.astype(bool)

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: a text picture; ``"rgb_array"``: an RGB uint8 array (H, W, 3); None otherwise."""
        if self.render_mode == "ansi":
            return render_text(self.sim, self.pending)
        if self.render_mode == "rgb_array":
            img = render_rgb(self.sim, self.pending, self.scenario.num_servers, self.scenario.num_blocks)
            if self._legend is None or self._legend.shape[1] != img.shape[1]:
                self._legend = legend_strip(img.shape[1])  # drawn once per picture width
            return np.vstack([img, self._legend])
        gym.logger.warn(
            "PetalAllocEnv.render() called without a render_mode; pass render_mode='ansi' or 'rgb_array'"
        )
        return None

    # ----------------------------------------------------------------------------------------------
    # For adapters and analysis
    # ----------------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """The env id this env was made as (``spec.id`` after gym.make), for messages."""
        return self.spec.id if self.spec is not None else self.env_id

    @property
    def view(self) -> SwarmView:
        """The simulator's read-only swarm view (after reset)."""
        if self.sim is None:
            raise ResetNeeded(f"{self.id}: no swarm before reset()")
        return self.sim.view

    def fresh_decider_rng(self) -> np.random.Generator:
        """A new generator in the initial state of this episode's decider stream (the stream the built-in
        decider got at reset, and that :meth:`~petalgym.simulator.Simulator.run` would hand a decider)."""
        if self._decider_rng_state is None:
            raise ResetNeeded(f"{self.id}: no episode before reset()")
        rng = np.random.default_rng()
        rng.bit_generator.state = copy.deepcopy(self._decider_rng_state)
        return rng

    def describe_action(self, action: int) -> str:
        """What ``action`` means for the pending decision."""
        return self.codec.describe(self.pending, int(action))

    # ----------------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Run the swarm, answering with the built-in decider, until a decision the agent controls (then
        ``self.pending`` is set) or the end of the episode (``self.pending`` is None)."""
        sim = self.sim
        builtin = self.builtin
        codec = self.codec
        view = sim.view
        name = builtin.name
        while True:
            d = sim.next_decision()
            if d is None:
                self.pending = None
                self._mask = self._no_mask
                return
            kind = d.kind
            if kind == _ROUTE:
                answer = builtin.route(view, d.request)
            elif kind == _PLACE:
                answer = builtin.place(view, d.server)
            else:
                answer = builtin.rebalance(view, d.server)
            if kind in codec.controlled:
                pending = codec.prepare(view, d, answer)
                if pending is not None:
                    self.pending = pending
                    self._mask = pending.mask
                    return
            sim.apply(answer, name)

    def _observation(self) -> np.ndarray | dict[str, np.ndarray]:
        features = self.codec.features
        pending = self.pending
        flat = features.zeros() if pending is None else self.codec.observe(self.sim.view, pending)
        return features.format(flat, self._mask, self.obs_mode)

    def _info(self) -> dict[str, Any]:
        sim = self.sim
        pending = self.pending
        return {
            "action_mask": self._mask.copy(),
            "decision": pending.decision.kind.name if pending is not None else "",
            "default_action": pending.default_action if pending is not None else 0,
            "sim_time": sim.now,
            "requests_arrived": len(sim.requests),
            "requests_finished": len(sim.finished),
        }

    def _action_index(self, action: Any) -> int:
        a = action
        if isinstance(a, np.ndarray) and a.size == 1:
            a = a.reshape(()).item()
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise InvalidActionError(
                f"{self.id}: action must be an integer in [0, {self.codec.n_actions}), got {action!r}"
            )
        return int(a)

    def _valid_summary(self) -> str:
        valid = np.flatnonzero(self._mask)
        if len(valid) == 0:
            return "none"
        if len(valid) <= 8:
            return ", ".join(str(int(x)) for x in valid)
        return (
            f"{len(valid)} of {self.codec.n_actions} (e.g. {', '.join(str(int(x)) for x in valid[:4])}, ...)"
        )


class PetalPlacementEnv(PetalAllocEnv):
    """PetalPlacement-v0: PetalAllocEnv with ``control="placement"`` fixed (the built-in decider routes)."""

    env_id: ClassVar[str] = "PetalPlacement-v0"

    def __init__(self, scenario: str | Scenario = "clustered-9", **kwargs: Any):
        if "control" in kwargs:
            raise EnvConfigError(f"{self.env_id} fixes control='placement'; use PetalAlloc-v0 to choose it")
        super().__init__(scenario, control="placement", **kwargs)


class PetalRoutingEnv(PetalAllocEnv):
    """PetalRouting-v0: PetalAllocEnv with ``control="routing"`` fixed (the built-in decider places)."""

    env_id: ClassVar[str] = "PetalRouting-v0"

    def __init__(self, scenario: str | Scenario = "clustered-9", **kwargs: Any):
        if "control" in kwargs:
            raise EnvConfigError(f"{self.env_id} fixes control='routing'; use PetalAlloc-v0 to choose it")
        super().__init__(scenario, control="routing", **kwargs)


__all__ = ["INVALID_ACTION_MODES", "OBS_MODES", "PetalAllocEnv", "PetalPlacementEnv", "PetalRoutingEnv"]
