"""PETALS as a decider: fixed KV budget, choose_best_blocks, rebalancing, min-latency routing, back-off.

Each rule restates the code of bigscience-workshop/petals (paper-notes section 6):

* block count (server/server.py ``_choose_num_blocks``): m_j = min(floor((M_j - autograd) / (s_m +
  cache_per_block)), L), capped by the GPU; the attention cache budget is FIXED at m_j x cache_per_block
  whatever the load (``attn_cache_tokens`` = 4096 in the paper's emulation). This budget is why PETALS'
  requests wait;
* announced throughput (server/throughput.py): min(forward_rps / ((m + 1) / 2), network_rps). The relay
  penalty (network_rps x 0.2 behind a relay) is not modelled: every simulated server is reachable;
* block choice (server/block_selection.py ``choose_best_blocks``): T_b = sum of the throughputs of the
  JOINING (LOADING here) or ONLINE servers hosting block b, summed in server order; a joining server takes
  the start i minimising (sorted(T[i:i+m]), i) lexicographically;
* rebalancing (``should_choose_other_blocks``, checked at intervals uniform in [0, 2 x 120 s]): see
  :func:`should_choose_other_blocks`. A server that moves picks its new start on the live state without
  itself, as a real PETALS server does after going offline;
* routing (client/routing/sequence_manager.py, mode ``min_latency``): Dijkstra over (server, block)
  nodes, see :func:`min_latency_chain`. A chain that lacks cache is answered with ``Route(wait=False)``:
  the simulator then backs off 1, 2, 4, ... s (capped at ``petals.backoff_cap_s``) and routes again, as
  in the paper's emulation of PETALS (the real client bans a rejecting server for 15 s instead).

Differences from real PETALS, all forced by the simulator: RTTs are constant (PETALS' 0.2/0.8 smoothing
is a no-op); a hop between servers costs the client<->next-server RTT (the paper's hub-and-spoke model)
rather than the server<->server ping PETALS measures; a DRAINING server counts as OFFLINE (a real server
announces OFFLINE as it shuts down); the random 0-10 s block-selection delay is not modelled (servers join
in the simulator's seeded random order); a recovery is routed to the last block, not only to the end of
the lost span.

Speed (same results, bit for bit, as the literal code kept in tests/petals_reference.py; checked by
tests/test_petals_speed_equivalence.py): the min-latency chain is computed by a position-by-position numpy
pass plus dijkstar's tie-breaking rule (:func:`_route_fast`) instead of building the graph and running
Dijkstra; the decider keeps T up to date between decisions (:class:`_ServingThroughputs`) instead of
re-summing every server; choose_best_start counts copies of the smallest values instead of sorting every
window; and exact memos (keyed on the bytes of the inputs) answer the questions a swarm that does not move
keeps asking (routes, best starts, turns of the balance simulation).
"""

from __future__ import annotations

import heapq
import math
import struct
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import count

import numpy as np

from petalgym.deciders import Decider, Route
from petalgym.errors import DeciderError
from petalgym.perfmodel import Chain, Hop, Placement, petals_cache_bytes_per_block, petals_num_blocks
from petalgym.scenario import GpuProfile, Scenario
from petalgym.swarm import Request, ServerState, ServerStatus, SwarmView

#: PETALS' tolerance in should_choose_other_blocks (block_selection.py ``eps``).
BALANCE_EPS = 1e-3
#: PETALS' cap on a network delay in the routing graph (sequence_manager.py ``max_delay``), seconds.
MAX_DELAY_S = 5.0
#: Safety cap on the rounds of the rebalancing simulation (PETALS loops until nobody moves; the eps bias
#: makes it converge in a few rounds, this only guards against a pathological cycle).
MAX_BALANCE_ROUNDS = 10_000

#: A server's span as block selection sees it: (server, first block, end, announced throughput).
ThroughputSpan = tuple[int, int, int, float]


# --------------------------------------------------------------------------------------------------
# Throughput and block selection (server/throughput.py, server/block_selection.py)
# --------------------------------------------------------------------------------------------------
def petals_throughput(profile: GpuProfile, num_blocks: int) -> float:
    """Throughput a PETALS server announces, tokens/s: min(forward_rps / ((m + 1) / 2), network_rps).

    (m + 1) / 2 is the mean number of its blocks a request uses if it enters at a uniform block. No relay
    penalty: simulated servers are directly reachable.
    """
    average_blocks_used = (num_blocks + 1) / 2
    return min(profile.forward_rps / average_blocks_used, profile.network_rps)


#: From this many spans on, :func:`block_throughputs` sums with one numpy call instead of a Python loop.
_VECTOR_MIN_SPANS = 24


def _ordered_sums(rows: np.ndarray) -> np.ndarray:
    """Column sums of ``rows`` added strictly row after row (row 0 first), as a Python loop would.

    ``np.add.accumulate`` is sequential by definition (out[k] = out[k-1] + rows[k]); ``np.sum`` is not
    (it may sum pairwise), hence this helper wherever sums must be bit-identical to PETALS' loop.
    """
    return np.add.accumulate(rows, axis=0)[-1]


def block_throughputs(spans: Iterable[ThroughputSpan], num_blocks: int) -> np.ndarray:
    """T_b for b in 0..L-1: sum of the throughputs of the servers hosting b (PETALS' ``compute_spans``).

    Servers are added in server order, as PETALS sorts peers, so equal sets of servers give bit-identical
    sums (PETALS relies on that to avoid spurious moves). Large swarms are summed by
    :func:`_ordered_sums` over a (1 + spans) x L matrix whose row 0 is +0.0 and row k holds span k's
    throughput on its blocks and +0.0 elsewhere: adding +0.0 leaves every partial sum unchanged, so each
    T_b is the same sequence of additions as the loop, bit for bit.
    """
    ordered = sorted(spans)
    t = np.zeros(num_blocks)
    if len(ordered) < _VECTOR_MIN_SPANS or not all(
        type(a) is int and type(e) is int and 0 <= a <= e <= num_blocks for _, a, e, _ in ordered
    ):
        for _, a, e, thr in ordered:
            t[a:e] += thr
        return t
    first = np.array([a for _, a, _, _ in ordered])
    end = np.array([e for _, _, e, _ in ordered])
    thr = np.array([x for _, _, _, x in ordered], dtype=float)
    blocks = np.arange(num_blocks)
    rows = np.zeros((len(ordered) + 1, num_blocks))
    rows[1:] = np.where((blocks >= first[:, None]) & (blocks < end[:, None]), thr[:, None], 0.0)
    return _ordered_sums(rows)


