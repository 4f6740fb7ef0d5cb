"""PETALS as a decider: fixed KV budget, choose_best_blocks, rebalancing, min-latency routing, back-off.

Each rule restates the code of bigscience-workshop/petals (docs/deciders.md):

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

Speed (same results, bit for bit, as the literal code kept in tests/petals_reference.py, the oracle of
tests/test_petals_speed_equivalence.py): the min-latency chain is computed by a position-by-position numpy
pass plus dijkstar's tie-breaking rule (:func:`_route_costs`) instead of building the graph and running
Dijkstra; the decider keeps T up to date between decisions (:class:`_ServingThroughputs`) instead of
re-summing every server; choose_best_start counts copies of the smallest values instead of sorting every
window; and exact memos (:class:`PetalsMemo`, owned by the decider; keyed on the bytes of the inputs)
answer the questions a swarm that does not move keeps asking (routes, best starts, turns of the balance
simulation). Inputs no valid scenario produces (NaN throughputs, negative or infinite costs, repeated
servers, spans outside 0..L) raise DeciderError.
"""

from __future__ import annotations

import math
import struct
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from functools import cmp_to_key
from itertools import count

import numpy as np

from petalgym.deciders import Decider, Route, checked_number
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


def _ordered_sums(rows: np.ndarray) -> np.ndarray:
    """Column sums of ``rows`` added strictly row after row (row 0 first), as a Python loop would.

    ``np.add.accumulate`` is sequential by definition (out[k] = out[k-1] + rows[k]); ``np.sum`` is not
    (it may sum pairwise), hence this helper wherever sums must be bit-identical to PETALS' loop.
    """
    return np.add.accumulate(rows, axis=0)[-1]


def block_throughputs(spans: Iterable[ThroughputSpan], num_blocks: int) -> np.ndarray:
    """T_b for b in 0..L-1: sum of the throughputs of the servers hosting b (PETALS' ``compute_spans``).

    Servers are added in server order, as PETALS sorts peers, so equal sets of servers give bit-identical
    sums (PETALS relies on that to avoid spurious moves). Summed by :func:`_ordered_sums` over a
    (1 + spans) x L matrix whose row 0 is +0.0 and row k holds span k's throughput on its blocks and +0.0
    elsewhere: adding +0.0 leaves every partial sum unchanged, so each T_b is the same sequence of
    additions as PETALS' loop, bit for bit.
    """
    ordered = sorted(spans)
    for j, a, e, thr in ordered:
        if not (0 <= a <= e <= num_blocks) or math.isnan(thr):
            raise DeciderError(
                f"petals: server {j} spans blocks [{a}, {e}) with throughput {thr!r}; expected blocks "
                f"inside 0..{num_blocks} and a number"
            )
    if not ordered:
        return np.zeros(num_blocks)
    first = np.array([a for _, a, _, _ in ordered])
    end = np.array([e for _, _, e, _ in ordered])
    thr = np.array([x for _, _, _, x in ordered], dtype=float)
    blocks = np.arange(num_blocks)
    rows = np.zeros((len(ordered) + 1, num_blocks))
    rows[1:] = np.where((blocks >= first[:, None]) & (blocks < end[:, None]), thr[:, None], 0.0)
    return _ordered_sums(rows)


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
    if any(x != x for x in t):
        raise DeciderError("petals: block throughputs hold NaN (no order to choose blocks by)")
    return _best_start(t, num_blocks)


def should_choose_other_blocks(
    spans: Sequence[ThroughputSpan],
    local: int,
    num_blocks: int,
    balance_quality: float,
    rng: np.random.Generator,
    *,
    throughputs: np.ndarray | None = None,
    memo: PetalsMemo | None = None,
) -> bool:
    """PETALS' balance check for server ``local`` (block_selection.py, same arithmetic).

    Remove the local throughput x (1 + eps); stay if that uncovers a block; else find the best start,
    stay if it is the current one; else move there and let every server (shuffled with ``rng``, repeated
    until nobody moves) greedily re-choose its window; move only if min(T_before) / min(T_after) <
    balance_quality - eps. ``spans`` lists the JOINING/ONLINE servers with their throughputs;
    ``throughputs``, if given, must be ``block_throughputs(spans, num_blocks)`` (a caller that keeps it
    up to date saves recomputing it; it is not modified). ``memo``: exact memos to reuse (a decider's).
    Computed by :class:`_BalanceCheck`.
    """
    if balance_quality > 1.0:
        return True  # PETALS: forces rebalancing on each check
    check = _BalanceCheck(spans, num_blocks, throughputs, memo or PetalsMemo())
    return check.run(local, balance_quality, rng)


