"""SB3 callbacks: domain metrics for TensorBoard, evaluation on held-out seeds, and a rich progress bar.

TensorBoard scalars written by :class:`PetalMetricsCallback` (means since the previous log dump):

================================  =================================================================
``petal/per_token_s``              per-token time (s) of each request completed in training episodes
``petal/wait_s``                   waiting time (s) of those requests (cache or no chain)
``petal/failed_share``             share of finished requests that failed
``petal/default_action_share``     share of decisions equal to the built-in decider's default action
``petal/invalid_action_share``     share of actions that were masked and replaced (unmasked algorithms)
``petal/episode_per_token_s``      per-episode mean per-token time (s), as the evaluation harness reports
``petal/episode_wait_s``           per-episode mean waiting time (s)
``petal/episode_failed``           requests failed per episode
================================  =================================================================

:class:`PetalEvalCallback` (MaskablePPO: sb3-contrib's ``MaskableEvalCallback``; other algorithms SB3's
``EvalCallback``) adds ``eval/per_token_s``, ``eval/wait_s``, ``eval/failed`` and
``eval/default_action_share`` over its held-out episodes.

This module imports stable-baselines3: import it only when training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback


class PetalMetricsCallback(BaseCallback):
    """Logs the domain metrics of training episodes (read from :class:`~petalgym.agents.wrappers.
    PetalMonitor`'s ``info["petal"]`` / ``info["petal_episode"]``) with ``logger.record_mean``."""

    def _on_step(self) -> bool:
        record = self.logger.record_mean
        for info in self.locals.get("infos", ()):
            step = info.get("petal")
            if step is not None:
                record("petal/default_action_share", float(step["took_default"]))
                record("petal/invalid_action_share", float(step["invalid"]))
                for x in step["per_token_s"]:
                    record("petal/per_token_s", x)
                for x in step["wait_s"]:
                    record("petal/wait_s", x)
                for _ in step["per_token_s"]:
                    record("petal/failed_share", 0.0)
                for _ in range(step["failed"]):
                    record("petal/failed_share", 1.0)
            episode = info.get("petal_episode")
            if episode is not None:
                if episode["completed"] > 0:
                    record("petal/episode_per_token_s", episode["per_token_s"])
                    record("petal/episode_wait_s", episode["wait_s"])
                record("petal/episode_failed", episode["failed"])
        return True


def _eval_base(maskable: bool) -> type[EvalCallback]:
    if maskable:
        from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback

        return MaskableEvalCallback
    return EvalCallback


def make_eval_callback(eval_env: Any, maskable: bool, **kwargs: Any) -> EvalCallback:
    """A :class:`PetalEvalCallback` on ``eval_env`` built on sb3-contrib's ``MaskableEvalCallback`` (masked
    deterministic actions) when ``maskable``, else on SB3's ``EvalCallback``. ``kwargs``: EvalCallback's."""
    base = _eval_base(maskable)

    class PetalEvalCallback(base):  # type: ignore[misc, valid-type]
        """Evaluation on held-out simulator seeds, logging per-token time, waiting, failures and the
        default-action share of the evaluation episodes beside SB3's ``eval/mean_reward``."""

        def __init__(self, *args: Any, **kw: Any):
            super().__init__(*args, **kw)
            self.petal_history: list[dict[str, float]] = []
            self._episodes: list[dict[str, float]] = []
            self._took_default: list[float] = []

        def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
            super()._log_success_callback(locals_, globals_)
            info = locals_["info"]
            step = info.get("petal")
            if step is not None:
                self._took_default.append(float(step["took_default"]))
            if locals_["done"] and "petal_episode" in info:
                self._episodes.append(info["petal_episode"])

        def _on_step(self) -> bool:
            evaluating = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
            if evaluating:
                self._episodes, self._took_default = [], []
            keep_going = super()._on_step()
            if evaluating and self._episodes:
                done = [e for e in self._episodes if e["completed"] > 0]
                stats = {
                    "per_token_s": float(np.mean([e["per_token_s"] for e in done])) if done else float("nan"),
                    "wait_s": float(np.mean([e["wait_s"] for e in done])) if done else float("nan"),
                    "failed": float(np.mean([e["failed"] for e in self._episodes])),
                    "default_action_share": float(np.mean(self._took_default)) if self._took_default else 0.0,
                }
                self.petal_history.append({"timesteps": float(self.num_timesteps), **stats})
                for key, value in stats.items():
                    self.logger.record(f"eval/{key}", value)
                self.logger.dump(self.num_timesteps)
            return keep_going

    return PetalEvalCallback(eval_env, **kwargs)


class RichProgressCallback(BaseCallback):
    """A rich progress bar over the training timesteps (SB3's own ``progress_bar=True`` needs tqdm)."""

    def __init__(self, total_timesteps: int, description: str = "training"):
        super().__init__()
        self.total = int(total_timesteps)
        self.description = description
        self._progress: Progress | None = None
        self._task: Any = None

    def _on_training_start(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total)

    def _on_step(self) -> bool:
        if self._progress is not None:
            self._progress.update(self._task, completed=min(self.num_timesteps, self.total))
        return True

    def _on_training_end(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=min(self.num_timesteps, self.total))
            self._progress.stop()
            self._progress = None


__all__ = ["PetalMetricsCallback", "RichProgressCallback", "make_eval_callback"]