def _choose_best_start_reference(throughputs: Sequence[float] | np.ndarray, num_blocks: int) -> int:
    """The rule as literally stated (kept for inputs holding NaN, whose comparisons are not an order)."""
    t = [float(x) for x in throughputs]
    options = ((sorted(t[i : i + num_blocks]), i) for i in range(len(t) - num_blocks + 1))
    return min(options)[-1]


def _best_start(t: list[float], m: int) -> int:
    """:func:`choose_best_start` on a list of NaN-free floats, 1 <= m <= len(t): same answer, faster.

    Sorted windows compare lexicographically, so window A beats window B iff, at the smallest value whose
    number of copies differs between them, A holds more copies. Hence: keep the windows with the most
    copies of the smallest value among the remaining windows' blocks, then of the next smallest value,
    and so on; when one window is left it is the answer, and when no larger value is left the remaining
    windows hold equal multisets and the smallest start wins. Values are compared with ``==`` and ``<``
    exactly as ``sorted`` and list comparison do (so -0.0 and 0.0 are one value).
    """
    n = len(t) - m + 1
    if n == 1:
        return 0
    value = min(t)
    if m == 1:
        return t.index(value)
    # level 1: the windows holding the most copies of the global minimum
    at = [p for p, x in enumerate(t) if x == value]
    cands: list[int] = list(range(max(0, at[0] - m + 1), min(n - 1, at[-1]) + 1))
    while True:
        counts = [bisect_left(at, i + m) - bisect_left(at, i) for i in cands]
        most = max(counts)
        cands = [i for i, c in zip(cands, counts, strict=True) if c == most]
        if len(cands) == 1:
            return cands[0]
        lo, hi = cands[0], cands[-1] + m
        larger = [x for x in t[lo:hi] if x > value]
        if not larger:
            return cands[0]
        value = min(larger)
        at = [p for p in range(lo, hi) if t[p] == value]


def choose_best_start(throughputs: Sequence[float] | np.ndarray, num_blocks: int) -> int:
    """PETALS' ``_choose_best_start``: the start i minimising (sorted(T[i:i+m]), i) lexicographically.

    That is the window whose weakest block is weakest, ties broken by the next weakest, then by the
    smallest i (not the smallest sum). Computed by :func:`_best_start` (same answer, without sorting every
    window).
    """
    t = [float(x) for x in throughputs]
    if not 1 <= num_blocks <= len(t):
        raise DeciderError(f"petals: cannot place {num_blocks} blocks in a model of {len(t)} blocks")
    if any(x != x for x in t):  # NaN: keep the literal rule's (order-dependent) answer
        return _choose_best_start_reference(t, num_blocks)
    return _best_start(t, num_blocks)


def should_choose_other_blocks(
    spans: Sequence[ThroughputSpan],
    local: int,
    num_blocks: int,
    balance_quality: float,
    rng: np.random.Generator,
    *,
    throughputs: np.ndarray | None = None,
) -> bool:
    """PETALS' balance check for server ``local`` (block_selection.py, same arithmetic).

    Remove the local throughput x (1 + eps); stay if that uncovers a block; else find the best start,
    stay if it is the current one; else move there and let every server (shuffled with ``rng``, repeated
    until nobody moves) greedily re-choose its window; move only if min(T_before) / min(T_after) <
    balance_quality - eps. ``spans`` lists the JOINING/ONLINE servers with their throughputs;
    ``throughputs``, if given, must be ``block_throughputs(spans, num_blocks)`` (a caller that keeps it
    up to date saves recomputing it; it is not modified). Computed by :class:`_BalanceCheck`.
    """
    if balance_quality > 1.0:
        return True  # PETALS: forces rebalancing on each check
    return _BalanceCheck(spans, num_blocks, throughputs).run(local, balance_quality, rng)


class _BalanceCheck:
    """:func:`should_choose_other_blocks` for one set of serving spans, reusable for many checks.

    What depends on the spans only (their order, T) is computed once; :meth:`run` then does one check.
    T is updated in a list of Python floats: each ``T[b] -= x`` is the same IEEE operation as numpy's
    in-place slice update. Spans outside 0..L, non-finite throughputs, or values large enough to
    overflow take :func:`_should_choose_other_blocks_numpy`, the original numpy code, unchanged.
    """

    __slots__ = ("L", "fast", "given", "initial", "order", "pos", "servers", "t", "throughputs", "turns")

    def __init__(self, spans: Sequence[ThroughputSpan], num_blocks: int, throughputs: np.ndarray | None):
        # compute_spans inserts peers by first block, then in peer order
        self.order = sorted(spans, key=lambda s: (s[1], s[0]))
        self.pos: dict[int, tuple] = {j: (a, e - a, thr) for j, a, e, thr in self.order}
        self.L = num_blocks
        self.given = throughputs
        self.fast: bool | None = None  # decided on the first run (after the local server is checked)

    def _prepare(self) -> None:
        """T and the per-server constants, computed on the first run."""
        order = self.order
        if self.given is None:
            self.throughputs = block_throughputs(order, self.L)
        else:
            self.throughputs = np.array(self.given, dtype=float)
        t = self.t = self.throughputs.tolist()
        L = len(t)
        self.fast = (
            all([a >= 0 and e - a >= 1 and e <= L and math.isfinite(thr) for _, a, e, thr in order])
            and all(map(math.isfinite, t))
            # every T_b stays within max|T| + 3 sum|thr| (x 1.001): no overflow, so no inf and no NaN
            and max(map(abs, t), default=0.0) + 4 * sum([abs(s[3]) for s in order]) < 1e300
        )
        if self.fast:
            eps = BALANCE_EPS
            self.initial = min(t)
            self.servers = [j for j, _, _, _ in order]
            # per server: m, thr, thr x (1 + eps), thr x eps
            self.turns = {j: (m, thr, thr * (1 + eps), thr * eps) for j, (_, m, thr) in self.pos.items()}

    def run(self, local: int, balance_quality: float, rng: np.random.Generator) -> bool:
        """The check for server ``local`` (``balance_quality`` <= 1; above, PETALS always moves)."""
        pos = self.pos
        if local not in pos:
            raise DeciderError(f"petals: server {local} is not among the serving servers {sorted(pos)}")
        if self.fast is None:
            self._prepare()
        if not self.fast:
            lists = {j: [a, e - a, thr] for j, a, e, thr in self.order}
            t_copy = self.throughputs.copy()
            return _should_choose_other_blocks_numpy(self.order, lists, local, t_copy, balance_quality, rng)
        t = list(self.t)
        initial_throughput = self.initial
        eps = BALANCE_EPS
        best = _best_start_memo

        a, m, thr = pos[local]
        x = thr * (1 + eps)
        t[a : a + m] = [v - x for v in t[a : a + m]]
        if initial_throughput > eps and min(t) <= 0:
            return False  # moving would make the swarm disjoint
        new_start = best(t, m)
        if new_start == a:
            return False  # already at its best place
        x = thr * eps
        t[a : a + m] = [v + x for v in t[a : a + m]]
        starts = {j: p[0] for j, p in pos.items()}
        starts[local] = new_start
        t[new_start : new_start + m] = [v + thr for v in t[new_start : new_start + m]]

        # A server's turn maps (T, its start) to (T', its new start), a pure function of T's bits, the
        # start, m and thr: memoised on T's bytes (a swarm that does not move replays the same turns
        # check after check). thr = 0 is not memoised (+0.0 and -0.0 are equal keys but may round
        # differently).
        servers, turns, memo = self.servers, self.turns, _balance_turns
        codec = _codec(len(t))
        state = codec.pack(*t)
        moved = True
        rounds = 0
        while moved and rounds < MAX_BALANCE_ROUNDS:
            rounds += 1
            shuffled = list(servers)
            rng.shuffle(shuffled)
            moved = False
            for j in shuffled:
                m, thr, remove, keep = turns[j]
                a = starts[j]
                key = (state, a, m, thr)
                turn = memo.get(key)
                if turn is None:
                    t = list(codec.unpack(state))
                    t[a : a + m] = [v - remove for v in t[a : a + m]]
                    new_start = best(t, m)
                    t[a : a + m] = [v + keep for v in t[a : a + m]]
                    t[new_start : new_start + m] = [v + thr for v in t[new_start : new_start + m]]
                    turn = (codec.pack(*t), new_start)
                    if thr != 0.0:
                        if len(memo) >= _BALANCE_TURNS_SIZE:
                            memo.clear()
                        memo[key] = turn
                state, new_start = turn
                if a != new_start:
                    starts[j] = new_start
                    moved = True

        new_throughput = min(codec.unpack(state))
        if new_throughput < initial_throughput or new_throughput < eps:
            return False
        return bool(initial_throughput / new_throughput < balance_quality - eps)


def _should_choose_other_blocks_numpy(
    order: list[ThroughputSpan],
    pos: dict[int, list],
    local: int,
    throughputs: np.ndarray,
    balance_quality: float,
    rng: np.random.Generator,
) -> bool:
    """The rest of :func:`should_choose_other_blocks` as originally written, on a numpy T (any input)."""
    initial_throughput = throughputs.min()
    eps = BALANCE_EPS

    a, m, thr = pos[local]
    throughputs[a : a + m] -= thr * (1 + eps)
    if initial_throughput > eps and throughputs.min() <= 0:
        return False  # moving would make the swarm disjoint
    new_start = choose_best_start(throughputs, m)
    if new_start == a:
        return False  # already at its best place
    throughputs[a : a + m] += thr * eps
    pos[local][0] = new_start
    throughputs[new_start : new_start + m] += thr

    servers = [j for j, _, _, _ in order]
    moved = True
    rounds = 0
    while moved and rounds < MAX_BALANCE_ROUNDS:
        rounds += 1
        shuffled = list(servers)
        rng.shuffle(shuffled)
        moved = False
        for j in shuffled:
            a, m, thr = pos[j]
            throughputs[a : a + m] -= thr * (1 + eps)
            new_start = choose_best_start(throughputs, m)
            throughputs[a : a + m] += thr * eps
            if a != new_start:
                pos[j][0] = new_start
                moved = True
            throughputs[new_start : new_start + m] += thr

    new_throughput = throughputs.min()
    if new_throughput < initial_throughput or new_throughput < eps:
        return False
    return bool(initial_throughput / new_throughput < balance_quality - eps)


#: Answers of :func:`_best_start_memo` by (T's bytes, m); emptied beyond this many entries.
_BEST_START_MEMO_SIZE = 16384
_best_starts: dict[tuple[bytes, int], int] = {}
#: Turns of the balance simulation by (T's bytes, start, m, thr); emptied beyond this many entries.
_BALANCE_TURNS_SIZE = 8192
_balance_turns: dict[tuple[bytes, int, int, float], tuple[bytes, int]] = {}
#: struct codecs of L doubles, by L.
_codecs: dict[int, struct.Struct] = {}


def _codec(length: int) -> struct.Struct:
    """The struct packing ``length`` doubles (exact bits), cached."""
    codec = _codecs.get(length)
    if codec is None:
        codec = _codecs[length] = struct.Struct(f"<{length}d")
    return codec


def _best_start_memo(t: list[float], m: int) -> int:
    """:func:`_best_start` of a list of finite floats, 1 <= m <= len(t), memoised on (T's bytes, m).

    The answer is a function of the values; the balance checks of a swarm that does not move keep meeting
    the same T (about 95 % of the calls on bellcanada-26).
    """
    key = (_codec(len(t)).pack(*t), m)
    start = _best_starts.get(key)
    if start is None:
        start = _best_start(t, m)
        if len(_best_starts) >= _BEST_START_MEMO_SIZE:
            _best_starts.clear()
        _best_starts[key] = start
    return start


# --------------------------------------------------------------------------------------------------
# Min-latency routing (client/routing/sequence_manager.py)
# --------------------------------------------------------------------------------------------------
def _rtt_to_delay(rtt: float) -> float:
    """PETALS' ``_rtt_to_delay``: min(rtt / 2, 5 s) (the RTT is always known here)."""
    return min(rtt / 2, MAX_DELAY_S)


def min_latency_chain(
    spans: Sequence[tuple[int, int, int]],
    num_blocks: int,
    rtt: Sequence[float],
    inference_rps: Sequence[float],
    lacks_cache: Sequence[bool],
    *,
    start: int = 0,
    overhead_s: float = 0.018,
    penalty_s: float = 10.0,
) -> tuple[float, Chain]:
    """PETALS' min-latency chain from block ``start`` to L: (cost in s, chain), or (inf, ()) if none.

    Graph (``_build_inference_graph``) over nodes (server j, block position b):
    client -> (j, start) for j hosting ``start``: delay(rtt_j) + overhead [+ penalty if j lacks cache];
    (j, b) -> (j, b+1): 1 / inference_rps_j; (i, e_i) -> (j, e_i), only at the end e_i of i's span, for j
    hosting e_i: delay(rtt_j) + overhead [+ penalty if j lacks cache]; (j, L) -> client: delay(rtt_j);
    delay(r) = min(r / 2, 5 s). ``rtt[j]`` is the client's RTT to j (the client relays every hop).

    Solved as dijkstar (PETALS' dependency) does: a binary heap keyed (cost, insertion counter), strict
    improvement only, stop when the destination is popped, edges in PETALS' insertion order (servers by
    decreasing span length, then by when PETALS closes the span, then start and id). networkx breaks
    ties differently, and ties are common between identical servers, hence this small Dijkstra.

    The answer is computed without running that Dijkstra (see :func:`_route_fast`): same chain, same
    cost, bit for bit; :func:`_min_latency_chain_dijkstra` (the literal Dijkstra) still answers the
    inputs the fast path does not cover (negative, infinite or NaN costs, repeated servers, spans
    outside 0..L).
    """
    L = num_blocks
    if not 0 <= start < L:
        raise DeciderError(f"petals: cannot route from block {start} in a model of {L} blocks")
    graph = _routing_graph(spans, L, start)
    if graph is not None:
        if not graph.covered:
            return math.inf, ()
        answer = _route_fast(graph, rtt, inference_rps, lacks_cache, overhead_s, penalty_s)
        if answer is not None:
            return answer
    return _min_latency_chain_dijkstra(
        spans, L, rtt, inference_rps, lacks_cache, start=start, overhead_s=overhead_s, penalty_s=penalty_s
    )


def _min_latency_chain_dijkstra(
    spans: Sequence[tuple[int, int, int]],
    num_blocks: int,
    rtt: Sequence[float],
    inference_rps: Sequence[float],
    lacks_cache: Sequence[bool],
    *,
    start: int = 0,
    overhead_s: float = 0.018,
    penalty_s: float = 10.0,
) -> tuple[float, Chain]:
    """:func:`min_latency_chain` by building PETALS' graph and running dijkstar's Dijkstra literally."""
    L = num_blocks
    if not 0 <= start < L:
        raise DeciderError(f"petals: cannot route from block {start} in a model of {L} blocks")
    # spans_by_priority: closed in order of end (spans reaching L close with those ending at L-1), then
    # by first block, then stably sorted by decreasing length
    ordered = sorted(spans, key=lambda s: (-(s[2] - s[1]), min(s[2], L - 1), s[1], s[0]))
    containing: list[list[tuple[int, int, int]]] = [[] for _ in range(L)]
    for sp in ordered:
        for b in range(max(sp[1], start), sp[2]):
            containing[b].append(sp)
    if any(not containing[b] for b in range(start, L)):
        return math.inf, ()

    graph: dict[object, dict[object, float]] = {}

    def add_edge(u: object, v: object, cost: float) -> None:
        graph.setdefault(u, {})[v] = cost

    def entry_delay(j: int) -> float:
        delay = _rtt_to_delay(rtt[j])
        delay += overhead_s
        if lacks_cache[j]:
            delay += penalty_s
        return delay

    for j, _, _ in containing[start]:
        add_edge("start", (j, start), entry_delay(j))
    for j, _, _ in containing[L - 1]:
        add_edge((j, L), "end", _rtt_to_delay(rtt[j]))
    for b in range(start + 1, L):
        for i, _, e in containing[b - 1]:
            if e != b:
                continue
            for j, _, _ in containing[b]:
                add_edge((i, b), (j, b), entry_delay(j))
    for j, a, e in ordered:
        step = 1.0 / inference_rps[j]
        for b in range(max(a, start), min(e, L)):
            add_edge((j, b), (j, b + 1), step)

    # dijkstar.find_path
    counter = count()
    costs: dict[object, float] = {"start": 0.0}
    pred: dict[object, tuple[object, float]] = {"start": (None, 0.0)}
    queue: list[tuple[float, int, object]] = [(0.0, next(counter), "start")]
    visited: set[object] = set()
    while queue:
        cost_u, _, u = heapq.heappop(queue)
        if u == "end":
            break
        if u in visited:
            continue
        visited.add(u)
        for v, c in graph.get(u, {}).items():
            if v in visited:
                continue
            cand = cost_u + c
            if v not in costs or costs[v] > cand:
                costs[v] = cand
                pred[v] = (u, c)
                heapq.heappush(queue, (cand, next(counter), v))
    if "end" not in costs:
        return math.inf, ()
    nodes = []
    edge_costs = []
    node: object = "end"
    while node is not None:
        nodes.append(node)
        prev, c = pred[node]
        if prev is not None:
            edge_costs.append(c)
        node = prev
    nodes.reverse()
    edge_costs.reverse()
    hops: list[list[int]] = []
    for j, b in nodes[1:-1]:  # type: ignore[misc]
        if hops and hops[-1][0] == j:
            hops[-1][2] = b
        else:
            hops.append([j, b, b])
    chain = tuple(Hop(j, a, e) for j, a, e in hops if e > a)
    return sum(edge_costs), chain


# Fast min-latency routing ---------------------------------------------------------------------------
#
# Why the result equals dijkstar's (costs are finite and >= 0, checked before the fast path is taken):
#
# 1. Distances. The graph is acyclic: every edge either advances the block position, or goes from an
#    exit node (i, e_i) to a node (j, e_i) with e_i < e_j, which is not an exit. With costs >= 0,
#    fl(x + c) >= x, so the popped costs never decrease and each node's final cost is
#    d(v) = min over its in-edges (u, c) of fl(d(u) + c), the same IEEE additions as ``cost_u + c``.
#    :func:`_route_costs` computes d block position by position, one numpy addition per position for all
#    servers: a node (j, b) has the intra edge from (j, b-1) and, when some span ends at b, the entry
#    edges from those exits; the best exit gives the smallest fl(d(i) + entry_j) because fl(. + c) is
#    monotonic (numpy's float64 + and min are the same IEEE operations as Python's).
# 2. Predecessors. With strict improvement only, pred(v) is the first POPPED in-neighbour u with
#    fl(d(u) + c) == d(v). Pops are ordered by (d, counter); the counter of u's final push is ordered
#    by (pop rank of pred(u), position of the edge in pred(u)'s adjacency list), and those positions
#    follow PETALS' span order (the start's and each exit's edges are added in ``containing[b]`` order,
#    a non-exit node has one out-edge). So pop order is the lexicographic order of the nested key
#    K(v) = (d(v), K(pred(v)), row of v's server in that order), K(start) = (), and pred(v) is the
#    candidate with the smallest (d, K). Keys are only built when two candidates tie on d. Among the
#    exits at b that reach d(j, b), those popped first are the ones whose d equals the best exit's.
# 3. The path is read back from "end"; every node on it was popped before "end", so the early stop
#    does not matter, and its cost is ``sum`` of its edge costs in path order, as dijkstar returns.

#: Node standing for the client (the "start" of PETALS' graph) in :func:`_route_fast`.
_START = (-1, -1)
#: Static routing graphs kept (keyed by spans, L, start); the oldest is dropped beyond this.
_GRAPH_CACHE_SIZE = 64
#: Beyond this many blocks, Dijkstra: comparing two nested tie-break keys K recurses once per node of a
#: path (at most 2 L + 1), which must stay well under Python's recursion limit (1000).
_MAX_FAST_BLOCKS = 300
_graph_cache: dict[tuple, _RoutingGraph | None] = {}
_graph_ids = count()
#: Bytes the route memo may hold (its keys' bytes plus ~200 per answer) before it is emptied.
_ROUTE_MEMO_BYTES = 32 * 2**20
_route_memo: dict[tuple[int, bytes, bytes, bytes, bytes], tuple[float, Chain]] = {}
_route_memo_bytes = 0


class _RoutingGraph:
    """The part of PETALS' routing graph that depends on the spans and the start block only.

    Rows are the servers with a node (their span ends after ``start``), in PETALS' span order.
    ``contain[b, r]``: row r hosts block b at or after ``start``; ``cross``: the positions b in
    (start, L) where some span ends (entry edges exist there); ``exits[b]``: the rows ending at b.
    """

    __slots__ = (
        "L",
        "all_idx",
        "contain",
        "covered",
        "cross",
        "cross_set",
        "end",
        "end_rows",
        "exits",
        "idx",
        "lo",
        "servers",
        "start",
        "uid",
    )

    def __init__(self, spans: Sequence[tuple[int, int, int]], L: int, start: int):
        ordered = sorted(spans, key=lambda s: (-(s[2] - s[1]), min(s[2], L - 1), s[1], s[0]))
        rows = [sp for sp in ordered if sp[2] > start]
        self.L, self.start = L, start
        self.servers = [sp[0] for sp in rows]
        self.idx = np.array([int(sp[0]) for sp in rows], dtype=np.intp)
        self.all_idx = np.array([int(sp[0]) for sp in ordered], dtype=np.intp)
        self.lo = [max(int(sp[1]), start) for sp in rows]
        self.end = [int(sp[2]) for sp in rows]
        lo = np.array(self.lo, dtype=np.intp)
        end = np.array(self.end, dtype=np.intp)
        blocks = np.arange(L)[:, None]
        self.contain = (blocks >= lo) & (blocks < end)  # (L, R)
        self.covered = bool(self.contain[start:].any(axis=1).all())
        self.cross = sorted({e for e in self.end if start < e < L})
        self.cross_set = frozenset(self.cross)
        self.exits = {b: np.flatnonzero(end == b) for b in [*self.cross, L]}
        self.end_rows = self.exits[L]
        self.uid = next(_graph_ids)  # never reused: the route memo's keys name the graph by it


def _routing_graph(spans: Sequence[tuple[int, int, int]], L: int, start: int) -> _RoutingGraph | None:
    """The cached :class:`_RoutingGraph` of (spans, L, start), or None if the fast path does not apply
    (repeated or negative server ids, spans outside 0..L or empty, non-integers, L too large)."""
    try:
        key = (tuple(spans), L, start)
        hash(key)
    except TypeError:
        return None
    if key in _graph_cache:
        return _graph_cache[key]
    graph: _RoutingGraph | None = None
    ok = type(L) is int and type(start) is int and L <= _MAX_FAST_BLOCKS
    seen: set[int] = set()
    for sp in key[0]:
        if not ok:
            break
        if len(sp) != 3 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in sp):
            ok = False
            break
        j, a, e = (int(x) for x in sp)
        ok = j >= 0 and j not in seen and 0 <= a < e <= L
        seen.add(j)
    if ok:
        graph = _RoutingGraph(key[0], L, start)
    if len(_graph_cache) >= _GRAPH_CACHE_SIZE:
        del _graph_cache[next(iter(_graph_cache))]
    _graph_cache[key] = graph
    return graph


def _route_fast(
    g: _RoutingGraph,
    rtt: Sequence[float],
    inference_rps: Sequence[float],
    lacks_cache: Sequence[bool],
    overhead_s: float,
    penalty_s: float,
) -> tuple[float, Chain] | None:
    """dijkstar's answer on the graph ``g`` with these costs (see the comment above), or None if a cost
    is negative, infinite or NaN (or an input is too short), for the literal Dijkstra to handle.

    Answers are memoised on the exact bytes of the inputs as float64 / bool arrays (which is all the
    computation reads): a simulation whose placement does not change asks the same question again and
    again (bellcanada-26: 2,000 routes, one distinct question).
    """
    try:
        rtt_a = np.asarray(rtt, dtype=float)
        rps_a = np.asarray(inference_rps, dtype=float)
        lacks_a = np.asarray(lacks_cache, dtype=bool)
        params = np.array([overhead_s, penalty_s], dtype=float).tobytes()
    except (TypeError, ValueError):
        return None
    if rtt_a.ndim != 1 or rps_a.ndim != 1 or lacks_a.ndim != 1:
        return None
    if g.all_idx.size and int(g.all_idx.max()) >= min(len(rtt_a), len(rps_a), len(lacks_a)):
        return None
    global _route_memo_bytes
    key = (g.uid, rtt_a.tobytes(), rps_a.tobytes(), lacks_a.tobytes(), params)
    answer = _route_memo.get(key)
    if answer is None:
        answer = _route_costs(g, rtt_a, rps_a, lacks_a, overhead_s, penalty_s)
        if answer is not None:
            size = 200 + sum(len(k) for k in key[1:])
            if _route_memo_bytes + size > _ROUTE_MEMO_BYTES:
                _route_memo.clear()
                _route_memo_bytes = 0
            _route_memo_bytes += size
            _route_memo[key] = answer
    return answer


