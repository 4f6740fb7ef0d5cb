"""Swarm state: servers (placement, cache, sessions), requests (sessions) and the read-only view deciders get.

Cache accounting is in bytes. A request holds ``k * kv_bytes`` on a server whose hop processes ``k`` blocks
(``kv_bytes`` = its s_c, one block's KV cache for its l_in + l_out tokens). A *session* holds bytes from its
start to its planned finish; a *reservation* is a waiting request's planned future session.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import TYPE_CHECKING

from petalgym.perfmodel import Chain, Placement, TimeModel, chain_errors
from petalgym.timeline import ReleaseTimeline, Timeline

if TYPE_CHECKING:
    from collections.abc import Callable

    from petalgym.scenario import Scenario, ServerSpec


class ServerStatus(IntEnum):
    """Life cycle of a server: OFFLINE -> LOADING (blocks) -> ONLINE -> (DRAINING) -> OFFLINE."""

    OFFLINE = 0
    LOADING = 1
    ONLINE = 2
    DRAINING = 3


class RequestStatus(IntEnum):
    """Life cycle of a request."""

    ROUTING = 0  # a route decision is pending
    WAITING = 1  # holds a reservation (planned start) or backs off before a retry
    STALLED = 2  # no chain exists (coverage gap); re-tried when a server comes online
    RUNNING = 3
    COMPLETED = 4
    FAILED = 5
    QUEUED = 6  # in a client-side dispatch queue (central-queue deciders), offered again at completions


class ServerState:
    """Mutable state of one server. Deciders must treat it as read-only.

    Cache held or planned on the server: ``sessions`` (request id -> (bytes, planned end)) hold bytes now
    until their planned end; ``reservations`` (request id -> (start, end, bytes)) will hold bytes over
    [start, end). Change them only through :meth:`hold`, :meth:`set_end`, :meth:`drop`, :meth:`reserve`,
    :meth:`begin_reserved` and :meth:`unreserve`. The admission rule and WS-RR search two timelines built
    from these records (:meth:`timelines`): ``planned`` (the planned use minus the bytes held now: -b at a
    session's end, +b / -b at a reservation's start / end) and ``releases`` (+b at the end of every session
    and reservation). They are built when first asked for and then kept in step with every change, until
    the server has no reservation left (then a question is rare: the fast paths answer it from the totals),
    so a lightly loaded swarm pays nothing for them and an overloaded one O(log n) per change.
    """

    __slots__ = (
        "_planned",
        "_releases",
        "_releases_at",
        "cache_capacity",
        "end",
        "id",
        "memory_bytes",
        "placements",
        "reservations",
        "reserved_bytes",
        "sessions",
        "spec",
        "start",
        "status",
        "used_bytes",
        "version",
    )

    def __init__(self, spec: ServerSpec):
        self.id = spec.id
        self.spec = spec
        self.memory_bytes = spec.profile.memory_bytes
        self.status = ServerStatus.OFFLINE
        self.start = -1  # first hosted block, -1 if none
        self.end = -1  # last hosted block + 1
        self.cache_capacity = 0  # bytes of attention cache
        self.used_bytes = 0  # bytes held by sessions now
        self.reserved_bytes = 0  # bytes of all reservations
        self.sessions: dict[int, tuple[int, float]] = {}  # request id -> (bytes held, planned end)
        self.reservations: dict[int, tuple[float, float, int]] = {}  # request id -> (start, end, bytes)
        self._planned: Timeline | None = None  # None: not kept now (built from the records when asked)
        self._releases: ReleaseTimeline | None = None
        self._releases_at: dict[tuple[int, int], float] = {}  # wait_for's answers, while nothing changes
        self.version = 0  # bumped whenever the server goes offline or changes placement
        self.placements = 0  # how many placements it has received

    @property
    def num_blocks(self) -> int:
        return self.end - self.start if self.start >= 0 else 0

    @property
    def unreserved_bytes(self) -> int:
        """Cache bytes free now and promised to no reservation: budget - used - reserved (may be < 0 while a
        reservation overlaps sessions that end before it starts)."""
        return self.cache_capacity - self.used_bytes - self.reserved_bytes

    @property
    def cache_load(self) -> float:
        """Share of the cache budget held or reserved: (used + reserved bytes) / budget; 1 without budget."""
        cap = self.cache_capacity
        return (self.used_bytes + self.reserved_bytes) / cap if cap > 0 else 1.0

    @property
    def placement(self) -> Placement | None:
        if self.start < 0:
            return None
        return Placement(self.start, self.end - self.start, self.cache_capacity)

    # cache bookkeeping ----------------------------------------------------------------------------
    def timelines(self) -> tuple[Timeline, ReleaseTimeline]:
        """(planned, releases), built from the records if they are not kept now."""
        if self._planned is None:
            planned, releases = Timeline(), ReleaseTimeline()
            for nbytes, end in self.sessions.values():
                planned.add(end, -nbytes)
                releases.add(end, nbytes)
            for start, end, nbytes in self.reservations.values():
                planned.add(start, nbytes)
                planned.add(end, -nbytes)
                releases.add(end, nbytes)
            self._planned, self._releases = planned, releases
        return self._planned, self._releases  # type: ignore[return-value]

    def check_timelines(self) -> None:
        """AssertionError unless the timelines kept (if any) equal those the records give (for tests)."""
        if self._planned is not None:
            kept = (self._planned.items(), self._releases.items())  # type: ignore[union-attr]
            self._planned = self._releases = None
            assert kept == tuple(t.items() for t in self.timelines()), f"server {self.id}: timelines"

    def _changed(self, start: float | None, end: float | None, nbytes: int, session: bool) -> None:
        """Keep the timelines in step: ``nbytes`` (negative to remove) start being held at ``start``
        (None: a session, held from now) until ``end``."""
        self._releases_at.clear()
        planned = self._planned
        if planned is None:
            return
        if start is not None:
            planned.add(start, nbytes)
        if end is not None:
            planned.add(end, -nbytes)
            self._releases.add(end, nbytes)  # type: ignore[union-attr]
        if not session and not self.reservations:
            self._planned = self._releases = None

    def hold(self, rid: int, nbytes: int, end: float) -> None:
        """Request ``rid`` holds ``nbytes`` from now until (at least) ``end``."""
        self.sessions[rid] = (nbytes, end)
        self.used_bytes += nbytes
        if self._planned is not None or self._releases_at:
            self._changed(None, end, nbytes, True)

    def set_end(self, rid: int, end: float) -> None:
        """Move the planned end of request ``rid``'s held bytes to ``end``."""
        nbytes, old = self.sessions[rid]
        if old != end:
            self.sessions[rid] = (nbytes, end)
            self._changed(None, old, -nbytes, True)
            self._changed(None, end, nbytes, True)

    def drop(self, rid: int) -> int | None:
        """Release what request ``rid`` holds; returns the bytes (None if it held nothing)."""
        held = self.sessions.pop(rid, None)
        if held is None:
            return None
        nbytes, end = held
        self.used_bytes -= nbytes
        if self._planned is not None or self._releases_at:
            self._changed(None, end, -nbytes, False)
        return nbytes

    def reserve(self, rid: int, start: float, end: float, nbytes: int) -> None:
        """Request ``rid`` will hold ``nbytes`` over [start, end)."""
        self.reservations[rid] = (start, end, nbytes)
        self.reserved_bytes += nbytes
        self._changed(start, end, nbytes, False)

    def begin_reserved(self, rid: int, end: float) -> int:
        """Request ``rid``'s reservation starts now: its bytes are held until ``end``; returns them."""
        start, old_end, nbytes = self.reservations.pop(rid)
        self.reserved_bytes -= nbytes
        self.sessions[rid] = (nbytes, end)
        self.used_bytes += nbytes
        self._releases_at.clear()
        if self._planned is not None:  # its start is now; if its end stays, only the start delta goes
            self._planned.add(start, -nbytes)
            if end != old_end:
                self._changed(None, old_end, -nbytes, True)
                self._changed(None, end, nbytes, True)
            if not self.reservations:
                self._planned = self._releases = None
        return nbytes

    def unreserve(self, rid: int) -> tuple[float, float, int] | None:
        """Cancel request ``rid``'s reservation; returns it (None if it had none)."""
        res = self.reservations.pop(rid, None)
        if res is None:
            return None
        start, end, nbytes = res
        self.reserved_bytes -= nbytes
        self._changed(start, end, -nbytes, False)
        return res

    # questions -------------------------------------------------------------------------------------
    def earliest_fit(self, nbytes: int, after: float, duration: float) -> float:
        """Earliest t >= ``after`` at which ``nbytes`` more fit over [t, t + duration) beside every session
        (until its planned end) and reservation; inf if never. O(log K) per crossing of the limit."""
        if nbytes > self.cache_capacity:
            return math.inf
        if duration <= 0.0:
            return after
        limit = self.cache_capacity - nbytes - self.used_bytes  # on planned.prefix(t)
        planned = self.timelines()[0]
        t = after
        over, nxt = planned.next_crossing(t, limit)
        while True:
            if over:  # nxt: the end of this stretch over the limit
                if nxt is None:
                    return math.inf
                t = nxt
                nxt = planned.first_above(t, limit)
            # t fits now; nxt: the next time over the limit
            if nxt is None or nxt - duration >= t:
                return t
            t, over = nxt, True
            nxt = planned.first_at_most(t, limit)

    def wait_for(self, nbytes: int, now: float) -> float:
        """WS-RR's wait (s from ``now``) until ``nbytes`` are free, counting every session and reservation
        as held from now until its planned end; inf if never."""
        if nbytes > self.cache_capacity:
            return math.inf
        free = self.unreserved_bytes
        if free >= nbytes:
            return 0.0
        key = (nbytes, self.cache_capacity)
        t = self._releases_at.get(key)
        if t is None:
            found = self.timelines()[1].first_above(nbytes - free - 1)
            t = self._releases_at[key] = math.inf if found is None else found
        return max(t - now, 0.0)

    def __repr__(self) -> str:
        span = f"[{self.start},{self.end})" if self.start >= 0 else "-"
        return (
            f"Server({self.id} {self.spec.profile.name} {self.status.name} {span} "
            f"cache {self.used_bytes}/{self.cache_capacity} B, {len(self.sessions)} sessions)"
        )


