"""Per-request records and aggregate metrics of a simulated episode (the paper's metrics, section 2)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from petalgym.swarm import Request, RequestStatus


def request_record(r: Request) -> dict[str, Any]:
    """A flat dict describing one request's outcome (the per-request CSV row)."""
    done = r.status == RequestStatus.COMPLETED
    return {
        "id": r.id,
        "client": r.client,
        "l_in": r.l_in,
        "l_out": r.l_out,
        "arrival_s": r.arrival,
        "status": r.status.name.lower(),
        "start_s": r.start,
        "first_token_s": r.first_token,
        "finish_s": r.finish,
        "ttft_s": r.ttft if done else math.nan,
        "per_token_s": r.per_token if done else math.nan,
        "later_token_s": r.later_token if done else math.nan,
        "response_s": r.latency if done else math.nan,
        "wait_s": r.wait_s,
        "recoveries": r.recoveries,
        "attempts": r.attempts,
        "failure_reason": r.failure_reason,
        "first_chain": ">".join(f"{h.server}[{h.start}:{h.end}]" for h in r.first_chain),
    }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def summarise(requests: Sequence[Request], warmup_s: float = 0.0) -> dict[str, float]:
    """Aggregate metrics over ``requests``: counts, and means over completed requests (``per_token_s``
    the paper's metric; ``response_s`` = finish - arrival, the successor's mean response time).

    Args:
        requests: the episode's requests.
        warmup_s: requests that arrive before this time (s) are left out of every metric (the swarm is
            still filling up); their number is reported as ``warmup_excluded`` when there are any.
    """
    excluded = 0
    if warmup_s > 0.0:
        kept = [r for r in requests if r.arrival >= warmup_s]
        excluded = len(requests) - len(kept)
        requests = kept
    done = [r for r in requests if r.status == RequestStatus.COMPLETED]
    failed = [r for r in requests if r.status == RequestStatus.FAILED]
    per_token = [r.per_token for r in done]
    later = [r.later_token for r in done if r.l_out > 1]
    response = [r.latency for r in done]
    out: dict[str, float] = {
        "arrived": float(len(requests)),
        "completed": float(len(done)),
        "failed": float(len(failed)),
        "in_flight": float(len(requests) - len(done) - len(failed)),
        "per_token_s": _mean(per_token),
        "per_token_p95_s": float(np.percentile(per_token, 95)) if per_token else math.nan,
        "ttft_s": _mean([r.ttft for r in done]),
        "later_token_s": _mean(later),
        "response_s": _mean(response),
        "response_p95_s": float(np.percentile(response, 95)) if response else math.nan,
        "wait_s": _mean([r.wait_s for r in done]),
        "waited_share": _mean([float(r.wait_s > 1e-9) for r in done]),
        "recoveries": float(sum(r.recoveries for r in requests)),
    }
    if excluded:
        out["warmup_excluded"] = float(excluded)
    for reason, n in sorted(Counter(r.failure_reason for r in failed).items()):
        out[f"failed_{reason}"] = float(n)
    return out


#: Reward definitions of the environments (:class:`EpisodeCost`).
REWARDS = ("completion", "holding")


class EpisodeCost:
    """The running cost of an episode's requests, charged as the episode goes (the environments' reward
    is minus its increments).

    ``"completion"``: a request costs its per-token time (s) when it completes, ``failure_penalty`` when it
    fails. ``"holding"``: every request in the system costs 1 / l_out per second it has been there (its
    per-token time accrues while it waits and runs); when it fails, what it accrued is refunded and the
    penalty charged. Both give the same total over a finished episode (sum of per-token times +
    penalty x failures); ``"holding"`` pays it as it accrues, so under load the reward is dense.

    Args:
        mode: one of :data:`REWARDS`.
        failure_penalty: cost of a failed request (seconds per token equivalent).
    """

    def __init__(self, mode: str = "completion", failure_penalty: float = 50.0):
        if mode not in REWARDS:
            raise ValueError(f"unknown reward {mode!r} (known: {', '.join(REWARDS)})")
        self.mode = mode
        self.failure_penalty = float(failure_penalty)
        self.reset()

    def reset(self) -> None:
        """A new episode: nothing arrived, nothing charged."""
        self._arrived = 0  # requests seen arriving
        self._finished = 0  # requests seen finishing
        self._in_system = 0
        self._rate = 0.0  # sum of 1 / l_out over requests in the system
        self._offset = 0.0  # sum of arrival / l_out over requests in the system
        self._settled = 0.0  # cost of the finished requests
        self._charged = 0.0  # cost charged so far

    @property
    def total(self) -> float:
        """Cost charged so far."""
        return self._charged

    def advance(
        self, requests: Sequence[Request], finished: Sequence[Request], now: float
    ) -> tuple[float, tuple[float, ...], int]:
        """Charge what accrued up to ``now`` (s), given the episode's requests so far (in arrival order) and
        its finished ones (in finishing order; both only grow). Returns (cost since the last call, the
        per-token times of the requests completed since, how many failed since)."""
        new = finished[self._finished :]
        self._finished = len(finished)
        per_token = tuple(r.per_token for r in new if r.status == RequestStatus.COMPLETED)
        failed = len(new) - len(per_token)
        if self.mode == "completion":
            cost = math.fsum(per_token) + self.failure_penalty * failed
            self._charged += cost
            return cost, per_token, failed
        for r in requests[self._arrived :]:
            self._rate += 1.0 / r.l_out
            self._offset += r.arrival / r.l_out
        self._in_system += len(requests) - self._arrived
        self._arrived = len(requests)
        for r in new:
            self._rate -= 1.0 / r.l_out
            self._offset -= r.arrival / r.l_out
        self._in_system -= len(new)
        if self._in_system == 0:  # no rounding residue once the system is empty
            self._rate = self._offset = 0.0
        self._settled += math.fsum(per_token) + self.failure_penalty * failed
        total = self._settled + now * self._rate - self._offset
        cost = total - self._charged
        self._charged = total
        return cost, per_token, failed
