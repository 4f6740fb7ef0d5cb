"""FROZEN REFERENCE: baselines/petals.py as it was before its speed-up (commit 6a7db2e), unchanged below.

tests/test_petals_speed_equivalence.py checks that the fast implementation gives bit-identical results to this
one. Do not edit it (other than this paragraph); do not import it outside the tests.

PETALS as a decider: fixed KV budget, choose_best_blocks, rebalancing, min-latency routing, back-off.

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
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from itertools import count

import numpy as np

from petalgym.deciders import Decider, Route
from petalgym.errors import DeciderError
from petalgym.perfmodel import Chain, Hop, Placement, petals_cache_bytes_per_block, petals_num_blocks
from petalgym.scenario import GpuProfile, Scenario
from petalgym.swarm import Request, ServerStatus, SwarmView

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


def block_throughputs(spans: Iterable[ThroughputSpan], num_blocks: int) -> np.ndarray:
    """T_b for b in 0..L-1: sum of the throughputs of the servers hosting b (PETALS' ``compute_spans``).

    Servers are added in server order, as PETALS sorts peers, so equal sets of servers give bit-identical
    sums (PETALS relies on that to avoid spurious moves).
    """
    t = np.zeros(num_blocks)
    for _, a, e, thr in sorted(spans):
        t[a:e] += thr
    return t


def choose_best_start(throughputs: Sequence[float] | np.ndarray, num_blocks: int) -> int:
    """PETALS' ``_choose_best_start``: the start i minimising (sorted(T[i:i+m]), i) lexicographically.

    That is the window whose weakest block is weakest, ties broken by the next weakest, then by the
    smallest i (not the smallest sum).
    """
    t = [float(x) for x in throughputs]
    if not 1 <= num_blocks <= len(t):
        raise DeciderError(f"petals: cannot place {num_blocks} blocks in a model of {len(t)} blocks")
    options = ((sorted(t[i : i + num_blocks]), i) for i in range(len(t) - num_blocks + 1))
    return min(options)[-1]


def should_choose_other_blocks(
    spans: Sequence[ThroughputSpan],
    local: int,
    num_blocks: int,
    balance_quality: float,
    rng: np.random.Generator,
) -> bool:
    """PETALS' balance check for server ``local`` (block_selection.py, same arithmetic).

    Remove the local throughput x (1 + eps); stay if that uncovers a block; else find the best start,
    stay if it is the current one; else move there and let every server (shuffled with ``rng``, repeated
    until nobody moves) greedily re-choose its window; move only if min(T_before) / min(T_after) <
    balance_quality - eps. ``spans`` lists the JOINING/ONLINE servers with their throughputs.
    """
    if balance_quality > 1.0:
        return True  # PETALS: forces rebalancing on each check
    # compute_spans inserts peers by first block, then in peer order
    order = sorted(spans, key=lambda s: (s[1], s[0]))
    pos: dict[int, list] = {j: [a, e - a, thr] for j, a, e, thr in order}
    if local not in pos:
        raise DeciderError(f"petals: server {local} is not among the serving servers {sorted(pos)}")
    throughputs = block_throughputs(spans, num_blocks)
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
    """
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
        if self.join_order is not None:
            self._planned = self._precompute(scenario, list(self.join_order(scenario)))
        if self.router is not None:
            self.router.reset(scenario, rng.spawn(1)[0])

    def _precompute(self, scenario: Scenario, order: list) -> dict[int, Placement]:
        """choose_best_blocks for every server of ``order``, joining one at a time."""
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
        spans: list[ThroughputSpan] = []
        planned = {}
        for j in map(int, order):
            m = self._counts[j]
            start = choose_best_start(block_throughputs(spans, scenario.num_blocks), m)
            spans.append((j, start, start + m, petals_throughput(scenario.servers[j].profile, m)))
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

    def place(self, view: SwarmView, server: int) -> Placement:
        """PETALS' block count and fixed cache budget, at the start chosen by choose_best_blocks."""
        if server in self._planned and view.servers[server].placements == 0:
            return self._planned[server]
        m = self._counts[server]
        start = choose_best_start(block_throughputs(self._serving(view, server), view.num_blocks), m)
        return Placement(start, m, self._cache[server])

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        """PETALS' balance check; if it says move, the new start chosen without this server."""
        if not self._rebalancing:
            return None
        if not should_choose_other_blocks(self._serving(view), server, view.num_blocks, self._bq, self.rng):
            return None
        s = view.servers[server]
        m = s.end - s.start
        start = choose_best_start(block_throughputs(self._serving(view, server), view.num_blocks), m)
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