class Request:
    """One inference session and its outcome. Times are absolute simulation seconds.

    Public outcome fields: ``arrival``, ``start`` (first admission), ``first_token``, ``finish``,
    ``wait_s`` (time spent waiting for cache or a chain, including during recoveries), ``recoveries``,
    ``attempts`` (route decisions taken), ``status``, ``failure_reason``, ``first_chain``, ``chain``.

    While being routed: ``route_from`` is the block to route from (0, or where an interrupted hop started),
    ``history_tokens`` the tokens whose cache a recovery must replay, ``kept`` the hops kept upstream (their
    servers still hold the request's cache while it is routed or waits for a reservation).
    """

    __slots__ = (
        "arrival",
        "attempts",
        "backoff_anchor",
        "backoff_step",
        "chain",
        "client",
        "failure_reason",
        "finish",
        "first_chain",
        "first_token",
        "history_tokens",
        "id",
        "kept",
        "kv_bytes",
        "l_in",
        "l_out",
        "new_hops",
        "plan",
        "queue_key",
        "queue_order",
        "recoveries",
        "retries",
        "retry_at",
        "route_from",
        "seg_start",
        "stalled_since",
        "start",
        "status",
        "t_next",
        "token_time",
        "tokens_done",
        "version",
        "wait_s",
        "wait_since",
    )

    def __init__(self, rid: int, client: int, arrival: float, l_in: int, l_out: int, kv_bytes: int):
        self.id = rid
        self.client = client
        self.arrival = arrival
        self.l_in = l_in
        self.l_out = l_out
        self.kv_bytes = kv_bytes
        self.status = RequestStatus.ROUTING
        self.start = math.nan
        self.first_token = math.nan
        self.finish = math.nan
        self.wait_s = 0.0
        self.wait_since = arrival
        self.recoveries = 0
        self.attempts = 0
        self.retries = 0
        self.failure_reason = ""
        self.chain: Chain = ()
        self.first_chain: Chain = ()
        self.route_from = 0
        self.history_tokens = l_in
        self.kept: Chain = ()
        self.new_hops: Chain = ()
        self.tokens_done = 0
        self.seg_start = math.nan
        self.t_next = math.nan
        self.token_time = math.nan
        self.plan = (math.nan, math.nan)  # (time to next token, per-token time) of a reserved start
        self.stalled_since = math.nan
        self.retry_at = math.nan  # time of the scheduled back-off retry
        self.backoff_anchor = math.nan  # capped back-off: retries at anchor + k x cap
        self.backoff_step = 0  # k of the scheduled capped retry
        self.queue_key: object = None  # central-queue dispatch: the queue it waits in (or was offered from)
        self.queue_order = 0  # its place in that queue (earlier first)
        self.version = 0

    # derived metrics -------------------------------------------------------------------------------
    @property
    def latency(self) -> float:
        """Completion time: finish - arrival (s)."""
        return self.finish - self.arrival

    @property
    def per_token(self) -> float:
        """Average time per token over all tokens, waiting included: (finish - arrival) / l_out (s)."""
        return (self.finish - self.arrival) / self.l_out

    @property
    def ttft(self) -> float:
        """Time to first token, waiting included (s)."""
        return self.first_token - self.arrival

    @property
    def later_token(self) -> float:
        """Mean time of the tokens after the first (s); nan if l_out == 1."""
        if self.l_out <= 1:
            return math.nan
        return (self.finish - self.first_token) / (self.l_out - 1)

    @property
    def is_recovery(self) -> bool:
        """Whether the next route resumes an interrupted request (from ``route_from``, replaying history)."""
        return self.route_from > 0 or self.tokens_done > 0

    def tokens_at(self, t: float) -> int:
        """Tokens produced by time ``t`` in the current segment (running requests)."""
        if t < self.t_next:
            return self.tokens_done
        return min(self.l_out, self.tokens_done + 1 + int((t - self.t_next) / self.token_time))

    def __repr__(self) -> str:
        return (
            f"Request({self.id} c{self.client} {self.status.name} l_in={self.l_in} l_out={self.l_out} "
            f"arrival={self.arrival:.3f})"
        )


