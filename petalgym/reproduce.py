"""Reproduce the paper's experiments (docs/reproducing.md) with petalgym's simulator, twice over.

Per setting of the paper's grid (clustered with the client in cluster 0, 1 or 2; scattered on AboveNet,
BellCanada and GTS-CE; BellCanada with 26 servers; lambda in {0.1, 0.5}, l_out in {64, 128}) this runs

* the **replay**: the authors' inputs (the ``*-authors`` scenarios, read from their scripts) and their
  mechanisms (the ``petals-paper`` and ``cg-bp-ws-rr-paper`` deciders: fixed paths, back-off-rounded
  waits, allocation delays that hold the cache), at the arrival rate the authors' script runs (the
  clustered script hard-codes 1 request/s, the large BellCanada script 0.5/s with 50 requests);
* petalgym's **defaults**: the shipped scenarios with ``petals`` (PETALS' own rules) and
  ``cg-bp-ws-rr``;
* for the clustered setting with the client in cluster 0, the replay on **the script's own arrival
  draws** (MATLAB's ``rng(42, 'twister')`` stream, which numpy's legacy MT19937 reproduces exactly; the
  PETALS join order still varies with the seed, MATLAB's ``randperm`` being unavailable).

Every number of ours is computed here, with common random numbers over the seeds; the paper's figures
below are its published measurements, quoted for comparison only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from petalgym.design import design_num_sessions
from petalgym.evaluation import DeciderSpec, Evaluation, RunSpec, confidence_interval, format_pm, run_grid
from petalgym.scenario import load_scenario

PETALS = "petals"
PROPOSED = "cg-bp-ws-rr"
PETALS_REPLAY = "petals-paper"
PROPOSED_REPLAY = "cg-bp-ws-rr-paper"
REPLAY_DECIDERS = (PETALS_REPLAY, PROPOSED_REPLAY)
ABLATIONS = ("petals-opt-order", "petals-opt-number", "petals-opt-rr")

#: The paper's measured average per-token times (s): clustered setting, client in cluster 0, lambda=0.1.
PAPER_PER_TOKEN: dict[tuple[str, float, int], dict[str, float]] = {
    ("clustered, client 0", 0.1, 64): {PETALS: 6.23, PROPOSED: 1.92},
    ("clustered, client 0", 0.1, 128): {PETALS: 4.76, PROPOSED: 1.43},
}
#: The paper's reported range of reductions in average per-token time vs PETALS, per setting group.
PAPER_REDUCTION: dict[str, tuple[float, float]] = {"clustered": (0.64, 0.77), "scattered": (0.63, 0.80)}

#: MATLAB's ``rng(42, 'twister')`` seed of test_general_case_online.m, and the uniforms its clustered
#: branch draws before the arrivals (the client's RTTs to 7 MIG slices and 2 A100s).
SCRIPT_RNG_SEED = 42
SCRIPT_DRAWS_BEFORE_ARRIVALS = 9
#: The setting replayed on the script's own arrival draws.
DRAWS_SETTING = "clustered, client 0"


@dataclass(frozen=True)
class Setting:
    """One row group of the paper's grid.

    Args:
        group: "clustered" or "scattered" (the paper's reduction ranges are per group).
        label: the row label.
        scenario: petalgym's shipped scenario (the defaults), with ``overrides``.
        authors_scenario: the scenario with the authors' inputs, with ``authors_overrides``.
        script_rate: the arrival rate (requests/s) the authors' script hard-codes for this setting, which
            the replay keeps whatever the row's lambda (None: the replay runs at the row's lambda).
        authors_kwargs: keyword arguments of the ``-paper`` deciders (e.g. another allocation delay).
    """

    group: str
    label: str
    scenario: str
    overrides: dict[str, Any]
    authors_scenario: str
    authors_overrides: dict[str, Any] = field(default_factory=dict)
    script_rate: float | None = None
    authors_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)


_NINE_SERVERS = [{"profile": "a100", "count": 2}, {"profile": "mig-1g", "count": 7}]

SETTINGS: tuple[Setting, ...] = (
    *(
        Setting("clustered", f"clustered, client {c}", "clustered-9", {"clients.0.location": c},
                "clustered-9-authors", {"clients.0.location": c}, script_rate=1.0)
        for c in (0, 1, 2)
    ),
    Setting("scattered", "AboveNet", "abovenet", {}, "abovenet-authors"),
    Setting("scattered", "BellCanada", "bellcanada-26", {"servers": _NINE_SERVERS}, "bellcanada-authors"),
    Setting("scattered", "GTS-CE", "gtsce", {}, "gtsce-authors"),
    Setting("scattered", "BellCanada, 26 servers", "bellcanada-26", {}, "bellcanada-26-authors",
            script_rate=0.5, authors_kwargs={PETALS_REPLAY: {"allocation_delay_s": 350.0}}),
)  # fmt: skip
RATES = (0.1, 0.5)
LENGTHS = (64, 128)


def script_arrival_times(
    num_requests: int,
    rate_per_s: float,
    seed: int = SCRIPT_RNG_SEED,
    skipped: int = SCRIPT_DRAWS_BEFORE_ARRIVALS,
) -> np.ndarray:
    """The arrival times (s) the authors' script draws: MATLAB's ``rng(seed, 'twister')``, ``skipped``
    uniforms spent before, then exponential gaps ``-log(u) / rate`` (MATLAB's exprnd) with the first gap
    set to 0. numpy's legacy ``RandomState`` is the same MT19937 with the same seeding and 53-bit uniforms,
    so these are the script's numbers (its inter_arrivals.txt for the scattered branch, 28 draws skipped)."""
    stream = np.random.RandomState(seed)
    stream.random_sample(skipped)
    gaps = -np.log(stream.random_sample(num_requests)) / rate_per_s
    gaps[0] = 0.0
    return np.cumsum(gaps)


def script_draws_overrides(scenario: str, overrides: dict[str, Any], l_out: int) -> dict[str, Any]:
    """``overrides`` plus an inline trace of the script's arrival draws at the scenario's rate."""
    sc = load_scenario(scenario, overrides)
    w = sc.workload
    n = int(w.num_requests or 0)
    times = script_arrival_times(n, w.arrival_rate)
    l_in = int(w.l_in.mean)
    trace = {"arrival_s": [float(t) for t in times], "l_in": [l_in] * n, "l_out": [l_out] * n}
    return dict(overrides, **{"workload.trace": trace, "workload.num_requests": None})


def _key(kind: str, setting: Setting, rate: float, l_out: int) -> str:
    return f"{kind} | {setting.label} | lambda={rate:g} | l_out={l_out}"


def replay_rate(setting: Setting, rate: float) -> float:
    """The arrival rate (requests/s) the replay of ``setting`` runs at for the row's ``rate``."""
    return rate if setting.script_rate is None else setting.script_rate


@dataclass
class PaperGrid:
    """The runs of :func:`paper_grid`: petalgym's ``defaults`` (reductions vs ``petals``) and the
    ``replay`` of the authors' simulator (reductions vs ``petals-paper``; settings ``replay | ...`` and
    ``draws | ...``)."""

    defaults: Evaluation
    replay: Evaluation

    def combined(self) -> Evaluation:
        """Every run in one :class:`Evaluation` (one CSV)."""
        return Evaluation(self.defaults.rows + self.replay.rows)


def paper_grid(
    seeds: Sequence[int],
    *,
    ablations: bool = False,
    settings: Sequence[Setting] = SETTINGS,
    rates: Sequence[float] = RATES,
    lengths: Sequence[int] = LENGTHS,
    draws: bool = True,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> PaperGrid:
    """Run the paper's grid (defaults, replay and, with ``draws``, the clustered client-0 replay on the
    script's arrival draws) over ``seeds``."""
    defaults = [DeciderSpec(PETALS), DeciderSpec(PROPOSED)] + [DeciderSpec(a) for a in ABLATIONS if ablations]
    specs: list[RunSpec] = []
    replayed: set[str] = set()
    for s in settings:
        paper_deciders = [DeciderSpec(d, dict(s.authors_kwargs.get(d, {}))) for d in REPLAY_DECIDERS]
        for rate in rates:
            for l_out in lengths:
                overrides = dict(s.overrides, **{"workload.arrival_rate": rate, "workload.l_out": l_out})
                load_scenario(s.scenario, overrides)  # validate before running anything
                key = _key("defaults", s, rate, l_out)
                specs += [RunSpec(s.scenario, d, seed, overrides, key) for d in defaults for seed in seeds]
                authors = dict(s.authors_overrides, **{"workload.l_out": l_out})
                if s.script_rate is None:
                    authors["workload.arrival_rate"] = rate
                runs = [("replay", authors, paper_deciders)]
                if draws and s.label == DRAWS_SETTING:
                    # the script's |R| rule uses its rate, not the drawn trace's mean rate
                    sessions = design_num_sessions(load_scenario(s.authors_scenario, authors))
                    fixed = [DeciderSpec(PETALS_REPLAY, dict(s.authors_kwargs.get(PETALS_REPLAY, {}))),
                             DeciderSpec(PROPOSED_REPLAY, {**s.authors_kwargs.get(PROPOSED_REPLAY, {}),
                                                           "num_sessions": sessions})]  # fmt: skip
                    runs.append(("draws", script_draws_overrides(s.authors_scenario, authors, l_out), fixed))
                for kind, over, deciders in runs:
                    key = _key(kind, s, replay_rate(s, rate), l_out)
                    if key in replayed:  # the script's rate: the same replay for every lambda
                        continue
                    replayed.add(key)
                    load_scenario(s.authors_scenario, over)
                    name = s.authors_scenario
                    specs += [RunSpec(name, d, seed, over, key) for d in deciders for seed in seeds]
    rows = run_grid(
        specs, workers=workers, backend=backend, address=address, progress=progress, description="paper grid"
    )
    return PaperGrid(
        Evaluation([r for r in rows if r["setting"].startswith("defaults |")], reference=PETALS),
        Evaluation([r for r in rows if not r["setting"].startswith("defaults |")], reference=PETALS_REPLAY),
    )


def _parse_key(key: str) -> tuple[str, str, float, int]:
    kind, label, rate_txt, l_txt = (p.strip() for p in key.split("|"))
    return kind, label, float(rate_txt.split("=")[1]), int(l_txt.split("=")[1])


def _pair(
    aggs: dict[tuple[str, str], dict[str, Any]], key: str, petals: str, proposed: str
) -> dict[str, Any]:
    """Mean ± CI of PETALS' and the proposed method's per-token time and the reduction in one setting."""
    a, b = aggs.get((key, petals)), aggs.get((key, proposed))
    if a is None or b is None:
        return {}
    return {
        "petals_s": a["per_token_s"],
        "petals_ci95": a["per_token_s_ci95"],
        "proposed_s": b["per_token_s"],
        "proposed_ci95": b["per_token_s_ci95"],
        "reduction": b.get("reduction", math.nan),
        "reduction_ci95": b.get("reduction_ci95", math.nan),
    }


def comparison_rows(grid: PaperGrid, settings: Sequence[Setting] = SETTINGS) -> list[dict[str, Any]]:
    """One row per setting x lambda x l_out of the grid: the replay's and the defaults' mean per-token
    times (95 % CIs) and reductions vs PETALS."""
    defaults = {(a["setting"], a["decider"]): a for a in grid.defaults.aggregate()}
    replay = {(a["setting"], a["decider"]): a for a in grid.replay.aggregate()}
    out = []
    for s in settings:
        for key in grid.defaults.settings():
            _, label, rate, l_out = _parse_key(key)
            if label != s.label:
                continue
            ours = _pair(defaults, key, PETALS, PROPOSED)
            rr = replay_rate(s, rate)
            again = _pair(replay, _key("replay", s, rr, l_out), PETALS_REPLAY, PROPOSED_REPLAY)
            out.append(
                {
                    "group": s.group,
                    "setting": s.label,
                    "lambda": rate,
                    "l_out": l_out,
                    "replay_lambda": rr,
                    "defaults": ours,
                    "replay": again,
                }
            )
    return out


@dataclass(frozen=True)
class PaperCell:
    """One published number (or range) and ours beside it: ``(mean, ci95)`` pairs, or ``(low, high)`` for
    a range; ``unit`` is "s" (per-token time) or "%" (reduction)."""

    name: str
    unit: str
    paper: tuple[float, float]
    replay: tuple[float, float] | None
    draws: tuple[float, float] | None
    defaults: tuple[float, float] | None
    is_range: bool = False


_CELL_FIELDS = (
    ("petals_s", "petals_ci95", "PETALS per-token"),
    ("proposed_s", "proposed_ci95", "CG-BP + WS-RR per-token"),
    ("reduction", "reduction_ci95", "reduction"),
)


def paper_cells(grid: PaperGrid, settings: Sequence[Setting] = SETTINGS) -> list[PaperCell]:
    """Every number the paper publishes for this grid beside the replay, the replay on the script's draws
    and the defaults: the per-token times and reductions of the clustered setting (client 0, lambda 0.1),
    and the reduction ranges of the clustered and scattered groups (over our cells of that group)."""
    rows = comparison_rows(grid, settings)
    draws = {(a["setting"], a["decider"]): a for a in grid.replay.aggregate()}
    by_label = {s.label: s for s in settings}
    cells: list[PaperCell] = []
    for (label, rate, l_out), paper in PAPER_PER_TOKEN.items():
        row = next((r for r in rows if (r["setting"], r["lambda"], r["l_out"]) == (label, rate, l_out)), None)
        if row is None or label not in by_label:
            continue
        drawn = _pair(draws, _key("draws", by_label[label], replay_rate(by_label[label], rate), l_out),
                      PETALS_REPLAY, PROPOSED_REPLAY)  # fmt: skip
        where = f"{label}, λ={rate:g}, l_out={l_out}"
        published = {
            "petals_s": paper[PETALS],
            "proposed_s": paper[PROPOSED],
            "reduction": 1.0 - paper[PROPOSED] / paper[PETALS],
        }
        for field_name, ci, text in _CELL_FIELDS:

            def pick(d: dict[str, Any], f: str = field_name, c: str = ci) -> tuple[float, float] | None:
                return (d[f], d[c]) if d else None

            cells.append(
                PaperCell(
                    f"{where}: {text}",
                    "%" if field_name == "reduction" else "s",
                    (published[field_name], math.nan),
                    pick(row["replay"]),
                    pick(drawn),
                    pick(row["defaults"]),
                )
            )
    for group, (lo, hi) in PAPER_REDUCTION.items():
        members = [r for r in rows if r["group"] == group]
        if not members:
            continue

        def span(kind: str, members: list[dict[str, Any]] = members) -> tuple[float, float] | None:
            values = [r[kind]["reduction"] for r in members if r[kind]]
            return (min(values), max(values)) if values else None

        cells.append(
            PaperCell(
                f"{group}: range of reductions ({len(members)} cells)",
                "%",
                (lo, hi),
                span("replay"),
                None,
                span("defaults"),
                is_range=True,
            )
        )
    return cells


def _value(cell: PaperCell, pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "-"
    if cell.is_range:
        return f"{100 * pair[0]:.0f}-{100 * pair[1]:.0f}%"
    if cell.unit == "%":
        return format_pm(pair[0], pair[1], 1, 100, "%")
    return format_pm(pair[0], pair[1], 2)


def _difference(cell: PaperCell, pair: tuple[float, float] | None) -> str:
    """Ours minus the paper's: seconds (and per cent of the paper's), points, or the range ends in points."""
    if pair is None:
        return "-"
    if cell.is_range:
        return f"{100 * (pair[0] - cell.paper[0]):+.0f} / {100 * (pair[1] - cell.paper[1]):+.0f} pts"
    delta = pair[0] - cell.paper[0]
    if cell.unit == "%":
        return f"{100 * delta:+.1f} pts"
    return f"{delta:+.2f} s ({100 * delta / cell.paper[0]:+.0f}%)"


PAPER_CELL_COLUMNS = (
    "paper cell",
    "paper",
    "replay",
    "replay − paper",
    "script's draws",
    "draws − paper",
    "petalgym defaults",
    "defaults − paper",
)


def _paper_cell_cells(cell: PaperCell) -> list[str]:
    paper = (
        f"{100 * cell.paper[0]:.0f}-{100 * cell.paper[1]:.0f}%"
        if cell.is_range
        else (f"{100 * cell.paper[0]:.1f}%" if cell.unit == "%" else f"{cell.paper[0]:.2f}")
    )
    return [
        cell.name,
        paper,
        _value(cell, cell.replay),
        _difference(cell, cell.replay),
        _value(cell, cell.draws),
        _difference(cell, cell.draws),
        _value(cell, cell.defaults),
        _difference(cell, cell.defaults),
    ]


GRID_COLUMNS = (
    "setting",
    "λ",
    "l_out",
    "replay λ",
    "replay PETALS",
    "replay CG-BP + WS-RR",
    "replay reduction",
    "PETALS",
    "CG-BP + WS-RR",
    "reduction",
)


def _grid_cells(row: dict[str, Any]) -> list[str]:
    cells = [row["setting"], f"{row['lambda']:g}", str(row["l_out"]), f"{row['replay_lambda']:g}"]
    for kind in ("replay", "defaults"):
        d = row[kind]
        if not d:
            cells += ["-"] * 3
            continue
        cells += [
            format_pm(d["petals_s"], d["petals_ci95"], 2),
            format_pm(d["proposed_s"], d["proposed_ci95"], 2),
            format_pm(d["reduction"], d["reduction_ci95"], 1, 100, "%"),
        ]
    return cells


def _rich(
    title: str, columns: Sequence[str], rows: list[list[str]], keep: Sequence[str] | None = None
) -> Table:
    """A rich table of ``rows``; only the ``keep`` columns (all if None), values never wrapped."""
    shown = [i for i, col in enumerate(columns) if keep is None or col in keep]
    table = Table(title=title)
    for i in shown:
        table.add_column(columns[i], justify="left" if i == 0 else "right", no_wrap=i > 0)
    for r in rows:
        table.add_row(*(r[i] for i in shown))
    return table


def _markdown(columns: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


#: The columns of the compact (80-character) terminal tables; the markdown files have every column.
PAPER_CELL_COMPACT = ("paper cell", "paper", "replay", "petalgym defaults")
GRID_COMPACT = ("setting", "λ", "l_out", "replay reduction", "reduction")
SUCCESSOR_COMPACT = ("method", "ours: response (s)", "vs PETALS (paper / ours)")


def paper_cell_table(cells: list[PaperCell], seeds: int, wide: bool = False) -> Table:
    """A rich table of :func:`paper_cells`: every column if ``wide``, else :data:`PAPER_CELL_COMPACT`."""
    title = f"The paper's numbers beside petalgym's (mean ± 95 % CI over {seeds} seeds)"
    keep = None if wide else PAPER_CELL_COMPACT
    return _rich(title, PAPER_CELL_COLUMNS, [_paper_cell_cells(c) for c in cells], keep)


def paper_cell_markdown(cells: list[PaperCell]) -> str:
    """:func:`paper_cells` as a GitHub markdown table (the cells of :func:`paper_cell_table`)."""
    return _markdown(PAPER_CELL_COLUMNS, [_paper_cell_cells(c) for c in cells])


def comparison_table(rows: list[dict[str, Any]], seeds: int, wide: bool = False) -> Table:
    """A rich table of :func:`comparison_rows`: every column if ``wide``, else :data:`GRID_COMPACT`
    (the reductions of CG-BP + WS-RR over PETALS)."""
    what = "Per-token time (s)" if wide else "CG-BP + WS-RR's reduction of PETALS' per-token time"
    title = f"{what}, replay of the authors' simulator and petalgym's defaults ({seeds} seeds)"
    return _rich(title, GRID_COLUMNS, [_grid_cells(r) for r in rows], None if wide else GRID_COMPACT)


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    """:func:`comparison_rows` as a GitHub markdown table (the cells of :func:`comparison_table`)."""
    return _markdown(GRID_COLUMNS, [_grid_cells(r) for r in rows])


# --------------------------------------------------------------------------------------------------
# Sweeps (plots)
# --------------------------------------------------------------------------------------------------
SWEEP_SCENARIO = "bellcanada-26"


def _mix(num_servers: int, a100_fraction: float) -> list[dict[str, Any]]:
    a100 = max(1, round(a100_fraction * num_servers))
    return [{"profile": "a100", "count": a100}, {"profile": "mig-1g", "count": max(num_servers - a100, 0)}]


SWEEPS: dict[str, tuple[str, list[Any], Any]] = {
    # name: (x label, values, value -> overrides)
    "servers": (
        "number of servers C (eta = 0.2)",
        [9, 15, 20, 26, 35, 40],
        lambda c: {"servers": _mix(c, 0.2)},
    ),
    "eta": (
        "fraction of A100 servers eta (C = 26)",
        [0.1, 0.2, 0.3, 0.4, 0.5],
        lambda e: {"servers": _mix(26, e)},
    ),
    "lambda": (
        "arrival rate lambda (requests/s)",
        [0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
        lambda r: {"workload.arrival_rate": r},
    ),
    "l_out": ("output length l_out (tokens)", [64, 128, 256, 512], lambda n: {"workload.l_out": n}),
}


def run_sweeps(
    seeds: Sequence[int],
    output: Path,
    *,
    names: Sequence[str] = tuple(SWEEPS),
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Sweep C, eta, lambda and l_out on BellCanada for PETALS and CG-BP + WS-RR; one PNG per sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deciders = [DeciderSpec("petals"), DeciderSpec(PROPOSED)]
    specs, index = [], []
    for name in names:
        _, values, make = SWEEPS[name]
        for v in values:
            overrides = make(v)
            load_scenario(SWEEP_SCENARIO, overrides)
            for d in deciders:
                for seed in seeds:
                    specs.append(RunSpec(SWEEP_SCENARIO, d, seed, overrides, f"{name}={v}"))
            index.append((name, v))
    rows = run_grid(
        specs, workers=workers, backend=backend, address=address, progress=progress, description="sweeps"
    )
    output.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        xlabel, values, _ = SWEEPS[name]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for d in deciders:
            means, halves = [], []
            for v in values:
                vals = [
                    r["per_token_s"] for r in rows if r["setting"] == f"{name}={v}" and r["decider"] == d.name
                ]
                m, h = confidence_interval(vals)
                means.append(m)
                halves.append(0.0 if h != h else h)
            means_a, halves_a = np.array(means), np.array(halves)
            ax.plot(values, means_a, marker="o", label=d.name)
            ax.fill_between(values, means_a - halves_a, means_a + halves_a, alpha=0.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("average per-token time (s)")
        ax.set_title(f"{SWEEP_SCENARIO}: {name} sweep ({len(seeds)} seeds, 95 % CI)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths[name] = output / f"sweep_{name}.png"
        fig.savefig(paths[name], dpi=120)
        plt.close(fig)
    Evaluation(rows, reference="petals").to_csv(output / "sweeps.csv")
    return paths


# --------------------------------------------------------------------------------------------------
# The successor paper's testbed (arXiv 2604.14993, Table I)
# --------------------------------------------------------------------------------------------------
#: The scenario equivalent to the successor's PETALS testbed (peers.md section 1.7).
SUCCESSOR_SCENARIO = "llama7b-mig-ripe"
#: Its methods as petalgym deciders: (the successor's label, run label, decider, keyword arguments, key
#: of its reported row or None). The proposed method runs twice: with c* chosen by Theorem 4's lower
#: bound on petalgym's inputs, and with the c = 35 the testbed chose; Helix and Parallax run beside them
#: on the same testbed (the successor does not compare them).
SUCCESSOR_METHODS: tuple[tuple[str, str, str, dict[str, Any], str | None], ...] = (
    ("PETALS", "petals", "petals", {}, "petals"),
    ("BPRR (the paper's method)", "cg-bp-ws-rr", "cg-bp-ws-rr", {}, "cg-bp-ws-rr"),
    ("JFFC only", "jffc-only", "jffc-only", {}, "jffc-only"),
    ("GBP-CR + GCA + JFFC (proposed)", "gbp-cr-jffc", "gbp-cr-jffc", {}, "gbp-cr-jffc"),
    ("proposed, the testbed's c = 35", "gbp-cr-jffc c=35", "gbp-cr-jffc", {"cache_jobs": 35}, "gbp-cr-jffc"),
    ("Helix (not in the successor's table)", "helix", "helix", {}, None),
    ("Parallax (not in the successor's table)", "parallax", "parallax", {}, None),
)
#: Its measured means (s) on the testbed: response, waiting and service time per method (Table I, as the
#: authors' summary reports it; quoted for comparison only).
SUCCESSOR_TABLE: dict[str, dict[str, float]] = {
    "petals": {"response_s": 31.4, "wait_s": 24.2, "service_s": 7.2},
    "cg-bp-ws-rr": {"response_s": 19.8, "wait_s": 12.6, "service_s": 7.2},
    "jffc-only": {"response_s": 10.0, "wait_s": 1.5, "service_s": 8.5},
    "gbp-cr-jffc": {"response_s": 7.3, "wait_s": 0.6, "service_s": 6.7},
}
#: The model variants run: petalgym's default (the paper's physics: no compute contention) and servers
#: as FIFO processors of steps (realism.md section 1.2).
SUCCESSOR_VARIANTS: dict[str, dict[str, Any]] = {"model": {}, "fifo": {"contention": "fifo"}}
SUCCESSOR_METRICS: dict[str, tuple[str, str]] = {
    "response_s": ("response", "s"),
    "response_p95_s": ("response P95", "s"),
    "wait_s": ("wait", "s"),
    "per_token_s": ("per-token", "s"),
    "failed": ("failed", ""),
}


def successor_grid(
    seeds: Sequence[int],
    *,
    overrides: dict[str, Any] | None = None,
    workers: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: bool = True,
) -> Evaluation:
    """Run the successor's four methods on :data:`SUCCESSOR_SCENARIO` in both :data:`SUCCESSOR_VARIANTS`
    over ``seeds`` (common random numbers: the same trace window per seed for every method); ``overrides``
    (dotted scenario paths) apply to every run, e.g. a shorter window."""
    extra = dict(overrides or {})
    specs = [
        RunSpec(SUCCESSOR_SCENARIO, DeciderSpec(name, dict(kwargs), label), seed, {**extra, **over}, variant)
        for variant, over in SUCCESSOR_VARIANTS.items()
        for _, label, name, kwargs, _ in SUCCESSOR_METHODS
        for seed in seeds
    ]
    rows = run_grid(
        specs, workers=workers, backend=backend, address=address, progress=progress, description="successor"
    )
    return Evaluation(rows, reference=PETALS, metrics=dict(SUCCESSOR_METRICS))


def successor_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    """Per method: the successor's reported means beside ours (mean and 95 % CI over seeds) in each
    variant, and the reduction of mean response time vs PETALS (ours: the mean of per-seed reductions)."""
    agg = {(a["setting"], a["decider"]): a for a in evaluation.aggregate()}
    by_seed: dict[tuple[str, str], dict[int, float]] = {}
    for r in evaluation.rows:
        by_seed.setdefault((r["setting"], r["decider"]), {})[r["seed"]] = float(r["response_s"])
    paper_petals = SUCCESSOR_TABLE[PETALS]["response_s"]
    out = []
    for method, decider, _, _, reported in SUCCESSOR_METHODS:
        paper = SUCCESSOR_TABLE[reported] if reported else {}
        row: dict[str, Any] = {
            "method": method,
            "decider": decider,
            "paper": dict(paper),
            "paper_reduction": 1.0 - paper["response_s"] / paper_petals if paper else math.nan,
        }
        for variant in SUCCESSOR_VARIANTS:
            a = agg.get((variant, decider))
            if a is None:
                continue
            ref = by_seed.get((variant, PETALS), {})
            mine = by_seed.get((variant, decider), {})
            red = [1.0 - v / ref[s] for s, v in mine.items() if s in ref and ref[s] > 0]
            row[variant] = {
                "response_s": a["response_s"],
                "response_ci95": a["response_s_ci95"],
                "wait_s": a["wait_s"],
                "service_s": a["response_s"] - a["wait_s"],
                "failed": a["failed"],
                "detail": next(
                    (
                        r["detail"]
                        for r in evaluation.rows
                        if r["setting"] == variant and r["decider"] == decider
                    ),
                    "",
                ),
            }
            row[variant]["reduction"], row[variant]["reduction_ci95"] = (
                confidence_interval(red) if decider != PETALS else (math.nan, math.nan)
            )
        out.append(row)
    return out


SUCCESSOR_COLUMNS = (
    "method",
    "paper response / wait / service (s)",
    "ours: response (s)",
    "wait / service (s)",
    "vs PETALS (paper / ours)",
    "ours, fifo: response (s)",
)


def _successor_cells(row: dict[str, Any]) -> list[str]:
    p = row["paper"]
    cells = [row["method"], f"{p['response_s']:.1f} / {p['wait_s']:.1f} / {p['service_s']:.1f}" if p else "-"]
    mine = row.get("model")
    if mine is None:
        return cells + ["-"] * 4
    paper_red = "-" if math.isnan(row["paper_reduction"]) else f"{-100 * row['paper_reduction']:.1f} %"
    red = (
        "-"
        if row["decider"] == PETALS
        else f"{paper_red} / " + format_pm(-mine["reduction"], mine["reduction_ci95"], 1, 100, " %")
    )
    fifo = row.get("fifo")
    cells += [
        format_pm(mine["response_s"], mine["response_ci95"], 2),
        f"{mine['wait_s']:.2f} / {mine['service_s']:.2f}",
        red,
        format_pm(fifo["response_s"], fifo["response_ci95"], 1) if fifo else "-",
    ]
    return cells


def successor_table(rows: list[dict[str, Any]], seeds: int, wide: bool = False) -> Table:
    """A rich table of :func:`successor_rows`: every column if ``wide``, else :data:`SUCCESSOR_COMPACT`."""
    title = (
        f"The successor's testbed ({SUCCESSOR_SCENARIO}): its Table I beside petalgym "
        f"(mean ± 95 % CI over {seeds} seeds)"
    )
    keep = None if wide else SUCCESSOR_COMPACT
    return _rich(title, SUCCESSOR_COLUMNS, [_successor_cells(r) for r in rows], keep)


def successor_markdown(rows: list[dict[str, Any]]) -> str:
    """:func:`successor_rows` as a GitHub markdown table."""
    return _markdown(SUCCESSOR_COLUMNS, [_successor_cells(r) for r in rows])
