"""Quality of CG-BPRR against the exact MILP optimum of the offline BPRR problem (and Theorem 2's bound).

Three suites, printed as rich tables (average per-token time, seconds):

* the paper's offline 9 x 3 case (the authors' test_general_case.m, RTTs drawn with seeds 0-4:
  ``petalgym.baselines.paper.authors_offline_instance``);
* petalgym's clustered testbed (clustered-9, client in cluster 0, 1 or 2) for a few |R|;
* random small instances (L 4..10, 2..6 servers, 1..2 clients, 1..6 requests; seeded).

ratio = CG-BPRR / MILP (>= 1 up to float rounding when the MILP is proven optimal); "within bound" checks
CG-BPRR <= Theorem 2's bound. Needs the MILP baseline (petalgym.baselines.milp) and HiGHS.

    python benchmarks/cg_quality.py [--requests 1 3 10] [--random 20] [--time-limit 60] [--seed 0]
                                    [--authors-seeds 5]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from rich.console import Console
from rich.table import Table

from petalgym.baselines.cg import cg_bprr
from petalgym.baselines.milp import solve_milp
from petalgym.baselines.paper import authors_offline_instance
from petalgym.errors import SolverError
from petalgym.offline import OfflineInstance
from petalgym.scenario import load_scenario


def random_instance(rng: np.random.Generator) -> OfflineInstance:
    """A random small BPRR instance (bytes and seconds in abstract units: s_m = 10, s_c = 1)."""
    L = int(rng.integers(4, 11))
    S = int(rng.integers(2, 7))
    C = int(rng.integers(1, 3))
    requests = rng.integers(0, 4, size=C)
    requests[0] = max(requests[0], 1)
    R = int(requests.sum())
    memory = rng.integers(10 + R, (10 + R) * L + 1, size=S)
    return OfflineInstance(
        num_blocks=L,
        block_bytes=10,
        session_bytes=1,
        memory=memory.astype(np.int64),
        max_blocks=rng.integers(1, L + 1, size=S).astype(np.int64),
        t=rng.uniform(0.05, 0.5, size=(C, S)).round(3),
        tau=rng.uniform(0.003, 0.02, size=S).round(4),
        requests=requests.astype(np.int64),
        l_in=20,
        l_out=128,
    )


def _row(inst: OfflineInstance, time_limit: float) -> tuple[float, float, str, float, float, float] | None:
    """(CG-BPRR, MILP, MILP status, Theorem 2 bound, CG time, MILP time), None if CG-BP is infeasible."""
    try:
        cg = cg_bprr(inst)
    except SolverError:
        return None
    milp = solve_milp(inst, time_limit_s=time_limit)
    return (
        cg.mean_per_token(inst),
        milp.mean_per_token(inst),
        milp.status,
        float(cg.info["theorem2_bound"]),  # type: ignore[arg-type]
        cg.solve_time_s,
        milp.solve_time_s,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--random", type=int, default=20, help="number of random instances")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--authors-seeds", type=int, default=5, help="RTT draws of the authors' instance")
    args = ap.parse_args(argv)
    console = Console(width=140)
    cols = (
        "instance",
        "|R|",
        "CG-BPRR",
        "MILP",
        "status",
        "ratio",
        "Thm 2 bound",
        "within",
        "CG s",
        "MILP s",
    )

    table = Table(title="CG-BPRR vs MILP on the authors' offline 9 x 3 instance (per-token s)")
    for col in cols:
        table.add_column(col, justify="right")
    for seed in range(args.authors_seeds):
        inst = authors_offline_instance(seed)
        r = _row(inst, args.time_limit)
        if r is None:
            table.add_row(f"RTT seed {seed}", "3", "infeasible", *[""] * 7)
            continue
        cg, opt, status, bound, t_cg, t_milp = r
        table.add_row(
            f"RTT seed {seed}", "3", f"{cg:.4f}", f"{opt:.4f}", status, f"{cg / opt:.4f}",
            f"{bound:.4f}", str(cg <= bound * (1 + 1e-9)), f"{t_cg:.4f}", f"{t_milp:.2f}",
        )  # fmt: skip
    console.print(table)

    table = Table(title="CG-BPRR vs MILP on clustered-9 (per-token s)")
    for col in cols:
        table.add_column(col, justify="right")
    for loc in (0, 1, 2):
        sc = load_scenario("clustered-9", {"clients.0.location": loc})
        for R in args.requests:
            r = _row(OfflineInstance.from_scenario(sc, R), args.time_limit)
            if r is None:
                table.add_row(f"client@{loc}", str(R), "infeasible", *[""] * 7)
                continue
            cg, opt, status, bound, t_cg, t_milp = r
            table.add_row(
                f"client@{loc}", str(R), f"{cg:.4f}", f"{opt:.4f}", status, f"{cg / opt:.4f}",
                f"{bound:.4f}", str(cg <= bound * (1 + 1e-9)), f"{t_cg:.4f}", f"{t_milp:.2f}",
            )  # fmt: skip
    console.print(table)

    rng = np.random.default_rng(args.seed)
    table = Table(title=f"CG-BPRR vs MILP on {args.random} random small instances (seed {args.seed})")
    for col in cols:
        table.add_column(col, justify="right")
    ratios = []
    for i in range(args.random):
        inst = random_instance(rng)
        r = _row(inst, args.time_limit)
        label = f"#{i} L={inst.num_blocks} S={inst.num_servers}"
        if r is None:
            table.add_row(label, str(inst.num_requests), "infeasible", *[""] * 7)
            continue
        cg, opt, status, bound, t_cg, t_milp = r
        if status == "optimal":
            ratios.append(cg / opt)
        table.add_row(
            label, str(inst.num_requests), f"{cg:.4f}", f"{opt:.4f}", status, f"{cg / opt:.4f}",
            f"{bound:.4f}", str(cg <= bound * (1 + 1e-9)), f"{t_cg:.4f}", f"{t_milp:.2f}",
        )  # fmt: skip
    console.print(table)
    if ratios:
        console.print(
            f"ratio CG-BPRR / optimum over {len(ratios)} proven-optimal instances: mean "
            f"{statistics.mean(ratios):.4f}, max {max(ratios):.4f}"
        )


if __name__ == "__main__":
    main()
