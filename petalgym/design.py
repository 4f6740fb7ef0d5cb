"""CG-BP's conservative greedy placement and the design rule for its |R| (docs/model.md, docs/deciders.md).

Both belong to the core because more than one layer needs them: the CG deciders place with CG-BP, and the
environments size their placement levels and normalise their observations with the design |R|.

* :func:`cg_bp_placement` -- CG-BPRR steps 1-2 (conservative block count, greedy window choice);
* :func:`design_num_sessions` -- the online design rule |R| = min(round(lambda T_1 + sqrt(lambda T_1)),
  R_max), with :func:`design_terms` its ingredients.

Blocks are 0-based (the paper numbers them 1..L). Sizes are bytes, times seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from petalgym.errors import SolverError
from petalgym.offline import OfflineInstance
from petalgym.perfmodel import (
    Placement,
    TimeModel,
    conservative_num_blocks,
    max_design_sessions,
    session_capacity,
    shortest_chain,
)
from petalgym.scenario import Scenario

__all__ = [
    "CGBPResult",
    "GreedyStep",
    "arrival_rate",
    "cg_bp_placement",
    "client_shares",
    "design_num_sessions",
    "design_terms",
    "offline_instance",
    "workload_lengths",
]


# --------------------------------------------------------------------------------------------------
# CG-BP: steps 1-2
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GreedyStep:
    """One visit of the greedy (step 2): server, its t~_j, m_j, f_j, chosen window start, the rule used
    (``"under-served"`` or ``"lexicographic"``) and, if traced, C_b and T_b after the update (length L)."""

    server: int
    t_tilde: float
    num_blocks: int
    capacity: int
    start: int
    rule: str
    C: tuple[int, ...] = ()
    T: tuple[float, ...] = ()


@dataclass(frozen=True)
class CGBPResult:
    """CG-BP's outcome for ``num_sessions`` = |R|. Per-server tuples have length S, per-block ones L.

    ``num_blocks`` is the conservative m_j (0 = unused server), ``t_tilde`` t~_j (s per block per token;
    inf if m_j = 0), ``session_capacity`` f_j, ``starts`` the window start a_j (-1 if unused), ``order`` the
    visiting order (increasing t~_j, ties by index), ``t_dummy`` t~_0, ``capacity`` / ``total_time`` the
    final C_b / T_b, ``steps`` one :class:`GreedyStep` per visited server.
    """

    num_sessions: int
    num_blocks_total: int
    num_blocks: tuple[int, ...]
    t_tilde: tuple[float, ...]
    session_capacity: tuple[int, ...]
    starts: tuple[int, ...]
    order: tuple[int, ...]
    t_dummy: float
    capacity: tuple[int, ...]
    total_time: tuple[float, ...]
    steps: tuple[GreedyStep, ...]

    @property
    def used_servers(self) -> tuple[int, ...]:
        """Servers that received a window (m_j >= 1), in index order."""
        return tuple(j for j, m in enumerate(self.num_blocks) if m > 0)

    @property
    def unused_servers(self) -> tuple[int, ...]:
        """Servers with m_j = 0: no window in CG-BP, never routed through."""
        return tuple(j for j, m in enumerate(self.num_blocks) if m == 0)

    def spans(self) -> list[tuple[int, int, int]]:
        """(server, first block, end) of every used server, in index order (for shortest_chain)."""
        return [(j, self.starts[j], self.starts[j] + self.num_blocks[j]) for j in self.used_servers]

    def filler_start(self) -> int:
        """Where an unused server puts its single block: the first block of least final capacity C_b."""
        return int(np.argmin(self.capacity))

    def placements(self) -> list[Placement]:
        """One Placement per server (cache: all memory left); unused servers get one block."""
        filler = self.filler_start()
        return [
            Placement(self.starts[j], m) if m > 0 else Placement(filler, 1)
            for j, m in enumerate(self.num_blocks)
        ]


def cg_bp_placement(
    instance: OfflineInstance, num_sessions: int | None = None, *, trace: bool = False
) -> CGBPResult:
    """CG-BPRR steps 1-2 for |R| = ``num_sessions`` (default: the instance's number of requests).

    Step 1: m_j = min(floor(M_j / (s_m + s_c |R|)), L, GPU cap); t~_j = tau_j + max_c t_cj / m_j;
    f_j = floor((M_j - s_m m_j) / (s_c m_j)). Step 2 of CG-BP: a dummy server with
    t~_0 = max_j t~_j + 1 first serves every block: C_b = 0, T_b = |R| t~_0. Servers are visited in
    increasing t~_j (ties: lower index). While some block has C_b < |R|, a server takes the window
    maximising sum_b T_b among windows holding an under-served block (window sums exactly rounded, ties:
    smallest start); afterwards the window whose sorted C vector is lexicographically smallest (ties:
    smallest start). Then T_b -= (t~_0 - t~_j) min(max(|R| - C_b, 0), f_j) and C_b += f_j on the window.
    ``trace`` records C_b and T_b after every visit. Raises SolverError if some block ends with
    C_b < |R|. Time O(S L^2) (plus O(S L^2 log L) for the lexicographic rule).
    """
    inst = instance
    R = inst.num_requests if num_sessions is None else int(num_sessions)
    if R < 1:
        raise SolverError(f"CG-BP: num_sessions must be >= 1, got {num_sessions!r}")
    L, S = int(inst.num_blocks), inst.num_servers
    s_m, s_c = int(inst.block_bytes), int(inst.session_bytes)
    t_star = np.asarray(inst.t, dtype=float).max(axis=0) if inst.num_clients else np.zeros(S)
    m = [
        max(conservative_num_blocks(int(inst.memory[j]), s_m, s_c, R, L, int(inst.max_blocks[j])), 0)
        for j in range(S)
    ]
    tt = [float(inst.tau[j]) + float(t_star[j]) / m[j] if m[j] > 0 else math.inf for j in range(S)]
    f = [session_capacity(int(inst.memory[j]), m[j], s_m, s_c) for j in range(S)]
    used = [j for j in range(S) if m[j] > 0]
    if not used:
        raise SolverError(
            f"CG-BP infeasible for |R|={R}: no server can hold one block plus the cache of {R} sessions "
            f"({(s_m + s_c * R) / 1e9:.4g} GB)"
        )
    order = sorted(used, key=lambda j: (tt[j], j))
    t0 = max(tt[j] for j in used) + 1.0
    C = np.zeros(L, dtype=np.int64)
    T = [R * t0] * L
    starts = [-1] * S
    steps = []
    for j in order:
        mj = m[j]
        n_win = L - mj + 1
        under = C < R
        if under.any():
            cum = np.concatenate(([0], np.cumsum(under)))
            best, a_best = -math.inf, -1
            for a in range(n_win):
                if cum[a + mj] > cum[a]:
                    s = math.fsum(T[a : a + mj])  # exactly rounded: equal windows tie exactly
                    if s > best:
                        best, a_best = s, a
            rule = "under-served"
        else:
            win = np.sort(sliding_window_view(C, mj), axis=1)
            keys = (np.arange(n_win), *(win[:, k] for k in range(mj - 1, -1, -1)))
            a_best = int(np.lexsort(keys)[0])
            rule = "lexicographic"
        gain = t0 - tt[j]
        for b in range(a_best, a_best + mj):
            T[b] -= gain * min(max(R - int(C[b]), 0), f[j])
        C[a_best : a_best + mj] += f[j]
        starts[j] = a_best
        steps.append(
            GreedyStep(
                j,
                tt[j],
                mj,
                f[j],
                a_best,
                rule,
                tuple(int(c) for c in C) if trace else (),
                tuple(T) if trace else (),
            )
        )
    short = np.flatnonzero(C < R)
    if short.size:
        b = int(short[0])
        raise SolverError(
            f"CG-BP infeasible for |R|={R}: block {b} (0-based) can serve only {int(C[b])} sessions after "
            f"all {len(used)} usable servers ({sum(m)} conservative blocks for L={L})"
        )
    return CGBPResult(
        num_sessions=R,
        num_blocks_total=L,
        num_blocks=tuple(m),
        t_tilde=tuple(tt),
        session_capacity=tuple(f),
        starts=tuple(starts),
        order=tuple(order),
        t_dummy=t0,
        capacity=tuple(int(c) for c in C),
        total_time=tuple(T),
        steps=tuple(steps),
    )


# --------------------------------------------------------------------------------------------------
# Online design parameter |R|
# --------------------------------------------------------------------------------------------------
def workload_lengths(scenario: Scenario) -> tuple[int, int]:
    """(l_in, l_out): the workload's mean lengths, rounded half up (of the trace, if it is a trace)."""
    return scenario.workload.mean_lengths()


def client_shares(scenario: Scenario) -> np.ndarray:
    """Each client's share of the requests: its weight over the clients' total (equal shares if that is
    0), shape (C,)."""
    weights = np.array([c.weight for c in scenario.clients], dtype=float)
    total = weights.sum()
    return weights / total if total > 0 else np.full(len(weights), 1 / len(weights))


def arrival_rate(scenario: Scenario) -> float:
    """lambda (requests/s): the Poisson rate, or a trace's mean rate (n - 1) / (last - first arrival) over
    the arrivals the simulator uses (inf if they all arrive at once, 0 with a single request)."""
    w = scenario.workload
    if w.trace is None:
        return float(w.arrival_rate)
    times = np.asarray(w.trace.arrival_s, dtype=float)
    if w.horizon_s is not None:
        times = times[times <= w.horizon_s]
    if w.num_requests is not None:
        times = times[: w.num_requests]
    if len(times) < 2:
        return 0.0
    span = float(times[-1] - times[0])
    return (len(times) - 1) / span if span > 0 else math.inf


def offline_instance(scenario: Scenario, num_sessions: int) -> OfflineInstance:
    """The offline instance CG-BP designs for: ``num_sessions`` requests of the workload's mean lengths."""
    l_in, l_out = workload_lengths(scenario)
    return OfflineInstance.from_scenario(scenario, int(num_sessions), l_in=l_in, l_out=l_out)


def design_terms(scenario: Scenario) -> dict[str, float]:
    """The ingredients of the design rule: ``lambda`` (1/s), ``T_1`` (s: one request's completion time on
    CG-BP with |R| = 1, routed on its fastest chain, weighted over clients), ``rule`` = round(lambda T_1 +
    sqrt(lambda T_1)) (half up), ``R_max`` (perfmodel.max_design_sessions) and ``l_in``, ``l_out``."""
    l_in, l_out = workload_lengths(scenario)
    cg = cg_bp_placement(offline_instance(scenario, 1), 1)
    spans = cg.spans()
    tm = TimeModel(scenario)
    weights = np.array([c.weight for c in scenario.clients], dtype=float)
    times = []
    for c in range(scenario.num_clients):
        fixed, per_block = tm.hop_costs(c, l_in, l_out)
        _, chain = shortest_chain(spans, fixed, per_block, scenario.num_blocks)
        times.append(tm.request_time(chain, c, l_in, l_out))
    t1 = float(np.dot(weights, times) / weights.sum())
    lam = arrival_rate(scenario)
    r_max = max_design_sessions(scenario, scenario.model.session_bytes(l_in, l_out))
    if math.isinf(lam):
        n = scenario.workload.num_requests or len(scenario.workload.trace.arrival_s)  # type: ignore[union-attr]
        rule = float(n)
    else:
        x = lam * t1
        rule = float(math.floor(x + math.sqrt(x) + 0.5))
    return {"lambda": lam, "T_1": t1, "rule": rule, "R_max": float(r_max), "l_in": l_in, "l_out": l_out}


def design_num_sessions(scenario: Scenario) -> int:
    """CG-BP's design |R| = max(1, min(round(lambda T_1 + sqrt(lambda T_1)), R_max))
    (mean + one standard deviation of the number in system). With a trace, lambda is its mean
    rate (all at once: its number of requests). Computed once per scenario object."""
    d = scenario.memo("cg.design_terms", lambda: design_terms(scenario))
    return max(1, min(int(d["rule"]), int(d["R_max"])))
