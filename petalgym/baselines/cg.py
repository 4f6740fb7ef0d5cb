"""The paper's conservative greedy: CG-BPRR (offline) and CG-BP + WS-RR (online) (docs/deciders.md).

Blocks are 0-based here (the paper numbers them 1..L). Sizes are bytes, times seconds.

* :func:`cg_bp_placement` -- CG-BPRR steps 1-2 (conservative block count, greedy window choice), which
  lives in :mod:`petalgym.design` with the design rule (the environments need both) and is re-exported;
* :func:`cg_bprr` -- steps 1-3 on an :class:`~petalgym.offline.OfflineInstance` (every request of client c
  on the shortest chain with per-token hop cost t_cj + tau_j m_ij);
* :func:`theorem2_bound_for` -- Theorem 2's bound on CG-BPRR's average per-token time;
* :func:`design_num_sessions` -- the online design rule |R| = min(round(lambda T_1 + sqrt(lambda T_1)),
  R_max);
* :class:`CGBPRRDecider` (``"cg-bprr"``) and :class:`CGBPWSRRDecider` (``"cg-bp-ws-rr"``);
* :class:`CGFollowDecider` (``"cg-bp-ws-rr-follow"``): two CG-BP designs, servers moving between them
  as the arrival rate crosses a threshold.

Servers with m_j = 0 (they cannot hold one block plus the cache of |R| sessions) get no window in CG-BP.
Because an :class:`~petalgym.offline.OfflineSolution` and the simulator both need >= 1 block per server,
such a server is given ONE block (at the first block of least capacity C_b, PETALS' rule with m = 1) and
is never routed through: it is "unused", as in the paper.
"""

from __future__ import annotations

import math
import time

import numpy as np

from petalgym.deciders import ArrivalWindow, Decider, Route, checked_number, positive_number, whole_number
from petalgym.design import (
    CGBPResult,
    GreedyStep,
    arrival_rate,
    cg_bp_placement,
    design_num_sessions,
    design_terms,
    offline_instance,
    workload_lengths,
)
from petalgym.errors import DeciderError, SolverError
from petalgym.offline import OfflineInstance, OfflineSolution, evaluate
from petalgym.perfmodel import (
    Chain,
    Placement,
    route_key,
    shortest_chain,
    theorem2_bound,
)
from petalgym.scenario import Scenario
from petalgym.swarm import Request, ServerStatus, SwarmView

__all__ = [
    "CGBPRRDecider",
    "CGBPResult",
    "CGBPWSRRDecider",
    "CGFollowDecider",
    "GreedyStep",
    "cg_bp_placement",
    "cg_bprr",
    "design_num_sessions",
    "design_terms",
    "theorem2_bound_for",
    "workload_lengths",
]


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
# Deciders
# --------------------------------------------------------------------------------------------------
def _largest_feasible_sessions(scenario: Scenario, upper: int) -> int:
    """A large |R| <= ``upper`` for which CG-BP is feasible on ``scenario`` (1 if none): ``upper`` itself,
    else the bisection's last feasible value between 1 and ``upper`` (every conservative block count only
    shrinks as |R| grows, so feasibility mostly does too)."""

    def feasible(r: int) -> bool:
        try:
            cg_bp_placement(offline_instance(scenario, r), r)
        except SolverError:
            return False
        return True

    lo, hi = 1, max(1, upper)
    if feasible(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if feasible(mid):
            lo = mid
        else:
            hi = mid
    return lo


class _CGDecider(Decider):
    """Shared parts: CG-BP placement computed once at reset over all servers; a (re)joining server gets
    its CG-BP window; routing only over servers CG-BP uses."""

    def __init__(self, num_sessions: int | None = None, sessions_factor: float = 1.0):
        self.sessions_factor = positive_number(self.name, "sessions_factor", sessions_factor)
        if num_sessions is not None and sessions_factor != 1.0:
            raise DeciderError(f"{self.name}: give num_sessions or sessions_factor, not both")
        self.num_sessions = whole_number(self.name, "num_sessions", num_sessions, optional=True)
        self.sessions_used: int | None = None
        self.cg: CGBPResult | None = None
        self._placements: list[Placement] = []
        self._used: frozenset[int] = frozenset()
        self._spans: list[tuple[int, int, int]] = []
        self._spans_version = -1

    def _setup(self, num_sessions: int) -> None:
        sc = self.scenario
        key = ("cg.cg_bp_placement", num_sessions)
        self.cg = sc.memo(key, lambda: cg_bp_placement(offline_instance(sc, num_sessions), num_sessions))
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
    needed (Route(wait=True)). If CG-BP is infeasible at that |R| (CG-BP must reserve cache for all of
    them on every block), a feasible smaller |R| is used (:func:`_largest_feasible_sessions`) and
    :meth:`describe` says so; an infeasible ``num_sessions`` given explicitly raises SolverError at reset."""

    name = "cg-bprr"

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        self.sessions_wanted = self.num_sessions or max(
            1, round(self.sessions_factor * (scenario.workload.num_requests or design_num_sessions(scenario)))
        )
        n = int(self.sessions_wanted)
        while True:
            try:
                self._setup(n)
                break
            except SolverError as exc:
                if self.num_sessions is not None or n <= 1:
                    raise SolverError(
                        f"cg-bprr on {scenario.name}: {exc} (pass num_sessions= to use fewer)"
                    ) from None
                n = _largest_feasible_sessions(scenario, n - 1)
        self._chains: dict[tuple[int, int], Chain | None] = {}
        self._chains_version = -1
        self.note = (
            ""
            if n == self.sessions_wanted
            else f"|R| = {n}: CG-BP is infeasible at the {self.sessions_wanted} sessions asked for"
        )

    def describe(self) -> str:
        return f"{super().describe()}: {self.note}" if self.note else super().describe()

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
    over ``history_tokens`` and the tokens still to produce
    (:meth:`~petalgym.perfmodel.TimeModel.route_costs`), so that a chain's cost is, up to a constant per
    request, the time the simulator then takes (:meth:`~petalgym.perfmodel.TimeModel.segment_times`).
    Route(wait=True).

    Fast path: the zero-wait shortest chain is cached per (client, lengths, recovery or not, route_from,
    placement version); if none of its hops waits, it is the WS-RR chain (waits are >= 0).
    If CG-BP is infeasible at the design |R| (R_max is only an upper bound), the largest feasible smaller
    |R| is used (``sessions_used``). If every chain has an infinite wait (a hop larger than a server's
    whole cache), the zero-wait chain is returned and the simulator fails the request as exceeding capacity.
    """

    name = "cg-bp-ws-rr"

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        self.note = ""
        n = self.num_sessions
        if n is not None:
            try:
                self._setup(n)
            except SolverError as exc:
                raise SolverError(f"cg-bp-ws-rr on {scenario.name}: {exc}") from None
        else:
            wanted = n = max(1, round(self.sessions_factor * design_num_sessions(scenario)))
            while True:
                try:
                    self._setup(n)
                    break
                except SolverError as exc:
                    if n <= 1:
                        raise SolverError(f"cg-bp-ws-rr on {scenario.name}: {exc}") from None
                    n -= 1
            if n != wanted:
                self.note = f"|R| = {n}: CG-BP is infeasible at the design rule's {wanted}"
        self._zero: dict[tuple[int, int, int, bool, int], Chain] = {}
        self._zero_version = -1

    def route(self, view: SwarmView, request: Request) -> Route | None:
        if self._zero_version != view.placement_version:
            self._zero.clear()
            self._zero_version = view.placement_version
        start = request.route_from
        key = route_key(request)
        spans = self.routable_spans(view)
        fixed = per_block = None
        chain = self._zero.get(key)
        if chain is None:
            fixed, per_block = view.time_model.route_costs(request)
            _, chain = shortest_chain(spans, fixed, per_block, view.num_blocks, start)
            if not chain:
                return None
            self._zero[key] = chain
        wait = view.hop_wait(request.kv_bytes)
        if all(wait(h.server, h.end - h.start) == 0.0 for h in chain):
            return Route(chain, wait=True)
        if fixed is None:
            fixed, per_block = view.time_model.route_costs(request)
        cost, ws_chain = shortest_chain(spans, fixed, per_block, view.num_blocks, start, wait=wait)
        return Route(ws_chain if math.isfinite(cost) else chain, wait=True)


class CGFollowDecider(CGBPWSRRDecider):
    """CG-BP + WS-RR with two CG-BP designs, one for the trough and one for the peak, between which the
    servers move as the measured arrival rate crosses ``busy_rate`` (a placement that follows the load).

    The low design (|R| = ``low_sessions``, long windows, short chains) serves a light load fastest; the
    high design (|R| = ``high_sessions``, short windows, cache for more sessions) keeps a heavy load
    from waiting. The regime turns high when the arrival rate over the last ``rate_window_s`` exceeds
    ``busy_rate`` and low again when it falls below ``calm_fraction`` of it; at each rebalance offer (every
    ``check_period_s`` on average per server) an ONLINE server whose window is not the regime's moves
    to it (reloading its blocks; its sessions are interrupted and recover) when no other server is
    loading and the other ONLINE servers cover every block. Routing is WS-RR over the servers either
    design uses.

    Args:
        low_sessions: CG-BP's |R| for the trough design.
        high_sessions: CG-BP's |R| for the peak design (> ``low_sessions``).
        busy_rate: arrivals/s above which the peak design is wanted.
        calm_fraction: the trough design is wanted again below ``calm_fraction`` x ``busy_rate``
            arrivals/s (in (0, 1]: the gap avoids moving back and forth).
        rate_window_s: seconds over which arrivals are counted.
        check_period_s: mean seconds between a server's rebalance offers.
    """

    name = "cg-bp-ws-rr-follow"
    pure_route = False

    def __init__(
        self,
        low_sessions: int = 32,
        high_sessions: int = 192,
        busy_rate: float = 4.0,
        calm_fraction: float = 0.5,
        rate_window_s: float = 300.0,
        check_period_s: float = 120.0,
    ):
        super().__init__(num_sessions=high_sessions)
        low_sessions = whole_number(self.name, "low_sessions", low_sessions)
        if high_sessions <= low_sessions:
            raise DeciderError(
                f"{self.name}: high_sessions must exceed low_sessions, got "
                f"{high_sessions!r} <= {low_sessions!r}"
            )
        self.calm_fraction = checked_number(
            self.name, "calm_fraction", calm_fraction, high=1.0, high_open=False
        )
        self.low_sessions = low_sessions
        self.high_sessions = int(high_sessions)
        self.busy_rate = positive_number(self.name, "busy_rate", busy_rate)
        self.rate_window_s = positive_number(self.name, "rate_window_s", rate_window_s)
        self.check_period_s = positive_number(self.name, "check_period_s", check_period_s)
        self.rebalance_period_s = self.check_period_s
        self.moves = 0  # servers moved in this episode

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """Both designs (the peak's first, which WS-RR's parent set-up keeps), the initial regime from the
        scenario's mean arrival rate, the arrival counter."""
        super().reset(scenario, rng)
        high, high_used = self._placements, self._used
        self._setup(self.low_sessions)
        self._designs = {False: self._placements, True: high}
        self._used = self._used | high_used
        self.busy = arrival_rate(scenario) > self.busy_rate
        self._placements = self._designs[self.busy]
        self._window = ArrivalWindow(self.rate_window_s)
        self.moves = 0

    def _rate(self, now: float) -> float:
        """Arrivals/s over the last ``rate_window_s`` (over the time so far at the start)."""
        return self._window.count(now) / max(min(self.rate_window_s, now), 1e-9)

    def route(self, view: SwarmView, request: Request) -> Route | None:
        """WS-RR; a request's arrival is counted the first time it is routed."""
        self._window.note(request)
        return super().route(view, request)

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        """The regime's window for ``server`` if it is not there, nothing else loads and the rest covers
        the model; else None."""
        rate = self._rate(view.now)
        if rate > self.busy_rate:
            self.busy = True
        elif rate < self.calm_fraction * self.busy_rate:
            self.busy = False
        self._placements = self._designs[self.busy]
        target = self._placements[server]
        s = view.servers[server]
        if s.status != ServerStatus.ONLINE or (s.start, s.end) == (target.start, target.end):
            return None
        if any(o.status == ServerStatus.LOADING for o in view.servers):
            return None
        coverage = view.coverage()  # ONLINE servers per block, this one included
        if any(count <= (s.start <= block < s.end) for block, count in enumerate(coverage)):
            return None
        self.moves += 1
        return target

    def describe(self) -> str:
        calm = self.calm_fraction * self.busy_rate
        return (
            f"cg-bp-ws-rr-follow (|R| {self.low_sessions} / {self.high_sessions}, busy above "
            f"{self.busy_rate:g}/s, calm below {calm:g}/s, window {self.rate_window_s:g} s, "
            f"check {self.check_period_s:g} s)"
        )