class _BalanceCheck:
    """:func:`should_choose_other_blocks` for one set of serving spans, reusable for many checks.

    What depends on the spans only (their order, T) is computed once; :meth:`run` then does one check.
    T is updated in a list of Python floats: each ``T[b] -= x`` is the same IEEE operation as numpy's
    in-place slice update. Spans outside 0..L, empty spans, non-finite throughputs, or values large
    enough to overflow raise DeciderError.
    """

    __slots__ = ("L", "given", "initial", "memo", "order", "pos", "ready", "servers", "t", "turns")

    def __init__(
        self,
        spans: Sequence[ThroughputSpan],
        num_blocks: int,
        throughputs: np.ndarray | None,
        memo: PetalsMemo,
    ):
        # compute_spans inserts peers by first block, then in peer order
        self.order = sorted(spans, key=lambda s: (s[1], s[0]))
        self.pos: dict[int, tuple] = {j: (a, e - a, thr) for j, a, e, thr in self.order}
        self.L = num_blocks
        self.given = throughputs
        self.memo = memo
        self.ready = False  # T and the constants are computed on the first run

    def _prepare(self) -> None:
        """T and the per-server constants, computed on the first run."""
        order = self.order
        throughputs = (
            block_throughputs(order, self.L) if self.given is None else np.array(self.given, dtype=float)
        )
        t = self.t = throughputs.tolist()
        L = len(t)
        valid = (
            all([a >= 0 and e - a >= 1 and e <= L and math.isfinite(thr) for _, a, e, thr in order])
            and all(map(math.isfinite, t))
            # every T_b stays within max|T| + 3 sum|thr| (x 1.001): no overflow, so no inf and no NaN
            and max(map(abs, t), default=0.0) + 4 * sum([abs(s[3]) for s in order]) < 1e300
        )
        if not valid:
            raise DeciderError(
                "petals: the balance check needs spans of >= 1 block inside 0..L and finite throughputs "
                f"(of magnitude < 1e300), got {order!r}"
            )
        eps = BALANCE_EPS
        self.initial = min(t)
        self.servers = [j for j, _, _, _ in order]
        # per server: m, thr, thr x (1 + eps), thr x eps
        self.turns = {j: (m, thr, thr * (1 + eps), thr * eps) for j, (_, m, thr) in self.pos.items()}
        self.ready = True

    def run(self, local: int, balance_quality: float, rng: np.random.Generator) -> bool:
        """The check for server ``local`` (``balance_quality`` <= 1; above, PETALS always moves)."""
        pos = self.pos
        if local not in pos:
            raise DeciderError(f"petals: server {local} is not among the serving servers {sorted(pos)}")
        if not self.ready:
            self._prepare()
        t = list(self.t)
        initial_throughput = self.initial
        eps = BALANCE_EPS
        memo = self.memo
        best = memo.best_start

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
        servers, turns, turn_memo = self.servers, self.turns, memo.balance_turns
        codec = memo.codec(len(t))
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
                turn = turn_memo.get(key)
                if turn is None:
                    t = list(codec.unpack(state))
                    t[a : a + m] = [v - remove for v in t[a : a + m]]
                    new_start = best(t, m)
                    t[a : a + m] = [v + keep for v in t[a : a + m]]
                    t[new_start : new_start + m] = [v + thr for v in t[new_start : new_start + m]]
                    turn = (codec.pack(*t), new_start)
                    if thr != 0.0:
                        if len(turn_memo) >= _BALANCE_TURNS_SIZE:
                            turn_memo.clear()
                        turn_memo[key] = turn
                state, new_start = turn
                if a != new_start:
                    starts[j] = new_start
                    moved = True

        new_throughput = min(codec.unpack(state))
        if new_throughput < initial_throughput or new_throughput < eps:
            return False
        return bool(initial_throughput / new_throughput < balance_quality - eps)


#: Entries kept by each memo of :class:`PetalsMemo` before it is emptied (bounds memory on long runs).
_BEST_START_MEMO_SIZE = 16384
_BALANCE_TURNS_SIZE = 8192
_GRAPH_CACHE_SIZE = 64
#: Bytes the route memo may hold (its keys' bytes plus ~200 per answer) before it is emptied.
_ROUTE_MEMO_BYTES = 32 * 2**20


