"""BPRR MILP: time to proven optimality and gap vs instance size (servers x requests), CBC and HiGHS.

Instances: the paper's own offline 9 x 3 case, i.e. the authors' test_general_case.m (7 local MIG slices,
2 remote A100s, l_out = 100, RTTs drawn within the script's ranges for seeds 0-2:
``petalgym.baselines.paper.authors_offline_instance``), and instances from the shipped scenarios
(BLOOM-176B, l_in = 20, l_out = 128): petalgym's clustered testbed (clustered-9: 2 A100 + 7 MIG slices,
client 100 ms away from both clusters), and scattered swarms on the AboveNet / BellCanada topologies
with a chosen mix of A100s and MIG slices. For each
instance: the LP relaxation's root gap, then each solver's status, objective, average per-token time,
best bound, gap, B&B nodes, wall time (model build + warm start + solve) and the final solve's CPU
time (HiGHS: this process; CBC: as CBC reports it), which is robust to a loaded machine. One thread.

    python benchmarks/milp_bench.py [--time-limit 60] [--solvers highs cbc] [--only 9x3-clustered ...]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from petalgym.baselines.milp import lp_relaxation_bound, solve_milp
from petalgym.baselines.paper import authors_offline_instance
from petalgym.errors import SolverError
from petalgym.offline import OfflineInstance
from petalgym.scenario import load_scenario


@dataclass(frozen=True)
class Case:
    """One benchmark instance: ``scenario`` with ``a100`` A100s + ``mig`` MIG slices, ``requests`` |R|."""

    label: str
    scenario: str
    a100: int
    mig: int
    requests: int
    note: str = ""

    def instance(self) -> OfflineInstance:
        overrides: dict[str, object] = {}
        if self.scenario == "clustered-9":
            servers = [{"profile": "a100", "count": self.a100, "location": 1}]
            servers += [{"profile": "mig-1g", "count": self.mig, "location": 2}] if self.mig else []
        else:
            servers = [{"profile": "a100", "count": self.a100}] if self.a100 else []
            servers += [{"profile": "mig-1g", "count": self.mig}]
        overrides["servers"] = servers
        return OfflineInstance.from_scenario(load_scenario(self.scenario, overrides), self.requests)


@dataclass(frozen=True)
class AuthorsCase:
    """The authors' offline instance (test_general_case.m) with its RTTs drawn by ``seed``."""

    label: str
    seed: int
    requests: int = 3
    note: str = ""

    def instance(self) -> OfflineInstance:
        return authors_offline_instance(self.seed, self.requests)


CASES: tuple[Case | AuthorsCase, ...] = (
    AuthorsCase("9x3-authors-seed0", 0, note="the paper's offline case (Gurobi: 38.9 % gap after 200 s)"),
    AuthorsCase("9x3-authors-seed1", 1),
    AuthorsCase("9x3-authors-seed2", 2),
    Case("3x1-clustered", "clustered-9", 1, 2, 1),
    Case("5x2-abovenet", "abovenet", 1, 4, 2),
    Case("9x3-clustered", "clustered-9", 2, 7, 3, "petalgym's clustered-9 at |R| = 3 (not the paper's case)"),
    Case("9x5-clustered", "clustered-9", 2, 7, 5),
    Case("9x11-clustered", "clustered-9", 2, 7, 11, "CG-BP's design |R| for clustered-9"),
    Case("9x10-abovenet", "abovenet", 2, 7, 10),
    Case("9x20-abovenet-1a100", "abovenet", 1, 8, 20, "memory binds on the single A100"),
    Case("12x6-abovenet", "abovenet", 2, 10, 6),
    Case("26x8-bellcanada", "bellcanada-26", 5, 21, 8, "the paper's large run, design |R|"),
    Case("26x30-bellcanada", "bellcanada-26", 5, 21, 30),
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=60.0, help="per solve, seconds")
    ap.add_argument("--solvers", nargs="+", default=["highs", "cbc"], choices=["highs", "cbc"])
    ap.add_argument("--only", nargs="+", default=None, help="case labels to run")
    ap.add_argument("--no-lp", action="store_true", help="skip the LP relaxation column")
    ap.add_argument(
        "--presolve",
        choices=["off", "on", "solver"],
        default="off",
        help="solver presolve: off (solve_milp's default), on, or the solver's own default",
    )
    args = ap.parse_args(argv)
    console = Console(width=200)
    table = Table(
        title=f"BPRR MILP (position-indexed), time limit {args.time_limit:g} s, 1 thread, "
        f"presolve {args.presolve}"
    )
    for col in (
        "instance",
        "S x R",
        "root LP gap",
        "solver",
        "status",
        "objective (s)",
        "per-token (s)",
        "bound (s)",
        "gap",
        "nodes",
        "wall (s)",
        "solver CPU (s)",
        "vars / rows",
    ):
        table.add_column(col, justify="left" if col in ("instance", "solver", "status") else "right")
    presolve = {"solver": None, "on": True, "off": False}[args.presolve]
    cases = [c for c in CASES if args.only is None or c.label in args.only]
    for case in cases:
        inst = case.instance()
        size = f"{inst.num_servers} x {inst.num_requests}"
        lp = None
        if not args.no_lp:
            try:
                lp = lp_relaxation_bound(inst, time_limit_s=args.time_limit)
            except SolverError:
                lp = None
        best, proven = None, False
        rows = []
        for solver in args.solvers:
            t0 = time.perf_counter()
            try:
                sol = solve_milp(inst, solver, time_limit_s=args.time_limit, presolve=presolve)
            except SolverError as exc:
                elapsed = f"{time.perf_counter() - t0:.1f}"
                rows.append((solver, f"error: {exc}"[:60], "", "", "", "", "", elapsed, "", ""))
                continue
            best = sol.objective if best is None else min(best, sol.objective)
            proven = proven or sol.status == "optimal"
            rows.append(
                (
                    solver,
                    sol.status,
                    f"{sol.objective:.6f}",
                    f"{sol.mean_per_token(inst):.6f}",
                    "-" if sol.bound is None else f"{sol.bound:.6f}",
                    "-" if sol.gap is None else f"{100 * sol.gap:.4f} %",
                    str(sol.info.get("nodes", "")),
                    f"{sol.solve_time_s:.2f}",
                    f"{sol.info.get('solver_cpu_s', float('nan')):.2f}",
                    f"{sol.info['variables']} / {sol.info['constraints']}",
                )
            )
        # root gap vs the optimum; "<=" when no solver proved it (then vs the best incumbent)
        root = "-" if lp is None or best is None else f"{100 * max(best - lp, 0.0) / best:.3f} %"
        if not proven and root != "-":
            root = "<= " + root
        for i, row in enumerate(rows):
            table.add_row(case.label if i == 0 else "", size if i == 0 else "", root if i == 0 else "", *row)
        table.add_section()
        console.print(f"[dim]done {case.label}[/dim]")
    console.print(table)
    for case in cases:
        if case.note:
            console.print(f"  {case.label}: {case.note}")


if __name__ == "__main__":
    main()
