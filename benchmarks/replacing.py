"""Does re-placing blocks as the load moves pay for its reload time? On the shipped worlds it does not
(docs/tasks.md); on ``llama70b-int8-diurnal-12`` (the paper's no-contention model, memory-bound at the
peak) it does. This script measures it: CG-BP + WS-RR with one static design per |R| (the static
placements a tuning would choose from) against ``cg-bp-ws-rr-follow``, whose servers move between a
trough design and a peak design as the measured arrival rate crosses a threshold (a small grid of
thresholds), each on the same seeds, and prints per-token time (s, mean ± 95 % CI over the seeds) with
the paired improvement over the best static design.

    python benchmarks/replacing.py [--seeds 0 1 2] [--workers 2] [--markdown FILE]

About 5 minutes on two cores for three seeds.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from petalgym.evaluation import DeciderSpec, RunSpec, confidence_interval, format_pm, run_grid
from petalgym.scenario import load_scenario

SCENARIO = "llama70b-int8-diurnal-12"
STATIC_SESSIONS = (32, 96, 192)
FOLLOW = (
    ("follow, busy 4/s, calm 2/s", {"busy_rate": 4.0, "calm_fraction": 0.5}),
    ("follow, busy 5/s, calm 2.5/s", {"busy_rate": 5.0, "calm_fraction": 0.5}),
    ("follow, busy 5/s, calm 4/s", {"busy_rate": 5.0, "calm_fraction": 0.8}),
)


def markdown_cell(text: str) -> str:
    """``text`` with its pipes escaped (|R| would split a markdown table's cell)."""
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    parser.add_argument("--markdown", default=None, help="also write the table as markdown here")
    args = parser.parse_args(argv)
    sc = load_scenario(SCENARIO)
    deciders = [
        DeciderSpec("cg-bp-ws-rr", {"num_sessions": r}, f"static, |R| = {r}") for r in STATIC_SESSIONS
    ] + [DeciderSpec("cg-bp-ws-rr-follow", kwargs, label) for label, kwargs in FOLLOW]
    specs = [RunSpec(sc, d, seed, {}, SCENARIO) for d in deciders for seed in args.seeds]
    rows = run_grid(specs, workers=args.workers, description="re-placing")
    by = {(r["decider"], r["seed"]): r for r in rows}
    labels = [d.display for d in deciders]
    statics = labels[: len(STATIC_SESSIONS)]

    def mean_of(label: str) -> float:
        return confidence_interval([by[label, s]["per_token_s"] for s in args.seeds])[0]

    best_static = min(statics, key=mean_of)
    table = Table(title=f"{SCENARIO}: per-token time (s) on seeds {', '.join(map(str, args.seeds))}")
    for column in ("placement", "per token (s)", f"vs {best_static}", "failed", "recoveries"):
        table.add_column(column, justify="left" if column == "placement" else "right")
    lines = [
        f"| placement | per token (s) | vs {markdown_cell(best_static)} | failed | recoveries |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in labels:
        values = [by[label, s]["per_token_s"] for s in args.seeds]
        gain = [1.0 - by[label, s]["per_token_s"] / by[best_static, s]["per_token_s"] for s in args.seeds]
        cells = [
            label,
            format_pm(*confidence_interval(values)),
            "-" if label == best_static else format_pm(*confidence_interval(gain), 1, 100.0, " %"),
            f"{sum(by[label, s]['failed'] for s in args.seeds):.0f}",
            f"{sum(by[label, s]['recoveries'] for s in args.seeds):.0f}",
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(map(markdown_cell, cells)) + " |")
    Console().print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