# --------------------------------------------------------------------------------------------------
# Cache timelines
# --------------------------------------------------------------------------------------------------
def max_usage(server: ServerState, t0: float, t1: float) -> int:
    """Largest cache use on ``server`` over [t0, t1), from its sessions (held until their planned end)
    and reservations (held over their own interval); computed from the records, for invariant checks."""
    points = [t0] + [r0 for r0, _, _ in server.reservations.values() if t0 < r0 < t1]
    best = 0
    for tau in points:
        u = sum(b for b, f in server.sessions.values() if f > tau)
        u += sum(b for r0, r1, b in server.reservations.values() if r0 <= tau < r1)
        best = max(best, u)
    return best


def hop_needs(hops: Chain, kv_bytes: int) -> dict[int, int]:
    """Cache bytes a request with ``kv_bytes`` per block needs on each server of ``hops``."""
    return {h.server: (h.end - h.start) * kv_bytes for h in hops}


def earliest_start(servers: list[ServerState], needs: dict[int, int], now: float, duration: float) -> float:
    """Earliest t >= now at which every server j in ``needs`` has ``needs[j]`` bytes free over
    [t, t + duration), given sessions and reservations; inf if some need can never fit.
    Each server's :meth:`ServerState.earliest_fit` is searched from the latest candidate until all agree."""
    fast = True
    for j, b in needs.items():
        s = servers[j]
        if b > s.cache_capacity:
            return math.inf
        if s.reservations or s.used_bytes + b > s.cache_capacity:
            fast = False
    if fast:
        return now
    t = now
    checked: dict[int, float] = {}  # server -> the time it was found to fit at
    moved = True
    while moved:
        moved = False
        for j, b in needs.items():
            if checked.get(j) == t:
                continue
            tj = checked[j] = servers[j].earliest_fit(b, t, duration)
            if tj > t:
                if tj == math.inf:
                    return math.inf
                t, moved = tj, True
    return t


