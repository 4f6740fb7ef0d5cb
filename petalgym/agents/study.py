"""Where does learning help? Trained agents beside CG-BP + WS-RR and PETALS on held-out seeds.

A *setting* is a scenario plus overrides (load, churn). A *study agent* is a training recipe: env id,
the setting it trains on, hyper-parameters, timesteps and seed. :func:`run_study` trains the agents that are
missing (or uses shipped models), then evaluates every agent on every setting it is compatible with, beside
the baselines, through the evaluation harness (:func:`petalgym.evaluation.evaluate`) on seeds
``seed0 .. seed0 + n - 1`` -- simulator seeds no training or validation episode used (training draws from
:data:`~petalgym.agents.config.TRAIN_SIM_SEEDS`, validation from
:data:`~petalgym.agents.config.VALIDATION_SIM_SEED_BASE` + i). Reductions are paired per seed against
CG-BP + WS-RR (common random numbers), with 95 % Student-t confidence intervals.

``benchmarks/agents_study.py`` runs it and prints / writes the tables (``agents/STUDY.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petalgym.agents.config import TEST_SEED_LIMIT
from petalgym.errors import PetalgymError
from petalgym.evaluation import DeciderSpec, Evaluation, evaluate, format_pm

#: The churn of ``bellcanada-26-churn`` made faster: online ~10 min, offline ~5 min (a third offline).
FAST_CHURN: dict[str, Any] = {
    "churn.lifetime_s": {"dist": "exponential", "mean": 600},
    "churn.downtime_s": {"dist": "exponential", "mean": 300},
}


@dataclass(frozen=True)
class StudySetting:
    """A scenario (built-in name or YAML path) with ``overrides``, shown as ``name``."""

    name: str
    scenario: str
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""


#: The settings of the study, by name.
SETTINGS: dict[str, StudySetting] = {
    s.name: s
    for s in (
        StudySetting(
            "clustered-9", "clustered-9", {}, "the paper's testbed: 2 A100 + 7 MIG, 0.1 req/s, 100 requests"
        ),
        StudySetting(
            "clustered-9 @1/s",
            "clustered-9",
            {"workload.arrival_rate": 1.0, "workload.num_requests": 200},
            "clustered-9 at 1 request/s (200 requests): heavy load, CG-BP's |R| still fits",
        ),
        StudySetting(
            "clustered-9 @2/s",
            "clustered-9",
            {"workload.arrival_rate": 2.0, "workload.num_requests": 200},
            "overload: 2 requests/s (200 requests); the design |R| = 177 pushes blocks onto the MIG slices",
        ),
        StudySetting(
            "clustered-9 @4/s",
            "clustered-9",
            {"workload.arrival_rate": 4.0, "workload.num_requests": 200},
            "overload: 4 requests/s (200 requests); |R| = R_max = 202",
        ),
        StudySetting("bellcanada-26", "bellcanada-26", {}, "26 servers (5 A100 + 21 MIG), 0.1 req/s"),
        StudySetting(
            "bellcanada-26 @2/s",
            "bellcanada-26",
            {"workload.arrival_rate": 2.0, "workload.num_requests": 200},
            "bellcanada-26 at 2 requests/s (200 requests)",
        ),
        StudySetting(
            "bellcanada-26-churn",
            "bellcanada-26-churn",
            {},
            "churn (online ~20 min, offline ~5 min), 0.2 req/s for 1 h, l_out 64..256",
        ),
        StudySetting(
            "bellcanada-26-churn fast",
            "bellcanada-26-churn",
            dict(FAST_CHURN),
            "faster churn (online ~10 min, offline ~5 min)",
        ),
    )
}


@dataclass(frozen=True)
class StudyAgent:
    """A training recipe: ``algo`` on ``env_id`` on ``scenario`` with ``overrides`` (and, if given, a
    ``mixture`` of override variants, one drawn per episode), ``hyperparams`` (dotted-key overrides of
    ``configs/agents/<algo>.yaml``), ``timesteps`` decisions from ``seed``. ``shipped``: the registry name of
    the shipped model trained by exactly this recipe (used instead of training when installed)."""

    name: str
    env_id: str
    scenario: str
    timesteps: int
    overrides: dict[str, Any] = field(default_factory=dict)
    mixture: tuple[dict[str, Any], ...] = ()
    seed: int = 0
    algo: str = "maskable-ppo"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    n_envs: int = 1
    eval_episodes: int | None = None
    shipped: str | None = None
    description: str = ""

    def command(self, output: str | Path, export: str | Path | None = None) -> str:
        """The ``petalgym train`` command line of this recipe."""
        parts = [
            "petalgym train",
            f"--env {self.env_id}",
            f"--scenario {self.scenario}",
            f"--algo {self.algo}",
        ]
        for key, value in self.overrides.items():
            parts.append(f"--set {_arg(f'{key}={_yaml(value)}')}")
        if self.mixture:
            for key in self.mixture[0]:
                values = ",".join(_yaml(v[key]) for v in self.mixture)
                parts.append(f"--mix {_arg(f'{key}={values}')}")
        parts += [f"--timesteps {self.timesteps}", f"--seed {self.seed}", f"--n-envs {self.n_envs}"]
        for key, value in self.hyperparams.items():
            parts.append(f"--hp {_arg(f'{key}={_yaml(value)}')}")
        if self.eval_episodes is not None:
            parts.append(f"--eval-episodes {self.eval_episodes}")
        parts.append(f"--output {output}")
        if export is not None:
            parts.append(f"--export {export}")
        return " ".join(parts)


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _arg(text: str) -> str:
    import shlex

    return shlex.quote(text)


#: The agents of the study (all MaskablePPO with the shipped configs/agents/maskable-ppo.yaml).
AGENTS: dict[str, StudyAgent] = {
    a.name: a
    for a in (
        StudyAgent(
            "ppo-routing",
            "PetalRouting-v0",
            "clustered-9",
            100_000,
            shipped="ppo-routing",
            description="routing on clustered-9 (the paper's testbed)",
        ),
        StudyAgent(
            "ppo-placement",
            "PetalPlacement-v0",
            "clustered-9",
            30_000,
            shipped="ppo-placement",
            description="placement on clustered-9 (the paper's testbed)",
        ),
        StudyAgent(
            "ppo-placement-2rps",
            "PetalPlacement-v0",
            "clustered-9",
            40_000,
            overrides={"workload.arrival_rate": 2.0, "workload.num_requests": 200},
            shipped="ppo-placement-2rps",
            description="placement on clustered-9 at 2 requests/s only",
        ),
        StudyAgent(
            "ppo-placement-load",
            "PetalPlacement-v0",
            "clustered-9",
            100_000,
            overrides={"workload.num_requests": 200},
            mixture=tuple({"workload.arrival_rate": r} for r in (0.1, 1, 2, 4)),
            hyperparams={"warm_start.decisions": 12_000},
            eval_episodes=8,
            shipped="ppo-placement-load",
            description="placement on clustered-9, one of 0.1, 1, 2, 4 requests/s per episode",
        ),
        StudyAgent(
            "ppo-placement-churn",
            "PetalPlacement-v0",
            "bellcanada-26-churn",
            30_000,
            description="placement on bellcanada-26-churn (not shipped: --train, about 4 minutes)",
        ),
        StudyAgent(
            "ppo-routing-churn-fast",
            "PetalRouting-v0",
            "bellcanada-26-churn",
            60_000,
            overrides=dict(FAST_CHURN),
            description="routing on bellcanada-26-churn, fast churn (not shipped: --train, about 5 minutes)",
        ),
    )
}

#: Baselines every setting is evaluated with (registry names); ``cg-bp-ws-rr`` is the reference.
BASELINES: tuple[str, ...] = ("petals", "cg-bp-ws-rr")
REFERENCE = "cg-bp-ws-rr"
#: Hand-tuned variants shown beside the agents: CG-BP + WS-RR designed for half its |R| rule (the placement
#: agents' choices under overload match it, so it tells how much of their gain a fixed tuning gets).
TUNED: tuple[DeciderSpec, ...] = (
    DeciderSpec("cg-bp-ws-rr", {"sessions_factor": 0.5}, label="cg-bp-ws-rr R/2"),
)


def model_path(agent: StudyAgent, root: str | Path) -> Path:
    """Where :func:`train_agent` puts the model of ``agent`` under ``root`` (or the shipped model)."""
    if agent.shipped is not None:
        from petalgym.agents.policy import pretrained_path

        try:
            return pretrained_path(agent.shipped)
        except PetalgymError:
            pass
    return Path(root) / agent.name.replace("/", "_") / "model.zip"


def train_agent(agent: StudyAgent, root: str | Path, progress: bool = True) -> Path:
    """Train ``agent`` under ``root/<name>`` (no-op if its model exists) and return the model path."""
    path = model_path(agent, root)
    if path.is_file():
        return path
    from petalgym.agents.train import train

    out = Path(root) / agent.name.replace("/", "_")
    train(
        agent.env_id,
        output=out,
        scenario=agent.scenario,
        algo=agent.algo,
        timesteps=agent.timesteps,
        seed=agent.seed,
        n_envs=agent.n_envs,
        hyperparams=dict(agent.hyperparams),
        scenario_overrides=dict(agent.overrides),
        scenario_mixture=[dict(v) for v in agent.mixture] or None,
        n_eval_episodes=agent.eval_episodes,
        progress=progress,
        command=agent.command(out),
    )
    return out / "model.zip"


def evaluate_settings(
    settings: Iterable[str],
    agents: dict[str, Path],
    seeds: Sequence[int],
    baselines: Sequence[str] = BASELINES,
    extra: Sequence[DeciderSpec] = TUNED,
    workers: int = 1,
    progress: bool = True,
) -> Evaluation:
    """Every setting with the baselines, ``extra`` deciders and every agent (label -> model path), on
    ``seeds`` (all must be below :data:`~petalgym.agents.config.TEST_SEED_LIMIT`). One evaluation per
    scenario file; rows of all of them in one :class:`~petalgym.evaluation.Evaluation` (reference
    CG-BP + WS-RR)."""
    bad = [s for s in seeds if not 0 <= s < TEST_SEED_LIMIT]
    if bad:
        raise PetalgymError(
            f"study seeds must be in [0, {TEST_SEED_LIMIT}) (held out from training), got {bad[0]}"
        )
    specs = [DeciderSpec(b) for b in baselines] + list(extra)
    specs += [DeciderSpec("agent", {"path": str(p)}, label=label) for label, p in agents.items()]
    rows: list[dict[str, Any]] = []
    by_scenario: dict[str, dict[str, dict[str, Any]]] = {}
    for name in settings:
        s = SETTINGS[name]
        by_scenario.setdefault(s.scenario, {})[name] = s.overrides
    for scenario, group in by_scenario.items():
        ev = evaluate(
            scenario, specs, seeds, settings=group, reference=REFERENCE, workers=workers, progress=progress
        )
        rows.extend(ev.rows)
    order = {name: i for i, name in enumerate(settings)}
    rows.sort(key=lambda r: order.get(r["setting"], len(order)))
    return Evaluation(rows, reference=REFERENCE)


def summary_rows(ev: Evaluation) -> list[dict[str, Any]]:
    """One row per setting x decider: mean ± 95 % CI of per-token time, waiting, failures, and the paired
    per-seed reduction of per-token time vs CG-BP + WS-RR (positive = the decider is faster)."""
    out = []
    for agg in ev.aggregate():
        out.append(
            {
                "setting": agg["setting"],
                "decider": agg["decider"],
                "n": agg["n"],
                "per_token_s": agg["per_token_s"],
                "per_token_ci95": agg["per_token_s_ci95"],
                "wait_s": agg["wait_s"],
                "wait_ci95": agg["wait_s_ci95"],
                "failed": agg["failed"],
                "failed_ci95": agg["failed_ci95"],
                "reduction": agg.get("reduction"),
                "reduction_ci95": agg.get("reduction_ci95"),
            }
        )
    return out


#: Columns of :func:`summary_cells` (the study's tables).
SUMMARY_COLUMNS = ("setting", "decider", "seeds", "per-token (s)", "wait (s)", "failed", "vs CG-BP + WS-RR")


def summary_cells(r: dict[str, Any]) -> list[str]:
    """One :func:`summary_rows` row as formatted cells (:data:`SUMMARY_COLUMNS`): mean ± 95 % CI."""
    red = "-" if r["decider"] == REFERENCE else format_pm(r["reduction"], r["reduction_ci95"], 1, 100.0, " %")
    return [
        r["setting"],
        r["decider"],
        str(r["n"]),
        format_pm(r["per_token_s"], r["per_token_ci95"], 3),
        format_pm(r["wait_s"], r["wait_ci95"], 2),
        format_pm(r["failed"], r["failed_ci95"], 1),
        red,
    ]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary rows as a GitHub markdown table (mean ± 95 % CI over the seeds)."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(summary_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def replace_between_markers(text: str, block: str, name: str) -> str:
    """``text`` with the lines between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced by ``block``
    (PetalgymError if the markers are missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise PetalgymError(f"markers {start} ... {end} not found")
    return text[: i + len(start)] + "\n" + block.rstrip() + "\n" + text[j:]


__all__ = [
    "AGENTS",
    "BASELINES",
    "FAST_CHURN",
    "REFERENCE",
    "SETTINGS",
    "SUMMARY_COLUMNS",
    "TUNED",
    "StudyAgent",
    "StudySetting",
    "evaluate_settings",
    "markdown_table",
    "model_path",
    "replace_between_markers",
    "summary_cells",
    "summary_rows",
    "train_agent",
]
