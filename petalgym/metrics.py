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
