"""The methods as the paper's own simulator runs them: ``petals-paper`` and ``cg-bp-ws-rr-paper``.

The authors' public MATLAB simulator (TingyangSunJeff/LLM_inference_simulator, commit 3f78053;
``Petals_online.m``, ``WS_RR.m``, ``test_general_case_online.m``) differs from petalgym's ``petals`` --
which follows PETALS' own code -- and from ``cg-bp-ws-rr`` in how requests are routed and when they
start. These deciders replay those mechanisms on petalgym's simulator (facts restated from the authors'
code; none of it is copied):

* **when a request starts** (both): its path is fixed at arrival. For each server on it, the time until
  that server has the request's slots free, counting every request on it (running or waiting) as holding
  its slots until its completion, i.e. :meth:`~petalgym.swarm.SwarmView.wait_for`; the request starts at
  the largest of these, rounded up to the back-off schedule (the first of the retry times 1, 1+2,
  1+2+4, ... s, each wait capped at ``simulation.backoff_cap_s`` = 60 s, at or after it), as a reservation
  (:class:`~petalgym.deciders.Route` ``not_before``): a waiting request already holds its slots from its
  arrival for later ones, and never retries;
* **allocation delay** (both): ``allocation_delay_s`` seconds per request -- 250 s for PETALS and 60 s for
  the proposed method in the authors' clustered script, 350 s / 60 s in their large BellCanada run --
  spent before the first token while the request holds its cache (:attr:`Decider.allocation_delay_s`);
* ``petals-paper`` placement: PETALS' block count (MIG slices capped at 4 blocks: the profile's
  ``max_blocks``) and block choice as servers join in a random order, once (no rebalancing); its fixed
  cache budget;
* ``petals-paper`` routing (:func:`authors_petals_chain`): Dijkstra over the servers. Entering server j
  costs rtt/2 + 18 ms + tau_j x (blocks j processes), rtt being the client's raw RTT for the first hop and
  the **server-to-server** raw RTT (``network.server_rtt_s``) for the others; the last hop costs the
  client's rtt/2; + 10 s if j has no free session, i.e. floor(cache / (m_j s_c)) minus the requests on j
  is exactly 0 (not below: the authors test equality). tau is the decode time per block (not PETALS'
  1 / inference_rps);
* ``cg-bp-ws-rr-paper``: CG-BP's placement and WS-RR's chain (the authors' link costs: each hop's wait
  plus its time for the whole request), started as above.

The authors' offline 9 x 3 instance (``test_general_case.m``, the MILP case of the paper) is
:func:`authors_offline_instance`.

Where petalgym had to choose: ties between equally cheap paths go to the server of lower index (the
authors' ``Dijkstra_source`` is not in their repository); a recovery (the authors have no churn) routes
from its ``route_from`` block like a fresh request; with several clients each uses its own RTTs.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from petalgym.baselines.cg import CGBPWSRRDecider
from petalgym.baselines.petals import PetalsDecider
from petalgym.deciders import Route, check_allocation_delay
from petalgym.errors import DeciderError
from petalgym.offline import OfflineInstance
from petalgym.perfmodel import Chain, Hop
from petalgym.simulator import backoff_s
from petalgym.swarm import Request, SwarmView

__all__ = [
    "CGBPWSRRPaperDecider",
    "PetalsPaperDecider",
    "authors_offline_instance",
    "authors_petals_chain",
    "authors_start",
    "backoff_rounded_wait",
]


def backoff_rounded_wait(wait_s: float, cap_s: float) -> float:
    """The authors' waiting time for a raw wait: 0 if none, else the first cumulative back-off retry time
    (1, 1+2, 1+2+4, ... s, each wait capped at ``cap_s``) at or after ``wait_s``."""
    if wait_s <= 0.0:
        return 0.0
    if wait_s == math.inf:
        return math.inf
    total, retries = 0.0, 0
    while total < wait_s:
        retries += 1
        total += backoff_s(retries, cap_s)
    return total


def authors_start(view: SwarmView, request: Request, chain: Chain) -> float:
    """When the authors' simulator starts ``request`` on ``chain`` (absolute s): now + the largest wait of
    its hops (:meth:`~petalgym.swarm.SwarmView.wait_for`), rounded up to the back-off schedule."""
    kv = request.kv_bytes
    raw = max(view.wait_for(h.server, h.blocks * kv) for h in chain)
    return view.now + backoff_rounded_wait(raw, view.scenario.simulation.backoff_cap_s)


def authors_petals_chain(view: SwarmView, request: Request) -> Chain:
    """The chain the authors' PETALS emulation routes ``request`` on (see the module docstring); () if
    no chain exists. Needs the network's server-to-server RTTs."""
    sc = view.scenario
    between = sc.network.server_rtt_s
    if between is None:
        raise DeciderError(
            f"petals-paper: scenario {sc.name!r} has no server-to-server RTTs (a clusters or topology "
            "network, or network.server_rtt_ms for a matrix) and the authors' PETALS routing needs them"
        )
    pc = sc.petals
    L = view.num_blocks
    start = request.route_from
    rtt = view.time_model.rtt[request.client]
    kv = request.kv_bytes
    spans = view.spans()
    span = {j: (a, e) for j, a, e in spans}
    penalty = {}
    for j, a, e in spans:
        s = view.servers[j]
        capacity = s.cache_capacity // ((e - a) * kv)
        free = capacity - len(s.sessions) - len(s.reservations)
        penalty[j] = pc.lacking_cache_penalty_s if free == 0 else 0.0
    tau = {j: view.servers[j].spec.profile.tau_s for j, _, _ in spans}

    def entry(prev_rtt: float, j: int, entered_at: int) -> float:
        return prev_rtt / 2 + pc.hop_overhead_s + tau[j] * (span[j][1] - entered_at) + penalty[j]

    # Dijkstra over the servers (node = server), from the client; ties by lower server index
    dist: dict[int, float] = {}
    pred: dict[int, int] = {}
    heap: list[tuple[float, int]] = []
    for j, a, e in spans:
        if a <= start < e:
            d = entry(float(rtt[j]), j, start)
            if d < dist.get(j, math.inf):
                dist[j], pred[j] = d, -1
                heapq.heappush(heap, (d, j))
    done: set[int] = set()
    best_end, best_last = math.inf, -1
    while heap:
        d, i = heapq.heappop(heap)
        if i in done or d > dist[i]:
            continue
        done.add(i)
        end = span[i][1]
        if end == L:
            total = d + float(rtt[i]) / 2
            if total < best_end:
                best_end, best_last = total, i
            continue
        for j, a, e in spans:
            if j not in done and a <= end < e:
                nd = d + entry(float(between[i][j]), j, end)
                if nd < dist.get(j, math.inf):
                    dist[j], pred[j] = nd, i
                    heapq.heappush(heap, (nd, j))
    if best_last < 0:
        return ()
    hops = []
    j = best_last
    while j >= 0:
        i = pred[j]
        hops.append(Hop(j, start if i < 0 else span[i][1], span[j][1]))
        j = i
    return tuple(reversed(hops))