def _route_costs(
    g: _RoutingGraph,
    rtt_a: np.ndarray,
    rps_a: np.ndarray,
    lacks_a: np.ndarray,
    overhead_s: float,
    penalty_s: float,
) -> tuple[float, Chain] | None:
    """:func:`_route_fast` once the inputs are float / bool arrays: the edge costs, then the answer."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        all_steps = 1.0 / rps_a[g.all_idx]
        idx = g.idx
        delay = np.minimum(rtt_a[idx] / 2, MAX_DELAY_S)
        entry = delay + overhead_s
        entry = np.where(lacks_a[idx], entry + penalty_s, entry)
        step = 1.0 / rps_a[idx]
    for costs in (all_steps, delay, entry):
        if not (np.isfinite(costs).all() and (costs >= 0).all()):
            return None
    L, s0, contain = g.L, g.start, g.contain
    R = idx.size

    # 1. distances d(j, b), row b of D = block position b
    D = np.empty((L + 1, R))
    D[s0] = np.inf
    np.add(0.0, entry, out=D[s0], where=contain[s0])
    intra = D[s0 + 1 :]  # first the cost of the intra edge into (j, b) (inf if j does not host b - 1)
    intra.fill(np.inf)
    np.copyto(intra, step, where=contain[s0:L])
    cross_set, exits = g.cross_set, g.exits
    add, minimum = np.add, np.minimum
    best_exit: dict[int, float] = {}  # cross position -> smallest d of the exits there
    for b in range(s0 + 1, L + 1):
        row = D[b]
        add(D[b - 1], row, out=row)
        if b in cross_set:
            best = best_exit[b] = row[exits[b]].min().item()
            if best < math.inf:
                minimum(row, best + entry, out=row, where=contain[b])
    end_rows = g.end_rows
    tail = D[L, end_rows] + delay[end_rows]
    d_end = tail.min()
    if not d_end < np.inf:
        return math.inf, ()

    # 2. predecessors, with dijkstar's tie-breaking
    entry_of, step_of = entry.item, step.item
    lo, end = g.lo, g.end
    item = D.item
    preds: dict[tuple[int, int], tuple[int, int]] = {}
    keys: dict[tuple[int, int], tuple] = {_START: ()}

    best_exits: dict[int, list[tuple[int, int]]] = {}

    def tied(node: tuple[int, int]) -> list[tuple[int, int]]:
        """In-neighbours u of ``node`` with fl(d(u) + c) == d(node) and the smallest d(u).

        Entry candidates: the exits at b reach d(node) only if the best one does (fl(. + c) is monotonic)
        and, among those that do, the ones with the smallest d are exactly the exits whose d equals the
        best exit's.
        """
        r, b = node
        if b == lo[r] == s0:
            return [_START]
        d = item(b, r)
        d_intra = item(b - 1, r) if b > lo[r] else math.inf
        intra = d_intra < math.inf and d_intra + step_of(r) == d
        best = best_exit.get(b, math.inf) if b < end[r] else math.inf
        if not (best < math.inf and best + entry_of(r) == d):
            return [(r, b - 1)]  # intra is then necessarily the way d(node) was reached
        if intra and d_intra < best:
            return [(r, b - 1)]
        options = best_exits.get(b)
        if options is None:
            ex = exits[b]
            options = best_exits[b] = [(i, b) for i in ex[D[b, ex] == best].tolist()]
        return [(r, b - 1), *options] if intra and d_intra == best else options

    def ensure_key(node: tuple[int, int]) -> None:
        """Build K(node) (and what it needs) without recursion."""
        stack = [node]
        while stack:
            x = stack[-1]
            if x in keys:
                stack.pop()
                continue
            p = preds.get(x)
            if p is None:
                options = tied(x)
                if len(options) > 1:
                    missing = [u for u in options if u not in keys]
                    if missing:
                        stack.extend(missing)
                        continue
                p = options[0] if len(options) == 1 else min(options, key=keys.__getitem__)
                preds[x] = p
            key_p = keys.get(p)
            if key_p is None:
                stack.append(p)
                continue
            keys[x] = (item(x[1], x[0]), key_p, x[0])
            stack.pop()

    def first_popped(options: list[tuple[int, int]]) -> tuple[int, int]:
        """The node of ``options`` (all with the same d) that dijkstar pops first: the smallest K."""
        if len(options) == 1:
            return options[0]
        for u in options:
            ensure_key(u)
        return min(options, key=keys.__getitem__)

    def pred(node: tuple[int, int]) -> tuple[int, int]:
        """dijkstar's predecessor of ``node`` (memoised)."""
        p = preds.get(node)
        if p is None:
            p = preds[node] = first_popped(tied(node))
        return p

    # "end": the exits at L reaching d_end, the smallest d first
    reach = end_rows[tail == d_end].tolist()
    least = min(item(L, i) for i in reach)
    r, b = first_popped([(i, L) for i in reach if item(L, i) == least])
    segments: list[tuple[int, int]] = []  # (row, block where it was entered), from the end backwards
    cross = g.cross
    while True:
        # the path reached row r's node (r, b); it entered the row at lo[r] (from the start, or from the
        # exits there) or at a later cross position x whose predecessor is an exit, not (r, x - 1)
        k = bisect_right(cross, min(b, end[r] - 1)) - 1
        entered = None
        while k >= 0 and cross[k] >= lo[r]:
            x = cross[k]
            p = pred((r, x))
            if p != (r, x - 1):
                entered = (x, p)
                break
            k -= 1
        if entered is None:  # entered at its first block, necessarily the start
            segments.append((r, lo[r]))
            break
        segments.append((r, entered[0]))
        r, b = entered[1]
    segments.reverse()

    # 3. the chain and its cost, summed in path order as dijkstar's caller does
    edge_costs: list[float] = []
    chain = []
    for r, a in segments:
        edge_costs.append(entry_of(r))
        edge_costs.extend([step_of(r)] * (end[r] - a))
        chain.append(Hop(g.servers[r], a, end[r]))
    edge_costs.append(delay.item(segments[-1][0]))
    return sum(edge_costs), tuple(chain)


def _clear_caches() -> None:
    """Empty the module's exact memos (routing graphs, routes, best starts, balance turns): for benchmarks
    that time cold runs; results never depend on them."""
    global _route_memo_bytes
    _graph_cache.clear()
    _route_memo.clear()
    _route_memo_bytes = 0
    _best_starts.clear()
    _balance_turns.clear()


# --------------------------------------------------------------------------------------------------
# Serving throughputs kept up to date (the decider's place / rebalance)
# --------------------------------------------------------------------------------------------------
_SERVING = (ServerStatus.LOADING, ServerStatus.ONLINE)