# --------------------------------------------------------------------------------------------------
# The view handed to deciders
# --------------------------------------------------------------------------------------------------
#: Time constant (s) of :class:`RequestLoad`'s smoothed arrival rate.
ARRIVAL_RATE_WINDOW_S = 60.0


class RequestLoad:
    """The request load of the swarm, kept by the simulator as requests arrive, start and finish.

    Attributes:
        arrived: requests arrived so far.
        in_flight: requests arrived and not yet completed or failed.
        running: requests holding a chain and generating (the rest of ``in_flight`` wait: for a
            reservation, a back-off, a chain that does not exist yet, a client queue or a route decision).
    """

    def __init__(self, window_s: float = ARRIVAL_RATE_WINDOW_S):
        self.window_s = float(window_s)
        self.arrived = 0
        self.in_flight = 0
        self.running = 0
        self._rate = 0.0  # smoothed arrival rate (1/s) at time self._last
        self._last = 0.0

    @property
    def waiting(self) -> int:
        """Requests in the system that do not run."""
        return self.in_flight - self.running

    def arrive(self, now: float) -> None:
        """One request arrived at ``now`` (s)."""
        self._rate = self.arrival_rate(now) + 1.0 / self.window_s
        self._last = now
        self.arrived += 1
        self.in_flight += 1

    def arrival_rate(self, now: float) -> float:
        """Arrivals per second, exponentially smoothed with time constant ``window_s``, at ``now`` (s)."""
        return self._rate * math.exp(-(now - self._last) / self.window_s) if self._rate else 0.0


