"""Simple reference deciders: random and round robin (sanity baselines, not the paper's).

Both decide every server's window once at reset (a server that rejoins under churn gets the same window),
leave all memory after the blocks as cache, and route with Route(wait=True). A chain from block b exists
iff every block in [b, L) is hosted by an ONLINE server, so neither router can reach a dead end.
"""

from __future__ import annotations

import numpy as np

from petalgym.deciders import Decider, Route
from petalgym.perfmodel import Hop, Placement
from petalgym.scenario import Scenario, max_blocks_on
from petalgym.swarm import Request, SwarmView

__all__ = ["RandomDecider", "RoundRobinDecider"]


def _hosting(view: SwarmView, start: int) -> list[list[tuple[int, int]]] | None:
    """For each block b in [start, L): the ONLINE (server, end) hosting b, in server order; None on a gap."""
    L = view.num_blocks
    hosts: list[list[tuple[int, int]]] = [[] for _ in range(L)]
    for j, a, e in view.spans():
        for b in range(max(a, start), e):
            hosts[b].append((j, e))
    if any(not hosts[b] for b in range(start, L)):
        return None
    return hosts


class RandomDecider(Decider):
    """Random reference: random block counts and windows, uniformly random chains.

    Placement (drawn at reset with the decider's rng): m_j uniform in 1..max_blocks_on(j) (what memory
    allows while keeping the cache of one longest session), raised one block at a time on random servers
    if they sum to less than L; then, in a random server order, each window starts uniformly at random
    among those that keep the blocks covered so far contiguous (overlap drawn within the spare blocks), so
    the full swarm covers 0..L-1; servers left after coverage take a uniformly random window.
    Routing: a chain drawn uniformly among all feasible chains on the ONLINE servers (chain counts by
    dynamic programming, exact integers).
    """

    name = "random"

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        L = scenario.num_blocks
        caps = [max_blocks_on(scenario, s) for s in scenario.servers]
        m = [int(rng.integers(1, c + 1)) for c in caps]
        while sum(m) < L:  # check_feasible guarantees sum(caps) >= L
            room = [j for j in range(len(m)) if m[j] < caps[j]]
            m[room[int(rng.integers(len(room)))]] += 1
        starts = [0] * len(m)
        pos, slack = 0, sum(m) - L
        for j in (int(x) for x in rng.permutation(len(m))):
            if pos < L:
                lo, hi = max(0, pos - (m[j] - 1), pos - slack), min(pos, L - m[j])
                starts[j] = int(rng.integers(lo, hi + 1))
                slack -= pos - starts[j]
                pos = starts[j] + m[j]
            else:
                starts[j] = int(rng.integers(0, L - m[j] + 1))
        self._placements = [Placement(a, k) for a, k in zip(starts, m, strict=True)]

    def place(self, view: SwarmView, server: int) -> Placement:
        return self._placements[server]

    def _below(self, n: int) -> int:
        """A uniform integer in [0, n) for any n >= 1 (Python ints; bias < 2^-64)."""
        words = (n.bit_length() + 64 + 62) // 63
        r = 0
        for _ in range(words):
            r = (r << 63) | int(self.rng.integers(0, 2**63))
        return r % n

    def route(self, view: SwarmView, request: Request) -> Route | None:
        start, L = request.route_from, view.num_blocks
        hosts = _hosting(view, start)
        if hosts is None:
            return None
        count = [0] * (L + 1)  # count[b] = number of chains from block b to L
        count[L] = 1
        for b in range(L - 1, start - 1, -1):
            count[b] = sum(count[e] for _, e in hosts[b])
        hops = []
        pos = start
        while pos < L:
            r = self._below(count[pos])
            for j, e in hosts[pos]:
                if r < count[e]:
                    hops.append(Hop(j, pos, e))
                    pos = e
                    break
                r -= count[e]
        return Route(tuple(hops), wait=True)


class RoundRobinDecider(Decider):
    """Round-robin reference: an even split of the L blocks, tiled in join order; round-robin routing.

    Block counts (at reset): water-filling, m_j = min(q, cap_j) with the smallest level q covering L,
    cap_j = max_blocks_on(j); the extra blocks above L are taken back from the largest counts (highest
    index first), so counts sum to max(L, S) and differ by at most one among uncapped servers.
    Windows: the k-th server to join starts where the previous one ended; if it would pass block L-1 it
    takes the last window and the next one starts again at block 0 (wrap-around). A rejoining server
    keeps its window. Routing: at each block position b, the ONLINE servers hosting b are taken in turn
    (a counter per position), which cycles over the alternative chains.
    """

    name = "round-robin"

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        L = scenario.num_blocks
        caps = [max_blocks_on(scenario, s) for s in scenario.servers]
        q = 1
        while sum(min(q, c) for c in caps) < L:
            q += 1
        m = [min(q, c) for c in caps]
        extra = sum(m) - max(L, len(m))
        for j in sorted(range(len(m)), key=lambda j: (-m[j], -j)):
            if extra <= 0:
                break
            if m[j] == q and q > 1:
                m[j] -= 1
                extra -= 1
        self._num_blocks = m
        self._placements: dict[int, Placement] = {}
        self._next = 0
        self._turn = [0] * L

    def place(self, view: SwarmView, server: int) -> Placement:
        if server not in self._placements:
            L, m = self.scenario.num_blocks, self._num_blocks[server]
            start = min(self._next, L - m)
            self._next = start + m if start + m < L else 0
            self._placements[server] = Placement(start, m)
        return self._placements[server]

    def route(self, view: SwarmView, request: Request) -> Route | None:
        start, L = request.route_from, view.num_blocks
        hosts = _hosting(view, start)
        if hosts is None:
            return None
        hops = []
        pos = start
        while pos < L:
            options = hosts[pos]
            j, e = options[self._turn[pos] % len(options)]
            self._turn[pos] += 1
            hops.append(Hop(j, pos, e))
            pos = e
        return Route(tuple(hops), wait=True)
