"""The evaluation harness: run deciders on scenarios over seeds, aggregate with confidence intervals.

Every decider of a grid sees the same arrivals, churn and join order for a given seed (common random
numbers: the simulator derives every stream from the seed), so per-seed differences between deciders are
paired. Results are per-run rows (one per setting x decider x seed) and aggregates per setting x decider
with 95 % Student-t confidence intervals over seeds; they can be printed (rich), written (CSV, JSON) and
plotted (matplotlib bar chart).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from scipy import stats

from petalgym.deciders import Decider, make_decider
from petalgym.errors import PetalgymError, UsageError
from petalgym.scenario import Scenario, load_scenario
from petalgym.simulator import simulate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Metrics aggregated by default: name -> (column title, unit).
DEFAULT_METRICS: dict[str, tuple[str, str]] = {
    "per_token_s": ("per-token", "s"),
    "ttft_s": ("TTFT", "s"),
    "later_token_s": ("later tokens", "s"),
    "wait_s": ("wait", "s"),
    "failed": ("failed", ""),
    "decide_s": ("decider time", "s"),
}


@dataclass(frozen=True)
class DeciderSpec:
    """A decider to build in any process: registry ``name`` + keyword arguments, shown as ``label``; or a
    ready :class:`~petalgym.deciders.Decider` ``instance`` (each run gets a deep copy of it)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    instance: Decider | None = None

    @property
    def display(self) -> str:
        return self.label or self.name

    def build(self) -> Decider:
        if self.instance is not None:
            return copy.deepcopy(self.instance)
        return make_decider(self.name, **self.kwargs)

    @classmethod
    def of(cls, decider: Decider, label: str = "") -> DeciderSpec:
        """The spec of a ready decider (runs use deep copies of it), shown as ``label`` or its name."""
        return cls(decider.name, {}, label, decider)

    @classmethod
    def parse(cls, text: str) -> DeciderSpec:
        """``"milp"`` or ``"milp:solver=cbc,time_limit_s=30"`` (values parsed as YAML)."""
        import yaml

        name, _, rest = text.partition(":")
        kwargs: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise PetalgymError(f"decider {text!r}: expected name:key=value,key=value")
            try:
                kwargs[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise PetalgymError(
                    f"decider {text!r}: the value of {key.strip()!r} is not valid YAML"
                ) from None
        return cls(name.strip(), kwargs, text.strip() if kwargs else "")


@dataclass(frozen=True)
class RunSpec:
    """One simulation: a scenario (+ overrides) under a named ``setting``, one decider, one seed."""

    scenario: Scenario | str
    decider: DeciderSpec
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)
    setting: str = ""


