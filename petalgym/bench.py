"""Reference scores of a petalgym-bench task (bench-design.md's protocol), through the one evaluation
harness.

For a :class:`~petalgym.tasks.Task`:

* every baseline at its defaults, on the test seeds (kind ``baseline``);
* every baseline tuned on the train seeds over the task's grid: the point with the fewest failed requests,
  then the lowest mean metric, re-run on the test seeds (kind ``tuned-baseline``; the grid and its train
  scores are reported);
* ``random``: uniformly random valid actions of the task's environment
  (:class:`~petalgym.envs.adapter.RandomActionsDecider`; kind ``random``), the 0 of the normalised score,
  whose 1 is the best tuned baseline;
* agents (kind ``agent``): the task's shipped agent (:attr:`~petalgym.tasks.Task.agent`) and any others
  given, each with its paired improvement over the reference on the test seeds
  (mean and 95 % CI of (reference - agent) / reference per seed);
* the bound: each episode's larger valid lower bound (:func:`petalgym.bounds.episode_bound`: alone on the
  best chain, or memory capacity) averaged over the test seeds (and over the validation seeds for the
  headroom = (best tuned - bound) / best tuned, with the best tuned baseline re-run there).

Test seeds are touched only by the final runs of each entry. Scores are means over seeds of the
per-episode metric, with 95 % CIs; ``failed`` is the mean number of failed requests per episode.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from petalgym.bounds import episode_bound
from petalgym.deciders import make_decider
from petalgym.errors import PetalgymError
from petalgym.evaluation import DeciderSpec, RunSpec, confidence_interval, run_grid
from petalgym.scenario import Scenario
from petalgym.tasks import Task

__all__ = ["add_agents", "bench", "grid_points", "shipped_agents"]


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a baseline's knob values, in order."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _label(name: str, kwargs: dict[str, Any]) -> str:
    return name if not kwargs else name + " (" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


def _score(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: r["seed"])
    values = [float(r.get(metric, math.nan)) for r in rows]
    mean, half = confidence_interval(values)
    return {
        "mean": mean,
        "ci95": half,
        "failed": float(np.mean([float(r.get("failed", 0.0)) for r in rows])) if rows else math.nan,
        "seeds": len(rows),
        "values": values,
    }


def _run(
    task: Task,
    scenario: Scenario,
    specs: Sequence[tuple[str, dict[str, Any], str]],
    seeds: list[int],
    what: str,
    workers: int,
    progress: bool,
) -> dict[str, list[dict]]:
    """Rows of every (decider, kwargs, label) on every seed, through the one harness, by label."""
    runs = [
        RunSpec(scenario, DeciderSpec(name, dict(kwargs), label), seed, {}, task.name)
        for name, kwargs, label in specs
        for seed in seeds
    ]
    rows = run_grid(runs, workers=workers, progress=progress, description=f"{task.name}: {what}")
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["decider"], []).append(r)
    return out


def bench(
    task: Task,
    *,
    test_seeds: Sequence[int] | None = None,
    train_seeds: Sequence[int] | None = None,
    validation_seeds: Sequence[int] | None = None,
    baselines: Sequence[str] | None = None,
    agents: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """The task's reference table as a JSON-ready dict: ``{"task", "metric", "bound", "deciders": {label:
    {"kind", "mean", "ci95", "failed", ...}}, "grid", "headroom", "normalised", ...}``.

    Args:
        task: the task.
        test_seeds: override the task's test seeds (e.g. for a quick look; the published table uses
            the task's own ranges).
        train_seeds: override the task's train seeds.
        validation_seeds: override the task's validation seeds.
        baselines: override the task's baselines.
        agents: label -> (registered decider, kwargs) of the agents scored (default: the task's shipped
            agent, if it has one), e.g. ``{"mine": ("agent", {"path": "model.npz"})}``.
        workers: processes for the local backend.
        progress: show progress bars.
    """
    test = list(task.test_seeds if test_seeds is None else test_seeds)
    train = list(task.train_seeds if train_seeds is None else train_seeds)
    validation = list(task.validation_seeds if validation_seeds is None else validation_seeds)
    names = list(task.baselines if baselines is None else baselines)
    scenario = task.load_scenario()
    metric = task.metric

    def run(specs: list[tuple[str, dict[str, Any]]], seeds: list[int], what: str) -> dict[str, list[dict]]:
        labelled = [(name, kwargs, _label(name, kwargs)) for name, kwargs in specs]
        return _run(task, scenario, labelled, seeds, what, workers, progress)

    # a decider (or grid point) that cannot model the task is left out, with its reason
    left_out: dict[str, str] = {}

    def plannable(name: str, kwargs: dict[str, Any]) -> bool:
        try:
            check = getattr(make_decider(name, **kwargs), "check_scenario", None)
            if check is not None:
                check(scenario)
        except PetalgymError as exc:
            left_out[_label(name, kwargs)] = str(exc)
            return False
        return True

    names = [n for n in names if plannable(n, {})]
    # tuning on the train seeds
    grid_specs = [
        (n, p) for n in names if task.grid.get(n) for p in grid_points(dict(task.grid[n])) if plannable(n, p)
    ]
    tuned_rows = run(grid_specs, train, "tuning") if grid_specs else {}
    grid_report: dict[str, list[dict[str, Any]]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    for name in names:
        points = [
            p for p in grid_points(dict(task.grid.get(name) or {})) if p and _label(name, p) in tuned_rows
        ]
        if not points:
            continue
        scored = []
        for p in points:
            s = _score(tuned_rows[_label(name, p)], metric)
            scored.append({"args": p, "train_mean": s["mean"], "train_failed": s["failed"]})
        grid_report[name] = scored
        ok = [x for x in scored if not math.isnan(x["train_mean"])]
        if ok:
            best = min(ok, key=lambda x: (x["train_failed"], x["train_mean"]))
            chosen[name] = best["args"]

    # final runs on the test seeds
    random_spec = ("random-actions", {"task": task.name})
    finals = [(n, {}) for n in names] + [(n, a) for n, a in chosen.items() if a] + [random_spec]
    test_rows = run(finals, test, "test")
    deciders: dict[str, dict[str, Any]] = {}
    for name in names:
        deciders[name] = {"kind": "baseline", **_score(test_rows[_label(name, {})], metric)}
    for name, args in chosen.items():
        label = f"{name} tuned"
        deciders[label] = {
            "kind": "tuned-baseline",
            "args": args,
            **_score(test_rows[_label(name, args)], metric),
        }
    deciders["random"] = {"kind": "random", **_score(test_rows[_label(*random_spec)], metric)}

    bound, bound_kind = _bound(scenario, test, metric)
    out: dict[str, Any] = {
        "task": task.id,
        "metric": metric,
        "bound": bound,
        "bound_kind": bound_kind,
        "deciders": deciders,
        "grid": grid_report,
        "seeds": {"train": train, "validation": validation, "test": test},
        "left_out": left_out,
    }
    # the reference: the best tuned baseline on the test seeds among those failing no more than the others
    # (a baseline without knobs is its own tuned version)
    tuned = {
        k: v
        for k, v in deciders.items()
        if (v["kind"] == "tuned-baseline" or (v["kind"] == "baseline" and not task.grid.get(k)))
        and not math.isnan(v["mean"])
    }
    if tuned:
        fewest = min(v["failed"] for v in tuned.values())
        reference = min(
            (k for k, v in tuned.items() if v["failed"] <= fewest), key=lambda k: tuned[k]["mean"]
        )
        out["reference"] = reference
        _normalise(out)
        name = reference.removesuffix(" tuned")
        args = chosen.get(name, {})
        val_rows = run([(name, args)], validation, "validation")[_label(name, args)]
        val = _score(val_rows, metric)["mean"]
        val_bound, val_kind = _bound(scenario, validation, metric)
        out["validation"] = {"reference_mean": val, "bound": val_bound, "bound_kind": val_kind}
        out["headroom"] = (val - val_bound) / val if val > 0 else math.nan
    if agents is None:
        agents = shipped_agents(task)
    if agents:
        add_agents(out, task, agents, workers=workers, progress=progress)
    return out


def shipped_agents(task: Task) -> dict[str, tuple[str, dict[str, Any]]]:
    """The task's shipped agent as :func:`add_agents` takes it (label -> (decider, kwargs)); empty if none."""
    return {task.agent: (task.agent, {})} if task.agent else {}