class PetalsPaperDecider(PetalsDecider):
    """The authors' emulation of PETALS (see the module docstring): PETALS' placement once, their
    server-graph Dijkstra, a start at the back-off-rounded wait, and their allocation delay.

    Args:
        allocation_delay_s: seconds per request before its first token, holding its cache (the authors'
            clustered script: 250).
    """

    name = "petals-paper"

    def __init__(self, allocation_delay_s: float = 250.0):
        super().__init__(rebalance=False, name="petals-paper")
        self.allocation_delay_s = check_allocation_delay(self.name, allocation_delay_s)
        self.pure_route = True

    def route(self, view: SwarmView, request: Request) -> Route | None:
        chain = authors_petals_chain(view, request)
        if not chain:
            return None
        return Route(chain, wait=True, not_before=authors_start(view, request, chain))

    def describe(self) -> str:
        return f"{self.name} (the authors' PETALS emulation, allocation delay {self.allocation_delay_s:g} s)"


class CGBPWSRRPaperDecider(CGBPWSRRDecider):
    """CG-BP + WS-RR as the authors' simulator runs it: WS-RR's chain, a start at the back-off-rounded
    wait, and their allocation delay (see the module docstring).

    Args:
        num_sessions: CG-BP's |R| (default: the design rule).
        sessions_factor: multiplies the design |R| (with ``num_sessions`` None).
        allocation_delay_s: seconds per request before its first token, holding its cache (the authors':
            60).
    """

    name = "cg-bp-ws-rr-paper"

    def __init__(
        self, num_sessions: int | None = None, sessions_factor: float = 1.0, allocation_delay_s: float = 60.0
    ):
        super().__init__(num_sessions, sessions_factor)
        self.allocation_delay_s = check_allocation_delay(self.name, allocation_delay_s)
        self.pure_route = True

    def route(self, view: SwarmView, request: Request) -> Route | None:
        answer = super().route(view, request)
        if answer is None:
            return None
        return Route(answer.chain, wait=True, not_before=authors_start(view, request, answer.chain))

    def describe(self) -> str:
        delay = self.allocation_delay_s
        return f"{super().describe()}, the authors' start rule, allocation delay {delay:g} s"


def authors_offline_instance(seed: int = 0, requests: int = 3) -> OfflineInstance:
    """The authors' offline BPRR instance (``test_general_case.m``): one client, ``requests`` requests of
    l_out = 100 tokens, 7 MIG slices and 2 A100s, BLOOM-176B (70 blocks).

    Per-token hop time t_cj = 25 ms overhead + a raw RTT drawn uniformly (``seed``: numpy's
    ``default_rng``; the authors' own draws sit in a .mat file) from 0-5 ms for the MIG slices (local)
    and 100-200 ms for the A100s (remote); tau = 15 ms (MIG) and 15 / 7 ms (A100) per block; memory 9.5 GB
    (MIG, no block cap) and 79.138427734375 GB (A100); s_m = 2.46643712e9 params x 4.25 bits x 1.01 and
    s_c = 2 x 14336 x 100 x 2 / 2^30 GB per block and session, as the script writes them (its GB = 1e9
    bytes here; s_c counts the output tokens only)."""
    rng = np.random.default_rng(seed)
    mig, a100 = 7, 2
    raw_ms = np.concatenate([rng.uniform(0.0, 5.0, mig), rng.uniform(100.0, 200.0, a100)])
    gb = 1e9
    return OfflineInstance(
        num_blocks=70,
        block_bytes=round(2.466437120 * 4.25 / 8 * 1.01 * gb),
        session_bytes=round(2 * 14336 * 100 * 2 / 2**30 * gb),
        memory=np.array([round(9.5 * gb)] * mig + [round(79.138427734375 * gb)] * a100, dtype=np.int64),
        max_blocks=np.full(mig + a100, 70, dtype=np.int64),
        t=((25.0 + raw_ms) / 1e3)[None, :],
        tau=np.array([0.015] * mig + [0.015 / 7] * a100),
        requests=np.array([requests]),
        l_in=0,
        l_out=100,
        names=tuple([f"mig-{i}" for i in range(mig)] + [f"a100-{i}" for i in range(a100)]),
    )
