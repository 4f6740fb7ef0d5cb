"""The discrete-event swarm simulator (plain Python, no Gymnasium).

The engine runs ask/tell: :meth:`Simulator.next_decision` advances simulated time until somebody must
decide (a server joins: PLACE; a request must be routed: ROUTE; a server may rebalance: REBALANCE), and
:meth:`Simulator.apply` takes the answer. :meth:`Simulator.run` plays a whole episode with one
:class:`~petalgym.deciders.Decider`; the Gymnasium environments drive the same loop step by step.

Mechanics (see the README's "Simulator" section):

* arrivals, lengths and clients come from the scenario's workload (Poisson or trace), pre-drawn per seed;
* a request holds ``k * s_c`` bytes of cache on every server of its chain (k = blocks processed there)
  from its start to its completion; time follows the performance model (no processor sharing), timed by
  :meth:`~petalgym.perfmodel.TimeModel.segment_times`;
* if its chain lacks cache now, a request either waits for the exact earliest time the whole chain fits
  (a reservation that later requests may not delay) or, PETALS-style, retries after 1, 2, 4, ... s, each
  wait capped at ``simulation.backoff_cap_s`` (capped retries fall at anchor + k x cap), routed again
  each time;
* a decider may instead keep a request in a client-side FIFO queue (:class:`~petalgym.deciders.Enqueue`,
  central-queue dispatch: JFFC and its alternatives); the heads of the queues are offered to it again at
  every dispatch opportunity (a route ended, a server came or went), earliest-queued first, and
  :meth:`~petalgym.deciders.Decider.route_ended` tells it when a job leaves its chain;
* with churn, each server alternates lifetime / downtime; a failure interrupts its sessions at once, a
  departure stops new sessions and interrupts what is left after ``drain_timeout_s``. Every departure at
  one instant is applied before any decision at that instant is asked. An interrupted session keeps its
  upstream hops once they hold its whole cache (a new hop only after the segment's first token: a session
  interrupted during its first prefill starts afresh, initial delay included, and a recovery interrupted
  during its replay keeps only the hops it had kept): their servers keep holding its cache while it is
  re-routed from the lost hop's first block and while it waits for a reservation (a kept hop's cache
  outranks later reservations: those that would overflow are cancelled and re-planned). It replays a
  prefill over the l_in + generated tokens on the new hops (the interrupted token is redone: its step on
  the kept hops, then the replay, each new hop's never cheaper than its decode step:
  :meth:`~petalgym.perfmodel.TimeModel.replay_step`). While a recovery backs off or finds no chain its
  kept cache is held for a time not known yet (nobody can plan to use it; a request that can only wait
  for it backs off); a kept hop is given up only when its own server leaves, drains or moves. The back-off
  of a new wait starts again at 1 s; a request with no chain for ``no_chain_timeout_s`` fails;
* a rejoining (or rebalancing) server reloads its blocks at ``load_s_per_gb``.

Interrupted requests are re-routed before requests whose reservations were cancelled by the same event.

Back-off retries of a decider whose routing is a pure function of the swarm (``Decider.pure_route``)
are skipped while they would see a swarm in which they would only back off again: fresh requests in the
capped phase sleep without events, and after each change of the swarm one question per kind of request
(same client and lengths) decides whether the next of them to retry would start. Results are identical
to retrying every time (``skip_retries=False``), with far fewer events under overload.

Every random stream derives from the seed (``numpy.random.SeedSequence``): the workload, the initial join
order, each server's churn and the rebalance clock use separate streams, so different deciders see the
same arrivals, churn and join order for the same seed (common random numbers).
"""

from __future__ import annotations

import csv
import heapq
import math
import time
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from petalgym.contention import FifoProcessors
from petalgym.deciders import Enqueue
from petalgym.errors import DeciderError, UsageError
from petalgym.perfmodel import Chain, Hop, Placement, TimeModel, chain_errors
from petalgym.scenario import Scenario, max_blocks_on
from petalgym.swarm import (
    Request,
    RequestStatus,
    ServerState,
    ServerStatus,
    SwarmView,
    earliest_start,
    hop_needs,
    max_usage,
)
from petalgym.workload import draw_arrivals

if TYPE_CHECKING:
    from petalgym.deciders import Decider

# event kinds, in the order they are processed when simultaneous
(
    _COMPLETE,
    _START,
    _JOIN_READY,
    _LEAVE,
    _SHOCK,
    _DRAIN_END,
    _REJOIN,
    _ARRIVAL,
    _RETRY,
    _TIMEOUT,
    _REBALANCE,
    _QUEUE_TIMEOUT,
) = range(12)

#: Events at the current instant up to this kind (completions, reservation starts, joins, departures)
#: are applied before a decision at that instant is asked.
_BEFORE_DECISIONS = _DRAIN_END

_WAIT_EPS = 1e-9  # s: a back-off retry this close to the end of max_wait_s counts as at the end
_PHASE_TOL = 1e-12  # relative: capped retries whose phases differ by less are compared exactly
#: Kinds of request (client, lengths) that may sleep at once: each change of the swarm asks the decider
#: once per kind, so with many kinds (length distributions) the others keep their retry events.
_MAX_SLEEPER_KINDS = 4

_RUNNING, _WAITING, _ROUTING, _STALLED, _QUEUED = (
    RequestStatus.RUNNING,
    RequestStatus.WAITING,
    RequestStatus.ROUTING,
    RequestStatus.STALLED,
    RequestStatus.QUEUED,
)
_ONLINE, _OFFLINE, _LOADING, _DRAINING = (
    ServerStatus.ONLINE,
    ServerStatus.OFFLINE,
    ServerStatus.LOADING,
    ServerStatus.DRAINING,
)


class DecisionKind(IntEnum):
    """What the pending decision is about."""

    PLACE = 0
    ROUTE = 1
    REBALANCE = 2


@dataclass
class Decision:
    """A pending decision: PLACE or REBALANCE ``server``, or ROUTE ``request``, at simulated ``time``."""

    kind: DecisionKind
    time: float
    server: int = -1
    request: Request | None = None
    initial: bool = False  # PLACE during the initial deployment at t=0

    def ask(self, decider: Decider, view: SwarmView) -> Any:
        """``decider``'s answer to this decision: its route, place or rebalance, as the simulator asks."""
        if self.kind == DecisionKind.ROUTE:
            return decider.route(view, self.request)  # type: ignore[arg-type]
        if self.kind == DecisionKind.PLACE:
            return decider.place(view, self.server)
        return decider.rebalance(view, self.server)


@dataclass
class SimulationResult:
    """Outcome of one episode: every request (with its record) and run statistics."""

    scenario: str
    decider: str
    seed: int
    requests: list[Request]
    end_time: float
    events: int
    decisions: dict[str, int]
    wall_s: float
    decide_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: Requests arriving before this time (s) are left out of the summary (the workload's warm-up).
    warmup_s: float = 0.0

    def summary(self) -> dict[str, float]:
        """Aggregate metrics (see :func:`petalgym.metrics.summarise`), warm-up excluded."""
        from petalgym.metrics import summarise

        out = summarise(self.requests, self.warmup_s)
        out["decide_s"] = self.decide_s
        out["events"] = float(self.events)
        out["wall_s"] = self.wall_s
        return out

    def records(self) -> list[dict[str, Any]]:
        """One dict per request (see :func:`petalgym.metrics.request_record`)."""
        from petalgym.metrics import request_record

        return [request_record(r) for r in self.requests]

    def to_csv(self, path: str | Path) -> Path:
        """Write the per-request records as CSV; returns the path."""
        rows = self.records()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            if rows:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        return path


def backoff_s(retries: int, cap: float) -> float:
    """The wait (s) before back-off retry number ``retries``: 1, 2, 4, ... s, capped at ``cap``."""
    return min(2.0 ** min(retries - 1, 1023), cap)


class _Sleepers:
    """Fresh requests of one kind (client, lengths) backing off at the cap interval, without events.

    Member r retries at ``anchor + k * cap`` for k >= ``step`` up to its last retry ``final`` (when its
    waiting budget runs out; inf without one). ``phases`` orders the members by ``anchor mod cap`` (exact
    in IEEE arithmetic), so the member whose next retry comes first after a time is found by bisection.
    """

    __slots__ = ("generation", "members", "phases", "wake")

    def __init__(self) -> None:
        self.members: dict[int, list] = {}  # rid -> [request, anchor, step, final, in phases]
        self.phases: list[tuple[float, int]] = []
        self.generation = 0  # bumped when the wake-up changes: wake-up events of older ones are stale
        self.wake: tuple[float, int] | None = None  # (time, request id) of the scheduled wake-up

    def add(self, req: Request, anchor: float, step: int, final: float, cap: float) -> None:
        self.members[req.id] = [req, anchor, step, final, True]
        insort(self.phases, (math.fmod(anchor, cap), req.id))

    def remove(self, rid: int, cap: float) -> list:
        member = self.members.pop(rid)
        if member[4]:
            self._unphase(rid, member[1], cap)
        return member

    def _unphase(self, rid: int, anchor: float, cap: float) -> None:
        i = bisect_left(self.phases, (math.fmod(anchor, cap), rid))
        del self.phases[i]

    def first_retry(self, position: tuple[float, int, int], cap: float) -> tuple[float, int, Request] | None:
        """(time, step, request) of the member whose next capped retry comes first after ``position``
        (a (time, kind, order) event position), ties by request id; None if none before its last retry.
        Members with no capped retry left before their last retry leave ``phases``."""
        phases = self.phases
        n = len(phases)
        if not n:
            return None
        t = position[0]
        x = math.fmod(t, cap)
        tol = _PHASE_TOL * max(1.0, abs(t))
        first = bisect_left(phases, (x - tol, -1))
        best: tuple[float, int, int, Request] | None = None
        best_delta = math.inf
        done: list[int] = []
        for k in range(n):
            phase, rid = phases[(first + k) % n]
            delta = (phase - x) % cap
            if delta > best_delta + 2 * tol and cap - delta > 2 * tol:
                break
            member = self.members[rid]
            req, anchor, step, final, _ = member
            step = _next_step(anchor, step, cap, position, rid)
            when = anchor + step * cap
            if when >= final:
                done.append(rid)
                continue
            if best is None or (when, rid) < (best[0], best[2]):
                best = (when, step, rid, req)
                best_delta = when - t
        for rid in done:
            member = self.members[rid]
            member[4] = False
            self._unphase(rid, member[1], cap)
        return None if best is None else (best[0], best[1], best[3])


def _next_step(anchor: float, step: int, cap: float, position: tuple[float, int, int], rid: int) -> int:
    """The smallest k >= ``step`` whose retry (anchor + k cap, _RETRY, rid) comes after ``position``."""
    k = max(step, int((position[0] - anchor) // cap))
    while k > step and _after(anchor + (k - 1) * cap, rid, position):
        k -= 1
    while not _after(anchor + k * cap, rid, position):
        k += 1
    return k


def _after(when: float, rid: int, position: tuple[float, int, int]) -> bool:
    return when > position[0] or (when == position[0] and (_RETRY, rid) > position[1:])


class Simulator:
    """Discrete-event simulator of one swarm episode (see the module docstring).

    Args:
        scenario: the world.
        seed: seeds every random stream of the episode.
        rebalance_period_s: if set, ONLINE servers are offered REBALANCE decisions at random intervals
            uniform in [0, 2 x period] (PETALS' balance check). :meth:`run` replaces it by its decider's
            ``rebalance_period_s`` (read after the decider's ``reset``).
        check_invariants: verify memory, chain and conservation invariants after every event (slow; tests).
        skip_retries: skip the back-off retries of :attr:`retry_decider` that would only back off again
            (identical results, fewer events); False retries every time.
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        rebalance_period_s: float | None = None,
        check_invariants: bool = False,
        skip_retries: bool = True,
    ):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
        self.scenario = scenario
        self.seed = int(seed)
        self.rebalance_period_s = rebalance_period_s
        self.check = check_invariants
        self.skip_retries = skip_retries
        #: The decider that answers back-off retries (set by :meth:`run`); its retries are skipped only if
        #: its ``pure_route`` is True.
        self.retry_decider: Decider | None = None
        #: The decider told when a route ends (:meth:`~petalgym.deciders.Decider.route_ended`; set by
        #: :meth:`run`): central-queue deciders count the jobs on their chains with it.
        self.route_listener: Decider | None = None
        self.time_model = scenario.memo("TimeModel", lambda: TimeModel(scenario))
        model = scenario.model
        self.num_blocks = model.num_blocks
        self._block_bytes = model.block_bytes
        self._max_wait = scenario.workload.max_wait_s
        self._backoff_cap = scenario.simulation.backoff_cap_s
        self._churn = scenario.churn
        ss = np.random.SeedSequence(self.seed)
        # (a child's stream depends only on its index, so adding children keeps the earlier streams)
        wl_ss, join_ss, churn_ss, rebal_ss, dec_ss, shock_ss = ss.spawn(6)
        self._shock_rng = np.random.default_rng(shock_ss)
        self.decider_rng = np.random.default_rng(dec_ss)
        self._rebalance_rng = np.random.default_rng(rebal_ss)
        self._churn_rngs = [np.random.default_rng(s) for s in churn_ss.spawn(scenario.num_servers)]
        self.servers = [ServerState(spec) for spec in scenario.servers]
        #: The servers' processors under ``contention: fifo`` (None: the paper's model, no queueing).
        self.fifo = (
            FifoProcessors(scenario.num_servers, scenario.contention) if scenario.contention.enabled else None
        )
        self.extensions = 0  # fifo: planned ends pushed later because a session ran late
        self.deferrals = 0  # fifo: reservations moved later because a late session still held the cache
        self.view = SwarmView(scenario, self.time_model, self.servers)
        self.now = 0.0
        self.requests: list[Request] = []
        self.finished: list[Request] = []  # completed or failed, in order
        self.load = self.view.load  # arrived / in flight / running counts, kept here, read by deciders
        self.events = 0
        self.decisions = {k.name: 0 for k in DecisionKind}
        self.interruptions: dict[str, int] = {}  # sessions interrupted, by cause
        self.leaves: dict[str, int] = {}  # servers gone offline, by cause
        self.kept_released: dict[str, int] = {}  # recoveries that gave kept hops up, by cause
        self.moves = 0  # rebalancing moves
        self.skipped_retries = 0
        self._heap: list[tuple] = []
        self._seq = 0
        self._position: tuple[float, int, int] = (0.0, -1, -1)  # (time, kind, order) of the last event
        self._pending: deque[Decision] = deque()
        self._stalled: dict[int, Request] = {}
        self._sleepers: dict[tuple[int, int, int, int], _Sleepers] = {}
        self._changes = 0  # bumped by every change of cache, reservations, status or placement
        self._evaluated = 0
        self._downtime = [0.0] * scenario.num_servers
        self._epoch = [0] * scenario.num_servers  # bumped when a server goes offline (churn cycle)
        self._leave_pending = [False] * scenario.num_servers
        self._valid_chains: dict[tuple[Chain, int], bool] = {}
        self._valid_version = -1
        # central-queue dispatch: FIFO queues of (queue order, request) by the decider's key; the keys
        # whose heads are offered at the current dispatch opportunity; the request being offered
        self._queues: dict[Any, deque[tuple[int, Request]]] = {}
        self._queue_seq = 0
        self._offers: set[Any] = set()
        self._offering: Request | None = None
        self._stuck_offer = -1  # _changes when every head was last offered with nothing else to happen
        self.enqueued = 0  # Enqueue answers (a request offered and queued again counts again)
        self._draw_workload(np.random.default_rng(wl_ss))
        order = np.random.default_rng(join_ss).permutation(scenario.num_servers)
        self.join_order = [int(j) for j in order]
        for j in self.join_order:
            self._pending.append(Decision(DecisionKind.PLACE, 0.0, server=j, initial=True))
        self._schedule_next_arrival()
        if scenario.churn.enabled and scenario.churn.shocks is not None:
            for group in range(len(scenario.churn.shocks.groups)):
                self._schedule_shock(group)

    # ----------------------------------------------------------------------------------------------
    # Workload
    # ----------------------------------------------------------------------------------------------
    def _draw_workload(self, rng: np.random.Generator) -> None:
        times, l_in, l_out, client = draw_arrivals(self.scenario, rng)
        self._arr_t = [float(x) for x in times]
        self._arr_in = [int(x) for x in l_in]
        self._arr_out = [int(x) for x in l_out]
        self._arr_client = [int(x) for x in client]
        self._next_arrival = 0

    def arrivals(self) -> list[tuple[float, int, int, int]]:
        """(arrival time s, l_in, l_out, client) of every request this episode brings, in order."""
        return list(zip(self._arr_t, self._arr_in, self._arr_out, self._arr_client, strict=True))

    @property
    def num_arrivals_planned(self) -> int:
        """How many requests this episode will bring in total."""
        return len(self._arr_t)

    def _schedule_next_arrival(self) -> None:
        i = self._next_arrival
        if i < len(self._arr_t):
            self._push(self._arr_t[i], _ARRIVAL, i, 0)

    # ----------------------------------------------------------------------------------------------
    # Event queue
    # ----------------------------------------------------------------------------------------------
    def _push(self, t: float, kind: int, target: Any, version: Any, order: int | None = None) -> None:
        """Schedule an event. Simultaneous events run by kind, then by ``order`` (default: first pushed
        first; back-off retries pass the request id, so simultaneous retries run in request order)."""
        self._seq += 1
        seq = self._seq
        heapq.heappush(self._heap, (t, kind, seq if order is None else order, seq, target, version))

    @property
    def in_flight(self) -> int:
        """Requests arrived and not yet completed or failed (``self.load.in_flight``)."""
        return self.load.in_flight

    @property
    def done(self) -> bool:
        """True when every request has arrived and none is in flight (and no decision is pending)."""
        return not self._pending and self._next_arrival >= len(self._arr_t) and self.load.in_flight == 0

    def next_decision(self) -> Decision | None:
        """Advance until a decision is needed; return it (still pending) or None at the end of the episode.

        Before a decision at time t is returned, every completion, reservation start, join and departure
        at t has been applied (so no request is routed onto a server that leaves at the same instant)."""
        pending = self._pending
        heap = self._heap
        fifo = self.fifo
        while not pending:
            if self._next_arrival >= len(self._arr_t) and self.load.in_flight == 0:
                return None
            if self._offers and self._offer_next():
                continue
            # steps first: a token received at the instant a server leaves counts
            if (
                fifo is not None
                and fifo.heap
                and (not heap or fifo.heap[0][0] <= heap[0][0])
                and self._fifo_run(heap[0][0] if heap else math.inf)
            ):
                continue
            if not heap and self._queues:
                self._queues_stuck()
                continue
            if not heap:
                raise RuntimeError(
                    f"simulator stalled at t={self.now:.3f}s with {self.load.in_flight} request(s) in flight "
                    "and no pending event (internal error)"
                )
            self._step(heapq.heappop(heap))
        while True:
            if fifo is not None and fifo.heap and fifo.heap[0][0] <= self.now:
                self._fifo_run(self.now)
            elif heap and heap[0][0] == self.now and heap[0][1] <= _BEFORE_DECISIONS:
                self._step(heapq.heappop(heap))
            else:
                break
        return pending[0]

    def _fifo_run(self, limit: float) -> bool:
        """Run the processors' step events up to ``limit``; complete the first session that gets its last
        token (True) or return False when none does."""
        found = self.fifo.run_until(limit)
        if found is None:
            return False
        t, req = found
        self.now = t
        self.view.now = t
        self._position = (t, _COMPLETE, -1)
        self.events += 1
        if req.status == _RUNNING:
            planned = req.finish
            early = t < planned  # before its planned end (a forecast that was too long)
            req.finish = t
            chain = req.chain
            self._complete(req)
            req.version += 1
            if early:
                self._advance_reservations(chain, planned)
        self._changes += 1
        self._after_event()
        return True

    def _step(self, ev: tuple) -> None:
        self._process(ev)
        self._after_event()

    def _after_event(self) -> None:
        """After an event: re-ask sleeping retries if the swarm changed; check invariants if asked."""
        if self._changes != self._evaluated:
            self._evaluate_sleepers()
        if self.check:
            self.check_invariants()

    def _process(self, ev: tuple) -> None:
        t, kind, order, _, target, version = ev
        self.now = t
        self.view.now = t
        self._position = (t, kind, order)
        self.events += 1
        if kind == _COMPLETE:
            if target.version == version and target.status == _RUNNING:
                if self.fifo is None:
                    self._complete(target)
                else:
                    self._extend_planned_end(target)
        elif kind == _ARRIVAL:
            self._arrive(target)
        elif kind == _START:
            if target.version == version and target.status == _WAITING:
                self._start_reserved(target)
        elif kind == _RETRY:
            self._retry(target, version, t)
        elif kind == _TIMEOUT:
            if target.status == _STALLED and target.stalled_since == version:
                self._stalled.pop(target.id, None)
                self._fail(target, "no_chain")
        elif kind == _JOIN_READY:
            s = self.servers[target]
            if s.version == version and s.status == _LOADING:
                self._go_online(s)
        elif kind == _LEAVE:
            if self._epoch[target] == version:
                self._leave_pending[target] = False
                self._leave(self.servers[target])
        elif kind == _SHOCK:
            self._shock(target)
        elif kind == _DRAIN_END:
            s = self.servers[target]
            if s.version == version and s.status == _DRAINING:
                self._go_offline(s, "departure")
        elif kind == _REJOIN:
            s = self.servers[target]
            if s.status == _OFFLINE:
                self._pending.append(Decision(DecisionKind.PLACE, t, server=target))
        elif kind == _REBALANCE:
            s = self.servers[target]
            if s.version == version and s.status == _ONLINE:
                self._pending.append(Decision(DecisionKind.REBALANCE, t, server=target))
        elif kind == _QUEUE_TIMEOUT and target.status == _QUEUED and target.version == version:
            self._unqueue(target)
            self._fail(target, "wait_timeout")

    # ----------------------------------------------------------------------------------------------
    # Answers
    # ----------------------------------------------------------------------------------------------
    def apply(self, answer: Any, who: str = "decider") -> None:
        """Apply ``answer`` to the pending decision (a Placement, a Route/chain/None, or Placement/None)."""
        if not self._pending:
            raise RuntimeError("apply() called with no pending decision; call next_decision() first")
        d = self._pending[0]
        if d.kind == DecisionKind.ROUTE:
            if type(answer) is Enqueue:
                self._enqueue(d.request, answer.key, who)
            else:
                self._apply_route(d.request, answer, who)
            if self._offering is d.request:
                self._offering = None
        elif d.kind == DecisionKind.PLACE:
            self._apply_place(d.server, answer, who, d.initial)
        else:
            self._apply_rebalance(d.server, answer, who)
        self._pending.popleft()
        self.decisions[d.kind.name] += 1
        if self._changes != self._evaluated:
            self._evaluate_sleepers()
        if self.check:
            self.check_invariants()

    def attach(
        self, decider: Decider, *, retries: bool = True, rebalance_period_s: float | None = None
    ) -> None:
        """Reset ``decider`` with this episode's decider stream and make it the episode's decider, as
        :meth:`run` does: it hears every ended route, answers the back-off retries (unless ``retries`` is
        False: they then come out as ROUTE decisions) and sets the balance-check period (read after its
        reset, where a decider may set it from the scenario; ``rebalance_period_s`` replaces it) and the
        allocation delay. Call before the first decision (no check is scheduled before servers join)."""
        decider.reset(self.scenario, self.decider_rng)
        self.rebalance_period_s = rebalance_period_s or decider.rebalance_period_s
        self.retry_decider = decider if retries else None
        self.route_listener = decider
        self.view.allocation_delay_s = decider.allocation_delay_s

    def run(self, decider: Decider) -> SimulationResult:
        """Play the whole episode with ``decider`` (reset with this episode's decider stream)."""
        t0 = time.perf_counter()
        self.attach(decider)
        decide = time.perf_counter() - t0  # offline deciders do their planning in reset()
        view = self.view
        name = decider.name
        clock = time.perf_counter
        while (d := self.next_decision()) is not None:
            c0 = clock()
            ans = d.ask(decider, view)
            decide += clock() - c0
            self.apply(ans, name)
        return self.result(name, wall_s=time.perf_counter() - t0, decide_s=decide)

    def result(
        self, decider: str = "decider", wall_s: float = 0.0, decide_s: float = 0.0
    ) -> SimulationResult:
        """The episode's outcome so far."""
        extra = {
            "interruptions": dict(self.interruptions),
            "leaves": dict(self.leaves),
            "moves": self.moves,
            "kept_released": dict(self.kept_released),
            "skipped_retries": self.skipped_retries,
            "enqueued": self.enqueued,
        }
        return SimulationResult(
            self.scenario.name,
            decider,
            self.seed,
            list(self.requests),
            self.now,
            self.events,
            dict(self.decisions),
            wall_s,
            decide_s,
            extra,
            self.scenario.workload.warmup_s,
        )

    # PLACE -----------------------------------------------------------------------------------------
    def _validate_placement(self, server: ServerState, answer: Any, who: str) -> Placement:
        where = f"{who}: placement for server {server.id} ({server.spec.name}) at t={self.now:.3f}s"
        if not isinstance(answer, tuple) or len(answer) not in (2, 3):
            raise DeciderError(
                f"{where}: expected Placement(start, num_blocks[, cache_bytes]), got {answer!r}"
            )
        vals = []
        for name, v in zip(("start", "num_blocks", "cache_bytes"), answer, strict=False):
            if v is None and name == "cache_bytes":
                vals.append(None)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise DeciderError(f"{where}: {name} must be an integer, got {v!r}")
            vals.append(int(v))
        start, m = vals[0], vals[1]
        cache = vals[2] if len(vals) == 3 else None
        L = self.num_blocks
        if m < 1:
            raise DeciderError(f"{where}: num_blocks must be >= 1, got {m}")
        if start < 0 or start + m > L:
            raise DeciderError(f"{where}: blocks [{start}, {start + m}) are outside the model's 0..{L - 1}")
        cap = server.spec.profile.max_blocks
        if cap is not None and m > cap:
            raise DeciderError(f"{where}: {m} blocks exceed the {server.spec.profile.name} cap of {cap}")
        left = server.memory_bytes - m * self._block_bytes
        if left < 0:
            raise DeciderError(
                f"{where}: {m} blocks need {m * self._block_bytes / 1e9:.4g} GB > memory "
                f"{server.memory_bytes / 1e9:.4g} GB"
            )
        if cache is None:
            cache = left
        elif cache < 0 or cache > left:
            raise DeciderError(
                f"{where}: cache_bytes {cache} must be in [0, {left}] (memory left after {m} blocks)"
            )
        return Placement(start, m, cache)

    def _apply_place(self, j: int, answer: Any, who: str, initial: bool) -> None:
        s = self.servers[j]
        p = self._validate_placement(s, answer, who)
        self._changes += 1
        s.start, s.end, s.cache_capacity = p.start, p.end, p.cache_bytes
        s.placements += 1
        s.version += 1
        load = 0.0 if initial else p.num_blocks * self._block_bytes / 1e9 * self._churn.load_s_per_gb
        if load <= 0.0:
            self._go_online(s)
        else:
            s.status = _LOADING
            self.view.placement_version += 1
            self._push(self.now + load, _JOIN_READY, j, s.version)

    def _apply_rebalance(self, j: int, answer: Any, who: str) -> None:
        s = self.servers[j]
        if answer is None or s.status != _ONLINE:
            self._schedule_rebalance(s)
            return
        p = self._validate_placement(s, answer, who)
        if (p.start, p.end, p.cache_bytes) == (s.start, s.end, s.cache_capacity):
            self._schedule_rebalance(s)
            return
        self._changes += 1
        self._vacate(s, "rebalance")
        s.start, s.end, s.cache_capacity = p.start, p.end, p.cache_bytes
        self.moves += 1
        s.placements += 1
        s.version += 1
        s.status = _LOADING
        self.view.placement_version += 1
        load = p.num_blocks * self._block_bytes / 1e9 * self._churn.load_s_per_gb
        self._push(self.now + load, _JOIN_READY, j, s.version)

    # ROUTE -----------------------------------------------------------------------------------------
    def _normalise_chain(self, req: Request, answer: Any, who: str) -> tuple[Chain, bool, float] | None:
        """(hops, wait, not before) of a route answer (a Route or a sequence of hops), validated."""
        if answer is None:
            return None
        wait, not_before = True, self.now
        if hasattr(answer, "chain") and hasattr(answer, "wait"):
            chain, wait = answer.chain, bool(answer.wait)
            later = getattr(answer, "not_before", None)
            if later is not None:
                if isinstance(later, bool) or not isinstance(later, (int, float)) or not later == later:
                    raise DeciderError(
                        f"{who}: route for request {req.id}: not_before must be a time, got {later!r}"
                    )
                not_before = max(not_before, float(later))
        else:
            chain = answer
        if isinstance(chain, tuple) and chain and type(chain[0]) is Hop:
            hops = chain
        else:
            try:
                hops = tuple(Hop(int(h[0]), int(h[1]), int(h[2])) for h in chain)
            except (TypeError, ValueError, IndexError):
                raise DeciderError(
                    f"{who}: route for request {req.id} at t={self.now:.3f}s: expected a Route or a "
                    "sequence of "
                    f"(server, start, end) hops, got {answer!r}"
                ) from None
        view = self.view
        if self._valid_version != view.placement_version:
            self._valid_chains.clear()
            self._valid_version = view.placement_version
        key = (hops, req.route_from)
        if key not in self._valid_chains:
            err = chain_errors(hops, view.span_map(), self.num_blocks, req.route_from)
            if err is not None:
                raise DeciderError(
                    f"{who}: infeasible chain for request {req.id} (client {req.client}, from block "
                    f"{req.route_from}) at t={self.now:.3f}s: {err}; chain={[tuple(h) for h in hops]}"
                )
            self._valid_chains[key] = True
        return hops, wait, not_before

    def _apply_route(self, req: Request, answer: Any, who: str) -> None:
        req.attempts += 1
        norm = self._normalise_chain(req, answer, who)
        if norm is None:
            self._hold_kept_until(req, math.inf)
            self._stall(req)
            return
        hops, wait, not_before = norm
        if not math.isnan(req.stalled_since):
            req.stalled_since = math.nan
        needs = hop_needs(hops, req.kv_bytes)
        now = self.now
        servers = self.servers
        busy = False  # some hop cannot start now, whatever the reservations
        reserved = False  # some hop's server has reservations
        for j, b in needs.items():
            s = servers[j]
            if b > s.cache_capacity:
                self._fail(req, "exceeds_capacity")
                return
            if s.reservations:
                reserved = True
            elif s.used_bytes + b > s.cache_capacity:
                busy = True
        if busy and not wait:  # backs off: no need for its times or its earliest start
            self._apply_back_off(req)
            return
        first, d, duration = self.time_model.segment_times(req, hops, self.view.allocation_delay_s)
        if not_before > now and wait:  # a start the decider fixed (and no earlier than the chain fits)
            t_start = earliest_start(servers, needs, not_before, duration)
        elif busy or reserved:
            t_start = earliest_start(servers, needs, now, duration)
        else:
            t_start = now
        if t_start <= now:
            if req.kept:
                self._hold_kept_until(req, now + duration)
            self._begin(req, hops, needs, now, first, d, duration)
            return
        if not wait or t_start == math.inf:  # inf: cache held for a time not known yet blocks a need
            self._apply_back_off(req)
            return
        # waiting budget max_wait_s: a reservation must start within it; a back-off retry is never scheduled
        # past it (the last retry comes when it runs out), and a retry that still cannot start then fails
        max_wait = self._max_wait
        if max_wait is not None and req.wait_s + now - req.wait_since + (t_start - now) > max_wait:
            self._fail(req, "wait_timeout")
            return
        t_end = t_start + duration
        self._hold_kept_until(req, t_end)
        self._changes += 1
        req.version += 1
        req.status = _WAITING
        req.chain = req.kept + hops if req.kept else hops
        req.new_hops = hops
        for j, b in needs.items():
            servers[j].reserve(req.id, t_start, t_end, b)
        req.plan = (first, d)
        self._push(t_start, _START, req, req.version)

    def _apply_back_off(self, req: Request) -> None:
        """``req`` cannot start now and backs off (failing if its waiting budget is spent); its kept hops
        stay held, for a time not known yet."""
        if self._max_wait is not None and self._out_of_budget(req, self.now):
            self._fail(req, "wait_timeout")
            return
        self._hold_kept_until(req, math.inf)
        self._back_off(req)

    def _back_off(self, req: Request) -> None:
        """Schedule ``req``'s next retry (1, 2, 4, ... s after this attempt; capped retries at anchor + k
        cap), or let it sleep without an event if its retries may be skipped."""
        now = self.now
        req.version += 1
        req.status = _WAITING
        req.chain = ()
        req.retries += 1
        cap = self._backoff_cap
        capped = backoff_s(req.retries, cap) >= cap
        if capped:
            if req.retry_at == now and not math.isnan(req.backoff_anchor):
                req.backoff_step += 1  # the next retry of the same capped sequence
            else:
                req.backoff_anchor, req.backoff_step = now, 1
            t_next = req.backoff_anchor + req.backoff_step * cap
        else:
            req.backoff_anchor = math.nan
            t_next = now + backoff_s(req.retries, cap)
        deadline = self._deadline(req)
        if t_next > deadline:
            t_next = deadline
        req.retry_at = t_next
        if capped and t_next < deadline and self._may_sleep(req):
            self._sleep(req, deadline)
        else:
            self._push(t_next, _RETRY, req, req.version, order=req.id)

    def _deadline(self, req: Request) -> float:
        """When ``req``'s waiting budget (``max_wait_s``, counting earlier waits) runs out; inf if none."""
        max_wait = self._max_wait
        return math.inf if max_wait is None else req.wait_since + (max_wait - req.wait_s)

    def _out_of_budget(self, req: Request, t: float) -> bool:
        """Whether a back-off attempt of ``req`` at ``t`` that cannot start fails its waiting budget."""
        return req.wait_s + t - req.wait_since >= self._max_wait - _WAIT_EPS or t >= self._deadline(req)

    def _retry(self, req: Request, version: Any, t: float) -> None:
        """A back-off retry (or a sleeper's wake-up / last retry) of ``req`` at ``t``."""
        if req.status != _WAITING:
            return
        if type(version) is tuple:  # ("wake", version, generation, step) or ("final", version, step)
            if version[1] != req.version:
                return
            sleepers = self._sleepers.get(self._sleep_key(req))
            if sleepers is None or req.id not in sleepers.members:
                return
            if version[0] == "wake":
                if version[2] != sleepers.generation:
                    return
                sleepers.wake = None
            first_step = sleepers.remove(req.id, self._backoff_cap)[2]
            # the next of its kind must be scheduled even if this retry changes nothing (e.g. it stalls)
            self._changes += 1
            if not sleepers.members:
                del self._sleepers[self._sleep_key(req)]
            step = version[-1]
            skipped = step - first_step  # retries anchor + k cap for first_step <= k < step
            req.attempts += skipped
            req.retries += skipped
            self.skipped_retries += skipped
            req.backoff_step = step
            req.retry_at = t
        elif req.version != version:
            return
        req.status = _ROUTING
        self._pending.append(Decision(DecisionKind.ROUTE, t, request=req))

    # skipped retries -------------------------------------------------------------------------------
    @staticmethod
    def _sleep_key(req: Request) -> tuple[int, int, int, int]:
        return (req.client, req.l_in, req.l_out, req.kv_bytes)

    def _may_sleep(self, req: Request) -> bool:
        decider = self.retry_decider
        return (
            self.skip_retries
            and decider is not None
            and getattr(decider, "pure_route", False)
            and not req.is_recovery
            and not req.kept
            and (len(self._sleepers) < _MAX_SLEEPER_KINDS or self._sleep_key(req) in self._sleepers)
        )

    def _sleep(self, req: Request, deadline: float) -> None:
        """``req`` (fresh, capped back-off) retries at anchor + k cap, k >= step, without events; its last
        retry (when the waiting budget runs out) stays an event."""
        cap = self._backoff_cap
        anchor, step = req.backoff_anchor, req.backoff_step
        final, final_step = math.inf, -1
        if deadline < math.inf:
            # the first retry at which the budget is spent, as the retries themselves would find it
            k = max(step, int((deadline - anchor) // cap) - 1)
            while not self._out_of_budget(req, min(anchor + k * cap, deadline)):
                k += 1
            while k > step and self._out_of_budget(req, min(anchor + (k - 1) * cap, deadline)):
                k -= 1
            final, final_step = min(anchor + k * cap, deadline), k
        key = self._sleep_key(req)
        sleepers = self._sleepers.get(key)
        if sleepers is None:
            sleepers = self._sleepers[key] = _Sleepers()
        sleepers.add(req, anchor, step, final, cap)
        if final < math.inf:
            self._push(final, _RETRY, req, ("final", req.version, final_step), order=req.id)
        # its own attempt just failed in this swarm: so would the next of its kind, until the swarm changes

    def _evaluate_sleepers(self) -> None:
        """After a change of the swarm: for each kind of sleeping request, would a retry start now? If so,
        schedule the next retry of that kind (the earlier wake-ups are stale)."""
        self._evaluated = self._changes
        if not self._sleepers:
            return
        cap = self._backoff_cap
        for sleepers in self._sleepers.values():
            rep = next(iter(sleepers.members.values()))[0]
            found = sleepers.first_retry(self._position, cap) if self._would_start(rep) else None
            target = None if found is None else (found[0], found[2].id)
            if target == sleepers.wake:
                continue  # the scheduled wake-up (or none) still stands
            sleepers.generation += 1
            sleepers.wake = target
            if found is not None:
                when, step, req = found
                self._push(when, _RETRY, req, ("wake", req.version, sleepers.generation, step), order=req.id)

    def _would_start(self, req: Request) -> bool:
        """Whether a retry of ``req`` now would do anything but back off again (start, reserve, stall,
        fail, or raise): the decider is asked as at a real retry."""
        try:
            answer = self.retry_decider.route(self.view, req)
            if type(answer) is Enqueue:
                return True  # it would join a queue
            norm = self._normalise_chain(req, answer, "decider")
        except DeciderError:
            return True
        if norm is None or norm[1]:
            return True
        hops = norm[0]
        needs = hop_needs(hops, req.kv_bytes)
        servers = self.servers
        for j, b in needs.items():
            s = servers[j]
            if b > s.cache_capacity:
                return True  # it would fail
            if not s.reservations and s.used_bytes + b > s.cache_capacity:
                return False  # it would back off again
        _, _, duration = self.time_model.segment_times(req, hops, self.view.allocation_delay_s)
        return earliest_start(servers, needs, self.now, duration) <= self.now

    # ----------------------------------------------------------------------------------------------
    # Request life cycle
    # ----------------------------------------------------------------------------------------------
    def _begin(
        self,
        req: Request,
        hops: Chain,
        needs: dict[int, int],
        t: float,
        first: float,
        d: float,
        duration: float,
    ) -> None:
        """Start (or restart) ``req`` now on its kept hops (already held) + ``hops``."""
        self._changes += 1
        finish = t + duration
        servers = self.servers
        rid = req.id
        for j, b in needs.items():
            servers[j].hold(rid, b, finish)
        self._started(req, req.kept + hops if req.kept else hops, hops, t, first, d, finish)

    def _start_reserved(self, req: Request) -> None:
        self._changes += 1
        first, d = req.plan
        now = self.now
        duration = first + (req.l_out - req.tokens_done - 1) * d
        finish = now + duration
        servers = self.servers
        if self.fifo is not None and not self._fits_now(req):
            self._defer_reservation(req, duration)
            return
        for h in req.new_hops:
            s = servers[h.server]
            b = s.begin_reserved(req.id, finish)
            if s.used_bytes > s.cache_capacity:
                raise RuntimeError(
                    f"internal error: reservation of request {req.id} ({b} B) overflows server {h.server} "
                    f"at t={now:.3f}s"
                )
        for h in req.kept:
            servers[h.server].set_end(req.id, finish)
        self._started(req, req.chain, req.new_hops, now, first, d, finish)

    def _started(
        self, req: Request, chain: Chain, hops: Chain, t: float, first: float, d: float, finish: float
    ) -> None:
        if self.fifo is not None:  # (req.kept still names the kept hops here)
            delay, steps = self.time_model.segment_steps(req, hops, self.view.allocation_delay_s)
            self.fifo.start(req, t, delay, steps, req.l_out - req.tokens_done)
        if math.isnan(req.start):
            req.start = t
            req.first_chain = chain
        req.wait_s += t - req.wait_since
        req.retries = 0  # this wait is over: a later one (a recovery) backs off from 1 s again, like PETALS
        req.backoff_anchor = math.nan
        req.chain = chain
        req.new_hops = hops
        req.kept = ()
        req.status = _RUNNING
        self.load.running += 1
        req.seg_start = t
        req.t_next = t + first
        req.token_time = d
        req.finish = finish
        req.version += 1
        self._push(finish, _COMPLETE, req, req.version)

    def _stall(self, req: Request) -> None:
        req.status = _STALLED
        self._stalled[req.id] = req
        if math.isnan(req.stalled_since):
            req.stalled_since = self.now
            self._push(self.now + self._churn.no_chain_timeout_s, _TIMEOUT, req, req.stalled_since)

    def _arrive(self, i: int) -> None:
        l_in, l_out = self._arr_in[i], self._arr_out[i]
        req = Request(
            i, self._arr_client[i], self.now, l_in, l_out, self.scenario.model.session_bytes(l_in, l_out)
        )
        self.requests.append(req)
        self.load.arrive(self.now)
        self._next_arrival = i + 1
        self._schedule_next_arrival()
        self._pending.append(Decision(DecisionKind.ROUTE, self.now, request=req))

    def _drop(self, rid: int, s: ServerState) -> None:
        """Release what request ``rid`` holds on ``s`` (a draining server with nothing left goes offline)."""
        if s.drop(rid) is not None:
            self._changes += 1
            if s.status == _DRAINING and not s.sessions:
                self._go_offline(s, "departure")

    def _release(self, req: Request) -> None:
        """Free every session byte and reservation ``req`` holds (its chain and its kept hops)."""
        servers = self.servers
        rid = req.id
        for h in req.chain or req.kept:
            s = servers[h.server]
            if s.reservations and s.unreserve(rid) is not None:
                self._changes += 1
            self._drop(rid, s)

    def _release_kept(self, req: Request, index: int, cause: str) -> None:
        """``req`` gives up its kept hops from ``index`` on (their cache is gone): it routes from there."""
        kept = req.kept
        if index >= len(kept):
            return
        servers = self.servers
        for h in kept[index:]:
            self._drop(req.id, servers[h.server])
        req.route_from = kept[index].start
        req.kept = kept[:index]
        self.kept_released[cause] = self.kept_released.get(cause, 0) + 1

    def _hold_kept_until(self, req: Request, end: float) -> None:
        """Keep ``req``'s kept hops held until ``end`` (inf: for a time not known yet, while it backs off
        or finds no chain: nobody can plan to use that cache). Reservations that would overflow a kept
        server over an extension are cancelled and re-planned (a session's cache outranks later
        reservations)."""
        servers = self.servers
        rid = req.id
        for h in req.kept:
            s = servers[h.server]
            nbytes, old = s.sessions[rid]
            if end > old and s.reservations:
                limit = s.cache_capacity - nbytes - s.used_bytes
                planned = s.timelines()[0]
                if planned.prefix(old) > limit or (planned.first_above(old, limit) or math.inf) < end:
                    requests = self.requests
                    for other in sorted(s.reservations):
                        r0, r1, _ = s.reservations.get(other, (math.inf, 0.0, 0))
                        if r0 < end and r1 > old:
                            self._cancel_reservation(requests[other])
            if end != old:
                self._changes += 1
                s.set_end(rid, end)

    def _extend_planned_end(self, req: Request) -> None:
        """fifo: ``req`` reached its planned end still decoding (it queued behind other steps): it holds
        its cache until its new forecast end. Reservations planned on the old end are not re-planned now:
        one that comes while its cache is still taken is deferred then (:meth:`_defer_reservation`), so an
        overrun costs one update per hop, not a re-plan of every reservation queued behind it."""
        end = self.fifo.forecast(req, self.now, req.token_time)
        if end <= self.now:  # its last token comes at this instant: the step event completes it
            end = self.now
        self.extensions += 1
        servers = self.servers
        for h in req.chain:
            servers[h.server].set_end(req.id, end)
        self._changes += 1
        req.finish = end
        req.version += 1
        self._push(end, _COMPLETE, req, req.version)

    def _fits_now(self, req: Request) -> bool:
        """Whether ``req``'s reserved cache is free now on every server of its new hops."""
        servers = self.servers
        return all(
            servers[j].used_bytes + b <= servers[j].cache_capacity
            for j, b in hop_needs(req.new_hops, req.kv_bytes).items()
        )

    def _defer_reservation(self, req: Request, duration: float) -> None:
        """fifo: ``req``'s reservation came while a late session still holds the cache: it moves, on the
        same chain, to the earliest start the cache then allows (failing if its waiting budget is spent)."""
        servers, now = self.servers, self.now
        self.deferrals += 1
        needs = hop_needs(req.new_hops, req.kv_bytes)
        for j in needs:
            servers[j].unreserve(req.id)
        t_start = earliest_start(servers, needs, now, duration)
        max_wait = self._max_wait
        if t_start == math.inf:  # (a cache held for a time not known yet): routed again
            self._cancel_reservation(req)
            return
        if max_wait is not None and req.wait_s + t_start - req.wait_since > max_wait:
            self._fail(req, "wait_timeout")
            return
        for j, b in needs.items():
            servers[j].reserve(req.id, t_start, t_start + duration, b)
        self._hold_kept_until(req, t_start + duration)
        req.version += 1
        self._push(t_start, _START, req, req.version)

    def _advance_reservations(self, hops: Chain, until: float) -> None:
        """fifo: a session on ``hops`` ended before its planned end ``until``: the reservations on those
        servers that were to start by then move to the earliest time their cache is free, in order of
        their starts until one cannot move (those behind it wait for it), so a request waiting for that
        cache starts when it frees."""
        servers, requests, now = self.servers, self.requests, self.now
        starts: dict[int, float] = {}
        for h in hops:
            for rid, (r0, _, _) in servers[h.server].reservations.items():
                if r0 <= until:
                    starts[rid] = r0
        for rid in sorted(starts, key=lambda r: (starts[r], r)):
            req = requests[rid]
            if req.status != _WAITING or not req.new_hops:
                continue
            needs = hop_needs(req.new_hops, req.kv_bytes)
            r0 = servers[req.new_hops[0].server].reservations[rid][0]
            if r0 <= now:
                continue
            first, d = req.plan  # (the duration exactly as its start will compute it, not r1 - r0)
            duration = first + (req.l_out - req.tokens_done - 1) * d
            for j in needs:
                servers[j].unreserve(rid)
            t = min(earliest_start(servers, needs, now, duration), r0)
            for j, b in needs.items():
                servers[j].reserve(rid, t, t + duration, b)
            if t >= r0:  # the queue behind it cannot move either: stop (bounded work per early end)
                break
            self._changes += 1
            self._hold_kept_until(req, t + duration)
            req.version += 1
            self._push(t, _START, req, req.version)

    def _complete(self, req: Request) -> None:
        if self.fifo is not None:
            self.fifo.stop(req)
        self._route_ended(req)
        self._release(req)
        if req.status == _RUNNING:
            self.load.running -= 1
        req.status = RequestStatus.COMPLETED
        req.tokens_done = req.l_out
        if math.isnan(req.first_token):
            req.first_token = req.t_next
        self.load.in_flight -= 1
        self.finished.append(req)

    def _fail(self, req: Request, reason: str) -> None:
        if self.fifo is not None:
            self.fifo.stop(req)
        self._route_ended(req)
        self._release(req)
        if req.status in (_WAITING, _ROUTING, _STALLED, _QUEUED):
            req.wait_s += self.now - req.wait_since
        elif req.status == _RUNNING:
            self.load.running -= 1
        sleepers = self._sleepers.get(self._sleep_key(req))
        if sleepers is not None and req.id in sleepers.members:  # pragma: no cover - sleepers do not fail
            sleepers.remove(req.id, self._backoff_cap)
        req.status = RequestStatus.FAILED
        req.failure_reason = reason
        req.finish = self.now
        req.version += 1
        req.kept = ()
        self.load.in_flight -= 1
        self.finished.append(req)

    def _interrupt(self, req: Request, server: int) -> None:
        """``server`` stopped under running ``req``: keep the upstream hops (still held) and re-route the
        rest; a kept hop on a server that takes no new sessions (draining) is given up too."""
        now = self.now
        if self.fifo is None:
            g = req.tokens_at(now)
        else:
            g = req.tokens_done + self.fifo.tokens_received(req, now)
            self.fifo.stop(req)
            if g == 0:
                req.first_token = math.nan  # (its time was known before it came)
        if g >= req.l_out:
            self._complete(req)
            return
        self._route_ended(req)
        if g >= 1 and math.isnan(req.first_token):
            req.first_token = req.t_next
        chain = req.chain
        servers = self.servers
        i = next(k for k, h in enumerate(chain) if h.server == server)
        # a new hop holds the session's cache only once the segment's first step (its prefill) has
        # produced a token; before that only the hops kept into this segment are still complete
        limit = i if g > req.tokens_done else min(i, len(chain) - len(req.new_hops))
        cut = next((k for k in range(limit) if servers[chain[k].server].status != _ONLINE), limit)
        for h in chain[cut:]:
            self._drop(req.id, servers[h.server])
        if cut < limit:
            self.kept_released["server draining"] = self.kept_released.get("server draining", 0) + 1
        req.kept = chain[:cut]
        req.route_from = chain[cut].start
        req.tokens_done = g
        req.history_tokens = req.l_in + g
        req.recoveries += 1
        req.chain = ()
        self.load.running -= 1
        req.status = _ROUTING
        req.wait_since = now
        req.version += 1
        self._pending.append(Decision(DecisionKind.ROUTE, now, request=req))

    def _cancel_reservation(self, req: Request) -> None:
        """``req`` loses its reservation (its kept hops stay held) and is routed again."""
        self._changes += 1
        self._route_ended(req)
        servers = self.servers
        for h in req.new_hops:
            servers[h.server].unreserve(req.id)
        req.chain = ()
        req.new_hops = ()
        req.status = _ROUTING
        req.version += 1
        self._pending.append(Decision(DecisionKind.ROUTE, self.now, request=req))

    def _vacate(self, s: ServerState, reason: str) -> None:
        """``s`` stops serving (offline, or reloading elsewhere): interrupt its running sessions, then let
        the requests that kept a hop on it give that hop up, then cancel its reservations -- in that order,
        so the interrupted requests are routed first."""
        requests = self.requests
        if self.fifo is not None:
            self.fifo.reset_server(s.id, self.now)
        running = [rid for rid in sorted(s.sessions) if requests[rid].status == _RUNNING]
        if running:
            self.interruptions[reason] = self.interruptions.get(reason, 0) + len(running)
        for rid in running:
            if rid in s.sessions:  # an earlier interruption may have completed it
                self._interrupt(requests[rid], s.id)
        self._give_up_kept_on(s, f"server {reason}")
        self._cancel_reservations(s)

    def _cancel_reservations(self, s: ServerState) -> None:
        """Every request with a reservation on ``s`` loses it and is routed again (in request order)."""
        requests = self.requests
        for rid in sorted(s.reservations):
            if rid in s.reservations:  # a cascade may have cancelled it
                self._cancel_reservation(requests[rid])

    def _give_up_kept_on(self, s: ServerState, cause: str) -> None:
        """Requests not running that kept a hop on ``s`` give it (and the hops after it) up; a reserved
        one is routed again."""
        requests = self.requests
        for rid in sorted(s.sessions):
            req = requests[rid]
            if req.status == _RUNNING or rid not in s.sessions:
                continue
            i = next(k for k, h in enumerate(req.kept) if h.server == s.id)
            self._release_kept(req, i, cause)
            if req.status == _WAITING:
                self._cancel_reservation(req)

    # ----------------------------------------------------------------------------------------------
    # Central-queue dispatch
    # ----------------------------------------------------------------------------------------------
    def _route_ended(self, req: Request) -> None:
        """``req``'s route no longer holds a chain: tell the decider, and offer the queues' heads again."""
        listener = self.route_listener
        if listener is not None:
            listener.route_ended(self.view, req)
        if self._queues:
            self._offers.update(self._queues)

    def _enqueue(self, req: Request, key: Any, who: str) -> None:
        """``req`` waits in queue ``key``: at its head again if it was that queue's offered head (the
        queue then waits for the next opportunity), at the tail otherwise. Its kept hops (a recovery's)
        stay held for a time not known yet."""
        try:
            hash(key)
        except TypeError:
            raise DeciderError(
                f"{who}: Enqueue key for request {req.id} must be hashable, got {key!r}"
            ) from None
        req.attempts += 1
        self.enqueued += 1
        if self._max_wait is not None and self._out_of_budget(req, self.now):
            self._fail(req, "wait_timeout")
            return
        self._hold_kept_until(req, math.inf)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        offered = self._offering is req
        if offered and req.queue_key == key:
            queue.appendleft((req.queue_order, req))
            self._offers.discard(key)
        else:
            self._queue_seq += 1
            req.queue_key, req.queue_order = key, self._queue_seq
            queue.append((self._queue_seq, req))
        req.status = _QUEUED
        req.chain = ()
        req.version += 1
        if self._max_wait is not None:
            self._push(self._deadline(req), _QUEUE_TIMEOUT, req, req.version)

    def _unqueue(self, req: Request) -> None:
        """Take queued ``req`` out of its queue (``req.queue_key``: a waiting budget ran out)."""
        key = req.queue_key
        queue = self._queues[key]
        queue.remove((req.queue_order, req))
        if not queue:
            del self._queues[key]

    def _offer_next(self) -> bool:
        """Offer the earliest-queued head among the queues of this dispatch opportunity to the decider
        (a pending ROUTE decision); False when no queue is left to offer."""
        best = None
        for key in list(self._offers):
            queue = self._queues.get(key)
            if not queue:
                self._offers.discard(key)
                self._queues.pop(key, None)
                continue
            if best is None or queue[0][0] < self._queues[best][0][0]:
                best = key
        if best is None:
            return False
        order, req = self._queues[best].popleft()
        if not self._queues[best]:
            del self._queues[best]
        req.status = _ROUTING
        req.queue_key, req.queue_order = best, order
        self._offering = req
        self._pending.append(Decision(DecisionKind.ROUTE, self.now, request=req))
        return True

    def _queues_stuck(self) -> None:
        """Nothing is left to happen but queued requests: offer every head once more; a decider that
        keeps them all queued would never be asked again."""
        if self._stuck_offer != self._changes:
            self._stuck_offer = self._changes
            self._offers.update(self._queues)
            if self._offer_next():
                return
        n = sum(len(q) for q in self._queues.values())
        raise DeciderError(
            f"{self.route_listener.name if self.route_listener else 'decider'}: {n} request(s) stay "
            f"queued at t={self.now:.3f}s with nothing running or scheduled that would free a chain"
        )

    # ----------------------------------------------------------------------------------------------
    # Server life cycle
    # ----------------------------------------------------------------------------------------------
    def _go_online(self, s: ServerState) -> None:
        self._changes += 1
        self._offers.update(self._queues)
        s.status = _ONLINE
        self.view.placement_version += 1
        if self._churn.enabled and self._churn.lifetime_s is not None and not self._leave_pending[s.id]:
            life = float(self._churn.lifetime_s.sample(self._churn_rngs[s.id]))
            self._leave_pending[s.id] = True
            self._push(self.now + life, _LEAVE, s.id, self._epoch[s.id])
        self._schedule_rebalance(s)
        if self._stalled:
            for rid in sorted(self._stalled):
                req = self._stalled.pop(rid)
                req.status = _ROUTING
                self._pending.append(Decision(DecisionKind.ROUTE, self.now, request=req))

    def _schedule_rebalance(self, s: ServerState) -> None:
        if self.rebalance_period_s is not None and s.status == _ONLINE:
            dt = float(self._rebalance_rng.uniform(0.0, 2.0 * self.rebalance_period_s))
            self._push(self.now + dt, _REBALANCE, s.id, s.version)

    def _leave(self, s: ServerState) -> None:
        rng = self._churn_rngs[s.id]
        failure = bool(rng.random() < self._churn.failure_fraction)
        self._downtime[s.id] = float(self._churn.downtime_s.sample(rng))
        if s.status == _LOADING:
            self._go_offline(s, "failure")
            return
        if s.status != _ONLINE:
            return
        requests = self.requests
        if failure or not any(requests[rid].status == _RUNNING for rid in s.sessions):
            self._go_offline(s, "failure" if failure else "departure")
            return
        self._changes += 1
        s.status = _DRAINING
        s.version += 1
        self.view.placement_version += 1
        self._give_up_kept_on(s, "server draining")
        self._cancel_reservations(s)
        self._push(self.now + self._churn.drain_timeout_s, _DRAIN_END, s.id, s.version)

    def _schedule_shock(self, group: int) -> None:
        """The next shock of ``group``: exponential gap of mean 1 / rate (Poisson shocks)."""
        gap = float(self._shock_rng.exponential(86400.0 / self._churn.shocks.rate_per_day))
        self._push(self.now + gap, _SHOCK, group, 0)

    def _shock(self, group: int) -> None:
        """A correlated failure: each up server of ``group`` fails at once with the shock's probability
        (its sessions are interrupted, as in an independent failure); then the group's next shock."""
        shocks = self._churn.shocks
        for sid in shocks.groups[group]:
            s = self.servers[sid]
            hit = bool(self._shock_rng.random() < shocks.probability)
            if hit and s.status in (_ONLINE, _LOADING, _DRAINING):
                self._downtime[sid] = float(self._churn.downtime_s.sample(self._churn_rngs[sid]))
                self._go_offline(s, "shock")
        self._schedule_shock(group)

    def _go_offline(self, s: ServerState, reason: str) -> None:
        self._changes += 1
        self._offers.update(self._queues)
        s.status = _OFFLINE
        s.version += 1
        self._epoch[s.id] += 1
        self._leave_pending[s.id] = False
        self.view.placement_version += 1
        self._vacate(s, reason)
        self.leaves[reason] = self.leaves.get(reason, 0) + 1
        s.start = s.end = -1
        s.cache_capacity = 0
        self._push(self.now + self._downtime[s.id], _REJOIN, s.id, s.version)

    # ----------------------------------------------------------------------------------------------
    # Invariants
    # ----------------------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if memory, chain, cache-record or conservation invariants are broken."""
        L = self.num_blocks
        spans = {s.id: (s.start, s.end) for s in self.servers if s.status in (_ONLINE, _DRAINING)}
        requests = self.requests
        for s in self.servers:
            used = sum(b for b, _ in s.sessions.values())
            assert used == s.used_bytes, f"server {s.id}: used_bytes {s.used_bytes} != sessions {used}"
            assert s.used_bytes <= s.cache_capacity, (
                f"server {s.id}: cache {s.used_bytes} > {s.cache_capacity}"
            )
            assert s.reserved_bytes == sum(b for _, _, b in s.reservations.values())
            s.check_timelines()
            if s.status in (_ONLINE, _DRAINING, _LOADING):
                assert s.num_blocks * self._block_bytes + s.cache_capacity <= s.memory_bytes, (
                    f"server {s.id}: blocks + cache exceed memory"
                )
            if s.sessions:
                assert s.status in (_ONLINE, _DRAINING), f"server {s.id} {s.status.name} holds sessions"
            for rid, (_, f) in s.sessions.items():
                r = requests[rid]
                assert r.status == _RUNNING or any(h.server == s.id for h in r.kept), (
                    f"server {s.id} holds cache of request {rid} ({r.status.name}) off its chain"
                )
                assert f > self.now or r.status == _RUNNING, f"request {rid}: kept hold ends in the past"
            if s.reservations:
                assert s.status == _ONLINE, f"server {s.id} {s.status.name} holds reservations"
                # (fifo: a late session may overlap reservations made on its old end; those are deferred
                # when they come, so only the cache held now must fit -- checked above)
                times = (
                    [] if self.fifo is not None else [self.now] + [r0 for r0, _, _ in s.reservations.values()]
                )
                for t in times:
                    u = max_usage(s, t, t + 1e-9)
                    assert u <= s.cache_capacity, (
                        f"server {s.id}: planned cache {u} > {s.cache_capacity} at {t}"
                    )
        done = 0
        for r in requests:
            if r.status == _RUNNING:
                err = chain_errors(r.chain, spans, L)
                assert err is None, f"request {r.id} runs on an infeasible chain: {err}"
                for h in r.chain:
                    held = self.servers[h.server].sessions.get(r.id)
                    assert held is not None and held[0] == h.blocks * r.kv_bytes, (
                        f"request {r.id}: server {h.server} does not hold its cache"
                    )
            elif r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED):
                done += 1
                assert not r.kept
            else:
                for h in r.kept:
                    s = self.servers[h.server]
                    assert s.status == _ONLINE, f"request {r.id} keeps a hop on {s.status.name} server"
                    held = s.sessions.get(r.id)
                    assert held is not None and held[0] == h.blocks * r.kv_bytes, (
                        f"request {r.id}: kept server {h.server} does not hold its cache"
                    )
                reserved = any(r.id in self.servers[h.server].reservations for h in r.new_hops)
                for h in r.kept:  # a known end only while it is routed or holds a reservation
                    end = self.servers[h.server].sessions[r.id][1]
                    assert (end < math.inf) == (r.status == _ROUTING or reserved) or r.status == _ROUTING, (
                        f"request {r.id} {r.status.name} holds its kept hop on {h.server} until {end}"
                    )
        queued = [r for q in self._queues.values() for _, r in q]
        assert len(queued) == len({r.id for r in queued}), "a request sits in two dispatch queues"
        assert all(r.status == _QUEUED for r in queued), "a dispatch queue holds a request not queued"
        assert sum(r.status == _QUEUED for r in requests) == len(queued), "a queued request is in no queue"
        assert len(requests) == done + self.load.in_flight, "arrivals != completed + failed + in flight"
        assert len(requests) == self.load.arrived, "the load's arrival count drifted"
        assert sum(r.status == _RUNNING for r in requests) == self.load.running, "the running count drifted"
        assert done == len(self.finished)


def simulate(
    scenario: Scenario, decider: Decider, seed: int = 0, *, check_invariants: bool = False
) -> SimulationResult:
    """Run one episode of ``scenario`` with ``decider`` and return its result."""
    return Simulator(scenario, seed, check_invariants=check_invariants).run(decider)


__all__ = ["Decision", "DecisionKind", "SimulationResult", "Simulator", "max_blocks_on", "simulate"]
