"""petalgym-bench tasks: named, versioned settings for comparing learned policies with the field's
algorithms (bench-design.md).

A task fixes a scenario (+ overrides that fix its horizon), what the agent controls, the metric, the
reward, disjoint train / validation / test seed ranges and the grid on which each baseline's knobs are
tuned (on the train seeds). ``gym.make("petalgym/<Name>-v0")`` or :func:`make_task` builds its
environment; :mod:`petalgym.bench` computes its reference scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from petalgym.errors import UsageError
from petalgym.scenario import Scenario, load_scenario

__all__ = ["DEFAULT_ENV_OPTIONS", "TASKS", "Task", "get_task", "list_tasks", "make_task", "register_tasks"]

#: Baseline knobs tuned on the train seeds (every grid includes the default).
DEFAULT_GRID: dict[str, dict[str, list[Any]]] = {
    "petals": {"balance_quality": [0.5, 0.75, 0.9]},
    "cg-bp-ws-rr": {"sessions_factor": [0.5, 0.75, 1.0, 1.5, 2.0]},
    "gbp-cr-jffc": {"target_load": [0.5, 0.7, 0.9]},
    "parallax": {"max_requests": [8, 16, 32]},
    "shortest": {"cache_share": [0.3, 0.5, 0.7]},
    "replicas-first": {"replica_sessions": [1, 2, 4], "busy_load": [1.0, None]},
}
#: Environment options of every task (feature set v1, the dense holding-cost reward, candidates by
#: several rules, gap-aligned placement starts); a task may add to them (e.g. REBALANCE control).
DEFAULT_ENV_OPTIONS: dict[str, Any] = {
    "feature_set": "v1",
    "reward": "holding",
    "candidate_set": "mixed",
    "placement_starts": "gaps",
}

#: Baselines every task compares (``random`` is the 0 of the normalised score).
DEFAULT_BASELINES = (
    "petals",
    "petals-opt-rr",
    "cg-bp-ws-rr",
    "gbp-cr-jffc",
    "parallax",
    "shortest",
    "replicas-first",
)


@dataclass(frozen=True)
class Task:
    """One benchmark task.

    Args:
        name: CamelCase name; the Gymnasium id is ``petalgym/<name>-v<version>``.
        version: bumped whenever anything that changes its scores changes.
        description: what the task stresses, in a sentence or two.
        scenario: a shipped scenario name.
        overrides: dotted-path scenario overrides that fix the task's horizon and load.
        control: what the agent decides: ``"routing"``, ``"placement"`` or ``"joint"``.
        train_seeds: the seeds baselines are tuned on (a ``range``, disjoint from the other two).
        validation_seeds: the seeds agents are chosen on and the headroom is measured on.
        test_seeds: the seeds of the final table, touched only by its runs.
        metric: the summary metric scores are given in (``per_token_s``: s per output token, lower is
            better).
        reward: the environment's reward definition, in words.
        env_options: keyword arguments of the environment besides scenario, control and overrides
            (:data:`DEFAULT_ENV_OPTIONS` and the task's own).
        baselines: the registered deciders compared (besides ``random``).
        grid: per baseline, keyword -> values tuned on the train seeds.
        agent: the registered decider name of the task's shipped agent (None: none shipped); ``petalgym
            bench`` scores it beside the baselines (kind ``agent``).
    """

    name: str
    version: int
    description: str
    scenario: str
    overrides: Mapping[str, Any]
    control: str
    train_seeds: range = range(0, 5)
    validation_seeds: range = range(100, 105)
    test_seeds: range = range(200, 210)
    metric: str = "per_token_s"
    reward: str = (
        "minus the holding cost of the requests in the system: 1 / l_out per second each spends there "
        "(a failure refunds it and costs 50); an episode's return is minus its per-token total"
    )
    env_options: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENV_OPTIONS))
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    grid: Mapping[str, Mapping[str, list[Any]]] = field(default_factory=lambda: dict(DEFAULT_GRID))
    agent: str | None = None

    @property
    def id(self) -> str:
        """The Gymnasium id, ``petalgym/<name>-v<version>``."""
        return f"petalgym/{self.name}-v{self.version}"

    def load_scenario(self) -> Scenario:
        """The task's scenario with its overrides."""
        return load_scenario(self.scenario, dict(self.overrides))

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~petalgym.envs.petal_alloc.PetalAllocEnv` for this task."""
        return {
            "scenario": self.scenario,
            "control": self.control,
            "scenario_overrides": dict(self.overrides),
            **dict(self.env_options),
        }


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "PaperClustered",
            0,
            "The paper's clustered testbed (2 A100 + 7 MIG slices, BLOOM-176B) at 2 requests/s, 200 "
            "requests: the easy end, where a tuned heuristic sits on the bound.",
            "clustered-9",
            {"workload.num_requests": 200, "workload.arrival_rate": 2.0},
            "joint",
            agent="ppo-paperclustered",
        ),
        Task(
            "PaperScattered",
            0,
            "The paper's scattered setting with 26 servers on BellCanada at 2 requests/s, 200 requests.",
            "bellcanada-26",
            {"workload.num_requests": 200, "workload.arrival_rate": 2.0},
            "joint",
            agent="ppo-paperscattered",
        ),
        Task(
            "ChurnScattered",
            0,
            "BellCanada with 26 servers that fail or leave (mean lifetime 20 min, downtime 5 min), "
            "output lengths 64-256, at 0.2 requests/s for an hour.",
            "bellcanada-26-churn",
            {},
            "joint",
            agent="ppo-churnscattered",
        ),
        Task(
            "SuccessorTestbed",
            0,
            "The successor paper's MIG testbed (Llama-2-7B, RIPE Atlas RTTs) under the bursty Azure code "
            "trace at 2.57 requests/s: routing against bursts.",
            "llama7b-mig-ripe",
            {},
            "routing",
            agent="ppo-successortestbed",
        ),
        Task(
            "MixedSpot",
            0,
            "48 mixed GPUs on spot instances serving Llama-3.1-70B to 4 clients from the Azure conversation "
            "trace, with fifo compute contention: routing under churn and queueing.",
            "llama70b-mixed-spot",
            {},
            "routing",
            test_seeds=range(200, 205),
            agent="ppo-mixedspot",
        ),
        Task(
            "ZoneShocks",
            0,
            "Llama-3.1-405B on 36 data-centre GPUs in six cloud zones hit by correlated zone failures, "
            "5 clients, bursty code trace, fifo contention.",
            "llama405b-zones-ripe",
            {},
            "routing",
            test_seeds=range(200, 205),
            agent="ppo-zoneshocks",
        ),
        Task(
            "LargeSwarm",
            0,
            "128 mixed GPUs on spot instances serving Llama-3.1-70B to 8 clients from the Azure conversation "
            "trace, fifo contention: routing at the scale of a public swarm.",
            "llama70b-swarm-128",
            {},
            "routing",
            test_seeds=range(200, 205),
            agent="ppo-largeswarm",
        ),
        Task(
            "DiurnalLoad",
            0,
            "48 mixed GPUs serving Llama-3.1-70B under a load that swings 20x over a 2-hour cycle, fifo "
            "contention; the agent places, routes and may move servers every ~10 minutes (KEEP or move).",
            "llama70b-diurnal-48",
            {},
            "joint",
            test_seeds=range(200, 205),
            env_options={**DEFAULT_ENV_OPTIONS, "rebalance_period_s": 600.0},
            agent="ppo-diurnalload",
        ),
        Task(
            "LoadFollowing",
            0,
            "12 A100s serving Llama-3.1-70B in int8 (no contention: memory runs out) under a load that "
            "swings 0.9-8.1 requests/s over a 2-hour cycle, requests abandoned after 2 minutes' wait: "
            "one-hop replicas serve the trough fastest, two-hop pipelines hold the peak's sessions, and "
            "re-placing must not leave sessions waiting for a reloading server; the agent places, routes "
            "and may move servers every ~2 minutes (KEEP or move).",
            "llama70b-int8-diurnal-12",
            # 2.5 h: the 30-minute warm-up ends at the peak, then one whole cycle down to the trough and back
            {"workload.horizon_s": 9000.0, "workload.max_wait_s": 120.0},
            "joint",
            train_seeds=range(0, 3),
            validation_seeds=range(100, 103),
            test_seeds=range(200, 205),
            env_options={**DEFAULT_ENV_OPTIONS, "rebalance_period_s": 120.0},
            agent="ppo-loadfollowing",
            baselines=(*DEFAULT_BASELINES, "cg-bp-ws-rr-follow"),
            grid={
                **DEFAULT_GRID,
                "cg-bp-ws-rr-follow": {"busy_rate": [4.0, 5.0], "calm_fraction": [0.5, 0.8]},
            },
        ),
    )
}


def list_tasks() -> list[Task]:
    """Every registered task, in registration order."""
    return list(TASKS.values())


def get_task(name: str) -> Task:
    """The task called ``name`` (its name, or its id ``petalgym/<name>-v<version>``); UsageError naming
    the known tasks otherwise."""
    key = str(name)
    for task in TASKS.values():
        if key in (task.name, task.id, task.id.removeprefix("petalgym/")):
            return task
    known = ", ".join(t.name for t in TASKS.values())
    raise UsageError(f"unknown task {key!r} (known: {known})")


def make_task(name: str, **env_kwargs: Any):
    """The Gymnasium environment of task ``name`` (extra keyword arguments go to the environment, e.g.
    ``obs_mode="dict"``); the task's own scenario, control and overrides cannot be changed here."""
    from petalgym.envs.petal_alloc import PetalAllocEnv

    task = get_task(name)
    fixed = task.env_kwargs()
    clash = sorted(set(env_kwargs) & set(fixed))
    if clash:
        raise UsageError(f"task {task.name} fixes {clash[0]!r}; make the env with PetalAlloc-v0 to change it")
    return PetalAllocEnv(**fixed, **env_kwargs)


def register_tasks() -> None:
    """Register every task as ``petalgym/<name>-v<version>`` with Gymnasium (idempotent)."""
    import gymnasium as gym

    for task in TASKS.values():
        if task.id not in gym.registry:
            gym.register(
                id=task.id, entry_point="petalgym.envs.petal_alloc:PetalAllocEnv", kwargs=task.env_kwargs()
            )
