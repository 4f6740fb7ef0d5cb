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
* the bound: each episode's larger valid lower bound (:func:`petalgym.bounds.episode_bound`: alone on the
  best chain, or memory capacity) averaged over the test seeds (and over the validation seeds for the
  headroom = (best tuned - bound) / best tuned, with the best tuned baseline re-run there).

Test seeds are touched only by the final runs of each entry. Scores are means over seeds of the
per-episode metric, with 95 % CIs; ``failed`` is the mean number of failed requests per episode.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from petalgym.bounds import episode_bound
from petalgym.deciders import make_decider
from petalgym.errors import PetalgymError
from petalgym.evaluation import DeciderSpec, RunSpec, confidence_interval, run_grid
from petalgym.scenario import Scenario
from petalgym.tasks import Task

__all__ = ["bench", "grid_points"]


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a baseline's knob values, in order."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _label(name: str, kwargs: dict[str, Any]) -> str:
    return name if not kwargs else name + " (" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


def _score(rows: list[dict[str, Any]], metric: str) -> dict[str, float]:
    values = [float(r.get(metric, math.nan)) for r in rows]
    mean, half = confidence_interval(values)
    return {
        "mean": mean,
        "ci95": half,
        "failed": float(np.mean([float(r.get("failed", 0.0)) for r in rows])) if rows else math.nan,
        "seeds": len(rows),
    }


def bench(
    task: Task,
    *,
    test_seeds: Sequence[int] | None = None,
    train_seeds: Sequence[int] | None = None,
    validation_seeds: Sequence[int] | None = None,
    baselines: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """The task's reference table as a JSON-ready dict: ``{"task", "metric", "bound", "deciders": {label:
    {"kind", "mean", "ci95", "failed", ...}}, "grid", "headroom", "normalised", ...}``.

    Args:
        task: the task.
        test_seeds, train_seeds, validation_seeds: override the task's ranges (e.g. for a quick look;
            the published table uses the task's own).
        baselines: override the task's baselines.
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
        runs = [
            RunSpec(scenario, DeciderSpec(name, dict(kwargs), _label(name, kwargs)), seed, {}, task.name)
            for name, kwargs in specs
            for seed in seeds
        ]
        rows = run_grid(runs, workers=workers, progress=progress, description=f"{task.name}: {what}")
        out: dict[str, list[dict]] = {}
        for r in rows:
            out.setdefault(r["decider"], []).append(r)
        return out

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
        ref_mean = tuned[reference]["mean"]
        rand = deciders["random"]["mean"]
        out["normalised"] = {
            k: (rand - v["mean"]) / (rand - ref_mean)
            if rand != ref_mean and not math.isnan(rand)
            else math.nan
            for k, v in deciders.items()
        }
        name = reference.removesuffix(" tuned")
        args = chosen.get(name, {})
        val_rows = run([(name, args)], validation, "validation")[_label(name, args)]
        val = _score(val_rows, metric)["mean"]
        val_bound, val_kind = _bound(scenario, validation, metric)
        out["validation"] = {"reference_mean": val, "bound": val_bound, "bound_kind": val_kind}
        out["headroom"] = (val - val_bound) / val if val > 0 else math.nan
    return out


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
