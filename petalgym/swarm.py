"""Swarm state: servers (placement, cache, sessions), requests (sessions) and the read-only view deciders get.

Cache accounting is in bytes. A request holds ``k * kv_bytes`` on a server whose hop processes ``k`` blocks
(``kv_bytes`` = its s_c, one block's KV cache for its l_in + l_out tokens). A *session* holds bytes from its
start to its planned finish; a *reservation* is a waiting request's planned future session.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import TYPE_CHECKING

from petalgym.perfmodel import Chain, Hop, Placement, TimeModel, chain_errors

if TYPE_CHECKING:
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


class ServerState:
    """Mutable state of one server. Deciders must treat it as read-only."""

    __slots__ = (
        "cache_capacity",
        "end",
        "id",
        "memory_bytes",
        "placements",
        "reservations",
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
        self.used_bytes = 0  # bytes held by running sessions
        self.sessions: dict[int, tuple[int, float]] = {}  # request id -> (bytes held, planned finish)
        self.reservations: dict[int, tuple[float, float, int]] = {}  # request id -> (start, finish, bytes)
        self.version = 0  # bumped whenever the server goes offline or changes placement
        self.placements = 0  # how many placements it has received

    @property
    def num_blocks(self) -> int:
        return self.end - self.start if self.start >= 0 else 0

    @property
    def placement(self) -> Placement | None:
        if self.start < 0:
            return None
        return Placement(self.start, self.end - self.start, self.cache_capacity)

    @property
    def free_bytes(self) -> int:
        return self.cache_capacity - self.used_bytes

    @property
    def routable(self) -> bool:
        return self.status == ServerStatus.ONLINE

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
    ``history_tokens`` the tokens whose cache a recovery must replay, ``kept`` the hops kept upstream.
    """

    __slots__ = (
        "arrival",
        "attempts",
        "chain",
        "client",
        "failure_reason",
        "finish",
        "first_chain",
        "first_token",
        "history_tokens",
        "id",
        "kept",
        "kept_versions",
        "kv_bytes",
        "l_in",
        "l_out",
        "new_hops",
        "plan",
        "recoveries",
        "retries",
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
        self.kept_versions: tuple[int, ...] = ()  # server versions when ``kept`` was cut (cache still there)
        self.new_hops: Chain = ()
        self.tokens_done = 0
        self.seg_start = math.nan
        self.t_next = math.nan
        self.token_time = math.nan
        self.plan = (math.nan, math.nan)  # (time to next token, per-token time) of a reserved start
        self.stalled_since = math.nan
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
    """Largest cache use on ``server`` over [t0, t1), from running sessions (held until their planned
    finish) and reservations (held over their own interval)."""
    if not server.reservations:
        return sum(b for b, f in server.sessions.values() if f > t0)
    points = [t0] + [r0 for r0, _, _ in server.reservations.values() if t0 < r0 < t1]
    best = 0
    for tau in points:
        u = sum(b for b, f in server.sessions.values() if f > tau)
        u += sum(b for r0, r1, b in server.reservations.values() if r0 <= tau < r1)
        best = max(best, u)
    return best


def blocked_starts(
    server: ServerState, nbytes: int, now: float, duration: float
) -> list[tuple[float, float]]:
    """Open intervals (lo, hi) of start times t at which ``nbytes`` more would overflow ``server`` somewhere
    in [t, t + duration), from its cache-use step function (running sessions and reservations)."""
    threshold = server.cache_capacity - nbytes
    usage = server.used_bytes
    points: list[tuple[float, int]] = [(f, -b) for b, f in server.sessions.values() if f > now]
    for r0, r1, b in server.reservations.values():
        if r0 <= now:
            usage += b
        else:
            points.append((r0, b))
        points.append((r1, -b))
    points.sort()
    out = []
    x = now
    for t, delta in points:
        if t > x:
            if usage > threshold:
                out.append((x - duration, t))
            x = t
        usage += delta
    if usage > threshold:
        out.append((x - duration, math.inf))
    return out


def earliest_start(servers: list[ServerState], needs: dict[int, int], now: float, duration: float) -> float:
    """Earliest t >= now at which every server j in ``needs`` has ``needs[j]`` bytes free over
    [t, t + duration), given running sessions and reservations; inf if some need exceeds a capacity.
    O(K log K) for K sessions and reservations on the chain's servers."""
    fast = True
    for j, b in needs.items():
        s = servers[j]
        if b > s.cache_capacity:
            return math.inf
        if s.reservations or s.used_bytes + b > s.cache_capacity:
            fast = False
    if fast:
        return now
    blocked: list[tuple[float, float]] = []
    for j, b in needs.items():
        blocked += blocked_starts(servers[j], b, now, duration)
    blocked.sort()
    t = now
    for lo, hi in blocked:
        if lo >= t:
            break
        if hi > t:
            t = hi
    return t


# --------------------------------------------------------------------------------------------------
# The view handed to deciders
# --------------------------------------------------------------------------------------------------
class SwarmView:
    """Read-only access to the swarm for deciders: time, servers, spans, cache and waits.

    Deciders must not mutate anything reachable from the view.
    """

    def __init__(self, scenario: Scenario, time_model: TimeModel, servers: list[ServerState]):
        self.scenario = scenario
        self.time_model = time_model
        self.servers = servers
        self.now = 0.0
        self.placement_version = 0  # bumped whenever a span appears, moves or disappears
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
        s = self.servers[server]
        if nbytes > s.cache_capacity:
            return math.inf
        reserved = 0
        for _, _, b in s.reservations.values():
            reserved += b
        free = s.cache_capacity - s.used_bytes - reserved
        if free >= nbytes:
            return 0.0
        releases = [(f, b) for b, f in s.sessions.values()]
        releases += [(r1, b) for _, r1, b in s.reservations.values()]
        releases.sort()
        for t, b in releases:
            free += b
            if free >= nbytes:
                return max(t - self.now, 0.0)
        return math.inf

    def earliest_start(self, chain: Chain, kv_bytes: int, duration: float) -> float:
        """The simulator's own admission rule: the earliest absolute time >= now at which ``chain`` fits
        for ``duration`` seconds with ``kv_bytes`` per block (reservations are never delayed)."""
        needs: dict[int, int] = {}
        for h in chain:
            needs[h.server] = needs.get(h.server, 0) + (h.end - h.start) * kv_bytes
        return earliest_start(self.servers, needs, self.now, duration)

    def hop_fits_now(self, hop: Hop, kv_bytes: int) -> bool:
        """Whether ``hop``'s server has the cache for it right now (ignoring future reservations)."""
        s = self.servers[hop.server]
        return s.used_bytes + (hop.end - hop.start) * kv_bytes <= s.cache_capacity