def setting_scenario(base: Scenario | str, overrides: dict[str, Any] | None) -> Scenario:
    """``base`` with ``overrides`` applied, made once per base scenario object and override set (kept in
    the base's memo), so the runs of one setting share one scenario and what it memoises (its TimeModel,
    a decider's offline plan)."""
    if isinstance(base, str) or not overrides:
        return load_scenario(base, overrides or None)
    key = ("evaluation.setting", json.dumps(overrides, sort_keys=True, default=repr))
    return base.memo(key, lambda: load_scenario(base, overrides))


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Simulate ``spec`` and return one flat row: setting, scenario, decider (its ``detail``: the decider's
    description after the run, and its ``note``, if it reported something), seed and the summary."""
    scenario = setting_scenario(spec.scenario, spec.overrides)
    decider = spec.decider.build()
    result = simulate(scenario, decider, seed=spec.seed)
    row: dict[str, Any] = {
        "setting": spec.setting or scenario.name,
        "scenario": scenario.name,
        "decider": spec.decider.display,
        "detail": decider.describe(),
        "note": decider.note,
        "seed": spec.seed,
    }
    row.update(result.summary())
    return row


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of a Student-t confidence interval; half-width nan with fewer than 2 values."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, half


def _run_local(
    specs: Sequence[RunSpec], workers: int, on_row: Callable[[dict[str, Any]], None]
) -> list[dict]:
    rows: list[dict[str, Any] | None] = [None] * len(specs)
    if workers <= 1:
        for i, spec in enumerate(specs):
            rows[i] = run_one(spec)
            on_row(rows[i])
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(run_one, spec): i for i, spec in enumerate(specs)}
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                on_row(rows[futures[fut]])
    return [r for r in rows if r is not None]


def run_grid(
    specs: Sequence[RunSpec],
    *,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: bool = True,
    description: str = "simulating",
) -> list[dict[str, Any]]:
    """Run every spec and return the rows in spec order.

    ``backend="local"`` runs in this process (``workers=1``) or a process pool; ``backend="ray"`` runs
    each spec as a Ray task (see :mod:`petalgym.distributed`). Results do not depend on the backend.
    """
    if backend not in ("local", "ray"):
        raise PetalgymError(f"unknown backend {backend!r} (expected 'local' or 'ray')")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=len(specs))

        def tick(_: dict[str, Any]) -> None:
            bar.advance(task)

        if backend == "ray":
            from petalgym.distributed import run_grid_ray

            return run_grid_ray(specs, address=address, on_row=tick)
        return _run_local(specs, workers, tick)


@dataclass
class Evaluation:
    """Rows of a grid (one per setting x decider x seed) and their aggregates."""

    rows: list[dict[str, Any]]
    metrics: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_METRICS))
    reference: str | None = None  # decider that reductions are computed against, e.g. "petals"

    def settings(self) -> list[str]:
        return list(dict.fromkeys(r["setting"] for r in self.rows))

    def deciders(self) -> list[str]:
        return list(dict.fromkeys(r["decider"] for r in self.rows))

    def aggregate(self) -> list[dict[str, Any]]:
        """Per setting x decider: n seeds, mean and 95 % CI half-width of each metric over the seeds that
        have a value (``<metric>_nan`` counts those that do not, e.g. every request failed), and (with a
        reference decider) the mean per-seed reduction of per-token time vs the reference."""
        out = []
        for setting in self.settings():
            ref = {
                r["seed"]: r["per_token_s"]
                for r in self.rows
                if r["setting"] == setting and r["decider"] == self.reference
            }
            for decider in self.deciders():
                rows = [r for r in self.rows if r["setting"] == setting and r["decider"] == decider]
                if not rows:
                    continue
                agg: dict[str, Any] = {"setting": setting, "decider": decider, "n": len(rows)}
                for m in self.metrics:
                    values = [float(r.get(m, math.nan)) for r in rows]
                    mean, half = confidence_interval(values)
                    agg[m] = mean
                    agg[f"{m}_ci95"] = half
                    agg[f"{m}_nan"] = sum(math.isnan(v) for v in values)  # seeds without a value
                if ref and decider != self.reference:
                    red = [
                        1.0 - r["per_token_s"] / ref[r["seed"]]
                        for r in rows
                        if r["seed"] in ref and ref[r["seed"]] > 0
                    ]
                    agg["reduction"], agg["reduction_ci95"] = confidence_interval(red)
                out.append(agg)
        return out

    def _header_and_cells(self) -> tuple[list[str], list[list[str]]]:
        """Column names and one row of formatted cells (mean ± 95 % CI) per setting x decider."""
        header = ["setting", "decider", "seeds"]
        header += [f"{label} ({unit})" if unit else label for label, unit in self.metrics.values()]
        if self.reference:
            header.append(f"vs {self.reference}")
        rows = []
        for agg in self.aggregate():
            cells = [agg["setting"], agg["decider"], str(agg["n"])]
            for m in self.metrics:
                cell = format_pm(agg[m], agg[f"{m}_ci95"])
                missing = agg[f"{m}_nan"]
                cells.append(f"{cell} ({missing} of {agg['n']} seeds without)" if missing else cell)
            if self.reference:
                red = agg.get("reduction")
                cells.append("-" if red is None else format_pm(red, agg["reduction_ci95"], None, 100, "%"))
            rows.append(cells)
        return header, rows

    def notes(self) -> list[str]:
        """What deciders reported about their runs (``Decider.note``, e.g. a CG-BP |R| fallback), once
        per setting x decider x distinct note."""
        out = []
        for r in self.rows:
            if r.get("note"):
                note = f"{r['setting']} / {r['decider']}: {r['note']}"
                if note not in out:
                    out.append(note)
        return out

    def table(self, title: str = "Evaluation", compact: bool = False) -> Table:
        """A rich table of the aggregates: mean ± 95 % CI per metric (notes: :meth:`notes`).

        Args:
            title: the table's title.
            compact: only the columns a reader compares first (the setting when there are several,
                decider, per-token time, failed, the reduction vs the reference), without vertical
                rules, so that it fits 80 columns; the markdown, CSV and JSON keep every column.
        """
        from rich import box

        header, rows = self._header_and_cells()
        keep = list(range(len(header)))
        if compact:
            wanted = {"decider", "per-token (s)", "failed"}
            keep = [
                i
                for i, name in enumerate(header)
                if name in wanted
                or name.startswith("vs ")
                or (name == "setting" and len(self.settings()) > 1)
            ]
        notes = self.notes()
        table = Table(
            title=title,
            caption="\n".join(notes) if notes else None,
            box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
            pad_edge=not compact,
        )
        for i in keep:
            left = header[i] in ("setting", "decider")
            table.add_column(header[i], justify="left" if left else "right", no_wrap=compact)
        for cells in rows:
            table.add_row(*(cells[i] for i in keep))
        return table

    def to_markdown(self, path: str | Path | None = None) -> str:
        """The aggregates as a GitHub markdown table (the rich table's cells); also written to ``path``."""
        header, rows = self._header_and_cells()
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows]
        lines += [f"\n_Note: {note}._" for note in self.notes()]
        text = "\n".join(lines) + "\n"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | Path) -> Path:
        """Write the per-run rows."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def to_json(self, path: str | Path) -> Path:
        """Write rows and aggregates (NaN as null)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"reference": self.reference, "aggregate": self.aggregate(), "rows": self.rows}
        path.write_text(json.dumps(_nan_to_none(payload), indent=1))
        return path

    def plot(self, path: str | Path, metric: str = "per_token_s", title: str = "") -> Path:
        """Save :meth:`chart` of ``metric`` to ``path`` (PNG at :data:`PLOT_DPI`); returns the path."""
        fig = self.chart(metric, title)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=PLOT_DPI)
        return path

    def chart(self, metric: str = "per_token_s", title: str = "") -> Figure:
        """A bar chart of ``metric``: mean with its 95 % CI (error bar and printed "mean ± CI") per
        decider, one distinct colour per decider; one setting gives horizontal bars labelled by decider,
        several give groups of bars per setting with a legend (values printed while there are at most 60
        bars). At most :data:`MAX_FIGURE_PX` pixels wide and high."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        aggs = {(a["setting"], a["decider"]): a for a in self.aggregate()}
        settings, deciders = self.settings(), self.deciders()
        colours = decider_colours(deciders)
        label, unit = self.metrics.get(metric, (metric, ""))
        axis_label = f"{label} ({unit})" if unit else label

        def value(setting: str, decider: str) -> tuple[float, float]:
            a = aggs.get((setting, decider))
            return (a[metric], a[f"{metric}_ci95"]) if a else (math.nan, math.nan)

        max_in = MAX_FIGURE_PX / PLOT_DPI
        if len(settings) == 1:
            fig = Figure(figsize=(min(8.0, max_in), min(1.2 + 0.32 * len(deciders), max_in)), dpi=PLOT_DPI)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            means, errs = zip(*(value(settings[0], d) for d in deciders), strict=True)
            ys = np.arange(len(deciders))[::-1]
            ax.barh(ys, means, xerr=np.nan_to_num(errs), capsize=2, color=[colours[d] for d in deciders])
            ax.set_yticks(ys, deciders, fontsize="small")
            top = np.nanmax([m + (e if e == e else 0.0) for m, e in zip(means, errs, strict=True)] + [0.0])
            for y, m, e in zip(ys, means, errs, strict=True):
                if m == m:
                    ax.text(
                        m + (e if e == e else 0.0) + 0.01 * top, y, format_pm(m, e), va="center", fontsize=7
                    )
            ax.set_xlim(0, top * 1.3 if top > 0 else 1.0)
            ax.set_xlabel(axis_label)
            ax.grid(axis="x", alpha=0.3)
            ax.set_title(title or settings[0], fontsize="medium")
        else:
            n = len(settings) * len(deciders)
            fig = Figure(figsize=(min(max(7.0, 2.5 + 0.3 * n), max_in), 4.5), dpi=PLOT_DPI)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            width = 0.8 / max(len(deciders), 1)
            for k, decider in enumerate(deciders):
                means, errs = zip(*(value(s, decider) for s in settings), strict=True)
                xs = np.arange(len(settings)) + (k - (len(deciders) - 1) / 2) * width
                ax.bar(
                    xs,
                    means,
                    width,
                    yerr=np.nan_to_num(errs),
                    capsize=2,
                    label=decider,
                    color=colours[decider],
                )
                if n <= 60:  # values on the bars while they stay legible
                    for x, m, e in zip(xs, means, errs, strict=True):
                        if m == m:
                            ax.text(x, m + (e if e == e else 0.0), format_pm(m, e), ha="center",
                                    va="bottom", rotation=90, fontsize=6)  # fmt: skip
            ax.set_ylabel(axis_label)
            ax.set_xticks(np.arange(len(settings)), settings, rotation=20, ha="right", fontsize="small")
            ax.margins(y=0.15)
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
            ax.grid(axis="y", alpha=0.3)
            if title:
                ax.set_title(title, fontsize="medium")
        fig.tight_layout()
        return fig


#: Resolution (dots per inch) and largest width or height (pixels) of the saved charts.
PLOT_DPI = 120
MAX_FIGURE_PX = 1920


def decider_colours(deciders: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """One distinct colour per decider, in order (matplotlib's tab20, then tab20b and tab20c: 60 colours)."""
    from matplotlib import colormaps

    palette = [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    return {d: palette[i % len(palette)] for i, d in enumerate(deciders)}


def evaluate(
    scenario: Scenario | str,
    deciders: Iterable[DeciderSpec | Decider | str],
    seeds: Iterable[int],
    *,
    settings: dict[str, dict[str, Any]] | None = None,
    reference: str | None = None,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> Evaluation:
    """Run every decider on ``scenario`` for every seed (and every named override set in ``settings``).

    ``deciders``: registered names (``"milp:solver=cbc"``), :class:`DeciderSpec` or ready
    :class:`~petalgym.deciders.Decider` instances (each run gets a deep copy). Before any simulation,
    every decider is built once and every setting loaded, so a bad name, argument, file or override
    fails at once; seeds must be integers >= 0 and at least one. Returns an :class:`Evaluation`;
    ``reference`` names the decider reductions are computed against.
    """
    specs_d = [
        d
        if isinstance(d, DeciderSpec)
        else DeciderSpec.of(d)
        if isinstance(d, Decider)
        else DeciderSpec.parse(d)
        for d in deciders
    ]
    if not specs_d:
        raise UsageError("evaluate: no decider given")
    labels = [d.display for d in specs_d]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup is not None:
        raise UsageError(f"evaluate: two deciders are labelled {dup!r}; give them distinct labels")
    seeds = list(seeds)
    if not seeds:
        raise UsageError("evaluate: no seeds given (need at least one)")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UsageError(f"evaluate: seeds must be integers >= 0, got {seed!r}")
    settings = settings or {"": {}}
    base = load_scenario(scenario)
    for overrides in settings.values():  # fail fast on bad overrides, before any simulation
        setting_scenario(base, overrides)
    for d in specs_d:  # ... and on bad deciders (unknown names or arguments, missing model files)
        d.build()
    specs = [
        RunSpec(base, d, int(seed), overrides, setting or base.name)
        for setting, overrides in settings.items()
        for d in specs_d
        for seed in seeds
    ]
    if workers <= 0:
        workers = os.cpu_count() or 1
    rows = run_grid(specs, workers=workers, backend=backend, address=address, progress=progress)
    return Evaluation(rows, reference=reference)


def format_pm(
    mean: float | None, half: float | None, digits: int | None = None, scale: float = 1.0, unit: str = ""
) -> str:
    """``"mean ± half"`` (both times ``scale``) with ``digits`` decimals (default: 3 below 100, else 1);
    ``"-"`` for a missing or NaN mean, no ``±`` part for a missing or NaN half-width."""
    if mean is None or math.isnan(mean):
        return "-"
    m = scale * mean
    if digits is None:
        digits = 3 if abs(m) < 100 else 1
    if half is None or math.isnan(half):
        return f"{m:.{digits}f}{unit}"
    return f"{m:.{digits}f} ± {scale * half:.{digits}f}{unit}"


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj
