"""Queueing bounds for parallel chains served from one central FIFO queue (peers.md section 1.5).

A composed chain k holds up to c_k concurrent jobs, each served at rate mu_k = 1 / T_k (T_k: one job's
time on it, s). With Poisson arrivals at rate lambda and exponential job sizes, the number of jobs in a
system dispatched by JFFC (join the fastest free chain) lies between two birth-death chains (Theorem 4 of
arXiv 2604.14993): the lower bound serves the n jobs present on the fastest chains, the upper bound on
the slowest. Mean response time = E[N] / lambda (Little's law), in seconds.

Used by the GBP-CR design rule (choose the cache reservation c that minimises the lower bound) and
available to tasks as a bound on a composed system's mean response time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["chain_response_bounds", "death_rates"]


def death_rates(rates: Sequence[float], capacities: Sequence[int], fastest_first: bool) -> np.ndarray:
    """Service rate with n = 1..C jobs present (C = sum of capacities), in jobs/s: the n jobs fill the
    chains fastest first (``fastest_first``) or slowest first, each chain up to its capacity.

    Args:
        rates: mu_k of each chain (jobs/s per concurrent job).
        capacities: c_k of each chain (concurrent jobs, >= 1).
        fastest_first: fill the fastest chains first (the lower bound's rates) or the slowest.
    """
    order = sorted(range(len(rates)), key=lambda k: -rates[k])
    if not fastest_first:
        order.reverse()
    per_job = np.repeat([float(rates[k]) for k in order], [int(capacities[k]) for k in order])
    return np.cumsum(per_job)


def _mean_in_system(arrival_rate: float, deaths: np.ndarray, rho: float) -> float:
    """E[N] of the birth-death chain with birth rate lambda, death rates ``deaths`` up to C and
    C-th death rate beyond (geometric tail of ratio rho)."""
    capacity = len(deaths)
    # log of prod_{i<=n} lambda / d_i for n = 0..C, scaled by the largest term (no overflow)
    logs = np.concatenate(([0.0], np.cumsum(math.log(arrival_rate) - np.log(deaths))))
    weights = np.exp(logs - logs.max())
    head = weights[:capacity]
    tail = weights[capacity]
    n = np.arange(capacity)
    norm = head.sum() + tail / (1.0 - rho)
    mean = (n * head).sum() + tail * (capacity / (1.0 - rho) + rho / (1.0 - rho) ** 2)
    return float(mean / norm)


def chain_response_bounds(
    rates: Sequence[float], capacities: Sequence[int], arrival_rate: float
) -> tuple[float, float]:
    """(lower, upper) bound on the mean response time (s) of JFFC over chains with ``rates`` mu_k (1/s)
    and ``capacities`` c_k at Poisson ``arrival_rate`` lambda (1/s); (inf, inf) if lambda >= sum c_k mu_k
    (unstable). E.g. one chain, c = 1, mu = 1, lambda = 0.5 gives (2.0, 2.0), the M/M/1 value.

    Args:
        rates: mu_k = 1 / T_k of each chain (1/s).
        capacities: c_k of each chain (concurrent jobs, >= 1).
        arrival_rate: lambda (requests/s, > 0).
    """
    if len(rates) != len(capacities) or not rates:
        raise ValueError("chain_response_bounds: rates and capacities must be non-empty and equally long")
    if arrival_rate <= 0 or any(r <= 0 for r in rates) or any(int(c) < 1 for c in capacities):
        raise ValueError("chain_response_bounds: arrival rate and rates must be > 0, capacities >= 1")
    total = sum(float(r) * int(c) for r, c in zip(rates, capacities, strict=True))
    if arrival_rate >= total:
        return math.inf, math.inf
    rho = arrival_rate / total
    lower = _mean_in_system(arrival_rate, death_rates(rates, capacities, True), rho) / arrival_rate
    upper = _mean_in_system(arrival_rate, death_rates(rates, capacities, False), rho) / arrival_rate
    return lower, upper
