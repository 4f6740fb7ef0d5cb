"""Lower bounds on a scenario's metrics that hold for every decider (bench-design.md: a task's headroom
is measured against them).

**Alone on the best chain.** Whatever the placement and routing, a request takes at least the time it
would take alone on the fastest chain any placement could offer it: a set of distinct servers, each
hosting k_j >= 1 of the L blocks it processes (at most as many as its memory holds beside one session's
cache of this request, and its GPU's cap), sum k_j = L, costing D0 + sum_j (fixed_j + per_block_j k_j)
with petalgym's hop costs (:meth:`~petalgym.perfmodel.TimeModel.hop_costs`: prefill, decode and the
client's RTTs). Hub-and-spoke timing does not depend on the order of the hops, so the minimum is a
knapsack over servers, solved exactly by dynamic programming over the number of blocks covered.
Waiting, contention, churn and recoveries only add time, so the mean over an episode's requests of this
time (over l_out: per-token) bounds the mean of every decider that completes them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from petalgym.perfmodel import TimeModel
from petalgym.scenario import Scenario, max_blocks_on

__all__ = ["AloneBound", "alone_bound", "best_chain_time"]


def best_chain_time(
    fixed: Sequence[float], per_block: Sequence[float], caps: Sequence[int], num_blocks: int
) -> float:
    """min over sets of distinct servers and block counts 1 <= k_j <= caps[j] with sum k_j = L of
    sum_j (fixed[j] + per_block[j] k_j), in seconds; inf if the caps cannot cover L.

    Args:
        fixed: per-server cost of a hop, whatever its blocks (s).
        per_block: per-server cost of each block processed (s).
        caps: most blocks each server may process (0: unusable).
        num_blocks: L.
    """
    L = int(num_blocks)
    best = np.full(L + 1, np.inf)
    best[0] = 0.0
    for f, p, cap in zip(fixed, per_block, caps, strict=True):
        cap = min(int(cap), L)
        if cap < 1:
            continue
        new = best.copy()
        for k in range(1, cap + 1):  # this server processes k blocks on top of what the others cover
            np.minimum(new[k:], best[: L + 1 - k] + (f + p * k), out=new[k:])
        best = new
    return float(best[L])


@dataclass(frozen=True)
class AloneBound:
    """Per request of one episode: ``time_s`` the alone-on-the-best-chain lower bound of its completion
    time (s), ``l_out``, ``arrival_s``; the episode's bounds on the mean ``per_token_s`` and mean
    ``response_s`` over the requests that count (arrivals after the warm-up)."""

    time_s: np.ndarray
    l_out: np.ndarray
    arrival_s: np.ndarray
    warmup_s: float

    @property
    def counted(self) -> np.ndarray:
        return self.arrival_s >= self.warmup_s

    @property
    def per_token_s(self) -> float:
        """Lower bound on the mean per-token time (s) of an episode that completes every request."""
        keep = self.counted
        return float(np.mean(self.time_s[keep] / self.l_out[keep])) if keep.any() else float("nan")

    @property
    def response_s(self) -> float:
        """Lower bound on the mean response time (s) of an episode that completes every request."""
        keep = self.counted
        return float(np.mean(self.time_s[keep])) if keep.any() else float("nan")


def alone_bound(scenario: Scenario, seed: int) -> AloneBound:
    """The alone-on-the-best-chain bound for the requests of ``scenario``'s episode ``seed`` (the same
    arrivals the simulator draws for that seed). Deciders' allocation delays are not counted (they only
    add time)."""
    from petalgym.simulator import Simulator  # (the episode's arrivals, drawn as the simulator does)

    arrivals = Simulator(scenario, seed).arrivals()
    tm = scenario.memo("TimeModel", lambda: TimeModel(scenario))
    L = scenario.num_blocks
    memo: dict[tuple[int, int, int], float] = {}
    times = np.empty(len(arrivals))
    for i, (_, l_in, l_out, client) in enumerate(arrivals):
        key = (client, l_in, l_out)
        if key not in memo:
            fixed, per_block = tm.hop_costs(client, l_in, l_out)
            caps = [max_blocks_on(scenario, s, l_in + l_out) for s in scenario.servers]
            memo[key] = tm.initial_delay + best_chain_time(fixed, per_block, caps, L)
        times[i] = memo[key]
    return AloneBound(
        times,
        np.array([a[2] for a in arrivals], dtype=float),
        np.array([a[0] for a in arrivals], dtype=float),
        scenario.workload.warmup_s,
    )
