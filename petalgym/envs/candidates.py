"""Candidate answers offered to an agent: placement levels (PLACE) and candidate chains (ROUTE).

PLACE: the agent picks a window start and a *level*, a rule giving the block count and the cache budget
of the joining server (:func:`fixed_levels`, plus the built-in decider's own answer as a last level so
that whatever the built-in decider places is always expressible).

ROUTE: the agent picks one of ``K`` candidate chains (:class:`ChainGenerator`): the built-in decider's
chain first, then the next-best chains under WS-RR's costs (waiting time + hop time, the paper's online
rule, see :func:`k_best_chains`), then the PETALS min-latency chain (asked of a ``petals`` decider made
through the registry), de-duplicated. Each candidate carries what the simulator would do with it
(:meth:`~petalgym.swarm.SwarmView.admission`): its earliest start and its times.

Chains are tuples of :class:`~petalgym.perfmodel.Hop` from the request's ``route_from`` block to L (the
request's kept upstream hops, if recovering, are not part of a candidate). Times in seconds, sizes in
bytes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np

from petalgym.deciders import Decider, make_decider
from petalgym.perfmodel import (
    Chain,
    Hop,
    Placement,
    conservative_num_blocks,
    petals_cache_bytes_per_block,
    petals_num_blocks,
    route_key,
    shortest_chain,
)
from petalgym.scenario import Scenario
from petalgym.swarm import Request, ServerStatus, SwarmView

_ONLINE = ServerStatus.ONLINE
_INF = math.inf
_first = itemgetter(0)
_span_end = itemgetter(2)

#: Default |R| multipliers of the extra CG-BP levels (more blocks / less cache below 1, fewer above).
DEFAULT_LEVEL_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)


# --------------------------------------------------------------------------------------------------
# Placement levels
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Level:
    """A block-count / cache-budget rule for one server: ``num_blocks`` blocks and ``cache_bytes`` bytes of
    attention cache (resolved: never None). ``valid`` is False when the rule gives no block, does not fit
    the server, or duplicates an earlier level (then it is masked)."""

    name: str
    num_blocks: int
    cache_bytes: int
    valid: bool

    def placement(self, start: int) -> Placement:
        return Placement(start, self.num_blocks, self.cache_bytes)


def level_names(multipliers: Sequence[float]) -> list[str]:
    """Names of the levels, in action order: ``cg-bp``, ``petals``, ``cg-bp-x<f>`` ..., ``builtin``."""
    return ["cg-bp", "petals", *(f"cg-bp-x{f:g}" for f in multipliers), "builtin"]


def _fits(scenario: Scenario, server: int, m: int, cache: int) -> bool:
    spec = scenario.servers[server]
    cap = spec.profile.max_blocks
    left = spec.profile.memory_bytes - m * scenario.model.block_bytes
    return m >= 1 and m <= scenario.num_blocks and (cap is None or m <= cap) and 0 <= cache <= left


def fixed_levels(
    scenario: Scenario, server: int, design_sessions: int, session_bytes: int, multipliers: Sequence[float]
) -> list[Level]:
    """The fixed levels of ``server`` (all but the last, ``builtin``), in action order.

    * ``cg-bp``: CG-BP's conservative count m = min(floor(M / (s_m + s_c |R|)), L, GPU cap) at the design
      |R| = ``design_sessions`` with ``session_bytes`` = s_c; all memory left after the blocks is cache;
    * ``petals``: PETALS' count with its fixed cache budget m x cache_per_block (``attn_cache_tokens``);
    * ``cg-bp-x<f>``: CG-BP's count at |R| = max(1, round(f |R|)), all memory left as cache.
    """
    spec = scenario.servers[server]
    model = scenario.model
    memory = spec.profile.memory_bytes
    L = scenario.num_blocks
    out: list[Level] = []

    def add(name: str, m: int, cache: int | None) -> None:
        cache = memory - m * model.block_bytes if cache is None else cache
        valid = _fits(scenario, server, m, cache) and all(
            (lv.num_blocks, lv.cache_bytes) != (m, cache) for lv in out if lv.valid
        )
        out.append(Level(name, int(m), int(cache), valid))

    def cg(sessions: int) -> int:
        return conservative_num_blocks(
            memory, model.block_bytes, session_bytes, sessions, L, spec.profile.max_blocks
        )

    add("cg-bp", cg(design_sessions), None)
    pc = scenario.petals
    m_petals = petals_num_blocks(model, spec.profile, pc.attn_cache_tokens, pc.autograd_gib)
    add("petals", m_petals, m_petals * petals_cache_bytes_per_block(model, pc.attn_cache_tokens))
    for f in multipliers:
        add(f"cg-bp-x{f:g}", cg(max(1, round(f * design_sessions))), None)
    return out


def builtin_level(scenario: Scenario, server: int, answer: Placement, fixed: Sequence[Level]) -> Level:
    """The ``builtin`` level: the built-in decider's (num_blocks, cache budget); valid only if it differs
    from every valid fixed level (else that fixed level expresses it)."""
    m = int(answer[1])
    cache = answer[2] if len(answer) > 2 else None
    if cache is None:
        cache = scenario.servers[server].profile.memory_bytes - m * scenario.model.block_bytes
    cache = int(cache)
    valid = _fits(scenario, server, m, cache) and all(
        (lv.num_blocks, lv.cache_bytes) != (m, cache) for lv in fixed if lv.valid
    )
    return Level("builtin", m, cache, valid)


# --------------------------------------------------------------------------------------------------
# k best chains
# --------------------------------------------------------------------------------------------------
def k_best_chains(
    spans: Sequence[tuple[int, int, int]],
    fixed: Sequence[float],
    per_block: Sequence[float],
    num_blocks: int,
    start: int,
    k: int,
    wait: Callable[[int, int], float] | None = None,
) -> list[tuple[float, Chain]]:
    """The ``k`` cheapest chains from block ``start`` to L, cheapest first: [(cost, chain)].

    Same costs as :func:`~petalgym.perfmodel.shortest_chain`: a hop entering server j at position b costs
    ``fixed[j] + per_block[j] * (end_j - b)`` plus ``wait(j, end_j - b)`` if given (inf forbids it).

    Exact k-shortest paths by dynamic programming over the DAG of block positions (a hop always moves
    forward, so every path is simple and a server can appear at most once): each reachable position keeps
    its k best labels (cost, server, previous position, previous label); an entry whose cheapest label
    cannot beat the position's k-th is skipped before its wait is asked. O(E k log k) for E = feasible
    (server, entry) pairs -- far cheaper than Yen's algorithm (``networkx.shortest_simple_paths`` re-runs
    a shortest path per deviation, ~100x slower here), which matters for the env's speed target.
    """
    if k <= 0:
        return []
    size = (num_blocks if num_blocks > start else start) + 1
    labels: list[list[tuple[float, int, int, int]] | None] = [None] * size  # per position, cheapest first
    labels[start] = [(0.0, -1, -1, -1)]
    reached = [start]  # the labelled positions, ascending; all <= the end of the span being visited
    for j, a, e in sorted(spans, key=_span_end):
        if e <= start or e >= size:  # a hop only moves forward: past L, nothing leads back to L
            continue
        f, w = fixed[j], per_block[j]
        cur = labels[e]
        # a label costing at least e's k-th cannot enter (the sort is stable and e's labels come first)
        cutoff = cur[-1][0] if cur is not None and len(cur) >= k else _INF
        new: list[tuple[float, int, int, int]] = []
        lo = bisect_left(reached, a) if a > start else 0
        for b in reached[lo:] if reached[-1] < e else reached[lo:-1]:  # the labelled b in [a, e)
            c = f + w * (e - b)
            labs = labels[b]
            if labs[0][0] + c >= cutoff:  # waits only add
                continue
            if wait is not None:
                x = wait(j, e - b)
                if x == _INF:
                    continue
                c += x
            for r, lab in enumerate(labs):
                cost = lab[0] + c
                if cost >= cutoff:  # the labels are cheapest first
                    break
                new.append((cost, j, b, r))
        if new:
            if cur is None:
                reached.append(e)
            elif cur:
                new = cur + new
            new.sort(key=_first)
            labels[e] = new[:k]
    out = []
    for lab in labels[num_blocks] or ():
        hops = []
        pos, node = num_blocks, lab
        while node[1] >= 0:
            _, j, b, r = node
            hops.append(Hop(j, b, pos))
            pos, node = b, labels[b][r]
        out.append((lab[0], tuple(reversed(hops))))
    return out


# --------------------------------------------------------------------------------------------------
# Candidate chains of one ROUTE decision
# --------------------------------------------------------------------------------------------------
#: Candidate sets of ROUTE decisions: ``"ws-rr"`` (the built-in chain, WS-RR's k best and PETALS' chain)
#: and ``"mixed"`` (chains by different rules: the built-in one; the fastest chain whose every hop has free
#: cache now, taken without waiting; PETALS' chain; the least-loaded chain; the chain of fewest hops; then
#: WS-RR's k best to fill the K slots).
CANDIDATE_SETS = ("ws-rr", "mixed")

#: Tie-break weight of a chain's time cost (s) in the least-loaded and fewest-hops rules.
_TIE_BREAK = 1e-6


@dataclass
class RouteCandidates:
    """The candidate chains of one ROUTE decision: ``chains[i]`` (hops from ``route_from`` to L) with its
    ``sources[i]`` (``"builtin"``, ``"ws-rr"``, ``"petals"``, ``"free-now"``, ``"least-loaded"`` or
    ``"fewest-hops"``); ``wait`` is the built-in decider's waiting mode (True: reserve the earliest start;
    False: back off and retry) and ``waits[i]`` the mode candidate i is taken with (the built-in one,
    except ``"free-now"``: False, it fits now).
    ``petals_index`` is the index of the PETALS chain among them (-1 if it has none). ``starts``,
    ``tokens`` and ``durations`` (s): what the simulator would do with each chain now
    (:meth:`~petalgym.swarm.SwarmView.admission`): the earliest start (absolute; inf if it never fits),
    the per-token decode time, and the time from the start to the last token."""

    chains: list[Chain]
    sources: list[str]
    wait: bool
    petals_index: int = -1
    starts: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    waits: list[bool] = field(default_factory=list)


class ChainGenerator:
    """Builds the K candidate chains of ROUTE decisions on one scenario.

    The WS-RR alternatives are cached per placement (the ONLINE spans, so the cache also serves later
    episodes that reach the same placement), client, lengths, route_from and s_c while no hop of any
    ONLINE server would wait (then every wait is 0, so the chains depend on the placement only); exact.
    """

    #: Entries kept per cache before it is emptied (bounds memory over long runs).
    MAX_CACHED = 20_000

    def __init__(self, scenario: Scenario, num_candidates: int, candidate_set: str = "ws-rr"):
        if candidate_set not in CANDIDATE_SETS:
            raise ValueError(f"unknown candidate set {candidate_set!r} (known: {', '.join(CANDIDATE_SETS)})")
        self.scenario = scenario
        self.candidate_set = candidate_set
        self.k = int(num_candidates)
        self.num_blocks = scenario.num_blocks
        self._version = -1
        self._placement_ids: dict[tuple, int] = {}
        self._placement = -1  # id of the current placement (its ONLINE spans)
        self._alt_cache: dict[tuple, list[Chain]] = {}
        self.petals: Decider = make_decider("petals", rebalance=False)  # asked for its min-latency chain
        self.petals.reset(scenario, np.random.default_rng(0))  # (its routing draws nothing)

    def reset(self) -> None:
        """A new episode (a new simulator, whose placement versions restart): re-read the placement."""
        self._version = -1

    def _sync(self, view: SwarmView) -> None:
        if self._version == view.placement_version:
            return
        self._version = view.placement_version
        if len(self._placement_ids) > self.MAX_CACHED or len(self._alt_cache) > self.MAX_CACHED:
            self._placement_ids.clear()
            self._alt_cache.clear()
        self._placement = self._placement_ids.setdefault(tuple(view.spans()), len(self._placement_ids))

    # building blocks ------------------------------------------------------------------------------
    @staticmethod
    def lacking(view: SwarmView, kv_bytes: int, free: list[int]) -> tuple[bool, ...]:
        """Per ONLINE server (in ``view.spans()`` order): whether its free cache now (``free``, ignoring
        reservations) is short of a hop over its whole span with ``kv_bytes`` per block (PETALS' "lacks
        cache")."""
        return tuple([free[j] < (e - a) * kv_bytes for j, a, e in view.spans()])

    @staticmethod
    def no_hop_waits(view: SwarmView, lacking: tuple[bool, ...]) -> bool:
        """True if no ONLINE server lacks cache for a whole-span hop and none holds a reservation: then
        every WS-RR waiting time (:meth:`~petalgym.swarm.SwarmView.wait_for`) is 0."""
        if True in lacking:
            return False
        for s in view.servers:  # noqa: SIM110 (hot path: a plain loop beats all() over a generator)
            if s.reservations:
                return False
        return True

    def ws_rr_chains(self, view: SwarmView, request: Request, k: int, no_waits: bool) -> list[Chain]:
        """The ``k`` best chains under WS-RR's cost (wait + hop time of the whole request) on every ONLINE
        server, cheapest first."""
        kv = request.kv_bytes
        key = (self._placement, *route_key(request), kv, k)
        if no_waits:
            hit = self._alt_cache.get(key)
            if hit is not None:
                return hit
        fixed, per_block = view.time_model.route_costs(request)
        wait = None if no_waits else view.hop_wait(kv)
        found = k_best_chains(view.spans(), fixed, per_block, self.num_blocks, request.route_from, k, wait)
        chains = [c for _, c in found]
        if no_waits:
            self._alt_cache[key] = chains
        return chains

    def petals_chain(self, view: SwarmView, request: Request) -> Chain:
        """The ``petals`` decider's min-latency chain for ``request``, () if none."""
        answer = self.petals.route(view, request)
        return () if answer is None else answer.chain

    def rule_chains(self, view: SwarmView, request: Request, free: list[int]) -> dict[str, Chain]:
        """The ``"mixed"`` set's rule-based chains (() where a rule finds none): ``free-now``, the fastest
        chain whose every hop fits in its server's cache now (free minus reserved); ``least-loaded``, the
        chain of the smallest sum over hops of the server's cache in use (held + reserved) / its budget;
        ``fewest-hops``; the last two break ties by time."""
        kv = request.kv_bytes
        fixed, per_block = view.time_model.route_costs(request)
        spans = view.spans()
        L, start = self.num_blocks, request.route_from
        servers = view.servers
        room = [s.unreserved_bytes for s in servers]

        def fits(j: int, blocks: int) -> float:
            return 0.0 if room[j] >= blocks * kv else _INF

        load = [s.cache_load for s in servers]
        tie_fixed = [_TIE_BREAK * f for f in fixed]
        tie_block = [_TIE_BREAK * w for w in per_block]
        self._sync(view)
        out: dict[str, Chain] = {}
        if self.no_hop_waits(view, self.lacking(view, kv, free)):  # every hop fits: the fastest chain
            fastest = self.ws_rr_chains(view, request, self.k, True)
            out["free-now"] = fastest[0] if fastest else ()
        else:
            out["free-now"] = shortest_chain(spans, fixed, per_block, L, start, fits)[1]
        loaded = [x + y for x, y in zip(load, tie_fixed, strict=True)]
        out["least-loaded"] = shortest_chain(spans, loaded, tie_block, L, start)[1]
        # placement-only
        key = ("fewest-hops", self._placement, *route_key(request))
        fewest = self._alt_cache.get(key)
        if fewest is None:
            fewest = self._alt_cache[key] = shortest_chain(
                spans, [1.0 + y for y in tie_fixed], tie_block, L, start
            )[1]
        out["fewest-hops"] = fewest
        return out

    # the candidates -------------------------------------------------------------------------------
    def candidates(
        self, view: SwarmView, request: Request, builtin: Chain, wait: bool, free: list[int] | None = None
    ) -> RouteCandidates:
        """Up to K distinct chains, ``builtin`` first (with K = 1 only it). ``"ws-rr"`` set: then WS-RR
        alternatives, then the PETALS chain (it takes the last slot unless already present); ``"mixed"``:
        then free-now, PETALS, least-loaded and fewest-hops chains (:meth:`rule_chains`), then WS-RR's.
        ``free``: free cache bytes per server now (computed if not given)."""
        self._sync(view)
        k = self.k
        chains = [builtin]
        sources = ["builtin"]
        if k == 1:
            return self._timed(RouteCandidates(chains, sources, wait, -1), view, request)
        if free is None:
            free = [s.cache_capacity - s.used_bytes for s in view.servers]
        if self.candidate_set == "mixed":
            return self._mixed(view, request, builtin, wait, free)
        lacking = self.lacking(view, request.kv_bytes, free)
        petals = self.petals_chain(view, request)
        no_waits = self.no_hop_waits(view, lacking)
        # k alternatives suffice: at most one duplicates the built-in chain and one the PETALS chain
        for chain in self.ws_rr_chains(view, request, k, no_waits):
            if len(chains) >= k - 1:
                break
            if chain not in chains and chain != petals:
                chains.append(chain)
                sources.append("ws-rr")
        if petals and petals not in chains:
            chains.append(petals)
            sources.append("petals")
        elif len(chains) < k:
            for chain in self.ws_rr_chains(view, request, k, no_waits):
                if len(chains) >= k:
                    break
                if chain not in chains:
                    chains.append(chain)
                    sources.append("ws-rr")
        petals_index = chains.index(petals) if petals in chains else -1
        return self._timed(RouteCandidates(chains, sources, wait, petals_index), view, request)

    def _mixed(
        self, view: SwarmView, request: Request, builtin: Chain, wait: bool, free: list[int]
    ) -> RouteCandidates:
        """The ``"mixed"`` candidates (see :meth:`candidates`)."""
        k = self.k
        rules = self.rule_chains(view, request, free)
        petals = self.petals_chain(view, request)
        chains, sources, waits = [builtin], ["builtin"], [wait]
        for source, chain in (
            ("free-now", rules["free-now"]),
            ("petals", petals),
            ("least-loaded", rules["least-loaded"]),
            ("fewest-hops", rules["fewest-hops"]),
        ):
            if len(chains) >= k:
                break
            if chain and chain not in chains:
                chains.append(chain)
                sources.append(source)
                waits.append(False if source == "free-now" else wait)
        if len(chains) < k:
            lacking = self.lacking(view, request.kv_bytes, free)
            for chain in self.ws_rr_chains(view, request, k, self.no_hop_waits(view, lacking)):
                if len(chains) >= k:
                    break
                if chain not in chains:
                    chains.append(chain)
                    sources.append("ws-rr")
                    waits.append(wait)
        petals_index = chains.index(petals) if petals in chains else -1
        cands = RouteCandidates(chains, sources, wait, petals_index, waits=waits)
        return self._timed(cands, view, request)

    @staticmethod
    def _timed(cands: RouteCandidates, view: SwarmView, request: Request) -> RouteCandidates:
        """``cands`` with what the simulator would do with each chain now (its admission and times) and,
        where not set, the waiting mode of each (the built-in one)."""
        if not cands.waits:
            cands.waits = [cands.wait] * len(cands.chains)
        for chain in cands.chains:
            start, _, token, duration = view.admission(request, chain)
            cands.starts.append(start)
            cands.tokens.append(token)
            cands.durations.append(duration)
        return cands


__all__ = [
    "CANDIDATE_SETS",
    "DEFAULT_LEVEL_MULTIPLIERS",
    "ChainGenerator",
    "Level",
    "RouteCandidates",
    "builtin_level",
    "fixed_levels",
    "k_best_chains",
    "level_names",
]
