"""An independent restatement of the authors' sequential simulator (TingyangSunJeff/LLM_inference_simulator,
WS_RR.m and Petals_online.m at 3f78053), written from the facts of issue 11 -- not from petalgym's code --
as an oracle for the ``-paper`` deciders on petalgym's discrete-event simulator.

Requests are handled one by one in arrival order. Each server keeps, per request routed through it, (the
request's completion time, the cache slots it uses); a request counts as active on a server from its
arrival until its completion (its waiting included). For a request arriving at t, the time a server can
take k more slots is t if its slots minus those of its active requests leave k, else the completion
time at which, releasing active requests in order of completion, k are left. The path is a Dijkstra over
servers; its wait is the largest over its hops, rounded up to the back-off schedule; the request then
holds its slots until t + wait + its service time + the initial delay + the allocation delay. Times in s.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field


@dataclass
class Server:
    start: int  # first block, 0-based
    end: int  # last block + 1
    slots: int  # cache slots (one slot = one block of one session)
    rtt: float  # raw RTT to the client (s)
    tau: float  # decode s per block
    tau_in: float  # prefill s per block
    load: list[tuple[float, int]] = field(default_factory=list)  # (completion, slots) of routed requests

    def ready(self, t: float, k: int) -> float:
        active = sorted((c, s) for c, s in self.load if c > t)
        free = self.slots - sum(s for _, s in active)
        if free >= k:
            return t
        for c, s in active:
            free += s
            if free >= k:
                return c
        return math.inf

    def sessions(self) -> int:
        return self.end - self.start


@dataclass
class Outcome:
    start: float
    ttft: float  # from arrival
    completion: float  # absolute
    path: tuple[int, ...]


def rounded(wait: float, cap: float = 60.0) -> float:
    if wait <= 0:
        return 0.0
    total, n = 0.0, 0
    while total < wait:
        n += 1
        total += min(2.0 ** (n - 1), cap)
    return total


def _dijkstra(servers: list[Server], L: int, first_cost, next_cost, last_cost) -> tuple[int, ...]:
    """Cheapest server path from the client to the last block; ties: lower server index first."""
    dist: dict[int, float] = {}
    pred: dict[int, int] = {}
    heap: list[tuple[float, int]] = []
    for j, s in enumerate(servers):
        if s.start == 0:
            dist[j], pred[j] = first_cost(j), -1
            heapq.heappush(heap, (dist[j], j))
    done: set[int] = set()
    best, last = math.inf, -1
    while heap:
        d, i = heapq.heappop(heap)
        if i in done or d > dist[i]:
            continue
        done.add(i)
        if servers[i].end == L:
            if d + last_cost(i) < best:
                best, last = d + last_cost(i), i
            continue
        b = servers[i].end
        for j, s in enumerate(servers):
            if j not in done and s.start <= b < s.end:
                nd = d + next_cost(i, j)
                if nd < dist.get(j, math.inf):
                    dist[j], pred[j] = nd, i
                    heapq.heappush(heap, (nd, j))
    path = []
    while last >= 0:
        path.append(last)
        last = pred[last]
    return tuple(reversed(path))


def _serve(servers, path, t, l_out, overheads, initial, alloc, cap) -> Outcome:
    """A request arriving at t on ``path``: its wait (the largest over its hops, rounded up to the back-off
    schedule), start, TTFT and completion; books its slots on the path until the completion."""
    token_overhead, prefill_overhead = overheads
    entered = [0] + [servers[i].end for i in path[:-1]]
    blocks = [servers[j].end - b for j, b in zip(path, entered, strict=True)]
    hops = [(servers[j], k) for j, k in zip(path, blocks, strict=True)]
    wait = rounded(max(s.ready(t, k) - t for s, k in hops), cap)
    prefill = sum(s.rtt + prefill_overhead + s.tau_in * k for s, k in hops)
    token = sum(s.rtt + token_overhead + s.tau * k for s, k in hops)
    start = t + wait
    first = alloc + initial + prefill
    completion = start + first + (l_out - 1) * token
    for s, k in hops:
        s.load.append((completion, k))
    return Outcome(start, start + first - t, completion, path)


def ws_rr(servers, L, arrivals, l_out, tokens_in, overheads, initial, alloc, cap=60.0) -> list[Outcome]:
    """The authors' WS-RR: link cost = the hop's wait + its time for the whole request."""
    token_overhead, prefill_overhead = overheads
    out = []
    for t in arrivals:

        def cost(j: int, b: int, t: float = t) -> float:
            s = servers[j]
            k = s.end - b
            time = (s.rtt + prefill_overhead) + (l_out - 1) * (s.rtt + token_overhead)
            return s.ready(t, k) - t + time + (s.tau_in + (l_out - 1) * s.tau) * k

        path = _dijkstra(
            servers, L, lambda j: cost(j, 0), lambda i, j: cost(j, servers[i].end), lambda i: 0.0
        )
        out.append(_serve(servers, path, t, l_out, overheads, initial, alloc, cap))
    return out


def petals(servers, L, arrivals, l_out, between, overheads, initial, alloc, hop=0.018, penalty=10.0, cap=60.0,
           capacity=None) -> list[Outcome]:  # fmt: skip
    """The authors' PETALS emulation: Dijkstra with rtt/2 + 18 ms + tau x blocks (+10 s for a server with no
    free session: its session capacity minus its active requests is exactly 0)."""
    out = []
    for t in arrivals:

        def pen(j: int, t: float = t) -> float:
            active = sum(1 for c, _ in servers[j].load if c > t)
            return penalty if capacity[j] - active == 0 else 0.0

        def first(j: int) -> float:
            return servers[j].rtt / 2 + hop + servers[j].tau * servers[j].sessions() + pen(j)

        def nxt(i: int, j: int) -> float:
            return between[i][j] / 2 + hop + servers[j].tau * (servers[j].end - servers[i].end) + pen(j)

        path = _dijkstra(servers, L, first, nxt, lambda i: servers[i].rtt / 2)
        out.append(_serve(servers, path, t, l_out, overheads, initial, alloc, cap))
    return out