class SwarmView:
    """Read-only access to the swarm for deciders: time, servers, spans, cache and waits.

    Deciders must not mutate anything reachable from the view.
    """

    def __init__(self, scenario: Scenario, time_model: TimeModel, servers: list[ServerState]):
        self.scenario = scenario
        self.time_model = time_model
        self.servers = servers
        self.now = 0.0
        self.allocation_delay_s = 0.0  # the deciding method's, added before each new request's first token
        self.placement_version = 0  # bumped whenever a span appears, moves or disappears
        self.load = RequestLoad()  # requests arrived, in flight, running; smoothed arrival rate
        self._spans_version = -1
        self._spans: list[tuple[int, int, int]] = []
        self._span_map: dict[int, tuple[int, int]] = {}

    @property
    def num_servers(self) -> int:
        return len(self.servers)

    @property
    def num_blocks(self) -> int:
        return self.scenario.model.num_blocks

    def spans(self) -> list[tuple[int, int, int]]:
        """(server, first block, end) of every ONLINE server, in server order."""
        if self._spans_version != self.placement_version:
            self._spans = [(s.id, s.start, s.end) for s in self.servers if s.status == ServerStatus.ONLINE]
            self._span_map = {j: (a, e) for j, a, e in self._spans}
            self._spans_version = self.placement_version
        return self._spans

    def span_map(self) -> dict[int, tuple[int, int]]:
        """{server: (first block, end)} of every ONLINE server."""
        self.spans()
        return self._span_map

    def chain_error(self, chain: Chain, start: int = 0) -> str | None:
        """Why ``chain`` is not a feasible chain from block ``start`` on the ONLINE servers, or None."""
        return chain_errors(chain, self.span_map(), self.num_blocks, start)

    def coverage(self) -> list[int]:
        """Number of ONLINE servers hosting each block, length L."""
        cov = [0] * self.num_blocks
        for _, a, e in self.spans():
            for b in range(a, e):
                cov[b] += 1
        return cov

    def wait_for(self, server: int, nbytes: int) -> float:
        """WS-RR's waiting time (s from now) until ``server`` has ``nbytes`` free, counting every running
        session and every reservation as held from now until its planned finish; inf if never."""
        return self.servers[server].wait_for(nbytes, self.now)

    def hop_wait(self, kv_bytes: int) -> Callable[[int, int], float]:
        """WS-RR's waiting time as a function of (server, blocks) for a request of ``kv_bytes`` per block:
        ``wait_for(server, blocks * kv_bytes)``, with the free cache of every server read once (a hop that
        fits now answers 0 without a call): the ``wait`` of the chain programmes, which ask it per
        (server, entry) pair. Valid until the swarm changes."""
        servers, now = self.servers, self.now
        room = [s.unreserved_bytes for s in servers]

        def wait(server: int, blocks: int) -> float:
            nbytes = blocks * kv_bytes
            if room[server] >= nbytes:
                return 0.0
            return servers[server].wait_for(nbytes, now)

        return wait

    def admission(self, request: Request, hops: Chain) -> tuple[float, float, float, float]:
        """What the simulator would do if ``request`` took ``hops`` now (after its kept hops):
        (earliest start, first, token, duration) in seconds -- the start by the admission rule (a
        reservation is never delayed; inf if a hop can never fit), the times by
        :meth:`~petalgym.perfmodel.TimeModel.segment_times`."""
        first, token, duration = self.time_model.segment_times(request, hops, self.allocation_delay_s)
        start = earliest_start(self.servers, hop_needs(hops, request.kv_bytes), self.now, duration)
        return start, first, token, duration
