"""The paper's performance model (docs/model.md): memory, slots, block counts, times, chains.

Blocks are numbered 0..L-1 here (the paper uses 1..L). A server hosting blocks ``[start, end)`` can serve a
hop that enters at block position ``b`` with ``start <= b < end``; it then processes ``end - b`` blocks and
the chain continues at position ``end`` (each block is processed at the first server on the chain that
hosts it, Lemma 1). A chain is a tuple of :class:`Hop` covering positions 0..L (or a suffix b..L).

Time of one request from client c on chain p, with k_j the blocks processed at server j::

    T_c(p) = D0 + sum_j [tI_cj + k_j tauI_j(l_in)] + (l_out - 1) sum_j [t_cj + k_j tau_j]

with t_cj = rtt_cj + token overhead, tI_cj = rtt_cj + prefill_per_token l_in + prefill overhead and D0 the
initial delay. All times in seconds, all sizes in bytes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from petalgym.scenario import GpuProfile, ModelSpec, Scenario

if TYPE_CHECKING:
    from petalgym.swarm import Request


class Hop(NamedTuple):
    """One hop of a chain: ``server`` processes blocks ``[start, end)``, up to the end of its span."""

    server: int
    start: int
    end: int

    @property
    def blocks(self) -> int:
        return self.end - self.start


Chain = tuple[Hop, ...]


class Placement(NamedTuple):
    """Where a server's blocks are: ``[start, start + num_blocks)``, and its attention-cache budget in bytes.

    ``cache_bytes=None`` means "all memory left after the blocks" (the paper's model); PETALS reserves a
    fixed budget instead.
    """

    start: int
    num_blocks: int
    cache_bytes: int | None = None

    @property
    def end(self) -> int:
        return self.start + self.num_blocks


# --------------------------------------------------------------------------------------------------
# Memory, slots and block counts
# --------------------------------------------------------------------------------------------------
def session_cache_bytes(model: ModelSpec, l_in: int, l_out: int) -> int:
    """s_c = 2 d_model (l_in + l_out) dtype_bytes / kv_groups: one block's KV cache for one session."""
    return model.session_bytes(l_in, l_out)


def cache_slots(memory_bytes: float, num_blocks: int, block_bytes: float, session_bytes: float) -> int:
    """n_slots = floor((M - s_m m) / s_c): block-session cache slots left after hosting ``num_blocks``.

    A session that passes ``k`` blocks of the server holds ``k`` slots there.
    """
    free = memory_bytes - block_bytes * num_blocks
    return int(free // session_bytes) if free >= 0 else 0


def session_capacity(memory_bytes: float, num_blocks: int, block_bytes: float, session_bytes: float) -> int:
    """f_j = floor((M - s_m m) / (s_c m)): concurrent sessions through all ``num_blocks`` blocks of a server.

    E.g. an 80 GB A100 hosting 53 BLOOM-176B blocks holds ~21 sessions at l_in=20, l_out=128.
    """
    if num_blocks <= 0:
        return 0
    return cache_slots(memory_bytes, num_blocks, block_bytes, session_bytes) // num_blocks


def petals_cache_bytes_per_block(model: ModelSpec, attn_cache_tokens: int) -> int:
    """PETALS' cache budget per hosted block: 2 d_model attn_cache_tokens dtype_bytes / the KV groups
    PETALS sizes it with (``model.petals_kv_groups``: Mixtral's PETALS config says 1)."""
    return (2 * model.d_model * int(attn_cache_tokens) * model.dtype_bytes) // model.petals_kv_groups


def petals_autograd_bytes(model: ModelSpec, autograd_gib: float = 2.0) -> int:
    """PETALS' memory reserved for autograd: 2 GiB x d_model / 14336."""
    return int(autograd_gib * 2**30 * model.d_model / 14336)


def petals_num_blocks(
    model: ModelSpec, profile: GpuProfile, attn_cache_tokens: int = 4096, autograd_gib: float = 2.0
) -> int:
    """PETALS' block count: min(floor((M - autograd) / (s_m + cache_per_block)), L), capped by the GPU."""
    per_block = model.block_bytes + petals_cache_bytes_per_block(model, attn_cache_tokens)
    free = profile.memory_bytes - petals_autograd_bytes(model, autograd_gib)
    m = min(max(free, 0) // per_block, model.num_blocks)
    if profile.max_blocks is not None:
        m = min(m, profile.max_blocks)
    return int(m)


def conservative_num_blocks(
    memory_bytes: float,
    block_bytes: float,
    session_bytes: float,
    num_sessions: int,
    num_blocks_total: int,
    max_blocks: int | None = None,
) -> int:
    """CG-BPRR step 1: m_j = min(floor(M_j / (s_m + s_c |R|)), L) (and the GPU's block cap)."""
    m = min(int(memory_bytes // (block_bytes + session_bytes * num_sessions)), num_blocks_total)
    if max_blocks is not None:
        m = min(m, max_blocks)
    return m


def max_design_sessions(scenario: Scenario, session_bytes: float) -> int:
    """Upper bound on CG-BP's |R|: floor((sum_j M_j - s_m (L + |V_s|)) / (s_c (L + |V_s|)))."""
    total = sum(s.profile.memory_bytes for s in scenario.servers)
    k = scenario.num_blocks + scenario.num_servers
    return max(int((total - scenario.model.block_bytes * k) // (session_bytes * k)), 0)


# --------------------------------------------------------------------------------------------------
# Per-(client, server) time constants
# --------------------------------------------------------------------------------------------------
class TimeModel:
    """Precomputed time constants of a scenario; methods give per-hop and per-request times (seconds).

    Arrays have shape (num_clients, num_servers) or (num_servers,).
    """

    #: Entries of :meth:`route_costs`' cache before it is emptied (bounds memory over long runs).
    MAX_ROUTE_COSTS = 4096

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        o = scenario.overheads
        self.rtt = scenario.network.rtt_s  # (C, S) raw RTT
        self.t_token = self.rtt + o.token_overhead_s  # t_cj
        self.tau = np.array([s.profile.tau_s for s in scenario.servers])  # (S,)
        self.prefill_slope = np.array([s.profile.prefill_per_token_s for s in scenario.servers])
        self.prefill_base = np.array([s.profile.prefill_base_s for s in scenario.servers])
        self.initial_delay = o.initial_delay_s
        self._o = o
        # plain-Python copies for the hot paths (numpy scalar access is slow)
        self._t_token = self.t_token.tolist()
        self._rtt = self.rtt.tolist()
        self._tau = self.tau.tolist()
        self._pslope = self.prefill_slope.tolist()
        self._pbase = self.prefill_base.tolist()
        self._route_costs: dict[tuple[int, int, int, bool], tuple[tuple[float, ...], tuple[float, ...]]] = {}

    # per hop ----------------------------------------------------------------------------------------
    def hop_costs(
        self, client: int, l_in: int, l_out: int, replay: bool = False
    ) -> tuple[list[float], list[float]]:
        """Per-server (fixed, per-block) cost of a hop in total request time:
        fixed_j = tI_cj + (l_out - 1) t_cj and per_block_j = tauI_j(l_in) + (l_out - 1) tau_j.

        ``replay``: the hop's first step replays ``l_in`` tokens of a recovery, which costs at least a
        decode step (:meth:`replay_step`): fixed_j = max(tI_cj, t_cj) + ..., per_block_j = max(tauI_j,
        tau_j) + ...
        """
        o = self._o
        n = l_out - 1
        pre = o.prefill_per_token_s * l_in + o.prefill_overhead_s
        rtt = self._rtt[client]
        tt = self._t_token[client]
        tau, slope, base = self._tau, self._pslope, self._pbase
        if replay:
            first = [self.replay_step(j, client, l_in) for j in range(len(tt))]
            fixed = [f + n * tt[j] for j, (f, _) in enumerate(first)]
            per_block = [w + n * tau[j] for j, (_, w) in enumerate(first)]
        else:
            fixed = [rtt[j] + pre + n * tt[j] for j in range(len(tt))]
            per_block = [slope[j] * l_in + base[j] + n * tau[j] for j in range(len(tt))]
        return fixed, per_block

    def route_costs(self, request: Request) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """:meth:`hop_costs` of the new hops of ``request``'s next route: over (l_in, l_out) for a fresh
        request, over (history_tokens, tokens left) with the replay's floor for a recovery -- the costs by
        which :meth:`segment_times` times those hops (up to a constant per request: the initial delay, or
        the kept hops' token time per token left). Kept per (client, l_in, l_out, recovery): one decision
        asks for them several times (its decider, then every candidate rule of the env)."""
        l_in, l_out = remaining_lengths(request)
        key = (request.client, l_in, l_out, request.is_recovery)
        costs = self._route_costs.get(key)
        if costs is None:
            if len(self._route_costs) >= self.MAX_ROUTE_COSTS:
                self._route_costs.clear()
            fixed, per_block = self.hop_costs(request.client, l_in, l_out, replay=request.is_recovery)
            costs = self._route_costs[key] = (tuple(fixed), tuple(per_block))
        return costs

    def replay_step(self, server: int, client: int, tokens: int) -> tuple[float, float]:
        """(overhead, work per block) in seconds of a recovery's first step on a new hop of ``server``: a
        prefill over the ``tokens`` replayed, but never less than the decode step whose token it produces
        (under the paper's overheads a prefill over fewer than ~47 tokens, 67 ms + 0.7 ms per token, would
        cost less than the 100 ms decode step; a forward pass over more tokens never costs less)."""
        o = self._o
        overhead = self._rtt[client][server] + o.prefill_per_token_s * tokens + o.prefill_overhead_s
        work = self._pslope[server] * tokens + self._pbase[server]
        return max(overhead, self._t_token[client][server]), max(work, self._tau[server])

    def token_costs(self, client: int) -> tuple[list[float], list[float]]:
        """Per-server (fixed, per-block) cost of a hop in per-token decode time: (t_cj, tau_j)."""
        return list(self._t_token[client]), list(self._tau)

    # per chain -------------------------------------------------------------------------------------
    def prefill_time(self, chain: Sequence[Hop], client: int, l_in: int) -> float:
        """sum over hops of tI_cj(l_in) + k_j tauI_j(l_in) (no initial delay)."""
        o = self._o
        pre = o.prefill_per_token_s * l_in + o.prefill_overhead_s
        rtt = self._rtt[client]
        return sum(
            rtt[h.server] + pre + (h.end - h.start) * (self._pslope[h.server] * l_in + self._pbase[h.server])
            for h in chain
        )

    def token_time(self, chain: Sequence[Hop], client: int) -> float:
        """Per-token decode time: sum over hops of t_cj + k_j tau_j."""
        tt = self._t_token[client]
        return sum(tt[h.server] + (h.end - h.start) * self._tau[h.server] for h in chain)

    def segment_times(
        self, request: Request, hops: Sequence[Hop], allocation_delay_s: float = 0.0
    ) -> tuple[float, float, float]:
        """(first, token, duration) of ``request`` started now on its kept hops + ``hops``, in seconds.

        The one timing rule of a (re)started request; the simulator, the environments and the deciders
        all use it. A fresh request: ``first`` = ``allocation_delay_s`` (the decider's, spent before its
        first token while it holds its cache) + initial delay + prefill of l_in over the whole chain.
        A recovery (``request.kept`` hops kept upstream, ``hops`` from ``route_from`` to L): the
        interrupted token is redone -- its step through the kept hops, then a prefill of the replayed
        ``history_tokens`` on the new hops, whose last position IS that token's step (as in PETALS'
        InferenceSession.step), each hop's never cheaper than its decode step (:meth:`replay_step`).
        ``token`` = decode time over the whole chain; ``duration`` = first + (tokens left - 1) x token,
        the time from the start to the last token.
        """
        kept = request.kept
        client = request.client
        token = (
            self.token_time(kept, client) + self.token_time(hops, client)
            if kept
            else self.token_time(hops, client)
        )
        if request.is_recovery:
            first = self.token_time(kept, client) if kept else 0.0
            for h in hops:
                overhead, work = self.replay_step(h.server, client, request.history_tokens)
                first += overhead + (h.end - h.start) * work
        else:
            first = allocation_delay_s + self.initial_delay + self.prefill_time(hops, client, request.l_in)
        return first, token, first + (request.l_out - request.tokens_done - 1) * token

    def segment_steps(
        self, request: Request, hops: Sequence[Hop], allocation_delay_s: float = 0.0
    ) -> tuple[float, list[tuple[int, int, float, float, float, float, bool]]]:
        """The per-hop steps behind :meth:`segment_times`, for the contention engine (seconds).

        Returns (delay before the first step, one row per hop of the kept hops + ``hops``): (server,
        blocks, first-step overhead, first-step work per block, decode overhead, decode work per block,
        whether the first step is a prefill). The first step is a prefill (overhead tI_cj(n), work
        tauI_j(n) per block, n = l_in; for a recovery n = the replayed history, floored by the decode
        step: :meth:`replay_step`) on new hops and a decode step (t_cj, tau_j) on kept hops. Summed with
        no queueing -- delay + sum(first overhead + blocks x first work) + (tokens left - 1) x
        sum(decode overhead + blocks x decode work) -- this is the ``duration`` of :meth:`segment_times`."""
        client = request.client
        rtt, tt, tau = self._rtt[client], self._t_token[client], self._tau
        if request.is_recovery:
            delay, prompt = 0.0, request.history_tokens
        else:
            delay, prompt = allocation_delay_s + self.initial_delay, request.l_in
        o = self._o
        pre = o.prefill_per_token_s * prompt + o.prefill_overhead_s
        steps = [
            (h.server, h.end - h.start, tt[h.server], tau[h.server], tt[h.server], tau[h.server], False)
            for h in request.kept
        ]
        for h in hops:
            j = h.server
            if request.is_recovery:
                overhead, work = self.replay_step(j, client, prompt)
            else:
                overhead, work = rtt[j] + pre, self._pslope[j] * prompt + self._pbase[j]
            steps.append((j, h.end - h.start, overhead, work, tt[j], tau[j], True))
        return delay, steps

    def request_time(self, chain: Sequence[Hop], client: int, l_in: int, l_out: int) -> float:
        """T_c(p) = D0 + prefill + (l_out - 1) x per-token time, seconds."""
        return (
            self.initial_delay
            + self.prefill_time(chain, client, l_in)
            + (l_out - 1) * self.token_time(chain, client)
        )

    def amortised_block_time(self, server: int, num_blocks: int) -> float:
        """CG-BPRR's t~_j = tau_j + t*_j / m_j with t*_j = max_c t_cj (seconds per block per token)."""
        t_star = float(self.t_token[:, server].max())
        return self._tau[server] + t_star / num_blocks


def remaining_lengths(request: Request) -> tuple[int, int]:
    """(prompt tokens to prefill, tokens still to produce) of ``request``'s next route: (l_in, l_out) for
    a fresh request; (history_tokens, l_out - tokens_done) for a recovery (whose new hops
    :meth:`TimeModel.route_costs` prices)."""
    if request.is_recovery:
        return request.history_tokens, request.l_out - request.tokens_done
    return request.l_in, request.l_out


def route_key(request: Request) -> tuple[int, int, int, bool, int]:
    """(client, tokens to prefill, tokens left, is a recovery, first block to route from): everything of
    ``request`` that its next route's costs (:meth:`TimeModel.route_costs`) and start depend on -- the key
    of a cache of routes under one placement."""
    l_in, l_out = remaining_lengths(request)
    return request.client, l_in, l_out, request.is_recovery, request.route_from


# --------------------------------------------------------------------------------------------------
# Chains
# --------------------------------------------------------------------------------------------------
def chain_errors(
    chain: Sequence[Hop], spans: dict[int, tuple[int, int]], num_blocks: int, start: int = 0
) -> str | None:
    """Why ``chain`` is infeasible for the placement ``spans`` ({server: (start, end)}), or None.

    A feasible chain starts at block ``start``, each hop starts where the previous ended, every server
    hosts the block its hop starts at and processes up to the end of its span, and the last hop ends at L.
    """
    if not chain:
        return "the chain is empty"
    pos = start
    seen = set()
    for i, hop in enumerate(chain):
        if not isinstance(hop, tuple) or len(hop) != 3:
            return f"hop {i} is {hop!r}, expected (server, start, end)"
        server, b, e = hop
        if server in seen:
            return f"hop {i}: server {server} appears twice"
        seen.add(server)
        if server not in spans:
            return f"hop {i}: server {server} hosts no blocks (offline, loading, draining or unknown)"
        a, end = spans[server]
        if b != pos:
            return f"hop {i}: starts at block {b}, expected {pos} (where the previous hop ended)"
        if not a <= b < end:
            return f"hop {i}: server {server} hosts blocks [{a}, {end}), not block {b}"
        if e != end:
            return f"hop {i}: ends at {e}, but server {server} processes up to the end of its span {end}"
        pos = e
    if pos != num_blocks:
        return f"the chain ends at block {pos}, not at the last block {num_blocks}"
    return None


def shortest_chain(
    spans: Sequence[tuple[int, int, int]],
    fixed: Sequence[float],
    per_block: Sequence[float],
    num_blocks: int,
    start: int = 0,
    wait: Callable[[int, int], float] | None = None,
) -> tuple[float, Chain]:
    """Cheapest chain from block ``start`` to L for a placement, by dynamic programming over positions.

    ``spans`` lists the usable servers as (server, first block, end). A hop entering server j at position b
    costs ``fixed[j] + per_block[j] * (end_j - b)`` plus ``wait(j, end_j - b)`` if given (e.g. the time
    until j has cache for that many blocks; ``inf`` forbids the hop). Only positions reachable as a
    server's end (or ``start``) can be entered, and each server scans only the reached positions inside
    its span (positions are reached in increasing order, so one bisection finds them): O(|spans|
    log |spans| + the entries scanned). Ties go to the chain found first (servers in ``spans`` order,
    then fewer hops). Returns (cost, chain); (inf, ()) if no chain exists.
    """
    inf = math.inf
    size = (num_blocks if num_blocks > start else start) + 1
    best = [inf] * size  # cheapest cost of reaching each position (inf: not reached)
    back: list[tuple[int, int]] = [(-1, -1)] * size
    best[start] = 0.0
    reached = [start]  # the reached positions, ascending; all <= the end of the span being visited
    for j, a, e in sorted(spans, key=_span_end):
        if e <= start or e >= size:  # a hop only moves forward: past L, nothing leads back to L
            continue
        f, w = fixed[j], per_block[j]
        cand, arg = best[e], -1  # only an entry cheaper than e's best so far matters
        lo = bisect_left(reached, a) if a > start else 0
        for b in reached[lo:] if reached[-1] < e else reached[lo:-1]:  # the reached b in [a, e)
            c = best[b] + f + w * (e - b)
            if wait is not None and c < cand:
                c += wait(j, e - b)
            if c < cand:
                cand, arg = c, b
        if arg >= 0:
            if best[e] == inf:
                reached.append(e)
            best[e] = cand
            back[e] = (j, arg)
    total = best[num_blocks]
    if total == inf:
        return inf, ()
    hops = []
    pos = num_blocks
    while pos != start:
        j, b = back[pos]
        hops.append(Hop(j, b, pos))
        pos = b
    return total, tuple(reversed(hops))


_span_end = itemgetter(2)  # sort key of (server, first block, end)


def theorem2_bound(
    per_block_times: Sequence[float], num_blocks: Sequence[int], total_blocks: int, taus: Sequence[float]
) -> float:
    """Theorem 2's bound on CG-BPRR's average per-token time (s).

    With servers sorted by increasing amortised time t~_j and K the fewest of the fastest servers whose
    block counts sum to >= L: bound = sum_{j<=K} t~_j m_j - tau_K (sum_{j<=K} m_j - L).
    Arguments are per server: t~_j, m_j, tau_j (any order). Returns inf if all servers cannot cover L.
    """
    order = sorted(range(len(per_block_times)), key=lambda j: per_block_times[j])
    total = 0.0
    covered = 0
    for j in order:
        total += per_block_times[j] * num_blocks[j]
        covered += num_blocks[j]
        if covered >= total_blocks:
            return total - taus[j] * (covered - total_blocks)
    return math.inf