def _normalise(result: dict[str, Any]) -> None:
    """``result["normalised"]``: every decider's score, 0 = random, 1 = the reference."""
    deciders = result["deciders"]
    ref_mean = deciders[result["reference"]]["mean"]
    rand = deciders["random"]["mean"]
    result["normalised"] = {
        k: (rand - v["mean"]) / (rand - ref_mean) if rand != ref_mean and not math.isnan(rand) else math.nan
        for k, v in deciders.items()
    }


def add_agents(
    result: dict[str, Any],
    task: Task,
    agents: Mapping[str, tuple[str, dict[str, Any]]],
    *,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``agents`` (label -> (registered decider, kwargs)) on ``result``'s test seeds and add them to
    it (kind ``agent``), each with ``improvement``: the mean and 95 % CI over the seeds of (reference -
    agent) / reference, paired by seed; then recompute the normalised scores. ``result`` is a
    :func:`bench` result (one read back from JSON too: a reference without per-seed values is re-run)."""
    scenario = task.load_scenario()
    test = list(result["seeds"]["test"])
    metric = result["metric"]
    rows = _run(
        task,
        scenario,
        [(n, kw, label) for label, (n, kw) in agents.items()],
        test,
        "agents",
        workers,
        progress,
    )
    reference = result.get("reference")
    ref_values = None
    if reference is not None:
        entry = result["deciders"][reference]
        if len(entry.get("values") or []) != len(test):
            name = reference.removesuffix(" tuned")
            spec = [(name, dict(entry.get("args") or {}), reference)]
            entry["values"] = _score(
                _run(task, scenario, spec, test, "reference", workers, progress)[reference], metric
            )["values"]
        ref_values = np.asarray(entry["values"], dtype=float)
    for label in agents:
        score = _score(rows[label], metric)
        entry = {"kind": "agent", "decider": agents[label][0], **score}
        if ref_values is not None:
            mean, half = confidence_interval(list((ref_values - np.asarray(score["values"])) / ref_values))
            entry["improvement"] = {"mean": mean, "ci95": half, "over": reference}
        result["deciders"][label] = entry
    if reference is not None:
        _normalise(result)
    return result


def _bound(scenario: Scenario, seeds: list[int], metric: str) -> tuple[float, str]:
    """The mean over ``seeds`` of each episode's best lower bound (:func:`petalgym.bounds.episode_bound`:
    the larger of alone-on-the-best-chain and memory capacity) and which bound binds on how many."""
    bounds = [episode_bound(scenario, s, metric) for s in seeds]
    capacity = sum(b.binding == "capacity" for b in bounds)
    if capacity == 0:
        kind = "alone on the best chain"
    elif capacity == len(bounds):
        kind = "memory capacity"
    else:
        kind = f"memory capacity on {capacity} of {len(bounds)} seeds, else alone on the best chain"
    return float(np.mean([b.value for b in bounds])), f"{kind} (petalgym.bounds.episode_bound)"
