"""Whole-model replicas first, Parallax's pipelines for the overflow; optionally following the load.

Measured on the 48 mixed GPUs of ``llama70b-diurnal-48`` at constant loads (docs/tasks.md): a request
alone on one of the servers that can hold all 80 blocks of Llama-3.1-70B (one hop) takes 0.28-0.31 s per
token, while Parallax's pipelines (several hops each) take 0.55 s at every load from 0.012 to 0.23
requests/s; the deciders that route to one-hop chains without counting compute contention (PETALS,
CG-BP + WS-RR, GBP-CR + JFFC) reach 0.8-9.6 s per token above 0.05/s, because the one-hop servers
saturate. Sending a request to a one-hop server only while it is free, and to Parallax's pipelines
otherwise, keeps the one-hop speed at low load and Parallax's throughput at high load.

:class:`ReplicasFirstDecider` is that policy, built on :class:`~petalgym.baselines.parallax.ParallaxDecider`:

* Replica servers: those that can host all L blocks with cache for one session.
* Placement: every server is placed by Parallax (its books stay whole); while the swarm is not busy, each
  replica server hosts [0, L) instead, with all memory left for cache. With a finite ``busy_load`` the
  placement follows the load: at each rebalance offer (every ``check_period_s`` on average) an idle
  replica server whose placement does not match the regime moves, back to its Parallax range when busy,
  to [0, L) when quiet again (a server with sessions is left alone until a later offer: moving it would
  interrupt them). With ``busy_load=None`` (the default) the placement is static.
* Load: arrivals counted over the last ``rate_window_s`` (the requests the decider is asked to route
  first), as the load of the replicas: rate x (a request's time alone on a replica at the workload's mean
  lengths) / (number of replica servers); before one window has passed, the workload's mean rate.
  Regime (hysteresis): busy above ``busy_load``, quiet again below half of it.
* Routing: a replica that can start the request now with fewer than ``replica_sessions`` sessions (the
  fastest such); else Parallax's route over its pipelines (a replica is not on its Parallax range, so
  Parallax does not route through it); if Parallax has no chain, the replica the request can start on
  first, waiting for it.

What it leaves on the table: Parallax plans its pipelines over every server, so while the replica
servers are replicas the pipelines through them stay unused (the other servers of those pipelines idle).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from petalgym.baselines.parallax import MAX_CONCURRENT_REQUESTS, ParallaxDecider
from petalgym.deciders import ArrivalWindow, Decider, Enqueue, Route, positive_number, whole_number
from petalgym.design import arrival_rate, client_shares
from petalgym.errors import DeciderError
from petalgym.perfmodel import Hop, Placement, TimeModel
from petalgym.scenario import Scenario, max_blocks_on
from petalgym.swarm import Request, ServerStatus, SwarmView

__all__ = ["ReplicasFirstDecider"]


def _replica_servers(scenario: Scenario) -> list[int]:
    """The servers that can host all L blocks with cache for one session."""
    return [s.id for s in scenario.servers if max_blocks_on(scenario, s) >= scenario.num_blocks]


class ReplicasFirstDecider(Decider):
    """Whole-model replicas first, Parallax's pipelines for the overflow (see the module docstring).

    Args:
        busy_load: replica load (arrivals/s x a request's time alone on a replica / replica servers)
            above which the replica servers return to Parallax's pipelines, until it falls below half of
            it; None: never (a static placement).
        rate_window_s: seconds over which arrivals are counted for the load.
        check_period_s: mean seconds between the rebalance offers at which servers move.
        replica_sessions: sessions a replica takes before requests go to Parallax's pipelines.
        max_requests: Parallax's requests per node before it counts as overloaded.
        router: Parallax's router, ``"rr"`` or ``"dp"``.
        name: the name shown in results.
    """

    name = "replicas-first"
    pure_route = False

    def __init__(
        self,
        *,
        busy_load: float | None = None,
        rate_window_s: float = 300.0,
        check_period_s: float = 120.0,
        replica_sessions: int = 1,
        max_requests: int | Literal["kv"] = MAX_CONCURRENT_REQUESTS,
        router: Literal["rr", "dp"] = "rr",
        name: str = "replicas-first",
    ):
        if busy_load is not None:
            busy_load = positive_number(name, "busy_load", busy_load)
        self.busy_load = busy_load
        self.rate_window_s = positive_number(name, "rate_window_s", rate_window_s)
        self.check_period_s = positive_number(name, "check_period_s", check_period_s)
        self.replica_sessions = whole_number(name, "replica_sessions", replica_sessions)
        self.name = name
        self.parallax = ParallaxDecider(max_requests=max_requests, router=router, name=name)
        self.rebalance_period_s = None
        self.switches = 0  # regime changes in this episode

    # episode ---------------------------------------------------------------------------------------
    def check_scenario(self, scenario: Scenario) -> None:
        """Raise :class:`DeciderError` if no server can hold the whole model (the decider would be
        Parallax alone); the benchmark then leaves it out of the task, with this reason."""
        if not _replica_servers(scenario):
            raise DeciderError(f"{self.name}: no server of {scenario.name} can hold the whole model")

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """Parallax's bootstrap, the replica servers and their request time, the initial regime."""
        super().reset(scenario, rng)
        self.parallax.reset(scenario, rng)
        follows = self.busy_load is not None
        self.rebalance_period_s = self.check_period_s if follows else self.parallax.rebalance_period_s
        L = scenario.num_blocks
        self._L = L
        self.replicas = _replica_servers(scenario)
        self._is_replica = set(self.replicas)
        self.note = self.parallax.note
        if not self.replicas:
            self.note = "; ".join(filter(None, [self.note, "no server holds the whole model: Parallax only"]))
        self._window = ArrivalWindow(self.rate_window_s)
        self.switches = 0
        self._mean_rate = arrival_rate(scenario)
        self._replica_time = self._mean_replica_time(scenario)
        self.quiet = self.busy_load is None or self._load(None) <= self.busy_load

    def _mean_replica_time(self, scenario: Scenario) -> float:
        """A request's time (s) alone on a replica at the workload's mean lengths, over replicas and
        clients weighted by their rates (0 if there is no replica)."""
        if not self.replicas:
            return 0.0
        tm = scenario.memo("TimeModel", lambda: TimeModel(scenario))
        l_in, l_out = scenario.workload.mean_lengths()
        weights = client_shares(scenario)
        times = [
            sum(w * tm.request_time((Hop(j, 0, self._L),), c, l_in, l_out) for c, w in enumerate(weights))
            for j in self.replicas
        ]
        return float(np.mean(times))

    # load and regime -------------------------------------------------------------------------------
    def _load(self, now: float | None) -> float:
        """Replica load at ``now`` (the workload's mean rate before one window has passed)."""
        if not self.replicas:
            return math.inf
        if now is None or now < self.rate_window_s:
            rate = self._mean_rate
        else:
            rate = self._window.count(now) / self.rate_window_s
        return rate * self._replica_time / len(self.replicas)

    def _update_regime(self, now: float) -> None:
        if self.busy_load is None:
            return
        load = self._load(now)
        quiet = self.quiet
        if quiet and load > self.busy_load:
            quiet = False
        elif not quiet and load < 0.5 * self.busy_load:
            quiet = True
        if quiet != self.quiet:
            self.quiet = quiet
            self.switches += 1

    def _replica_placement(self, server: int) -> Placement:
        return Placement(0, self._L, None)

    # decisions -------------------------------------------------------------------------------------
    def place(self, view: SwarmView, server: int) -> Placement:
        """Parallax's placement (so its books stay whole), or [0, L) for a replica server when quiet."""
        placement = self.parallax.place(view, server)
        if self.quiet and server in self._is_replica:
            return self._replica_placement(server)
        return placement

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        """Move an idle server whose placement does not match the regime; else Parallax's answer."""
        self._update_regime(view.now)
        if server not in self._is_replica:
            return self.parallax.rebalance(view, server)
        s = view.servers[server]
        if s.status != ServerStatus.ONLINE or s.sessions or s.reservations:
            return None
        whole = (s.start, s.end) == (0, self._L)
        if self.quiet:
            return None if whole else self._replica_placement(server)
        return self.parallax.rebalance(view, server) if whole else None

    def route(self, view: SwarmView, request: Request) -> Route | Enqueue | None:
        """A free replica, else Parallax's route, else the replica the request can start on first."""
        self._window.note(request)
        kept = {h.server for h in request.kept}
        best, best_time, first, first_start = None, math.inf, None, math.inf
        for j in self.replicas:
            s = view.servers[j]
            if s.status != ServerStatus.ONLINE or (s.start, s.end) != (0, self._L) or j in kept:
                continue
            chain = (Hop(j, request.route_from, self._L),)
            start, _, _, duration = view.admission(request, chain)
            if start <= view.now and len(s.sessions) < self.replica_sessions and duration < best_time:
                best, best_time = chain, duration
            if start + duration < first_start:
                first, first_start = chain, start + duration
        if best is not None:
            self.parallax.route_ended(view, request)  # release what Parallax charged an earlier answer
            return Route(best, wait=True)
        answer = self.parallax.route(view, request)
        if answer is None and first is not None:
            return Route(first, wait=True)
        return answer

    def route_ended(self, view: SwarmView, request: Request) -> None:
        """Parallax releases its counters."""
        self.parallax.route_ended(view, request)

    def describe(self) -> str:
        return (
            f"replicas-first (replica_sessions={self.replica_sessions}, busy_load={self.busy_load}, "
            f"window {self.rate_window_s:g} s, check {self.check_period_s:g} s)"
        )