class _ServingThroughputs:
    """T_b of a view's JOINING (LOADING) or ONLINE servers, kept up to date from decision to decision.

    ``rows[0]`` is +0.0 and ``rows[1 + j]`` holds server j's announced throughput on its blocks (+0.0
    elsewhere). T_b is :func:`_ordered_sums` of the rows that host b (with row 0 first): the servers in
    server order, the same additions as :func:`block_throughputs` (skipped rows only add +0.0). Each
    :meth:`sync` compares every server's (status, start, end, spec) with the last ones seen and re-sums
    only the blocks of the servers that changed, over the servers hosting them.
    """

    __slots__ = (
        "check",
        "end",
        "first",
        "last",
        "num_blocks",
        "rows",
        "servers",
        "spans",
        "spec",
        "start",
        "status",
        "total",
    )

    def __init__(self, servers: list[ServerState], num_blocks: int):
        n = len(servers)
        self.servers = servers
        self.num_blocks = num_blocks
        # last seen (status, start, end, spec) per server; None is no status: all count as changed
        self.status: list[object] = [None] * n
        self.start: list[int] = [-1] * n
        self.end: list[int] = [-1] * n
        self.spec: list[object] = [None] * n
        self.spans: list[ThroughputSpan | None] = [None] * n
        self.first = np.full(n, num_blocks)  # blocks [first, last) of each serving server, else empty
        self.last = np.zeros(n, dtype=np.int64)
        self.rows = np.zeros((n + 1, num_blocks))
        self.total = np.zeros(num_blocks)
        self.check: _BalanceCheck | None = None
        self.sync()

    def sync(self) -> bool:
        """Bring ``total`` up to date with the servers; False if their number changed (rebuild)."""
        servers = self.servers
        n = len(self.spans)
        if len(servers) != n:
            return False
        changed = [
            j
            for j, s, status, a, e, spec in zip(
                range(n), servers, self.status, self.start, self.end, self.spec, strict=True
            )
            if s.start != a or s.end != e or s.status is not status or s.spec is not spec
        ]
        if not changed:
            return True
        self.check = None
        L = self.num_blocks
        lo, hi = L, 0
        rows, spans = self.rows, self.spans
        for j in changed:
            s = servers[j]
            status, a, e, spec = s.status, s.start, s.end, s.spec
            self.status[j], self.start[j], self.end[j], self.spec[j] = status, a, e, spec
            span = spans[j]
            if span is not None:
                rows[1 + j, span[1] : span[2]] = 0.0
                lo, hi = min(lo, span[1]), max(hi, span[2])
                spans[j] = None
                self.first[j], self.last[j] = L, 0
            if status in _SERVING and a >= 0:
                thr = petals_throughput(spec.profile, e - a)
                spans[j] = (j, a, e, thr)
                rows[1 + j, a:e] = thr
                lo, hi = min(lo, a), max(hi, e)
                self.first[j], self.last[j] = a, e
        lo, hi = max(lo, 0), min(hi, L)
        if lo < hi:
            self.total[lo:hi] = self._sums(lo, hi)
        return True

    def _sums(self, lo: int, hi: int, without: int = -1) -> np.ndarray:
        """T_b for b in [lo, hi), summing only the rows of servers hosting some of these blocks."""
        hosts = np.flatnonzero((self.first < hi) & (self.last > lo))
        if without >= 0:
            hosts = hosts[hosts != without]
        return _ordered_sums(self.rows[np.concatenate(([0], hosts + 1)), lo:hi])

    def serving_spans(self) -> list[ThroughputSpan]:
        """(server, first block, end, throughput) of the serving servers, in server order."""
        return [s for s in self.spans if s is not None]

    def balance_check(self) -> _BalanceCheck:
        """The :class:`_BalanceCheck` of the serving spans (kept until they change)."""
        if self.check is None:
            self.check = _BalanceCheck(self.serving_spans(), self.num_blocks, self.total)
        return self.check

    def without(self, server: int) -> np.ndarray:
        """A copy of T without ``server`` (re-summed on its blocks, as if it were not in the spans)."""
        t = self.total.copy()
        span = self.spans[server] if 0 <= server < len(self.spans) else None
        if span is not None:
            a, e = max(span[1], 0), min(span[2], self.num_blocks)
            if a < e:
                t[a:e] = self._sums(a, e, server)
        return t


