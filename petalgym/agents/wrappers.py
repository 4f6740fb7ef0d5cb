"""Gymnasium wrappers used for training: simulator-seed pools, scenario mixtures and domain metrics.

None of them changes observations, actions or rewards, so a model trained through them acts exactly as it
does inside :class:`~petalgym.envs.adapter.PolicyDecider` (the evaluation path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from petalgym.metrics import summarise
from petalgym.swarm import RequestStatus

#: Keys of ``info["petal_episode"]`` (from :func:`petalgym.metrics.summarise` over the episode's requests).
EPISODE_KEYS = ("per_token_s", "ttft_s", "wait_s", "failed", "completed", "arrived")


class ScenarioMixture(gym.Env):
    """Several variants of one PetalAlloc environment (the same env id and kwargs, different scenario
    overrides, e.g. arrival rates); every episode runs on one of them: drawn uniformly by the mixture's own
    generator (seeded by ``seed`` and re-seeded by ``reset(seed=...)``), or in turn if ``cycle``.

    All variants must have the same observation and action spaces (same blocks, ``max_servers``, ...).
    ``unwrapped`` is the current variant's env, so adapters and wrappers see a plain PetalAlloc env.

    Args:
        env_id: a petalgym env id.
        env_kwargs: its kwargs; ``scenario_overrides`` in them apply to every variant.
        variants: one dict of scenario overrides per variant (merged over the common ones).
        seed: seeds the variant choice.
        cycle: use the variants in turn instead of at random (evaluation).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"]}

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        variants: Sequence[dict[str, Any]],
        seed: int = 0,
        cycle: bool = False,
    ):
        if not variants:
            raise ValueError("ScenarioMixture: variants must not be empty")
        common = dict(env_kwargs.get("scenario_overrides") or {})
        self.variants = [dict(v) for v in variants]
        self.envs = [
            gym.make(env_id, **{**env_kwargs, "scenario_overrides": {**common, **v}}) for v in self.variants
        ]
        first = self.envs[0]
        for v, env in zip(self.variants, self.envs, strict=True):
            if env.observation_space != first.observation_space or env.action_space != first.action_space:
                raise ValueError(
                    f"ScenarioMixture: variant {v} has spaces {env.observation_space}, {env.action_space}; "
                    f"the first has {first.observation_space}, {first.action_space}"
                )
        self.observation_space = first.observation_space
        self.action_space = first.action_space
        self.render_mode = first.unwrapped.render_mode
        self.cycle = bool(cycle)
        self._rng = np.random.default_rng(seed)
        self._turn = 0
        self.index = 0

    @property
    def unwrapped(self) -> gym.Env:  # type: ignore[override]
        return self.envs[self.index].unwrapped

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._turn = 0
        if self.cycle:
            self.index = self._turn % len(self.envs)
            self._turn += 1
        else:
            self.index = int(self._rng.integers(len(self.envs)))
        sub_seed = int(self._rng.integers(0, 2**31 - 1))
        obs, info = self.envs[self.index].reset(seed=sub_seed, options=options)
        info["variant"] = self.index
        return obs, info

    def step(self, action: Any):
        return self.envs[self.index].step(action)

    def action_masks(self) -> np.ndarray:
        """The current variant's action mask (sb3-contrib MaskablePPO convention)."""
        return self.envs[self.index].unwrapped.action_masks()

    def render(self) -> Any:
        return self.envs[self.index].render()

    def close(self) -> None:
        for env in self.envs:
            env.close()


class SimSeedPool(gym.Wrapper):
    """Draws each episode's simulator seed from a pool (``reset(options={"sim_seed": s})``).

    Args:
        env: a PetalAlloc env (wrapped or not).
        seed_range: ``(low, high)``: seeds drawn uniformly in [low, high) by the wrapper's own generator
            (re-seeded by ``reset(seed=...)``), used for training episodes.
        seeds: a fixed list of seeds used in turn (cycling), used for evaluation episodes.

    Exactly one of ``seed_range`` and ``seeds`` must be given. ``info["sim_seed"]`` after reset is the seed.
    """

    def __init__(
        self,
        env: gym.Env,
        seed_range: tuple[int, int] | None = None,
        seeds: Sequence[int] | None = None,
    ):
        super().__init__(env)
        if (seed_range is None) == (seeds is None):
            raise ValueError("SimSeedPool: give exactly one of seed_range and seeds")
        if seed_range is not None and not 0 <= seed_range[0] < seed_range[1]:
            raise ValueError(
                f"SimSeedPool: seed_range must be (low, high) with 0 <= low < high, got {seed_range}"
            )
        if seeds is not None and len(seeds) == 0:
            raise ValueError("SimSeedPool: seeds must not be empty")
        self.seed_range = seed_range
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        self._rng = np.random.default_rng()
        self._next = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._next = 0
        if self.seeds is not None:
            sim_seed = self.seeds[self._next % len(self.seeds)]
            self._next += 1
        else:
            low, high = self.seed_range
            sim_seed = int(self._rng.integers(low, high))
        opts = dict(options or {})
        opts["sim_seed"] = sim_seed
        return self.env.reset(seed=seed, options=opts)


class PetalMonitor(gym.Wrapper):
    """Adds domain metrics to ``info`` for logging (no effect on the episode).

    Every step: ``info["petal"]`` = {``took_default``: the applied action equals the built-in decider's
    default action of the decision it answered; ``invalid``: the action was invalid and replaced;
    ``per_token_s``: per-token times (s) of the requests completed during the step; ``wait_s``: their
    waiting times (s); ``failed``: requests failed during the step}. At the end of an episode (terminated or
    truncated): ``info["petal_episode"]``: :data:`EPISODE_KEYS` of the whole episode, the same numbers as
    :func:`petalgym.simulator.simulate`'s summary for that seed.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._default = 0
        self._seen = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._default = int(info.get("default_action", 0))
        self._seen = len(self.env.unwrapped.sim.finished)
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        sim = self.env.unwrapped.sim
        new = sim.finished[self._seen :]
        self._seen = len(sim.finished)
        done = [r for r in new if r.status == RequestStatus.COMPLETED]
        info["petal"] = {
            "took_default": int(info.get("applied_action", -1)) == self._default,
            "invalid": bool(info.get("invalid_action", False)),
            "per_token_s": tuple(r.per_token for r in done),
            "wait_s": tuple(r.wait_s for r in done),
            "failed": len(new) - len(done),
        }
        self._default = int(info.get("default_action", 0))
        if terminated or truncated:
            summary = summarise(sim.requests, sim.scenario.workload.warmup_s)
            info["petal_episode"] = {k: float(summary[k]) for k in EPISODE_KEYS}
        return obs, reward, terminated, truncated, info


__all__ = ["EPISODE_KEYS", "PetalMonitor", "ScenarioMixture", "SimSeedPool"]
