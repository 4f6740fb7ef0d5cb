"""Environment steps per second of PetalRouting-v0, PetalPlacement-v0 and PetalAlloc-v0, beside CartPole-v1.

Usage: python benchmarks/env_speed.py [--seconds 3] [--scenarios clustered-9,bellcanada-26] [--envs ...]
       python benchmarks/env_speed.py --tasks all   (every petalgym-bench task's environment instead)

Each env is built with ``gym.make`` (default wrappers) and played with uniformly random *masked* actions
(drawn from ``info["action_mask"]``) for about ``--seconds`` of wall clock, resets included: steps/s is
what a rollout worker gets. CartPole-v1 is measured in the same run, the same way (random actions), so the
ratio PetalX / CartPole is roughly machine-independent. Target: >= 5,000 steps/s on bellcanada-26 routing;
for the tasks (issue 14) >= 2,000 steps/s on every task and >= 0.2x CartPole on the routing tasks.
Run it on an idle machine: other processes on the same cores lower every number (CartPole too).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

import petalgym  # noqa: F401  (registers the environments)
from petalgym.tasks import get_task, list_tasks

ENV_IDS = ("PetalRouting-v0", "PetalPlacement-v0", "PetalAlloc-v0")
TARGET = ("PetalRouting-v0", "bellcanada-26", 5000.0)


def measure(env: gym.Env, seconds: float, masked: bool = True, seed: int = 0) -> dict[str, float]:
    """Play random (masked) actions for ``seconds``; steps/s, steps per episode and ms per reset."""
    rng = np.random.default_rng(seed)
    n_actions = int(env.action_space.n)
    steps = episodes = 0
    reset_s = 0.0
    t_end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < t_end:
        r0 = time.perf_counter()
        _, info = env.reset(seed=seed + episodes)
        reset_s += time.perf_counter() - r0
        episodes += 1
        done = False
        while not done:
            if masked:
                valid = np.flatnonzero(info["action_mask"])
                action = int(valid[rng.integers(len(valid))])
            else:
                action = int(rng.integers(n_actions))
            _, _, terminated, truncated, info = env.step(action)
            steps += 1
            done = terminated or truncated
    wall = time.perf_counter() - t0
    return {
        "steps_per_s": steps / wall,
        "steps_per_episode": steps / episodes,
        "reset_ms": 1e3 * reset_s / episodes,
        "step_us": 1e6 * (wall - reset_s) / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="wall-clock seconds per measurement")
    parser.add_argument("--scenarios", default="clustered-9,bellcanada-26")
    parser.add_argument("--envs", default=",".join(ENV_IDS))
    parser.add_argument("--tasks", help="comma-separated task names, or 'all': measure their environments")
    args = parser.parse_args()
    if args.tasks:
        measure_tasks(args.tasks, args.seconds)
        return

    cartpole = gym.make("CartPole-v1")
    base = measure(cartpole, args.seconds, masked=False)["steps_per_s"]
    cartpole.close()

    table = Table(title=f"Env steps/s, random masked actions (CartPole-v1: {base:,.0f} steps/s in this run)")
    for col in ("env", "scenario", "steps/s", "x CartPole", "steps/episode", "reset ms", "step us"):
        table.add_column(col, justify="left" if col in ("env", "scenario") else "right")
    verdict = ""
    for scenario in args.scenarios.split(","):
        for env_id in args.envs.split(","):
            env = gym.make(env_id, scenario=scenario)
            m = measure(env, args.seconds)
            env.close()
            table.add_row(
                env_id,
                scenario,
                f"{m['steps_per_s']:,.0f}",
                f"{m['steps_per_s'] / base:.3f}",
                f"{m['steps_per_episode']:.0f}",
                f"{m['reset_ms']:.2f}",
                f"{m['step_us']:.0f}",
            )
            if (env_id, scenario) == TARGET[:2]:
                ok = m["steps_per_s"] >= TARGET[2]
                verdict = (
                    f"target {TARGET[0]} on {TARGET[1]} >= {TARGET[2]:,.0f} steps/s: "
                    f"{'met' if ok else 'NOT met'} ({m['steps_per_s']:,.0f})"
                )
    console = Console(width=120)
    console.print(table)
    if verdict:
        console.print(verdict)


def measure_tasks(names: str, seconds: float) -> None:
    """One row per task: its environment (``gym.make(task.id)``) under random masked actions."""
    tasks = list_tasks() if names == "all" else [get_task(n) for n in names.split(",")]
    cartpole = gym.make("CartPole-v1")
    base = measure(cartpole, seconds, masked=False)["steps_per_s"]
    cartpole.close()
    title = f"Task env steps/s, random masked actions (CartPole-v1: {base:,.0f} steps/s in this run)"
    table = Table(title=title)
    for col in ("task", "control", "steps/s", "x CartPole", "steps/episode", "reset ms", "step us", "goal"):
        table.add_column(col, justify="left" if col in ("task", "control", "goal") else "right")
    for task in tasks:
        env = gym.make(task.id)
        m = measure(env, seconds)
        env.close()
        ratio = m["steps_per_s"] / base
        goal = m["steps_per_s"] >= 2000 and (task.control != "routing" or ratio >= 0.2)
        table.add_row(
            task.id,
            task.control,
            f"{m['steps_per_s']:,.0f}",
            f"{ratio:.3f}",
            f"{m['steps_per_episode']:.0f}",
            f"{m['reset_ms']:.2f}",
            f"{m['step_us']:.0f}",
            "met" if goal else "NOT met",
        )
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