class PetalsMemo:
    """Exact memos of PETALS' rules, owned by one :class:`PetalsDecider` (or made for one call).

    ``best_starts`` (T's bytes, m) -> start; ``balance_turns`` (T's bytes, start, m, thr) -> (T', start');
    ``graphs`` (spans, L, start) -> :class:`_RoutingGraph`; ``routes`` (graph, cost arrays' bytes) ->
    (cost, chain). Each answer is a pure function of its key, so results never depend on what is kept.
    """

    def __init__(self) -> None:
        self.best_starts: dict[tuple[bytes, int], int] = {}
        self.balance_turns: dict[tuple[bytes, int, int, float], tuple[bytes, int]] = {}
        self.graphs: dict[tuple, _RoutingGraph] = {}
        self.routes: dict[tuple[int, bytes, bytes, bytes, bytes], tuple[float, Chain]] = {}
        self.route_bytes = 0
        self._codecs: dict[int, struct.Struct] = {}
        self._graph_ids = count()

    def clear(self) -> None:
        """Empty every memo (benchmarks time cold runs with it)."""
        self.__init__()

    def codec(self, length: int) -> struct.Struct:
        """The struct packing ``length`` doubles (exact bits)."""
        codec = self._codecs.get(length)
        if codec is None:
            codec = self._codecs[length] = struct.Struct(f"<{length}d")
        return codec

    def best_start(self, t: list[float], m: int) -> int:
        """:func:`_best_start` of a list of finite floats, 1 <= m <= len(t), memoised on (T's bytes, m):
        the balance checks of a swarm that does not move keep meeting the same T (about 95 % of the calls
        on bellcanada-26)."""
        key = (self.codec(len(t)).pack(*t), m)
        start = self.best_starts.get(key)
        if start is None:
            start = _best_start(t, m)
            if len(self.best_starts) >= _BEST_START_MEMO_SIZE:
                self.best_starts.clear()
            self.best_starts[key] = start
        return start

    def graph(self, spans: Sequence[tuple[int, int, int]], L: int, start: int) -> _RoutingGraph:
        """The :class:`_RoutingGraph` of (spans, L, start); DeciderError if the spans are not distinct
        servers with blocks inside 0..L."""
        key = (tuple(spans), L, start)
        graph = self.graphs.get(key)
        if graph is None:
            seen: set[int] = set()
            for sp in key[0]:
                ok = len(sp) == 3 and all(
                    isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in sp
                )
                if ok:
                    j, a, e = (int(x) for x in sp)
                    ok = j >= 0 and j not in seen and 0 <= a < e <= L
                    seen.add(j)
                if not ok:
                    raise DeciderError(
                        f"petals: routing needs distinct servers hosting blocks inside 0..{L}, "
                        f"got span {sp!r}"
                    )
            spans_int = tuple((int(j), int(a), int(e)) for j, a, e in key[0])
            graph = _RoutingGraph(spans_int, L, start, next(self._graph_ids))
            if len(self.graphs) >= _GRAPH_CACHE_SIZE:
                del self.graphs[next(iter(self.graphs))]
            self.graphs[key] = graph
        return graph

    def route(self, key: tuple[int, bytes, bytes, bytes, bytes], compute: Callable[[], tuple[float, Chain]]):
        """The memoised answer for ``key``, computed by ``compute`` if new."""
        answer = self.routes.get(key)
        if answer is None:
            answer = compute()
            size = 200 + sum(len(k) for k in key[1:])
            if self.route_bytes + size > _ROUTE_MEMO_BYTES:
                self.routes.clear()
                self.route_bytes = 0
            self.route_bytes += size
            self.routes[key] = answer
        return answer


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
    memo: PetalsMemo | None = None,
) -> tuple[float, Chain]:
    """PETALS' min-latency chain from block ``start`` to L: (cost in s, chain), or (inf, ()) if none.

    Graph (``_build_inference_graph``) over nodes (server j, block position b):
    client -> (j, start) for j hosting ``start``: delay(rtt_j) + overhead [+ penalty if j lacks cache];
    (j, b) -> (j, b+1): 1 / inference_rps_j; (i, e_i) -> (j, e_i), only at the end e_i of i's span, for j
    hosting e_i: delay(rtt_j) + overhead [+ penalty if j lacks cache]; (j, L) -> client: delay(rtt_j);
    delay(r) = min(r / 2, 5 s). ``rtt[j]`` is the client's RTT to j (the client relays every hop).

    The answer is dijkstar's (PETALS' dependency): a binary heap keyed (cost, insertion counter), strict
    improvement only, stop when the destination is popped, edges in PETALS' insertion order (servers by
    decreasing span length, then by when PETALS closes the span, then start and id). networkx breaks ties
    differently, and ties are common between identical servers. It is computed without running that
    Dijkstra (see :func:`_route_costs`): same chain, same cost, bit for bit (the literal Dijkstra is kept
    in tests/petals_reference.py as the oracle). Costs must be finite and >= 0 (RTTs and overheads >= 0,
    rates > 0) and spans distinct servers inside 0..L; anything else raises DeciderError. ``memo``: exact
    memos to reuse (a decider's).
    """
    L = num_blocks
    if not 0 <= start < L:
        raise DeciderError(f"petals: cannot route from block {start} in a model of {L} blocks")
    memo = memo or PetalsMemo()
    graph = memo.graph(spans, L, start)
    if not graph.covered:
        return math.inf, ()
    try:
        rtt_a = np.asarray(rtt, dtype=float)
        rps_a = np.asarray(inference_rps, dtype=float)
        lacks_a = np.asarray(lacks_cache, dtype=bool)
        params = np.array([overhead_s, penalty_s], dtype=float)
    except (TypeError, ValueError):
        raise DeciderError(
            "petals: routing costs must be numbers (rtt, inference_rps, lacks_cache)"
        ) from None
    n = int(graph.all_idx.max()) + 1 if graph.all_idx.size else 0
    if (
        rtt_a.ndim != 1
        or rps_a.ndim != 1
        or lacks_a.ndim != 1
        or min(len(rtt_a), len(rps_a), len(lacks_a)) < n
    ):
        raise DeciderError(f"petals: rtt, inference_rps and lacks_cache need one entry per server (>= {n})")
    key = (graph.uid, rtt_a.tobytes(), rps_a.tobytes(), lacks_a.tobytes(), params.tobytes())
    return memo.route(key, lambda: _route_costs(graph, rtt_a, rps_a, lacks_a, overhead_s, penalty_s))


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

