"""The paper's conservative greedy: CG-BPRR (offline) and CG-BP + WS-RR (online), paper-notes sections 4-5.

Blocks are 0-based here (the paper numbers them 1..L). Sizes are bytes, times seconds.

* :func:`cg_bp_placement` -- CG-BPRR steps 1-2 (conservative block count, greedy window choice);
* :func:`cg_bprr` -- steps 1-3 on an :class:`~petalgym.offline.OfflineInstance` (every request of client c
  on the shortest chain with per-token hop cost t_cj + tau_j m_ij);
* :func:`theorem2_bound_for` -- Theorem 2's bound on CG-BPRR's average per-token time;
* :func:`design_num_sessions` -- the online design rule |R| = min(round(lambda T_1 + sqrt(lambda T_1)),
  R_max);
* :class:`CGBPRRDecider` (``"cg-bprr"``) and :class:`CGBPWSRRDecider` (``"cg-bp-ws-rr"``).

Servers with m_j = 0 (they cannot hold one block plus the cache of |R| sessions) get no window in CG-BP.
Because an :class:`~petalgym.offline.OfflineSolution` and the simulator both need >= 1 block per server,
such a server is given ONE block (at the first block of least capacity C_b, PETALS' rule with m = 1) and
is never routed through: it is "unused", as in the paper.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from petalgym.deciders import Decider, Route
from petalgym.errors import DeciderError, SolverError
from petalgym.offline import OfflineInstance, OfflineSolution, evaluate
from petalgym.perfmodel import (
    Chain,
    Placement,
    TimeModel,
    conservative_num_blocks,
    max_design_sessions,
    session_capacity,
    shortest_chain,
    theorem2_bound,
)
from petalgym.scenario import Scenario
from petalgym.swarm import Request, SwarmView

__all__ = [
    "CGBPRRDecider",
    "CGBPResult",
    "CGBPWSRRDecider",
    "GreedyStep",
    "cg_bp_placement",
    "cg_bprr",
    "design_num_sessions",
    "design_terms",
    "theorem2_bound_for",
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
    f_j = floor((M_j - s_m m_j) / (s_c m_j)). Step 2 (paper-notes section 4): a dummy server with
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
# CG-BPRR: steps 1-3
# --------------------------------------------------------------------------------------------------
def cg_bprr(instance: OfflineInstance) -> OfflineSolution:
    """CG-BPRR on ``instance``: CG-BP with |R| = all requests, then every request of client c on the
    shortest chain under per-token hop costs t_cj + tau_j m_ij (optimal for the placement: step 1 leaves
    cache for all |R| sessions on every block). Objective by :func:`petalgym.offline.evaluate`.

    ``info``: ``cg_bp`` (the :class:`CGBPResult`), ``theorem2_bound`` (s per token), ``unused_servers``.
    Raises SolverError if CG-BP is infeasible, or if an unused server cannot hold even one block (an
    OfflineSolution needs >= 1 block per server).
    """
    t_start = time.perf_counter()
    inst = instance
    cg = cg_bp_placement(inst)
    for j in cg.unused_servers:
        if int(inst.memory[j]) < int(inst.block_bytes):
            raise SolverError(
                f"CG-BPRR: server {j} is unused but cannot hold even one block ({inst.memory[j]} B < "
                f"{inst.block_bytes} B); an OfflineSolution needs >= 1 block per server"
            )
    spans = cg.spans()
    tau = [float(x) for x in inst.tau]
    routes: dict[int, list[tuple[Chain, int]]] = {}
    for c in range(inst.num_clients):
        n = int(inst.requests[c])
        if n == 0:
            continue
        _, chain = shortest_chain(spans, [float(x) for x in inst.t[c]], tau, inst.num_blocks)
        if not chain:  # cannot happen: CG-BP covers every block
            raise SolverError(f"CG-BPRR: no chain for client {c} on the CG-BP placement (internal error)")
        routes[c] = [(chain, n)]
    placement = cg.placements()
    objective = evaluate(inst, placement, routes)
    sol = OfflineSolution(
        method="cg-bprr",
        placement=placement,
        routes=routes,
        objective=objective,
        status="feasible",
        info={"cg_bp": cg, "unused_servers": cg.unused_servers},
    )
    sol.info["theorem2_bound"] = theorem2_bound_for(inst, sol)
    sol.solve_time_s = time.perf_counter() - t_start
    return sol


def theorem2_bound_for(instance: OfflineInstance, solution: OfflineSolution) -> float:
    """Theorem 2's bound (s per token) on the average per-token time of a CG-BPRR ``solution``:
    sum_{j<=K} t~_j m_j - tau_K (sum_{j<=K} m_j - L) over the servers sorted by t~_j = tau_j + max_c t_cj/m_j
    (K: fewest of them covering L). Unused servers (``solution.info["unused_servers"]``) are left out."""
    inst = instance
    unused = set(solution.info.get("unused_servers", ()))  # type: ignore[arg-type]
    t_star = np.asarray(inst.t, dtype=float).max(axis=0)
    servers = [j for j in range(inst.num_servers) if j not in unused]
    m = [int(solution.placement[j].num_blocks) for j in servers]
    tau = [float(inst.tau[j]) for j in servers]
    tt = [tau[i] + float(t_star[j]) / m[i] for i, j in enumerate(servers)]
    return theorem2_bound(tt, m, int(inst.num_blocks), tau)


# --------------------------------------------------------------------------------------------------
# Online design parameter |R|
# --------------------------------------------------------------------------------------------------
def workload_lengths(scenario: Scenario) -> tuple[int, int]:
    """(l_in, l_out): the workload's mean lengths, rounded half up (of the trace, if it is a trace)."""
    return scenario.workload.mean_lengths()


