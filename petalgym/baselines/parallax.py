"""Parallax (GradientHQ/parallax, ``src/scheduling`` @162354a; peers.md section 3) as petalgym deciders.

Parallax schedules in two phases. Phase 1 gives every node a contiguous range of layers (blocks here):
an allocator forms complete pipelines, water-filling splits each pipeline's layers in proportion to the
nodes' compute, and nodes left over join where the layer load is lightest. Phase 2 routes each request
over the nodes' ranges: either round robin over a fixed set of registered, node-disjoint pipelines
(``"parallax"``, the source's default router) or a shortest path over exact range boundaries
(``"parallax-dp"``, the router the paper describes).

Pure functions (testable without a simulator); blocks are 0-based, [start, end):

* :func:`layer_capacity` -- cap_j = min(floor(0.5 M_j / s_m), max_blocks_j, L);
* :func:`dp_allocate` -- the DP allocator (min total stages s*(k) for k disjoint pipelines, k maximising
  k^2 / s*(k)), :func:`greedy_allocate` -- the greedy allocator with its look-ahead;
* :func:`water_fill` -- one pipeline's layer counts and stage order, :func:`stage_ranges`;
* :func:`lightest_layer` / :func:`dynamic_join_range` -- where a leftover or joining node goes;
* :func:`layer_latency_ms` -- a node's per-layer latency with the load compensator;
* :func:`dp_route` -- the DP router over ranges (also from a recovery's block);
* :func:`register_pipelines` -- the RR router's registration (one best node-disjoint pipeline per head),
  :func:`first_disjoint_pipelines` -- the pipelines an RR join adds;
* :func:`has_full_pipeline`, :func:`load_variation` -- the global-rebalance rule's two tests.

The decider :class:`ParallaxDecider` (and the factory :func:`parallax_dp`) wraps them; its docstring
lists what follows the source and what is adapted to petalgym.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from petalgym.deciders import Decider, Enqueue, Route, checked_number, whole_number
from petalgym.design import client_shares
from petalgym.errors import DeciderError
from petalgym.perfmodel import Chain, Hop, Placement
from petalgym.scenario import Scenario, ServerSpec, max_blocks_on
from petalgym.swarm import Request, ServerStatus, SwarmView

__all__ = [
    "KV_MEM_RATIO",
    "LOAD_COMPENSATOR_MS",
    "MAX_CONCURRENT_REQUESTS",
    "PARAM_MEM_RATIO",
    "DPAllocation",
    "DPStateBudgetExceeded",
    "ParallaxDecider",
    "WaterFill",
    "dp_allocate",
    "dp_route",
    "dynamic_join_range",
    "first_disjoint_pipelines",
    "greedy_allocate",
    "has_full_pipeline",
    "layer_capacity",
    "layer_latency_ms",
    "lightest_layer",
    "load_variation",
    "parallax_dp",
    "register_pipelines",
    "stage_ranges",
    "water_fill",
]

#: Share of a node's memory for layer weights (source: ``param_mem_ratio``).
PARAM_MEM_RATIO = 0.5
#: Share of a node's memory for the KV cache (source: ``kvcache_mem_ratio``).
KV_MEM_RATIO = 0.3
#: The source's per-node request cap (``max_concurrent_requests``; its KV-derived bound never binds).
MAX_CONCURRENT_REQUESTS = 16
#: Milliseconds added to a node's per-layer latency at full load (source: ``load_compensator``).
LOAD_COMPENSATOR_MS = 0.05
#: Bisection steps of the water-filling (source: ``water_filling_max_iterations``).
WATER_FILLING_ITERATIONS = 40
#: The client-side queue requests wait in while every pipeline is overloaded (``when_overloaded="queue"``).
QUEUE_KEY = "parallax-pipelines-full"

_INF = math.inf
_GONE = (ServerStatus.OFFLINE, ServerStatus.DRAINING)

#: A node's range: (node id, first block, end).
Range = tuple[int, int, int]


# --------------------------------------------------------------------------------------------------
# Phase 1: layer allocation
# --------------------------------------------------------------------------------------------------
def layer_capacity(scenario: Scenario, spec: ServerSpec) -> int:
    """cap_j: blocks a node may host by Parallax's rule, min(floor(0.5 M_j / s_m), max_blocks_j, L), where
    max_blocks_j (:func:`~petalgym.scenario.max_blocks_on`) also keeps cache for one longest session and
    applies the GPU's block cap. The embedding and LM head stay at the client in petalgym, so the first
    and last stages get no smaller capacity. May be 0 (such a node is never allocated)."""
    by_memory = int(PARAM_MEM_RATIO * spec.profile.memory_bytes // scenario.model.block_bytes)
    return max(0, min(by_memory, max_blocks_on(scenario, spec), scenario.num_blocks))


class DPStateBudgetExceeded(DeciderError):
    """:func:`dp_allocate` evaluated more DP states than its ``max_states`` allows."""


class DPAllocation(NamedTuple):
    """Result of :func:`dp_allocate`: ``pipelines`` (lists of indices into the capacities, in the order
    the pipelines closed; nodes in the order they joined their pipeline), the chosen ``k``, ``s_star``
    (k -> minimum total stages, inf if k disjoint pipelines cannot be formed) for every k tried, and the
    number of DP ``states`` evaluated over all k."""

    pipelines: list[list[int]]
    k: int
    s_star: dict[int, float]
    states: int


def dp_allocate(caps: Sequence[int], num_layers: int, max_states: int | None = None) -> DPAllocation:
    """The DP layer allocator on node capacities ``caps`` (in join order) for ``num_layers`` layers.

    For every k = 1..min(N, floor(sum caps / L)), s*(k) is the fewest nodes forming k disjoint complete
    pipelines, by a memoised search over (node index, sorted residual layers of the open pipelines,
    pipelines closed). At each node: skip it, add it to an open pipeline (it closes when its residual
    drops to <= 0), or open a new one (if fewer than k are open or closed). States are pruned when too many
    pipelines are open, or when the capacity or the number of nodes left cannot close them. Ties keep the
    earlier option (skip, then the open pipelines by increasing residual, then a new pipeline). The k
    maximising Z(k) = k^2 / s*(k) (ties: the smaller k) is backtracked into pipelines.

    The search is exponential in the worst case: ``max_states`` (None: no limit) bounds the states over
    all k, else :class:`DPStateBudgetExceeded`. Example (the source's docstring): caps (40, 40, 20, 20, 10,
    10), L = 70 gives s*(1) = 2, s*(2) = 6, k = 2: two pipelines {40, 20, 10}."""
    caps = [int(c) for c in caps]
    n, L = len(caps), int(num_layers)
    total = sum(caps)
    if L <= 0 or n == 0 or total < L:
        return DPAllocation([], 0, {}, 0)
    suffix = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix[i] = suffix[i + 1] + caps[i]
    best_k, best_score, best_memo = 0, -_INF, None
    s_star: dict[int, float] = {}
    states = 0
    for k in range(1, min(n, total // L) + 1):
        budget = None if max_states is None else max_states - states
        memo = _dp_solve(k, caps, L, suffix, budget)
        states += len(memo)
        value = memo[(0, (), 0)][0]
        s_star[k] = value
        if value < _INF:
            score = k * k / value
            if score > best_score:
                best_k, best_score, best_memo = k, score, memo
    if best_memo is None:
        return DPAllocation([], 0, s_star, states)
    return DPAllocation(_dp_backtrack(best_k, best_memo, caps), best_k, s_star, states)


_SKIP = ("skip",)
_DONE = ("done",)


def _dp_solve(
    k: int, caps: list[int], L: int, suffix: list[int], budget: int | None
) -> dict[tuple, tuple[float, tuple | None]]:
    """state -> (min stages from it, best action), for target k, by an explicit-stack memoised search
    (the recursion is as deep as there are nodes)."""
    n = len(caps)
    memo: dict[tuple, tuple[float, tuple | None]] = {}
    children: dict[tuple, list[tuple[tuple, tuple]]] = {}
    stack = [(0, (), 0)]
    while stack:
        state = stack[-1]
        if state in memo:
            stack.pop()
            continue
        kids = children.get(state)
        if kids is None:
            i, open_, f = state
            if f == k and not open_:
                memo[state] = (0, _DONE)
                stack.pop()
                continue
            new_needed = k - f - len(open_)
            if (
                i == n
                or new_needed < 0
                or suffix[i] < sum(open_) + max(0, new_needed) * L
                or f + len(open_) + (n - i) < k
            ):
                memo[state] = (_INF, None)
                stack.pop()
                continue
            if budget is not None and len(memo) + len(children) >= budget:
                raise DPStateBudgetExceeded(f"the DP allocator exceeded its budget of DP states (k={k})")
            c = caps[i]
            kids = [(_SKIP, (i + 1, open_, f))]
            for j, r in enumerate(open_):
                if j and r == open_[j - 1]:
                    continue  # the same child as the previous residual; the first one wins ties
                left = r - c
                if left <= 0:
                    kids.append((("assign", j, True), (i + 1, open_[:j] + open_[j + 1 :], f + 1)))
                else:
                    rest = sorted((*open_[:j], left, *open_[j + 1 :]))
                    kids.append((("assign", j, False), (i + 1, tuple(rest), f)))
            if new_needed > 0:
                r_new = L - c
                if r_new <= 0:
                    kids.append((("start", 0, True), (i + 1, open_, f + 1)))
                else:
                    kids.append((("start", r_new, False), (i + 1, tuple(sorted((*open_, r_new))), f)))
            children[state] = kids
            missing = [child for _, child in kids if child not in memo]
            if missing:
                stack.extend(missing)
                continue
        best, action = memo[kids[0][1]][0], kids[0][0]
        for act, child in kids[1:]:
            cost = 1 + memo[child][0]
            if cost < best:
                best, action = cost, act
        memo[state] = (best, action)
        del children[state]
        stack.pop()
    return memo


def _dp_backtrack(k: int, memo: dict[tuple, tuple[float, tuple | None]], caps: list[int]) -> list[list[int]]:
    """The pipelines of the best actions from the root state (closing order)."""
    pipelines: list[list[int]] = []
    open_list: list[tuple[int, list[int]]] = []  # (residual, nodes)
    i, finished, n = 0, 0, len(caps)
    while i < n and finished < k:
        entry = memo.get((i, tuple(sorted(r for r, _ in open_list)), finished))
        if entry is None or entry[1] is None:
            break
        action = entry[1]
        if action[0] == "assign":
            open_list.sort(key=lambda x: x[0])  # stable: the order of the state's sorted residuals
            r, nodes = open_list[action[1]]
            nodes.append(i)
            if action[2] or r - caps[i] <= 0:
                pipelines.append(nodes)
                open_list.pop(action[1])
                finished += 1
            else:
                open_list[action[1]] = (r - caps[i], nodes)
        elif action[0] == "start":
            if action[2]:
                pipelines.append([i])
                finished += 1
            else:
                open_list.append((action[1], [i]))
        i += 1
    return pipelines


def greedy_allocate(caps: Sequence[int], num_layers: int, look_ahead: bool = True) -> list[list[int]]:
    """The greedy allocator: pipelines (lists of indices into ``caps``) built one at a time.

    Nodes are taken largest capacity first (ties: the earlier index). Each pipeline takes the largest node
    left until its residual layers drop to <= 0. Look-ahead (``look_ahead``): when choosing a pipeline's
    first node, if the nodes left hold >= 2 L + 1 layers, the smallest node that can hold all L layers
    while the others still hold >= L becomes a one-node pipeline. Stops when the nodes left hold < L or a
    pipeline cannot be completed. (The source's docstring says the nodes are sorted; its loop at HEAD
    reads them in registry order. peers.md section 3.1 specifies the sorted order, used here.)"""
    L = int(num_layers)
    avail = sorted(range(len(caps)), key=lambda i: -int(caps[i]))
    pipelines: list[list[int]] = []
    while avail:
        total = sum(int(caps[i]) for i in avail)
        if total < L:
            break
        nodes: list[int] = []
        remaining, pool = L, total
        while remaining > 0 and avail:
            pick = 0
            if look_ahead and not nodes and pool - remaining >= L + 1:
                for idx, i in enumerate(avail):  # the last match is the smallest such node
                    if int(caps[i]) >= remaining and pool - int(caps[i]) >= L:
                        pick = idx
            node = avail.pop(pick)
            nodes.append(node)
            remaining -= int(caps[node])
            pool -= int(caps[node])
        if remaining > 0:
            break
        pipelines.append(nodes)
    return pipelines


class WaterFill(NamedTuple):
    """One pipeline's split: ``order`` (indices into the capacities, in stage order: capacity descending,
    ties to the earlier index) and ``counts`` (layers of each stage, aligned with ``order``; may be 0)."""

    order: list[int]
    counts: list[int]


def water_fill(
    caps: Sequence[int],
    powers: Sequence[float],
    num_layers: int,
    iterations: int = WATER_FILLING_ITERATIONS,
) -> WaterFill:
    """Split ``num_layers`` layers over a pipeline's nodes in proportion to their compute ``powers`` F_i,
    capped by ``caps``: bisect lambda on [0, max cap_i / F_i] (``iterations`` steps) for
    sum_i min(cap_i, lambda F_i) = L, take the upper end, floor each target, then hand out what is left one
    layer at a time by largest fractional part (ties: the earlier stage) to stages with room.

    Examples: caps (8, 8, 8), F (3, 1, 1): L = 10 -> (6, 2, 2), L = 11 -> (7, 2, 2); caps (6, 8, 8),
    F (3, 1, 1), L = 12 -> stage order (1, 2, 0), counts (3, 3, 6). ValueError if a capacity or power is
    not positive or the capacities cannot hold L."""
    n, L = len(caps), int(num_layers)
    if n == 0 or L <= 0:
        raise ValueError("water_fill: no nodes or no layers")
    order = sorted(range(n), key=lambda i: -int(caps[i]))
    c = [int(caps[i]) for i in order]
    f = [float(powers[i]) for i in order]
    if min(c) <= 0 or not all(x > 0 for x in f):
        raise ValueError(f"water_fill: capacities and powers must be positive, got {c} and {f}")
    if sum(c) < L:
        raise ValueError(f"water_fill: capacities {c} cannot hold {L} layers")

    def total_at(lam: float) -> float:
        return sum(min(c[i], lam * f[i]) for i in range(n))

    lo, hi = 0.0, max(c[i] / f[i] for i in range(n))
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if total_at(mid) >= L:
            hi = mid
        else:
            lo = mid
    target = [min(c[i], hi * f[i]) for i in range(n)]
    counts = [min(c[i], math.floor(target[i])) for i in range(n)]
    remaining = L - sum(counts)
    if remaining < 0:
        raise ValueError("water_fill: the targets exceed L (internal error)")
    for _, neg in sorted(((target[i] - counts[i], -i) for i in range(n)), reverse=True):
        if remaining == 0:
            break
        if counts[-neg] < c[-neg]:
            counts[-neg] += 1
            remaining -= 1
    if remaining:
        raise ValueError(f"water_fill: {remaining} layers left unassigned (internal error)")
    return WaterFill(order, counts)


def stage_ranges(nodes: Sequence[int], split: WaterFill) -> list[Range]:
    """(node, start, end) of a water-filled pipeline: contiguous from block 0 in stage order; a stage
    with 0 layers gets no range (the source leaves it unallocated). ``split.order`` indexes ``nodes``."""
    out, a = [], 0
    for idx, m in zip(split.order, split.counts, strict=True):
        if m > 0:
            out.append((int(nodes[idx]), a, a + m))
            a += m
    return out


def lightest_layer(loads: Sequence[float]) -> int:
    """The layer with the smallest summed KV hosting power (ties: the lower layer)."""
    return int(np.argmin(np.asarray(loads)))


def dynamic_join_range(loads: Sequence[float], cap: int, num_layers: int) -> tuple[int, int]:
    """dynamic_join: (start, end) for a node of capacity ``cap`` -- from the lightest layer, ``cap`` layers,
    truncated at L."""
    a = lightest_layer(loads)
    return a, min(a + int(cap), int(num_layers))


def has_full_pipeline(ranges: Iterable[Range], num_layers: int) -> bool:
    """Whether the ranges chain from block 0 to L over exact boundaries (end of one = start of next)."""
    reach = {0}
    for _, a, e in sorted(ranges, key=lambda r: (r[1], r[2])):
        if a in reach:
            reach.add(e)
    return int(num_layers) in reach


def load_variation(loads: Sequence[float], total_memory: float) -> float:
    """Coefficient of variation (population std / mean) of the per-layer loads kv / ``total_memory``;
    0 if the mean is 0 (the source then never rebalances)."""
    x = np.asarray(loads, dtype=float) / float(total_memory)
    mean = float(x.mean()) if x.size else 0.0
    return 0.0 if mean == 0 else float(x.std()) / mean


# --------------------------------------------------------------------------------------------------
# Phase 2: routing
# --------------------------------------------------------------------------------------------------
def layer_latency_ms(tau_ms: float, current: int, max_requests: int) -> float:
    """A node's per-layer latency (ms): inf when it holds >= ``max_requests`` requests, else
    tau + 0.05 ms x current / max."""
    if current >= max_requests:
        return _INF
    return tau_ms + LOAD_COMPENSATOR_MS * current / max_requests


def _vertex(lat: float, hop: float | None, blocks: int, per_shard: bool) -> float:
    v = lat * blocks if per_shard else lat
    return v if hop is None else hop + v


def dp_route(
    ranges: Sequence[Range],
    latency_ms: Sequence[float] | Mapping[int, float],
    num_layers: int,
    *,
    rtt_ms: Any = None,
    hop_ms: Sequence[float] | Mapping[int, float] | None = None,
    entry_ms: Sequence[float] | Mapping[int, float] | None = None,
    per_shard: bool = False,
    start: int = 0,
) -> tuple[float, list[Range]]:
    """The DP router: the cheapest chain of ``ranges`` from block ``start`` to L (ms, hops).

    A range is a vertex costing its node's per-layer latency ``latency_ms[node]`` (``per_shard``: times
    the blocks it processes; inf forbids it). An edge j -> i exists only if end_j == start_i and costs
    ``rtt_ms[j][i]`` ("peer" edges; a matrix or nested sequence, inf if missing). ``hop_ms[node]``, if
    given, is added to every hop including the first ("hub" edges; give ``rtt_ms=None``).
    dp[i] = min_j dp[j] + edge(j, i) + vertex(i). The first hop is any range with start <= ``start`` < end
    (processing [start, end)), plus ``entry_ms[node]`` if given; with start 0 that is dp = vertex cost.
    Ties go to the earlier range in ``ranges`` (node order), as in the source. Returns (inf, []) if no
    chain exists."""
    L = int(num_layers)
    rtt = None if rtt_ms is None else np.asarray(rtt_ms, dtype=float)
    n = len(ranges)
    cost = [_INF] * n
    parent = [-1] * n
    starts: dict[int, list[int]] = {}
    ends: dict[int, list[int]] = {}
    for p, (j, a, e) in enumerate(ranges):
        if e <= start:
            continue
        if a <= start:
            c = _vertex(latency_ms[j], None if hop_ms is None else hop_ms[j], e - start, per_shard)
            if entry_ms is not None:
                c = entry_ms[j] + c
            if c < _INF:
                cost[p] = c
                ends.setdefault(e, []).append(p)
        else:
            starts.setdefault(a, []).append(p)
    for b in sorted(starts):
        preds = ends.get(b)
        if not preds:
            continue
        preds.sort()  # node order: the source relaxes from the earlier node first and keeps it on ties
        succs = starts[b]
        if rtt is None:
            best = min(preds, key=lambda q: cost[q])
            via = [(best, cost[best])] * len(succs)
        else:
            m = (
                np.asarray([cost[q] for q in preds])[:, None]
                + rtt[np.ix_([ranges[q][0] for q in preds], [ranges[s][0] for s in succs])]
            )
            arg = m.argmin(axis=0)
            via = [(preds[int(r)], float(m[r, col])) for col, r in enumerate(arg)]
        for s, (q, base) in zip(succs, via, strict=True):
            j, a, e = ranges[s]
            c = base + _vertex(latency_ms[j], None if hop_ms is None else hop_ms[j], e - a, per_shard)
            if c < _INF:
                cost[s], parent[s] = c, q
                ends.setdefault(e, []).append(s)
    terminals = sorted(ends.get(L, ()))
    if not terminals:
        return _INF, []
    p = min(terminals, key=lambda q: cost[q])
    total = cost[p]
    path: list[Range] = []
    while p >= 0:
        j, a, e = ranges[p]
        path.append((j, max(a, start), e))
        p = parent[p]
    path.reverse()
    return total, path


def _suffix_costs(
    ranges: Sequence[Range],
    vertex: list[float],
    rtt: np.ndarray | None,
    succ_at: dict[int, list[int]],
    ends_at: dict[int, list[int]],
    used: set[int],
    num_layers: int,
) -> tuple[list[float], list[int]]:
    """g[p]: the cheapest completion of a pipeline from range p to L (its own vertex included) avoiding
    ``used`` nodes, and succ[p]: the next range on it (first minimum in DFS successor order)."""
    n = len(ranges)
    g = [_INF] * n
    cont = [_INF] * n
    succ = [-1] * n
    for p, (_, _, e) in enumerate(ranges):
        if e == num_layers:
            cont[p] = 0.0
    for b in sorted(set(succ_at) | set(ends_at), reverse=True):
        nxt = [s for s in succ_at.get(b, ()) if ranges[s][0] not in used]
        for s in nxt:
            if cont[s] < _INF:
                g[s] = vertex[s] + cont[s]
        nxt = [s for s in nxt if g[s] < _INF]
        preds = ends_at.get(b)
        if not nxt or not preds or b == num_layers:
            continue
        gs = np.asarray([g[s] for s in nxt])
        if rtt is None:
            r = int(gs.argmin())
            for p in preds:
                cont[p], succ[p] = float(gs[r]), nxt[r]
        else:
            m = rtt[np.ix_([ranges[p][0] for p in preds], [ranges[s][0] for s in nxt])] + gs[None, :]
            arg = m.argmin(axis=1)
            for row, p in enumerate(preds):
                r = int(arg[row])
                cont[p], succ[p] = float(m[row, r]), nxt[r]
    return g, succ


def register_pipelines(
    ranges: Sequence[Range],
    latency_ms: Sequence[float] | Mapping[int, float],
    num_layers: int,
    *,
    rtt_ms: Any = None,
    hop_ms: Sequence[float] | Mapping[int, float] | None = None,
    per_shard: bool = False,
) -> list[tuple[int, ...]]:
    """The RR router's registration: node-id pipelines, one per head at most, node-disjoint.

    Among all complete pipelines over exact boundaries, each scored as the sum of its vertex costs and
    edges (as :func:`dp_route` prices them; the source's estimate_pipeline_latency), the heads (ranges
    starting at 0, in ``ranges`` order) are taken in order of their best cost; each gets its cheapest
    pipeline that shares no node with one chosen before (none if every one does). Ties go to the pipeline
    the source's depth-first enumeration lists first (successors by increasing end, then node order).
    Computed by a suffix DP instead of enumerating the pipelines (their number can grow exponentially);
    equal up to floating-point rounding of equal-cost pipelines."""
    L = int(num_layers)
    rtt = None if rtt_ms is None else np.asarray(rtt_ms, dtype=float)
    vertex = [
        _vertex(latency_ms[j], None if hop_ms is None else hop_ms[j], e - a, per_shard) for j, a, e in ranges
    ]
    succ_at: dict[int, list[int]] = {}
    ends_at: dict[int, list[int]] = {}
    for p, (_, a, e) in enumerate(ranges):
        succ_at.setdefault(a, []).append(p)
        ends_at.setdefault(e, []).append(p)
    for lst in succ_at.values():
        lst.sort(key=lambda p: ranges[p][2])  # stable: DFS tries shorter ranges first, then node order
    heads = [p for p, r in enumerate(ranges) if r[1] == 0]
    used: set[int] = set()
    g, succ = _suffix_costs(ranges, vertex, rtt, succ_at, ends_at, used, L)
    order = sorted((p for p in heads if g[p] < _INF), key=lambda p: g[p])
    selected: list[tuple[int, ...]] = []
    stale = False
    for h in order:
        if ranges[h][0] in used:
            continue
        if stale:
            g, succ = _suffix_costs(ranges, vertex, rtt, succ_at, ends_at, used, L)
            stale = False
        if g[h] == _INF:
            continue
        path, p = [], h
        while p >= 0:
            path.append(ranges[p][0])
            p = succ[p] if ranges[p][2] != L else -1
        selected.append(tuple(path))
        used.update(path)
        stale = True
    return selected


def first_disjoint_pipelines(
    ranges: Sequence[Range], num_layers: int, exclude: Iterable[int] = ()
) -> list[tuple[int, ...]]:
    """The pipelines an RR join registers: all complete pipelines in the source's depth-first order
    (heads in ``ranges`` order, successors by increasing end), keeping each that shares no node with
    ``exclude`` (already registered) or with one kept before. (The source keeps those disjoint from the
    registry and registers them best-effort, failing on the first overlap within the batch.)"""
    L = int(num_layers)
    used = set(exclude)
    succ_at: dict[int, list[int]] = {}
    for p, (_, a, _) in enumerate(ranges):
        succ_at.setdefault(a, []).append(p)
    for lst in succ_at.values():
        lst.sort(key=lambda p: ranges[p][2])
    dead: set[int] = set()  # ranges that cannot reach L avoiding used nodes (stays true as used grows)

    def dfs(p: int, path: list[int]) -> bool:
        if ranges[p][2] == L:
            return True
        for s in succ_at.get(ranges[p][2], ()):
            if s in dead or ranges[s][0] in used:
                continue
            path.append(s)
            if dfs(s, path):
                return True
            path.pop()
        dead.add(p)
        return False

    out = []
    for h, (j, a, _) in enumerate(ranges):
        if a != 0 or j in used or h in dead:
            continue
        path = [h]
        if dfs(h, path):
            nodes = tuple(ranges[p][0] for p in path)
            out.append(nodes)
            used.update(nodes)
    return out


# --------------------------------------------------------------------------------------------------
# The decider
# --------------------------------------------------------------------------------------------------
def _is_int(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum


class _Plan(NamedTuple):
    """A bootstrap result: allocations {node: (start, end)}, registered pipelines, notes."""

    alloc: dict[int, tuple[int, int]]
    pipelines: list[tuple[int, ...]]
    notes: list[str]


class ParallaxDecider(Decider):
    """Parallax's two-phase scheduler (GradientHQ/parallax @162354a; peers.md section 3) on petalgym.

    Follows the source:

    * Phase 1 at bootstrap: the DP allocator (``allocator="dp"``, the source's default) or the greedy one
      over cap_j = min(floor(0.5 M_j / s_m), max_blocks_j, L) (:func:`layer_capacity`); water-filling in
      each pipeline (:func:`water_fill`, F_j per ``power``); with the DP router, every node left over
      joins at the lightest layer (:func:`dynamic_join_range`; the load of a layer is the sum of
      floor(0.3 M_j / m_j) over the nodes hosting it); with the RR router, leftovers stay on standby
      until a join runs allocate_from_standby again (``leftovers_at_bootstrap=True`` runs it at once).
    * Phase 2: per-layer latency tau_j (ms) + 0.05 ms x cur_j / max_j, inf at cur_j >= max_j
      (:func:`layer_latency_ms`); ``router="rr"`` (the source's default): :func:`register_pipelines`
      registers one best node-disjoint pipeline per head, and requests go round robin over them, skipping
      pipelines not ready or overloaded; ``router="dp"``: :func:`dp_route` over all allocated nodes.
      A dispatched request adds 1 to cur_j of every node on its chain; it is released in
      :meth:`route_ended` (request id -> the nodes charged, with each node's epoch: a node that leaves
      or is deallocated starts again from 0, as the source resets its counter).
    * Churn: a departure deallocates the node (RR: its registered pipeline is dropped and the other
      members go to standby); then, if no full pipeline is left among the allocated nodes, or the
      per-layer load's coefficient of variation exceeds ``rebalance_threshold`` (inf: off, the source's
      default), every node goes to standby and the bootstrap runs again (counters reset). A join goes to
      dynamic_join (DP router) or to allocate_from_standby over the standby nodes, registering the new
      node-disjoint pipelines (RR, :func:`first_disjoint_pipelines`); before the first successful
      bootstrap, a join retries the bootstrap instead.

    Adapted to petalgym (and why):

    * Node order: the allocators read nodes in registry order, i.e. join order. The decider does not see
      the simulator's random initial join order, and place() must answer the first joiner with the whole
      plan, so the initial order is the server index order (answers do not depend on the simulator's
      order); a node that leaves is removed and re-appended when it rejoins, as in the source's registry.
    * The embedding and LM head stay at the client, so the first/last stage capacities are not reduced.
      A node with cap_j = 0 is never allocated (the source would fail on it).
    * Placement: a node Parallax allocates hosts exactly its range; cache_bytes = 0.3 M_j, clamped to the
      memory left after its blocks. petalgym needs >= 1 block on every online server, so a standby node
      hosts [0, max(1, cap_j)) but is never routed through.
    * petalgym re-places an online server only when it offers :meth:`rebalance`; a re-allocation (RR
      joins, global re-bootstraps) is applied there: a server whose span differs from its Parallax range
      is not routable until it has reloaded. With churn, :meth:`reset` sets ``rebalance_period_s`` to
      ``reload_check_period_s`` for that (without churn nothing is ever re-allocated). A joining server
      gets its new range directly from place(). What cannot be re-placed: an online server between
      rebalance offers (or ever, with ``reload_check_period_s=None``).
    * Departures are seen lazily: at each place/route/rebalance, servers petalgym shows OFFLINE or
      DRAINING leave (a draining server accepts no new sessions). A leave also removes the node's (and
      the detached RR members') KV hosting power from the layer loads: the source's leave only drops
      the node from its registry, leaving the loads stale; peers.md section 3.3 says deallocate.
    * A water-filled stage that gets 0 layers stays on standby (the source leaves it unallocated too).
    * Costs: "peer" edges use petalgym's server-to-server RTTs (``scenario.network.server_rtt_s``); if
      the scenario has none (a ``matrix`` network without ``server_rtt_ms``), the "hub" cost is used and
      :attr:`note` says so. "hub": t_cj (ms) on every hop including the first, the per-token hop cost
      petalgym charges; the RR registration (no request yet) uses the client-weighted mean t_cj.
    * Recoveries (``request.route_from`` > 0, kept hops held upstream): DP router -- :func:`dp_route` from
      the servers whose span contains route_from (the hop processes [route_from, end)), the first edge
      from the last kept server ("peer") or t_cj ("hub"); RR -- the suffix of the next registered
      pipeline (round robin) from its member containing route_from, else :func:`dp_route` over the
      registered pipelines' routable servers. Kept servers are never reused.
    * Admission stays petalgym's: the chain is answered with Route(wait=False), so a chain lacking cache
      backs off and is routed again (its counters are charged only if it starts now). When every
      pipeline is overloaded (Parallax's empty route, "pipelines full"): ``when_overloaded="queue"``
      answers Enqueue, offered again at the next dispatch opportunity -- a route ending (a counter
      released) or a server joining or leaving; ``"admit"`` answers the best chain ignoring the load with
      Route(wait=False) (it starts if petalgym has cache). wait=False alone cannot force a back-off: a
      chain with free cache starts. If no chain exists, None (the request stalls until a server comes
      online).

    Args:
        allocator: "dp" (the source's default) or "greedy".
        router: "rr" (round robin over registered pipelines; the source's default) or "dp".
        vertex_cost: "per_layer" (faithful quirk: a node costs its per-layer latency whatever its number
            of layers) or "per_shard" (per-layer latency x the blocks the hop processes).
        edge_cost: "peer" (faithful: server-to-server RTT, ms, no client RTT) or "hub" (t_cj, ms, on every
            hop, including the first).
        max_requests: requests per node before it counts as overloaded: an int (16 is the source's
            effective value, a quirk) or "kv" for floor(0.3 M_j / (s_c m_j)) (>= 1), with s_c the KV bytes
            per block of a session of the workload's mean lengths and m_j the node's blocks.
        power: the water-filling's F_j: "flops" (faithful; 1 / tauI_j(l_in), the prefill speed at the
            workload's mean prompt) or "bandwidth" (1 / tau_j, the decode speed).
        rebalance_threshold: coefficient of variation of the per-layer load (kv / cluster memory) above
            which a departure triggers a global re-bootstrap (inf: only when no full pipeline is left).
        when_overloaded: "queue" or "admit" (see above).
        leftovers_at_bootstrap: RR router: run allocate_from_standby once more on the nodes the bootstrap
            left over (False, faithful: they wait for a join).
        look_ahead: the greedy allocator's look-ahead (True in the source).
        dp_max_states: budget of DP-allocator states over all k (None: unlimited); beyond it the greedy
            allocator is used and :attr:`note` says so (the DP is exponential: e.g. 1,000 servers).
        reload_check_period_s: mean seconds between the re-placement offers (:meth:`rebalance`) used to
            apply re-allocations under churn; None: never re-place an online server.
        name: the name shown in results.
    """

    name = "parallax"
    pure_route = False

    def __init__(
        self,
        *,
        allocator: Literal["dp", "greedy"] = "dp",
        router: Literal["rr", "dp"] = "rr",
        vertex_cost: Literal["per_layer", "per_shard"] = "per_layer",
        edge_cost: Literal["peer", "hub"] = "peer",
        max_requests: int | Literal["kv"] = MAX_CONCURRENT_REQUESTS,
        power: Literal["flops", "bandwidth"] = "flops",
        rebalance_threshold: float = math.inf,
        when_overloaded: Literal["queue", "admit"] = "queue",
        leftovers_at_bootstrap: bool = False,
        look_ahead: bool = True,
        dp_max_states: int | None = 1_200_000,
        reload_check_period_s: float | None = 30.0,
        name: str = "parallax",
    ):
        for label, value, choices in (
            ("allocator", allocator, ("dp", "greedy")),
            ("router", router, ("rr", "dp")),
            ("vertex_cost", vertex_cost, ("per_layer", "per_shard")),
            ("edge_cost", edge_cost, ("peer", "hub")),
            ("power", power, ("flops", "bandwidth")),
            ("when_overloaded", when_overloaded, ("queue", "admit")),
        ):
            if value not in choices:
                raise DeciderError(f"{name}: {label} must be one of {', '.join(choices)}; got {value!r}")
        if max_requests != "kv" and not _is_int(max_requests, 1):
            raise DeciderError(f"{name}: max_requests must be an integer >= 1 or 'kv', got {max_requests!r}")
        checked_number(name, "rebalance_threshold", rebalance_threshold, low_open=False, high_open=False)
        for label, flag in (("leftovers_at_bootstrap", leftovers_at_bootstrap), ("look_ahead", look_ahead)):
            if not isinstance(flag, bool):
                raise DeciderError(f"{name}: {label} must be True or False, got {flag!r}")
        whole_number(name, "dp_max_states", dp_max_states, optional=True)
        period = checked_number(name, "reload_check_period_s", reload_check_period_s, optional=True)
        self.allocator = allocator
        self.router = router
        self.vertex_cost = vertex_cost
        self.edge_cost = edge_cost
        self.max_requests = max_requests if max_requests == "kv" else int(max_requests)
        self.power = power
        self.rebalance_threshold = float(rebalance_threshold)
        self.when_overloaded = when_overloaded
        self.leftovers_at_bootstrap = leftovers_at_bootstrap
        self.look_ahead = look_ahead
        self.dp_max_states = None if dp_max_states is None else int(dp_max_states)
        self.reload_check_period_s = None if period is None else float(period)
        self.name = name
        self.rebalance_period_s = None
        self.reboots = 0  # global re-bootstraps in this episode
        self._notes: list[str] = []

    # episode ---------------------------------------------------------------------------------------
    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """Constants of the scenario, then the bootstrap over all servers (kept in ``scenario.memo``)."""
        super().reset(scenario, rng)
        sc = scenario
        n, L = sc.num_servers, sc.num_blocks
        self._L = L
        self._caps = [layer_capacity(sc, s) for s in sc.servers]
        self._memory = [int(s.profile.memory_bytes) for s in sc.servers]
        l_in, l_out = sc.workload.mean_lengths()
        self._session_bytes = sc.model.session_bytes(l_in, l_out)
        if self.power == "flops":
            self._power = [1.0 / s.profile.prefill_tau(l_in) for s in sc.servers]
        else:
            self._power = [1.0 / s.profile.tau_s for s in sc.servers]
        self._tau_ms = np.array([1e3 * s.profile.tau_s for s in sc.servers])
        t_token = np.asarray(sc.network.rtt_s, dtype=float) + sc.overheads.token_overhead_s
        self._t_ms = 1e3 * t_token  # (C, S) per-token hop cost t_cj, ms
        self._t_mean_ms = client_shares(sc) @ self._t_ms
        notes: list[str] = []
        self._hub = self.edge_cost == "hub"
        self._rtt_ms: np.ndarray | None = None
        if not self._hub:
            if sc.network.server_rtt_s is None:
                self._hub = True
                notes.append("no server-to-server RTTs in the scenario: hub edge costs (t_cj) used")
            else:
                self._rtt_ms = 1e3 * np.asarray(sc.network.server_rtt_s, dtype=float)
        self.rebalance_period_s = self.reload_check_period_s if sc.churn.enabled else None
        # mutable state
        self._present: list[int] = list(range(n))
        self._awaiting: set[int] = set(range(n))  # planned, not placed yet (initial joins)
        self._alloc: dict[int, tuple[int, int]] = {}
        self._loads = np.zeros(L, dtype=np.int64)
        self._kv_per_layer = [0] * n
        self._cur = np.zeros(n, dtype=np.int64)
        self._maxr = np.full(n, MAX_CONCURRENT_REQUESTS, dtype=np.int64)
        self._epoch = [0] * n
        self._charged: dict[int, list[tuple[int, int]]] = {}
        self._registry: dict[int, tuple[int, ...]] = {}
        self._node_pid: dict[int, int] = {}
        self._next_pid = 0
        self._cursor = 0
        self._bootstrapped = False
        self._alloc_version = 0
        self._seen_version = -1
        self._routable_key: tuple[int, int] = (-1, -1)
        self._routable: list[Range] = []
        self.reboots = 0
        self._notes = []
        key = (
            "parallax.bootstrap",
            self.allocator,
            self.router,
            self.vertex_cost,
            self._hub,
            self.power,
            self.leftovers_at_bootstrap,
            self.look_ahead,
            self.dp_max_states,
        )
        plan = sc.memo(key, self._fresh_bootstrap)
        self._apply_plan(plan)
        self._notes = list(dict.fromkeys(notes + plan.notes))
        self.note = "; ".join(self._notes)

    def _fresh_bootstrap(self) -> _Plan:
        """The bootstrap over every server, from an empty state (then the state is cleared again)."""
        self._bootstrap()
        plan = _Plan(dict(self._alloc), self.registered_pipelines(), list(self._notes))
        for j in list(self._alloc):
            self._deallocate(j)
        self._registry.clear()
        self._node_pid.clear()
        self._next_pid = 0
        self._bootstrapped = False
        self._notes = []
        return plan

    def _apply_plan(self, plan: _Plan) -> None:
        for j in self._present:
            if j in plan.alloc:
                self._allocate(j, *plan.alloc[j])
        for p in plan.pipelines:
            self._register(p)
        self._bootstrapped = bool(plan.alloc) and has_full_pipeline(self._ranges(), self._L)

    # bookkeeping -----------------------------------------------------------------------------------
    def _allocate(self, j: int, a: int, e: int) -> None:
        m = e - a
        self._alloc[j] = (a, e)
        kv = int(KV_MEM_RATIO * self._memory[j]) // m
        self._kv_per_layer[j] = kv
        self._loads[a:e] += kv
        if self.max_requests == "kv":
            self._maxr[j] = max(1, int(KV_MEM_RATIO * self._memory[j] // (self._session_bytes * m)))
        else:
            self._maxr[j] = self.max_requests
        self._reset_counter(j)
        self._alloc_version += 1

    def _deallocate(self, j: int) -> None:
        span = self._alloc.pop(j, None)
        if span is not None:
            self._loads[span[0] : span[1]] -= self._kv_per_layer[j]
            self._alloc_version += 1
        self._reset_counter(j)

    def _reset_counter(self, j: int) -> None:
        self._cur[j] = 0
        self._epoch[j] += 1

    def _ranges(self, nodes: Iterable[int] | None = None) -> list[Range]:
        """(node, start, end) of the allocated nodes (of ``nodes``), in registry order."""
        chosen = self._present if nodes is None else [j for j in self._present if j in set(nodes)]
        return [(j, *self._alloc[j]) for j in chosen if j in self._alloc]

    def _standby(self) -> list[int]:
        return [j for j in self._present if j not in self._alloc and self._caps[j] > 0]

    def _register(self, pipeline: tuple[int, ...]) -> None:
        pid = self._next_pid
        self._next_pid += 1
        self._registry[pid] = tuple(pipeline)
        for j in pipeline:
            self._node_pid[j] = pid

    # Phase 1 on the state --------------------------------------------------------------------------
    def _allocate_from_standby(self) -> bool:
        """The allocator over the standby nodes; water-fills and allocates each pipeline formed (DP
        router: then dynamic_join of every node left on standby). True if a pipeline was formed."""
        nodes = self._standby()
        caps = [self._caps[j] for j in nodes]
        L = self._L
        if sum(caps) < L:
            return False
        pipelines: list[list[int]]
        if self.allocator == "dp":
            try:
                pipelines = dp_allocate(caps, L, self.dp_max_states).pipelines
            except DPStateBudgetExceeded:
                self._add_note(
                    f"the DP allocator exceeded dp_max_states={self.dp_max_states} (at {len(nodes)} nodes): "
                    "greedy allocator used"
                )
                pipelines = greedy_allocate(caps, L, self.look_ahead)
        else:
            pipelines = greedy_allocate(caps, L, self.look_ahead)
        if not pipelines:
            return False
        for idx in pipelines:
            members = [nodes[i] for i in idx]
            split = water_fill([self._caps[j] for j in members], [self._power[j] for j in members], L)
            for j, a, e in stage_ranges(members, split):
                self._allocate(j, a, e)
        if self.router == "dp":
            for j in self._standby():
                self._dynamic_join(j)
        return True

    def _add_note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)
            self.note = "; ".join(self._notes)

    def _dynamic_join(self, j: int) -> None:
        if self._caps[j] > 0:
            self._allocate(j, *dynamic_join_range(self._loads, self._caps[j], self._L))

    def _bootstrap(self) -> bool:
        """allocate_from_standby over every node (all on standby), then the RR registration."""
        ok = self._allocate_from_standby() and has_full_pipeline(self._ranges(), self._L)
        if ok and self.router == "rr":
            if self.leftovers_at_bootstrap:
                self._allocate_from_standby()
            self._register_all()
        self._bootstrapped = ok
        return ok

    def _register_all(self) -> None:
        """The RR registration over the allocated nodes at zero load (counters are 0 after a bootstrap)."""
        self._registry.clear()
        self._node_pid.clear()
        self._cursor = 0
        lat = self._latencies()
        hop = self._t_mean_ms if self._hub else None
        for p in register_pipelines(
            self._ranges(), lat, self._L, rtt_ms=self._rtt_ms, hop_ms=hop, per_shard=self._per_shard
        ):
            self._register(p)

    @property
    def _per_shard(self) -> bool:
        return self.vertex_cost == "per_shard"

    def _latencies(self, ignore_load: bool = False) -> np.ndarray:
        """Per-layer latency (ms) of every node: tau + 0.05 cur/max, inf when overloaded."""
        if ignore_load:
            return self._tau_ms
        cur, maxr = self._cur, self._maxr
        lat = self._tau_ms + LOAD_COMPENSATOR_MS * cur / maxr
        return np.where(cur >= maxr, _INF, lat)

    def _leave(self, j: int) -> None:
        """Node ``j`` leaves: RR drops its registered pipeline (the other members go to standby);
        ``j`` is deallocated and removed from the registry order."""
        pid = self._node_pid.pop(j, None)
        if pid is not None:
            for k in self._registry.pop(pid, ()):
                if k != j:
                    self._node_pid.pop(k, None)
                    self._deallocate(k)
        self._deallocate(j)
        self._present.remove(j)

    def _should_global_rebalance(self) -> bool:
        if not has_full_pipeline(self._ranges(), self._L):
            return True
        if self.rebalance_threshold == math.inf or self._L < 2:
            return False
        memory = sum(self._memory[j] for j in self._present)
        return memory > 0 and load_variation(self._loads, memory) > self.rebalance_threshold

    def _reboot(self) -> None:
        """Every node to standby (counters reset, registry cleared), then the bootstrap again."""
        self.reboots += 1
        for j in list(self._alloc):
            self._deallocate(j)
        self._registry.clear()
        self._node_pid.clear()
        self._cursor = 0
        if self._present:
            self._bootstrap()
        else:
            self._bootstrapped = False

    def _join(self, j: int) -> None:
        self._present.append(j)
        self._reset_counter(j)
        if not self._bootstrapped:
            self._bootstrap()
            return
        if self.router == "dp":
            self._dynamic_join(j)
            return
        before = set(self._alloc)
        if self._allocate_from_standby():
            new = set(self._alloc) - before
            for p in first_disjoint_pipelines(self._ranges(new), self._L, exclude=self._node_pid):
                self._register(p)

    def _sync(self, view: SwarmView) -> None:
        """Servers petalgym shows OFFLINE or DRAINING leave; then the global-rebalance rule."""
        if view.placement_version == self._seen_version:
            return
        self._seen_version = view.placement_version
        servers = view.servers
        left = [j for j in self._present if j not in self._awaiting and servers[j].status in _GONE]
        for j in left:
            self._leave(j)
        if left and self._should_global_rebalance():
            self._reboot()

    def _placement(self, j: int) -> Placement:
        span = self._alloc.get(j)
        a, m = (span[0], span[1] - span[0]) if span is not None else (0, max(1, self._caps[j]))
        left = self._memory[j] - m * self.scenario.model.block_bytes
        return Placement(a, m, max(0, min(int(KV_MEM_RATIO * self._memory[j]), left)))

    # decisions -------------------------------------------------------------------------------------
    def place(self, view: SwarmView, server: int) -> Placement:
        """The server's Parallax range (initial joins: the bootstrap's; a rejoin: dynamic_join or
        allocate_from_standby), or the standby placement."""
        if server in self._awaiting:
            self._sync(view)
            self._awaiting.discard(server)
            return self._placement(server)
        self._sync(view)
        if server in self._present:  # it left without being seen leaving
            self._leave(server)
            if self._should_global_rebalance():
                self._reboot()
        self._join(server)
        return self._placement(server)

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        """Reload ``server`` onto its Parallax range if its span differs (a re-allocation), else stay."""
        self._sync(view)
        span = self._alloc.get(server)
        s = view.servers[server]
        if span is None or s.status != ServerStatus.ONLINE or (s.start, s.end) == span:
            return None
        return self._placement(server)

    def routable(self, view: SwarmView) -> list[Range]:
        """(server, start, end) of the allocated servers that are ONLINE on their Parallax range, in
        registry order (the source's "active and ready" nodes)."""
        key = (view.placement_version, self._alloc_version)
        if key != self._routable_key:
            servers = view.servers
            self._routable = [
                (j, a, e)
                for j, a, e in self._ranges()
                if servers[j].status == ServerStatus.ONLINE and servers[j].start == a and servers[j].end == e
            ]
            self._routable_key = key
        return self._routable

    def route(self, view: SwarmView, request: Request) -> Route | Enqueue | None:
        """A chain by the RR or DP router (see the class docstring); Route(wait=False)."""
        self._sync(view)
        self._release(request.id)  # routed again: its previous answer holds no chain
        ranges = self.routable(view)
        if self.router == "rr":
            hops, overloaded = self._rr_chain(view, request, ranges)
        else:
            hops, overloaded = self._dp_chain(request, ranges, ignore_load=False)
        if not hops and overloaded:
            if self.when_overloaded == "queue":
                return Enqueue(QUEUE_KEY)
            if self.router == "rr":
                hops, _ = self._rr_chain(view, request, ranges, ignore_load=True)
            else:
                hops, _ = self._dp_chain(request, ranges, ignore_load=True)
        if not hops:
            return None
        chain = tuple(Hop(j, a, e) for j, a, e in hops)
        if self._starts_now(view, request, chain):
            charged = []
            for h in request.kept + chain:
                if h.server in self._alloc:
                    self._cur[h.server] += 1
                    charged.append((h.server, self._epoch[h.server]))
            self._charged[request.id] = charged
        return Route(chain, wait=False)

    def route_ended(self, view: SwarmView, request: Request) -> None:
        """Release the counters ``request`` was charged (if any)."""
        self._release(request.id)

    def _release(self, rid: int) -> None:
        for j, epoch in self._charged.pop(rid, ()):
            if self._epoch[j] == epoch:
                self._cur[j] -= 1

    def current_requests(self) -> dict[int, int]:
        """Parallax's current_requests of every node that has any (for tests and inspection)."""
        return {j: int(c) for j, c in enumerate(self._cur) if c}

    def registered_pipelines(self) -> list[tuple[int, ...]]:
        """The RR registry, in pipeline-id order (node ids in stage order)."""
        return [self._registry[p] for p in sorted(self._registry)]

    def allocations(self) -> dict[int, tuple[int, int]]:
        """Parallax's ranges {server: (start, end)} (standby servers are absent)."""
        return dict(self._alloc)

    @staticmethod
    def _starts_now(view: SwarmView, request: Request, chain: Chain) -> bool:
        """Whether the simulator starts ``request`` on ``chain`` now (Route(wait=False) backs off
        otherwise): every hop fits now and no reservation delays it."""
        kv = request.kv_bytes
        reserved = False
        for h in chain:
            s = view.servers[h.server]
            need = (h.end - h.start) * kv
            if need > s.cache_capacity:
                return False
            if s.reservations:
                reserved = True
            elif s.used_bytes + need > s.cache_capacity:
                return False
        return not reserved or view.admission(request, chain)[0] <= view.now

    def _entry(self, request: Request) -> np.ndarray | None:
        """Cost (ms) into a recovery's first hop: the RTT from the last kept server ("peer")."""
        if self._hub or not request.kept:
            return None
        return self._rtt_ms[request.kept[-1].server]  # type: ignore[index]

    def _dp_chain(
        self, request: Request, ranges: list[Range], ignore_load: bool, nodes: set[int] | None = None
    ) -> tuple[list[Range], bool]:
        """(hops, whether only the load forbids a chain) by :func:`dp_route` over ``ranges``."""
        kept = {h.server for h in request.kept}
        if kept or nodes is not None:
            ranges = [r for r in ranges if r[0] not in kept and (nodes is None or r[0] in nodes)]
        hop = self._t_ms[request.client] if self._hub else None
        kw = {
            "rtt_ms": self._rtt_ms,
            "hop_ms": hop,
            "entry_ms": self._entry(request),
            "per_shard": self._per_shard,
            "start": request.route_from,
        }
        _, hops = dp_route(ranges, self._latencies(ignore_load), self._L, **kw)
        if hops or ignore_load:
            return hops, False
        if not np.any(self._cur >= self._maxr):
            return [], False
        _, hops = dp_route(ranges, self._latencies(True), self._L, **kw)
        return [], bool(hops)

    def _rr_chain(
        self, view: SwarmView, request: Request, ranges: list[Range], ignore_load: bool = False
    ) -> tuple[list[Range], bool]:
        """(hops, whether every ready pipeline is overloaded): the next registered pipeline in round
        robin that is ready (every member routable) and not overloaded; a recovery takes its suffix from
        the member containing route_from (else the DP router over the registered routable servers)."""
        if not self._registry and self._bootstrapped:
            self._register_all()  # the source re-registers when its registry is empty
        pids = sorted(self._registry)
        if not pids:
            return [], False
        spans = {j: (a, e) for j, a, e in ranges}
        b = request.route_from
        kept = {h.server for h in request.kept}
        cur, maxr = self._cur, self._maxr
        any_ready = False
        for _ in range(len(pids)):
            pid = pids[self._cursor % len(pids)]
            self._cursor += 1
            members = self._registry[pid]
            if b > 0:
                members = tuple(j for j in members if self._alloc[j][1] > b)
            if not all(j in spans for j in members) or kept.intersection(members):
                continue
            any_ready = True
            if ignore_load or all(cur[j] < maxr[j] for j in members):
                return [(j, max(spans[j][0], b), spans[j][1]) for j in members], False
        if b > 0:
            registered = set(self._node_pid)
            hops, overloaded = self._dp_chain(request, ranges, ignore_load, registered)
            return hops, overloaded or (any_ready and not hops)
        return [], any_ready

    def describe(self) -> str:
        parts = [f"{self.allocator} allocator", f"{self.router} router"]
        defaults = {
            "vertex_cost": "per_layer",
            "edge_cost": "peer",
            "max_requests": MAX_CONCURRENT_REQUESTS,
            "power": "flops",
            "when_overloaded": "queue",
        }
        parts += [f"{k}={getattr(self, k)}" for k, v in defaults.items() if getattr(self, k) != v]
        if self.rebalance_threshold != math.inf:
            parts.append(f"rebalance_threshold={self.rebalance_threshold:g}")
        text = f"{self.name} ({', '.join(parts)})"
        return f"{text}: {self.note}" if self.note else text


def parallax_dp(**kwargs: Any) -> ParallaxDecider:
    """``"parallax-dp"``: :class:`ParallaxDecider` with the DP router (the paper's), named "parallax-dp";
    takes the same keyword arguments (``router`` defaults to "dp")."""
    kwargs.setdefault("router", "dp")
    kwargs.setdefault("name", "parallax-dp")
    return ParallaxDecider(**kwargs)


_SIG = inspect.signature(ParallaxDecider.__init__)
parallax_dp.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        p.replace(default={"router": "dp", "name": "parallax-dp"}.get(p.name, p.default))
        for p in list(_SIG.parameters.values())[1:]
    ],
    return_annotation="ParallaxDecider",
)