#: Node standing for the client (the "start" of PETALS' graph) in :func:`_route_costs`.
_START = (-1, -1)


def _compare_keys(a: tuple, b: tuple) -> int:
    """Compare two nested tie-break keys K = (d, K(pred), row) (K(start) = ()) as Python compares the
    tuples, without recursion (a path may have any number of nodes): the d's from the node back to the
    start, then the rows from the start outwards."""
    rows = []
    while a is not b:
        if not a or not b:
            if a:
                return 1
            if b:
                return -1
            break
        if a[0] != b[0]:
            return -1 if a[0] < b[0] else 1
        rows.append((a[2], b[2]))
        a, b = a[1], b[1]
    for ra, rb in reversed(rows):
        if ra != rb:
            return -1 if ra < rb else 1
    return 0


_tie_key = cmp_to_key(_compare_keys)


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

    def __init__(self, spans: Sequence[tuple[int, int, int]], L: int, start: int, uid: int):
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
        self.uid = uid  # never reused within a memo: the route memo's keys name the graph by it


def _route_costs(
    g: _RoutingGraph,
    rtt_a: np.ndarray,
    rps_a: np.ndarray,
    lacks_a: np.ndarray,
    overhead_s: float,
    penalty_s: float,
) -> tuple[float, Chain]:
    """The min-latency answer on the graph ``g`` for these cost arrays: the edge costs, then the answer
    (see the comment above on why it equals dijkstar's)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        all_steps = 1.0 / rps_a[g.all_idx]
        idx = g.idx
        delay = np.minimum(rtt_a[idx] / 2, MAX_DELAY_S)
        entry = delay + overhead_s
        entry = np.where(lacks_a[idx], entry + penalty_s, entry)
        step = 1.0 / rps_a[idx]
    for costs in (all_steps, delay, entry):
        if not (np.isfinite(costs).all() and (costs >= 0).all()):
            raise DeciderError(
                "petals: routing costs must be finite and >= 0 (RTTs and overheads >= 0, rates > 0)"
            )
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
                p = options[0] if len(options) == 1 else min(options, key=lambda u: _tie_key(keys[u]))
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
        return min(options, key=lambda u: _tie_key(keys[u]))

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

    def balance_check(self, memo: PetalsMemo) -> _BalanceCheck:
        """The :class:`_BalanceCheck` of the serving spans (kept until they change)."""
        if self.check is None:
            self.check = _BalanceCheck(self.serving_spans(), self.num_blocks, self.total, memo)
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
    """PETALS (the paper's baseline) as a decider; see the module docstring.

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
        checked_number("petals", "balance_quality", balance_quality, low_open=False, optional=True)
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
        # routing reads the view and the request only; a delegated router decides for itself
        self.pure_route = True if router is None else bool(getattr(router, "pure_route", False))
        self._counts: list[int] = []
        self._cache: list[int | None] = []
        self._planned: dict[int, Placement] = {}
        self._tp: _ServingThroughputs | None = None
        self._unplaceable: dict[int, str] = {}  # server -> why PETALS cannot place it
        self._memo = PetalsMemo()
        self._routes: dict[tuple, Chain] = {}  # answers for the current view (see route)
        self._route_view: SwarmView | None = None
        self._route_specs: list = []

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
        self._unplaceable = {}
        for spec in scenario.servers:
            where = f"{self.name}: server {spec.id} ({spec.name}, profile {spec.profile.name})"
            if self.num_blocks_fn is None:
                m = petals_num_blocks(model, spec.profile, pc.attn_cache_tokens, pc.autograd_gib)
                if m < 1:  # an error when it is placed (routing on others' placements still works)
                    self._unplaceable[spec.id] = (
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
        self._routes.clear()
        self._route_view = None
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
            if j in self._unplaceable:
                raise DeciderError(self._unplaceable[j])
            m = self._counts[j]
            start = choose_best_start(t.tolist(), m)
            rows[1 + j, start : start + m] = petals_throughput(scenario.servers[j].profile, m)
            t[start : start + m] = _ordered_sums(rows[:, start : start + m])
            planned[j] = Placement(start, m, self._cache[j])
        return planned

    # decisions -----------------------------------------------------------------------------------------
    def _serving_throughputs(self, view: SwarmView) -> _ServingThroughputs:
        """The up-to-date :class:`_ServingThroughputs` of ``view``."""
        tp = self._tp
        if tp is not None and tp.servers is view.servers and tp.num_blocks == view.num_blocks and tp.sync():
            return tp
        if any(s.id != j for j, s in enumerate(view.servers)):
            raise DeciderError(f"{self.name}: the view's servers must be numbered 0..{len(view.servers) - 1}")
        self._tp = _ServingThroughputs(view.servers, view.num_blocks)
        return self._tp

    def place(self, view: SwarmView, server: int) -> Placement:
        """PETALS' block count and fixed cache budget, at the start chosen by choose_best_blocks."""
        if server in self._planned and view.servers[server].placements == 0:
            return self._planned[server]
        if server in self._unplaceable:
            raise DeciderError(self._unplaceable[server])
        m = self._counts[server]
        t = self._serving_throughputs(view).without(server)
        return Placement(choose_best_start(t.tolist(), m), m, self._cache[server])

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        """PETALS' balance check; if it says move, the new start chosen without this server."""
        if not self._rebalancing:
            return None
        tp = self._serving_throughputs(view)
        move = self._bq > 1.0 or tp.balance_check(self._memo).run(server, self._bq, self.rng)
        if not move:
            return None
        s = view.servers[server]
        m = s.end - s.start
        start = choose_best_start(tp.without(server).tolist(), m)
        if start == s.start:
            return None  # PETALS would reload the same blocks; staying is the same placement
        return Placement(start, m, s.cache_capacity)

    def route(self, view: SwarmView, request: Request) -> Route | Chain | None:
        """PETALS' min-latency chain from ``request.route_from``; Route(wait=False) backs off if it lacks
        cache; None if some block has no ONLINE server.

        Answers are kept per (placement version, route_from, client, which servers lack cache) while the
        view and the servers' profiles stay the same: that is everything the rule reads."""
        if self.router is not None:
            return self.router.route(view, request)
        kv = request.kv_bytes
        servers = view.servers
        lacks = tuple(
            [
                (s.end - s.start) * kv > s.cache_capacity - s.used_bytes if s.start >= 0 else True
                for s in servers
            ]
        )
        specs = self._route_specs
        if (
            self._route_view is not view
            or len(specs) != len(servers)
            or any(s.spec is not spec for s, spec in zip(servers, specs, strict=True))
        ):
            self._route_view = view
            self._route_specs = [s.spec for s in servers]
            self._routes.clear()
        key = (view.placement_version, request.route_from, request.client, lacks)
        chain = self._routes.get(key)
        if chain is None:
            pc = view.scenario.petals
            _, chain = min_latency_chain(
                view.spans(),
                view.num_blocks,
                view.time_model.rtt[request.client].tolist(),
                [s.spec.profile.inference_rps for s in servers],
                lacks,
                start=request.route_from,
                overhead_s=pc.hop_overhead_s,
                penalty_s=pc.lacking_cache_penalty_s,
                memo=self._memo,
            )
            if len(self._routes) >= _GRAPH_CACHE_SIZE * 64:
                self._routes.clear()
            self._routes[key] = chain
        if not chain:
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