def _arrival_rate(scenario: Scenario) -> float:
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


def _offline_instance(scenario: Scenario, num_sessions: int) -> OfflineInstance:
    l_in, l_out = workload_lengths(scenario)
    return OfflineInstance.from_scenario(scenario, int(num_sessions), l_in=l_in, l_out=l_out)


def design_terms(scenario: Scenario) -> dict[str, float]:
    """The ingredients of the design rule: ``lambda`` (1/s), ``T_1`` (s: one request's completion time on
    CG-BP with |R| = 1, routed on its fastest chain, weighted over clients), ``rule`` = round(lambda T_1 +
    sqrt(lambda T_1)) (half up), ``R_max`` (perfmodel.max_design_sessions) and ``l_in``, ``l_out``."""
    l_in, l_out = workload_lengths(scenario)
    cg = cg_bp_placement(_offline_instance(scenario, 1), 1)
    spans = cg.spans()
    tm = TimeModel(scenario)
    weights = np.array([c.weight for c in scenario.clients], dtype=float)
    times = []
    for c in range(scenario.num_clients):
        fixed, per_block = tm.hop_costs(c, l_in, l_out)
        _, chain = shortest_chain(spans, fixed, per_block, scenario.num_blocks)
        times.append(tm.request_time(chain, c, l_in, l_out))
    t1 = float(np.dot(weights, times) / weights.sum())
    lam = _arrival_rate(scenario)
    r_max = max_design_sessions(scenario, scenario.model.session_bytes(l_in, l_out))
    if math.isinf(lam):
        n = scenario.workload.num_requests or len(scenario.workload.trace.arrival_s)  # type: ignore[union-attr]
        rule = float(n)
    else:
        x = lam * t1
        rule = float(math.floor(x + math.sqrt(x) + 0.5))
    return {"lambda": lam, "T_1": t1, "rule": rule, "R_max": float(r_max), "l_in": l_in, "l_out": l_out}


def design_num_sessions(scenario: Scenario) -> int:
    """CG-BP's design |R| = max(1, min(round(lambda T_1 + sqrt(lambda T_1)), R_max)) (paper-notes
    section 5: mean + one standard deviation of the number in system). With a trace, lambda is its mean
    rate (all at once: its number of requests). Computed once per scenario object."""
    d = scenario.memo("cg.design_terms", lambda: design_terms(scenario))
    return max(1, min(int(d["rule"]), int(d["R_max"])))


# --------------------------------------------------------------------------------------------------
# Deciders
# --------------------------------------------------------------------------------------------------
class _CGDecider(Decider):
    """Shared parts: CG-BP placement computed once at reset over all servers; a (re)joining server gets
    its CG-BP window; routing only over servers CG-BP uses."""

    def __init__(self, num_sessions: int | None = None, sessions_factor: float = 1.0):
        if isinstance(sessions_factor, bool) or not (
            isinstance(sessions_factor, (int, float)) and 0 < sessions_factor < math.inf
        ):
            raise DeciderError(
                f"{self.name}: sessions_factor must be a positive number, got {sessions_factor!r}"
            )
        if num_sessions is not None and sessions_factor != 1.0:
            raise DeciderError(f"{self.name}: give num_sessions or sessions_factor, not both")
        self.sessions_factor = float(sessions_factor)
        if num_sessions is not None and (
            isinstance(num_sessions, bool)
            or not isinstance(num_sessions, (int, np.integer))
            or num_sessions < 1
        ):
            raise DeciderError(
                f"{self.name}: num_sessions must be an integer >= 1 or None, got {num_sessions!r}"
            )
        self.num_sessions = None if num_sessions is None else int(num_sessions)
        self.sessions_used: int | None = None
        self.cg: CGBPResult | None = None
        self._placements: list[Placement] = []
        self._used: frozenset[int] = frozenset()
        self._spans: list[tuple[int, int, int]] = []
        self._spans_version = -1

    def _setup(self, num_sessions: int) -> None:
        sc = self.scenario
        key = ("cg.cg_bp_placement", num_sessions)
        self.cg = sc.memo(key, lambda: cg_bp_placement(_offline_instance(sc, num_sessions), num_sessions))
        self.sessions_used = num_sessions
        self._placements = self.cg.placements()
        self._used = frozenset(self.cg.used_servers)
        self._spans_version = -1

    def place(self, view: SwarmView, server: int) -> Placement:
        """The server's CG-BP window (the same one when it rejoins); all memory left is cache."""
        return self._placements[server]

    def routable_spans(self, view: SwarmView) -> list[tuple[int, int, int]]:
        """ONLINE spans of the servers CG-BP uses (cached per placement version)."""
        if self._spans_version != view.placement_version:
            self._spans = [s for s in view.spans() if s[0] in self._used]
            self._spans_version = view.placement_version
        return self._spans

    def describe(self) -> str:
        return f"{self.name} (|R|={self.sessions_used})"


