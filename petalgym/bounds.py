"""Lower bounds on a scenario's metrics that hold for every decider (bench-design.md: a task's headroom
is measured against them).

**Alone on the best chains.** Whatever the placement and routing, a request's first token takes at least
the initial delay D0 plus the prefill of its prompt over the fastest chain any placement could offer it,
and each later token at least one decode step over the fastest chain for decoding: a chain is a set of
distinct servers, each hosting k_j >= 1 of the L blocks it processes (at most as many as its memory holds
beside one session's cache of this request, and its GPU's cap), sum k_j = L, costing sum_j (fixed_j +
per_block_j k_j) with petalgym's hop costs (:meth:`~petalgym.perfmodel.TimeModel.hop_costs` for the
prefill, :meth:`~petalgym.perfmodel.TimeModel.token_costs` for a decode step, the client's RTTs
included). Hub-and-spoke timing does not depend on the order of the hops, so each minimum is a knapsack
over servers, solved exactly by dynamic programming over the number of blocks covered. Waiting,
contention, churn and interrupted steps only add time: a session interrupted before its first token
starts afresh, and a recovery's replay step never costs less than the decode step whose token it
produces (:meth:`~petalgym.perfmodel.TimeModel.replay_step`). The two chains are separate because a
recovered request may finish on another chain than it started on; where the fastest prefill chain also
decodes fastest (every v0 task but ZoneShocks) the bound is the time alone on one chain. The mean over an
episode's requests of this time (over l_out: per-token) bounds the mean of every decider that completes
them all.

**Memory capacity** (bench-design.md, bound 2). A running session holds exactly L s_c bytes of attention
cache over its chain (every block is processed once), from its admission to its last token, so at least
T_r (its alone time) seconds; the swarm's cache memory is at most B = sum_j M_j - s_m L at any moment a
session runs (every block is placed at least once), whatever the placement and churn. Give every
request r a job of volume V_r = L s_c,r T_r byte-seconds on one machine of rate B bytes, released at its
arrival. Any policy's schedule is then a (fractional) schedule of that machine in which r's first V_r
of volume is done in [S_r, S_r + T_r], with mean busy time M_r = S_r + T_r / 2 <= C_r - T_r / 2 (C_r its
finish). Goemans' mean-busy-time relaxation: the preemptive WSPT schedule (at every moment the released
job of largest w_r / p_r, p_r = V_r / B) minimises sum_r w_r M_r over all such schedules, so
sum_r w_r (C_r - a_r) >= sum_r w_r (M_r^WSPT + T_r / 2 - a_r), with w_r = 1 / l_out (per-token) or 1
(response). It grows with load and session length and binds where the swarm's memory holds few
sessions at once (clustered-9 with 2,048-token outputs: 1.36 vs 0.63 s per token alone); on the v0
tasks it stays near half the alone bound (memory is ample in total there). The task's bound is the
larger one.
Both bound the mean over the requests that count (arrivals after the warm-up; the others are dropped
from the relaxation, which can only lower its optimum) of an episode that completes every request.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from petalgym.perfmodel import TimeModel
from petalgym.scenario import Scenario, max_blocks_on

__all__ = [
    "AloneBound",
    "EpisodeBound",
    "alone_bound",
    "best_chain_time",
    "capacity_bound",
    "episode_bound",
    "wspt_mean_busy_times",
]


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
        # new[t] = min(best[t], min over 1 <= k <= cap of best[t - k] + f + p k): one sliding window
        padded = np.concatenate([np.full(cap, np.inf), best])
        windows = np.lib.stride_tricks.sliding_window_view(padded, cap + 1)  # [t, i] = best[t + i - cap]
        cost = np.append(f + p * np.arange(cap, 0, -1, dtype=float), 0.0)  # k = cap - i blocks here
        best = (windows + cost).min(axis=1)
    return float(best[L])


@dataclass(frozen=True)
class AloneBound:
    """Per request of one episode: ``time_s`` the alone-on-the-best-chains lower bound of its completion
    time (s), ``l_in``, ``l_out``, ``arrival_s``; the episode's bounds on the mean ``per_token_s`` and mean
    ``response_s`` over the requests that count (arrivals after the warm-up)."""

    time_s: np.ndarray
    l_in: np.ndarray
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
    """The alone-on-the-best-chains bound (module docstring) for the requests of ``scenario``'s episode
    ``seed`` (the same arrivals the simulator draws for that seed). Deciders' allocation delays are not
    counted (they only add time)."""
    from petalgym.simulator import Simulator  # (the episode's arrivals, drawn as the simulator does)

    arrivals = Simulator(scenario, seed).arrivals()
    tm = scenario.memo("TimeModel", lambda: TimeModel(scenario))
    L = scenario.num_blocks
    memo: dict[tuple[int, int, int], float] = {}
    times = np.empty(len(arrivals))
    for i, (_, l_in, l_out, client) in enumerate(arrivals):
        key = (client, l_in, l_out)
        if key not in memo:
            caps = [max_blocks_on(scenario, s, l_in + l_out) for s in scenario.servers]
            prefill = best_chain_time(*tm.hop_costs(client, l_in, 1), caps, L)
            step = best_chain_time(*tm.token_costs(client), caps, L) if l_out > 1 else 0.0
            memo[key] = tm.initial_delay + prefill + (l_out - 1) * step
        times[i] = memo[key]
    return AloneBound(
        times,
        np.array([a[1] for a in arrivals], dtype=int),
        np.array([a[2] for a in arrivals], dtype=float),
        np.array([a[0] for a in arrivals], dtype=float),
        scenario.workload.warmup_s,
    )


def wspt_mean_busy_times(
    release: Sequence[float], processing: Sequence[float], weight: Sequence[float]
) -> np.ndarray:
    """Mean busy time (s) of every job in the preemptive WSPT schedule of one machine: at every moment the
    released, unfinished job of largest ``weight / processing`` runs (ties: earlier release, then index).
    Goemans (1996): this schedule minimises sum_j weight_j x mean busy time_j over all preemptive schedules
    with these release dates.

    Args:
        release: release time of each job (s).
        processing: processing time of each job on the machine (s, > 0).
        weight: weight of each job (> 0).
    """
    n = len(release)
    order = sorted(range(n), key=lambda i: (release[i], i))
    left = [float(p) for p in processing]
    moment = np.zeros(n)  # integral of t over the job's processing, s^2
    ready: list[tuple[float, float, int]] = []
    t = 0.0
    k = 0
    while k < n or ready:
        if not ready:
            t = max(t, float(release[order[k]]))
        while k < n and release[order[k]] <= t:
            i = order[k]
            heapq.heappush(ready, (-weight[i] / processing[i], float(release[i]), i))
            k += 1
        _, _, i = ready[0]
        until = t + left[i]
        if k < n and release[order[k]] < until:  # the next release pre-empts it (or joins the queue)
            nxt = float(release[order[k]])
            moment[i] += (nxt * nxt - t * t) / 2.0
            left[i] -= nxt - t
            t = nxt
        else:  # it finishes
            moment[i] += (until * until - t * t) / 2.0
            left[i] = 0.0
            t = until
            heapq.heappop(ready)
    return moment / np.asarray(processing, dtype=float)


def capacity_bound(scenario: Scenario, seed: int, alone: AloneBound | None = None) -> dict[str, float]:
    """The memory-capacity bound (module docstring) of episode ``seed``: ``{"per_token_s", "response_s"}``,
    lower bounds on the means over the counted requests (s). ``alone``: the episode's alone bound, if
    already computed (its times T_r are the sessions' shortest possible durations)."""
    alone = alone_bound(scenario, seed) if alone is None else alone
    model = scenario.model
    L = scenario.num_blocks
    budget = sum(s.profile.memory_bytes for s in scenario.servers) - model.block_bytes * L
    keep = alone.counted
    if not keep.any():
        return {"per_token_s": math.nan, "response_s": math.nan}
    times = alone.time_s[keep]
    release = alone.arrival_s[keep]
    lengths = zip(alone.l_in[keep].tolist(), alone.l_out[keep].astype(int).tolist(), strict=True)
    volume = np.array([L * model.session_bytes(l_in, l_out) for l_in, l_out in lengths], dtype=float)
    processing = volume * times / budget
    out = {}
    for metric, weight in (("per_token_s", 1.0 / alone.l_out[keep]), ("response_s", np.ones(len(times)))):
        busy = wspt_mean_busy_times(release, processing, weight)
        out[metric] = float(np.sum(weight * (busy + times / 2.0 - release)) / len(times))
    return out


@dataclass(frozen=True)
class EpisodeBound:
    """The lower bounds of one episode on ``metric``: ``alone``, ``capacity`` and ``value`` = the larger,
    with ``binding`` naming it (``"alone"`` or ``"capacity"``)."""

    metric: str
    alone: float
    capacity: float

    @property
    def value(self) -> float:
        return max(self.alone, self.capacity)

    @property
    def binding(self) -> str:
        return "capacity" if self.capacity > self.alone else "alone"


def episode_bound(scenario: Scenario, seed: int, metric: str = "per_token_s") -> EpisodeBound:
    """Every valid lower bound of episode ``seed`` on ``metric`` (``per_token_s`` or ``response_s``)."""
    if metric not in ("per_token_s", "response_s"):
        raise ValueError(f"no bound for metric {metric!r} (known: per_token_s, response_s)")
    alone = alone_bound(scenario, seed)
    return EpisodeBound(metric, getattr(alone, metric), capacity_bound(scenario, seed, alone)[metric])
