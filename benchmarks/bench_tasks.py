"""The petalgym-bench task table: per task its bound, the best default and best tuned baselines, random,
the headroom (best tuned - bound) / best tuned on the validation seeds, and the task's shipped agent with its
paired improvement over the reference, each from :func:`petalgym.bench.bench` on the task's own seeds.
Writes one JSON per task (``--output``) and, with ``--markdown``, the table as markdown.

    python benchmarks/bench_tasks.py [--tasks PaperClustered ...] [--output results/bench] [--markdown FILE]
                                     [--workers N] [--reuse]

``--reuse`` takes a task's JSON from ``--output`` when it is there (e.g. to rebuild the table after a run)
instead of computing it again; a shipped agent missing from it is scored and added
(:func:`petalgym.bench.add_agents`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from petalgym.bench import add_agents, bench, shipped_agents
from petalgym.errors import UsageError
from petalgym.evaluation import _nan_to_none, format_pm
from petalgym.tasks import get_task, list_tasks

COLUMNS = (
    "task",
    "control",
    "bound",
    "best default",
    "best tuned (reference)",
    "random",
    "headroom",
    "agent (vs reference)",
    "left out",
)


def row(result: dict) -> list[str]:
    task = get_task(result["task"])
    deciders = result["deciders"]
    defaults = {k: v for k, v in deciders.items() if v["kind"] == "baseline" and not math.isnan(v["mean"])}
    best_default = min(defaults, key=lambda k: (defaults[k]["failed"], defaults[k]["mean"]))
    ref = result.get("reference")

    def cell(label: str) -> str:
        d = deciders[label]
        return f"{label}: {format_pm(d['mean'], d['ci95'])}" + (
            f" ({d['failed']:.0f} failed)" if d["failed"] else ""
        )

    return [
        task.id,
        task.control,
        f"{result['bound']:.3f}",
        cell(best_default),
        cell(ref) if ref else "-",
        cell("random"),
        f"{100 * result['headroom']:.1f} %" if "headroom" in result else "-",
        "; ".join(_agent_cell(label, d) for label, d in deciders.items() if d["kind"] == "agent") or "-",
        ", ".join(result["left_out"]) or "-",
    ]


def _agent_cell(label: str, entry: dict) -> str:
    """``label: mean ± ci (k failed), +x ± y %`` (the paired improvement over the reference)."""
    text = f"{label}: {format_pm(entry['mean'], entry['ci95'])}"
    if entry["failed"]:
        text += f" ({entry['failed']:.0f} failed)"
    imp = entry.get("improvement")
    if imp:
        text += f", {format_pm(imp['mean'], imp['ci95'], 1, scale=100)} %"
    return text


def _none_to_nan(value):
    """JSON nulls (NaN written by ``_nan_to_none``) back to NaN."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _none_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_none_to_nan(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="*", default=[t.name for t in list_tasks()])
    ap.add_argument("--output", type=Path, default=Path("results/bench"))
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="read a task's JSON from --output if present")
    args = ap.parse_args(argv)
    try:
        tasks = [get_task(name) for name in args.tasks]
    except UsageError as exc:
        print(f"error: --tasks: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in tasks:
        path = args.output / f"{task.name}.json"
        if args.reuse and path.is_file():
            result = _none_to_nan(json.loads(path.read_text()))
            missing = {k: v for k, v in shipped_agents(task).items() if k not in result["deciders"]}
            if missing:
                add_agents(result, task, missing, workers=args.workers)
                path.write_text(json.dumps(_nan_to_none(result), indent=1))
        else:
            result = bench(task, workers=args.workers, progress=False)
            path.write_text(json.dumps(_nan_to_none(result), indent=1))
        rows.append(row(result))
        Console().print(f"{task.id}: done", highlight=False)
    table = Table(title=f"petalgym-bench tasks: {get_task(args.tasks[0]).metric} on the test seeds")
    for col in COLUMNS:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r)
    Console(width=200).print(table)
    if args.markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * 5 + "---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