# --------------------------------------------------------------------------------------------------
# The decider
# --------------------------------------------------------------------------------------------------
class PetalsDecider(Decider):
    """PETALS (the paper's baseline; paper-notes section 6) as a decider; see the module docstring.

    Args:
        rebalance: run PETALS' balance check (also needs ``scenario.petals.rebalance``).
        balance_check_period_s: mean seconds between balance checks (PETALS: 120). The simulator reads
            ``rebalance_period_s`` before :meth:`reset`, hence a constructor argument; :meth:`reset` warns
            if it differs from the scenario's ``petals.mean_balance_check_period_s``.
        balance_quality: override of ``scenario.petals.balance_quality`` (PETALS: 0.75).
        join_order: for ablations ("Optimized Order"): ``join_order(scenario)`` lists servers; at
            :meth:`reset` the placements are precomputed by running choose_best_blocks in that order, and
            each listed server's FIRST placement is the precomputed one (later ones, after churn or a
            move, are chosen on the live state, as PETALS would).
        num_blocks: for ablations ("Optimized Number"): ``num_blocks(scenario, server)`` replaces PETALS'
            block count; the cache budget is then all memory left after the blocks.
        router: for ablations ("Optimized RR"): route() is delegated to this decider (reset with a
            stream spawned from this decider's).
        name: the name shown in results.
    """

    name = "petals"

    def __init__(
        self,
        *,
        rebalance: bool = True,
        balance_check_period_s: float = 120.0,
        balance_quality: float | None = None,
        join_order: Callable[[Scenario], Sequence[int]] | None = None,
        num_blocks: Callable[[Scenario, int], int] | None = None,
        router: Decider | None = None,
        name: str = "petals",
    ):
        if not isinstance(rebalance, bool):
            raise DeciderError(f"petals: rebalance must be True or False, got {rebalance!r}")
        period = balance_check_period_s
        if isinstance(period, bool) or not isinstance(period, (int, float)) or not 0 < period < math.inf:
            raise DeciderError(f"petals: balance_check_period_s must be a positive number, got {period!r}")
        if balance_quality is not None and (
            isinstance(balance_quality, bool)
            or not isinstance(balance_quality, (int, float))
            or not 0 <= balance_quality < math.inf
        ):
            raise DeciderError(f"petals: balance_quality must be a number >= 0, got {balance_quality!r}")
        if router is not None and not isinstance(router, Decider):
            raise DeciderError(f"petals: router must be a Decider, got {router!r}")
        for label, fn in (("join_order", join_order), ("num_blocks", num_blocks)):
            if fn is not None and not callable(fn):
                raise DeciderError(f"petals: {label} must be callable, got {fn!r}")
        self.rebalance_enabled = rebalance
        self.balance_check_period_s = float(period)
        self.rebalance_period_s = float(period) if rebalance else None
        self.balance_quality = None if balance_quality is None else float(balance_quality)
        self.join_order = join_order
        self.num_blocks_fn = num_blocks
        self.router = router
        self.name = name
        self._counts: list[int] = []
        self._cache: list[int | None] = []
        self._planned: dict[int, Placement] = {}
        self._tp: _ServingThroughputs | None = None

    # episode -------------------------------------------------------------------------------------------
    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """Compute every server's block count and cache budget, and the precomputed placements if any."""
        super().reset(scenario, rng)
        pc = scenario.petals
        self._bq = pc.balance_quality if self.balance_quality is None else self.balance_quality
        self._rebalancing = self.rebalance_enabled and pc.rebalance
        if self._rebalancing and self.balance_check_period_s != pc.mean_balance_check_period_s:
            warnings.warn(
                f"{self.name}: balance checks every {self.balance_check_period_s:g} s on average "
                f"(constructor), but scenario {scenario.name!r} sets petals.mean_balance_check_period_s = "
                f"{pc.mean_balance_check_period_s:g} s; pass balance_check_period_s to match",
                stacklevel=2,
            )
        model = scenario.model
        L = model.num_blocks
        per_block = petals_cache_bytes_per_block(model, pc.attn_cache_tokens)
        self._counts, self._cache = [], []
        for spec in scenario.servers:
            where = f"{self.name}: server {spec.id} ({spec.name}, profile {spec.profile.name})"
            if self.num_blocks_fn is None:
                m = petals_num_blocks(model, spec.profile, pc.attn_cache_tokens, pc.autograd_gib)
                if m < 1:
                    raise DeciderError(
                        f"{where}: {spec.profile.memory_bytes / 1e9:.4g} GB cannot hold one block "
                        f"({model.block_bytes / 1e9:.4g} GB) plus PETALS' cache for {pc.attn_cache_tokens} "
                        f"tokens ({per_block / 1e9:.4g} GB) and autograd ({pc.autograd_gib:g} GiB scaled)"
                    )
                cache: int | None = m * per_block
            else:
                m = self.num_blocks_fn(scenario, spec.id)
                if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= L:
                    raise DeciderError(f"{where}: num_blocks override gave {m!r}, expected an int in 1..{L}")
                m = int(m)
                cache = None
            self._counts.append(m)
            self._cache.append(cache)
        self._planned = {}
        self._tp = None
        if self.join_order is not None:
            self._planned = self._precompute(scenario, list(self.join_order(scenario)))
        if self.router is not None:
            self.router.reset(scenario, rng.spawn(1)[0])

    def _precompute(self, scenario: Scenario, order: list) -> dict[int, Placement]:
        """choose_best_blocks for every server of ``order``, joining one at a time.

        T is kept as :func:`block_throughputs` of the servers placed so far would give it: rows of
        per-server throughputs summed in server order (:func:`_ordered_sums`), re-summed on the blocks
        each newcomer takes.
        """
        n = scenario.num_servers
        seen: set[int] = set()
        for j in order:
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < n:
                raise DeciderError(
                    f"{self.name}: join_order gave server {j!r}, expected an int in 0..{n - 1}"
                )
            if int(j) in seen:
                raise DeciderError(f"{self.name}: join_order lists server {int(j)} twice: {order!r}")
            seen.add(int(j))
        L = scenario.num_blocks
        rows = np.zeros((n + 1, L))  # row 0: +0.0, row 1 + j: server j's throughput on its blocks
        t = np.zeros(L)
        planned = {}
        for j in map(int, order):
            m = self._counts[j]
            start = choose_best_start(t.tolist(), m)
            rows[1 + j, start : start + m] = petals_throughput(scenario.servers[j].profile, m)
            t[start : start + m] = _ordered_sums(rows[:, start : start + m])
            planned[j] = Placement(start, m, self._cache[j])
        return planned

    # decisions -----------------------------------------------------------------------------------------
    def _serving(self, view: SwarmView, exclude: int = -1) -> list[ThroughputSpan]:
        """JOINING (LOADING) or ONLINE servers with their announced throughputs, except ``exclude``."""
        out = []
        for s in view.servers:
            if s.id != exclude and s.status in (ServerStatus.LOADING, ServerStatus.ONLINE) and s.start >= 0:
                out.append((s.id, s.start, s.end, petals_throughput(s.spec.profile, s.end - s.start)))
        return out

    def _serving_throughputs(self, view: SwarmView) -> _ServingThroughputs | None:
        """The up-to-date :class:`_ServingThroughputs` of ``view`` (None if its servers are not 0..n-1)."""
        tp = self._tp
        if tp is not None and tp.servers is view.servers and tp.num_blocks == view.num_blocks and tp.sync():
            return tp
        if any(s.id != j for j, s in enumerate(view.servers)):
            return None
        self._tp = _ServingThroughputs(view.servers, view.num_blocks)
        return self._tp

    def place(self, view: SwarmView, server: int) -> Placement:
        """PETALS' block count and fixed cache budget, at the start chosen by choose_best_blocks."""
        if server in self._planned and view.servers[server].placements == 0:
            return self._planned[server]
        m = self._counts[server]
        tp = self._serving_throughputs(view)
        if tp is None:
            t = block_throughputs(self._serving(view, server), view.num_blocks)
        else:
            t = tp.without(server)
        return Placement(choose_best_start(t.tolist(), m), m, self._cache[server])

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        """PETALS' balance check; if it says move, the new start chosen without this server."""
        if not self._rebalancing:
            return None
        L = view.num_blocks
        tp = self._serving_throughputs(view)
        if tp is None:
            move = should_choose_other_blocks(self._serving(view), server, L, self._bq, self.rng)
        else:  # the same check, its spans' part kept between checks
            move = self._bq > 1.0 or tp.balance_check().run(server, self._bq, self.rng)
        if not move:
            return None
        s = view.servers[server]
        m = s.end - s.start
        t = block_throughputs(self._serving(view, server), L) if tp is None else tp.without(server)
        start = choose_best_start(t.tolist(), m)
        if start == s.start:
            return None  # PETALS would reload the same blocks; staying is the same placement
        return Placement(start, m, s.cache_capacity)

    def route(self, view: SwarmView, request: Request) -> Route | Chain | None:
        """PETALS' min-latency chain from ``request.route_from``; Route(wait=False) backs off if it lacks
        cache; None if some block has no ONLINE server."""
        if self.router is not None:
            return self.router.route(view, request)
        pc = view.scenario.petals
        kv = request.kv_bytes
        lacks = [
            (s.end - s.start) * kv > s.cache_capacity - s.used_bytes if s.start >= 0 else True
            for s in view.servers
        ]
        inference_rps = [s.spec.profile.inference_rps for s in view.servers]
        cost, chain = min_latency_chain(
            view.spans(),
            view.num_blocks,
            view.time_model.rtt[request.client].tolist(),
            inference_rps,
            lacks,
            start=request.route_from,
            overhead_s=pc.hop_overhead_s,
            penalty_s=pc.lacking_cache_penalty_s,
        )
        if cost == math.inf:
            return None
        return Route(chain, wait=False)

    def describe(self) -> str:
        parts = []
        if self.join_order is not None:
            parts.append("precomputed join order")
        if self.num_blocks_fn is not None:
            parts.append("block counts overridden")
        if self.router is not None:
            parts.append(f"routing by {self.router.describe()}")
        if self.rebalance_period_s is None:
            parts.append("no rebalancing")
        else:
            parts.append(f"balance check every ~{self.balance_check_period_s:g} s")
        return f"{self.name} ({', '.join(parts)})"


__all__ = [
    "BALANCE_EPS",
    "PetalsDecider",
    "block_throughputs",
    "choose_best_start",
    "min_latency_chain",
    "petals_throughput",
    "should_choose_other_blocks",
]
