"""Helix's placement MILP (petalgym.baselines.helix) by number of servers: model size, build and solve times.

Scenarios: :func:`offline_speed.make_scenario` (BLOOM-176B, L = 70, 20 % A100 and 80 % MIG 1g.10gb
slices, one client). Per size, one :func:`~petalgym.baselines.helix.helix_placement`: the session
capacity tables f_j(k), the warm start (PETALS' placement or the greedy pipeline, whichever carries more
flow; "start (s)" includes PETALS' joins in the simulator), the model build in PuLP, then the solver
under ``--time-limit`` with ``gap_rel`` 0.005. Columns: links (server -> server candidates), variables,
constraints, times, the solver's status (optimal within the gap, or time limit), the warm start's flow,
the final flow (sessions), the solver's upper bound, the gap (bound - flow) / bound, and Helix's own
upper bound UB = sum_j max_k k f_j(k) / L. Without ``--cuts`` the model is the faithful one (big-M link
caps), whose LP bound is very weak; ``--cuts`` adds two valid inequalities (tighter link caps and
flow <= UB) that cut off no placement.

    python benchmarks/helix_milp.py [--sizes 10 30 100 300 1000] [--time-limit 60] [--solver highs]
        [--cuts] [--max-out-links 12] [--no-warm-start]
"""

from __future__ import annotations

import argparse
import time

from offline_speed import make_scenario
from rich.console import Console
from rich.table import Table

from petalgym.baselines.helix import helix_placement, session_capacity_tables
from petalgym.errors import PetalgymError


def helix_ub(scenario) -> float:
    """Helix's upper bound on the flow: sum_j max_k (k f_j(k)) / L (sessions)."""
    tables = session_capacity_tables(scenario)
    return sum(max(k * f for k, f in enumerate(t, 1)) for t in tables if t) / scenario.num_blocks


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    ap.add_argument("--time-limit", type=float, default=60.0, help="solver limit per size, seconds")
    ap.add_argument("--solver", default="highs", choices=["highs", "cbc"])
    ap.add_argument("--gap", type=float, default=0.005, help="relative gap at which the solver stops")
    ap.add_argument(
        "--cuts", action="store_true", help="add the valid inequalities (tighter caps, flow <= UB)"
    )
    ap.add_argument("--max-out-links", type=int, default=None, help="prune: each server's N best out-links")
    ap.add_argument("--no-warm-start", action="store_true")
    args = ap.parse_args(argv)
    title = (
        f"Helix placement MILP, L = 70, {args.solver}, time limit {args.time_limit:g} s, gap {args.gap:g}"
        f"{', cuts' if args.cuts else ''}"
        f"{f', {args.max_out_links} out-links per server' if args.max_out_links else ''}"
    )
    table = Table(title=title)
    for col in (
        "servers",
        "links",
        "variables",
        "constraints",
        "start (s)",
        "build (s)",
        "solve (s)",
        "status",
        "start flow",
        "flow",
        "bound",
        "gap",
        "Helix UB",
    ):
        table.add_column(col, justify="right")
    console = Console(width=180)
    for n in args.sizes:
        scenario = make_scenario(n)
        t0 = time.perf_counter()
        try:
            plan = helix_placement(
                scenario,
                time_limit_s=args.time_limit,
                gap_rel=args.gap,
                solver=args.solver,
                warm_start=not args.no_warm_start,
                max_out_links=args.max_out_links,
                cuts=args.cuts,
            )
        except PetalgymError as exc:
            console.print(f"[red]{n} servers: {exc}[/red]")
            continue
        total = time.perf_counter() - t0
        start_s = total - plan.build_s - plan.solve_s
        table.add_row(
            str(n),
            str(plan.links),
            str(plan.variables),
            str(plan.constraints),
            f"{start_s:.2f}",
            f"{plan.build_s:.2f}",
            f"{plan.solve_s:.2f}",
            plan.status,
            "-" if plan.start_flow is None else f"{plan.start_flow:g} ({plan.info.get('start')})",
            f"{plan.flow:g}",
            "-" if plan.bound is None else f"{plan.bound:.6g}",
            "-" if plan.gap is None else f"{100 * plan.gap:.2f} %",
            f"{helix_ub(scenario):.6g}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