class CGBPRRDecider(_CGDecider):
    """Offline CG-BPRR run online: CG-BP with |R| = ``num_sessions``, else ``sessions_factor`` x (the
    workload's number of requests, else the design rule), rounded; every request on the shortest chain
    under per-token hop costs t_cj + tau_j m_ij (step 3) from its ``route_from`` block; waits for cache if
    needed (Route(wait=True)). Raises SolverError at reset if CG-BP is infeasible for that |R|."""

    name = "cg-bprr"

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        n = self.num_sessions or max(
            1, round(self.sessions_factor * (scenario.workload.num_requests or design_num_sessions(scenario)))
        )
        try:
            self._setup(int(n))
        except SolverError as exc:
            raise SolverError(
                f"cg-bprr on {scenario.name}: {exc} (pass num_sessions= to use fewer)"
            ) from None
        self._chains: dict[tuple[int, int], Chain | None] = {}
        self._chains_version = -1

    def route(self, view: SwarmView, request: Request) -> Route | None:
        if self._chains_version != view.placement_version:
            self._chains.clear()
            self._chains_version = view.placement_version
        key = (request.client, request.route_from)
        if key not in self._chains:
            fixed, per_block = view.time_model.token_costs(request.client)
            _, chain = shortest_chain(
                self.routable_spans(view), fixed, per_block, view.num_blocks, request.route_from
            )
            self._chains[key] = chain or None
        chain = self._chains[key]
        return Route(chain, wait=True) if chain is not None else None


class CGBPWSRRDecider(_CGDecider):
    """CG-BP placement (|R| = ``num_sessions``, else ``sessions_factor`` x :func:`design_num_sessions`,
    rounded) + WS-RR routing.

    WS-RR: the shortest chain under hop cost wait_ij + [tI_cj + (l-1) t_cj] + [tauI_j + (l-1) tau_j] m_ij,
    with wait_ij = view.wait_for(j, m_ij s_c) (every session and reservation held to its planned finish).
    A recovery (``route_from > 0`` or tokens already produced) routes the suffix with the replay prefill
    over ``history_tokens`` and the remaining tokens. Route(wait=True).

    Fast path: the zero-wait shortest chain is cached per (client, lengths, route_from, placement version);
    if none of its hops waits, it is the WS-RR chain (waits are >= 0).
    If CG-BP is infeasible at the design |R| (R_max is only an upper bound), the largest feasible smaller
    |R| is used (``sessions_used``). If every chain has an infinite wait (a hop larger than a server's
    whole cache), the zero-wait chain is returned and the simulator fails the request as exceeding capacity.
    """

    name = "cg-bp-ws-rr"

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        n = self.num_sessions
        if n is not None:
            try:
                self._setup(n)
            except SolverError as exc:
                raise SolverError(f"cg-bp-ws-rr on {scenario.name}: {exc}") from None
        else:
            n = max(1, round(self.sessions_factor * design_num_sessions(scenario)))
            while True:
                try:
                    self._setup(n)
                    break
                except SolverError as exc:
                    if n <= 1:
                        raise SolverError(f"cg-bp-ws-rr on {scenario.name}: {exc}") from None
                    n -= 1
        self._zero: dict[tuple[int, int, int, int], Chain] = {}
        self._zero_version = -1

    def route(self, view: SwarmView, request: Request) -> Route | None:
        if self._zero_version != view.placement_version:
            self._zero.clear()
            self._zero_version = view.placement_version
        if request.tokens_done > 0 or request.route_from > 0:  # recovery: replay, then the rest
            l_in, l_out = request.history_tokens, request.l_out - request.tokens_done + 1
        else:
            l_in, l_out = request.l_in, request.l_out
        start = request.route_from
        key = (request.client, l_in, l_out, start)
        spans = self.routable_spans(view)
        fixed = per_block = None
        chain = self._zero.get(key)
        if chain is None:
            fixed, per_block = view.time_model.hop_costs(request.client, l_in, l_out)
            _, chain = shortest_chain(spans, fixed, per_block, view.num_blocks, start)
            if not chain:
                return None
            self._zero[key] = chain
        kv = request.kv_bytes
        wait_for = view.wait_for
        if all(wait_for(h.server, (h.end - h.start) * kv) == 0.0 for h in chain):
            return Route(chain, wait=True)
        if fixed is None:
            fixed, per_block = view.time_model.hop_costs(request.client, l_in, l_out)
        cost, ws_chain = shortest_chain(
            spans, fixed, per_block, view.num_blocks, start, wait=lambda j, k: wait_for(j, k * kv)
        )
        return Route(ws_chain if math.isfinite(cost) else chain, wait=True)
