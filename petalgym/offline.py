"""The offline problem BPRR (docs/model.md): place blocks and route a known set of requests.

Given servers, clients and |R| requests (``requests[c]`` from client c, all with the same l_in, l_out),
choose (a_j, m_j) for every server and one feasible chain per request minimising

    sum_r l_out * sum_{hops (j, k_j) of r's chain} (t_{c_r j} + tau_j k_j)

subject to memory: s_m m_j + s_c sum_r k_j^r <= M_j. CG-BPRR, the MILP and exhaustive enumeration all
solve this same :class:`OfflineInstance` and return an :class:`OfflineSolution` that :func:`evaluate`
checks independently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from petalgym.perfmodel import Chain, Placement, TimeModel, chain_errors
from petalgym.scenario import Scenario


@dataclass(frozen=True, eq=False)
class OfflineInstance:
    """One BPRR instance. Shapes: ``memory``, ``max_blocks``, ``tau``: (S,); ``t``: (C, S);
    ``requests``: (C,). Units: bytes and seconds (per token)."""

    num_blocks: int
    block_bytes: int
    session_bytes: int
    memory: np.ndarray
    max_blocks: np.ndarray
    t: np.ndarray
    tau: np.ndarray
    requests: np.ndarray
    l_in: int = 20
    l_out: int = 128
    names: tuple[str, ...] = ()

    @property
    def num_servers(self) -> int:
        return len(self.memory)

    @property
    def num_clients(self) -> int:
        return len(self.requests)

    @property
    def num_requests(self) -> int:
        return int(self.requests.sum())

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        requests: int | Sequence[int],
        l_in: int | None = None,
        l_out: int | None = None,
    ) -> OfflineInstance:
        """The instance for ``scenario``'s servers and clients with ``requests`` requests in total (split
        over clients by weight, largest remainders first) or per client. Lengths default to the
        workload's means (:meth:`~petalgym.scenario.Workload.mean_lengths`)."""
        mean_in, mean_out = scenario.workload.mean_lengths()
        l_in = mean_in if l_in is None else int(l_in)
        l_out = mean_out if l_out is None else int(l_out)
        n_c = scenario.num_clients
        if isinstance(requests, (int, np.integer)):
            weights = np.array([c.weight for c in scenario.clients], dtype=float)
            share = weights / weights.sum() * int(requests)
            per = np.floor(share).astype(int)
            for i in np.argsort(-(share - per), kind="stable")[: int(requests) - per.sum()]:
                per[i] += 1
        else:
            per = np.asarray(list(requests), dtype=int)
            if per.shape != (n_c,):
                raise ValueError(f"requests: expected {n_c} counts (one per client), got {list(requests)}")
        if np.any(per < 0) or per.sum() < 1:
            raise ValueError(f"requests: need at least one request and no negative count, got {per.tolist()}")
        model = scenario.model
        tm = TimeModel(scenario)
        caps = [min(s.profile.max_blocks or model.num_blocks, model.num_blocks) for s in scenario.servers]
        return cls(
            num_blocks=model.num_blocks,
            block_bytes=model.block_bytes,
            session_bytes=model.session_bytes(l_in, l_out),
            memory=np.array([s.profile.memory_bytes for s in scenario.servers], dtype=np.int64),
            max_blocks=np.array(caps, dtype=np.int64),
            t=tm.t_token.copy(),
            tau=tm.tau.copy(),
            requests=per,
            l_in=l_in,
            l_out=l_out,
            names=tuple(s.name for s in scenario.servers),
        )

    def chain_cost(self, client: int, chain: Sequence[tuple[int, int, int]]) -> float:
        """Per-token time of ``chain`` for ``client``: sum over hops of t_cj + tau_j k_j (s)."""
        return float(sum(self.t[client, j] + self.tau[j] * (e - b) for j, b, e in chain))


@dataclass
class OfflineSolution:
    """A solution of an :class:`OfflineInstance`.

    ``placement[j]`` is server j's Placement (cache_bytes None: all memory left). ``routes[c]`` lists
    (chain, number of client c's requests on it). ``objective`` = sum_r l_out x per-token time (s);
    ``bound`` a proven lower bound if the method has one; ``gap`` = (objective - bound) / objective.
    """

    method: str
    placement: list[Placement]
    routes: dict[int, list[tuple[Chain, int]]]
    objective: float
    bound: float | None = None
    gap: float | None = None
    status: str = "feasible"
    solve_time_s: float = 0.0
    info: dict[str, object] = field(default_factory=dict)

    def mean_per_token(self, instance: OfflineInstance) -> float:
        """Average per-token time over the requests (s): objective / (l_out |R|)."""
        return self.objective / (instance.l_out * instance.num_requests)


def evaluate(
    instance: OfflineInstance,
    placement: Sequence[Placement],
    routes: Mapping[int, Sequence[tuple[Chain, int]]],
) -> float:
    """Check a solution and return its objective; raise ValueError naming the first violation.

    Checks: every server's span lies in 0..L and within its block cap; every request of every client
    is routed on a feasible chain; memory s_m m_j + s_c sum_r k_j^r <= M_j on every server.
    """
    inst = instance
    if len(placement) != inst.num_servers:
        raise ValueError(f"placement: expected {inst.num_servers} entries, got {len(placement)}")
    spans = {}
    for j, p in enumerate(placement):
        if p.num_blocks < 1 or p.start < 0 or p.start + p.num_blocks > inst.num_blocks:
            raise ValueError(
                f"server {j}: span [{p.start}, {p.start + p.num_blocks}) outside 0..{inst.num_blocks}"
            )
        if p.num_blocks > inst.max_blocks[j]:
            raise ValueError(f"server {j}: {p.num_blocks} blocks exceed its cap {inst.max_blocks[j]}")
        spans[j] = (p.start, p.start + p.num_blocks)
    slots = np.zeros(inst.num_servers, dtype=np.int64)
    objective = 0.0
    for c in range(inst.num_clients):
        total = 0
        for chain, count in routes.get(c, []):
            err = chain_errors(tuple(chain), spans, inst.num_blocks)
            if err is not None:
                raise ValueError(f"client {c}: infeasible chain {list(chain)}: {err}")
            if count < 0:
                raise ValueError(f"client {c}: negative request count {count}")
            total += count
            for j, b, e in chain:
                slots[j] += count * (e - b)
            objective += count * inst.l_out * inst.chain_cost(c, chain)
        if total != inst.requests[c]:
            raise ValueError(f"client {c}: {total} requests routed, expected {inst.requests[c]}")
    for j, p in enumerate(placement):
        used = inst.block_bytes * p.num_blocks + inst.session_bytes * slots[j]
        if used > inst.memory[j]:
            raise ValueError(
                f"server {j}: memory {used / 1e9:.4g} GB > {inst.memory[j] / 1e9:.4g} GB "
                f"({p.num_blocks} blocks, {slots[j]} block-sessions)"
            )
    return objective


def lower_bound_gap(objective: float, bound: float | None) -> float | None:
    """Relative gap (objective - bound) / objective, or None without a bound."""
    if bound is None or not math.isfinite(bound) or objective <= 0:
        return None
    return max(objective - bound, 0.0) / objective
