"""The decider interface (placement, routing, optional rebalancing), a registry, and a reference decider.

Every policy -- PETALS, CG-BPRR, CG-BP + WS-RR, the MILP, a trained agent -- is a :class:`Decider` run by
the same :class:`~petalgym.simulator.Simulator`, so every comparison goes through one code path.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import numpy as np

from petalgym.errors import DeciderError, PetalgymError
from petalgym.perfmodel import Chain, Hop, Placement, shortest_chain
from petalgym.scenario import Scenario, max_blocks_on
from petalgym.swarm import Request, SwarmView


class Route(NamedTuple):
    """A routing answer: the ``chain`` (hops from the request's ``route_from`` block to L) and what to do
    if some hop lacks cache now: ``wait=True`` waits for the earliest time the whole chain fits (the
    simulator reserves it, exactly), ``wait=False`` backs off 1, 2, 4, ... s (capped) and asks again.
    ``not_before`` (absolute s, with ``wait=True``): start no earlier than then (the authors' simulator
    starts a request at its wait rounded up to the back-off schedule)."""

    chain: Chain
    wait: bool = True
    not_before: float | None = None


class Enqueue(NamedTuple):
    """A routing answer: do not dispatch ``request`` now; it waits in the client-side FIFO queue ``key``
    (central-queue dispatch, e.g. JFFC: ``key="central"``; per-chain FCFS queues: the chain's index).

    The simulator offers the head of every queue to :meth:`Decider.route` again at each dispatch
    opportunity (a request's route ended -- completed, failed, interrupted, its reservation cancelled --
    or a server came online or went offline), earliest-queued head first; a queue whose head is queued
    again waits for the next opportunity, keeping its order. Queued time counts as waiting (``wait_s``,
    bounded by ``max_wait_s``)."""

    key: Hashable = "central"


class Decider:
    """Base class of all deciders. Subclasses implement :meth:`place` and :meth:`route`.

    ``rebalance_period_s``: if not None, every online server is offered :meth:`rebalance` at random times,
    uniform in [0, 2 x period] apart (PETALS' balance check).

    ``pure_route``: True promises that :meth:`route` has no side effects (no random draws, no state that
    changes its later answers) and reads only the view and the request's client, lengths, kv_bytes,
    route_from, tokens and kept hops. The simulator then skips back-off retries that would see an
    unchanged swarm (same results, fewer events).
    """

    name: str = "decider"
    rebalance_period_s: float | None = None
    pure_route: bool = False
    #: Something the decider reports about its run (e.g. that it fell back to another |R|), shown under
    #: evaluation tables; empty if nothing.
    note: str = ""
    #: Seconds each new request spends being allocated before its first token, holding its cache: the
    #: authors' simulator adds 250 s per PETALS request and 60 s per request of the proposed method.
    #: Every decider takes it as the keyword ``allocation_delay_s`` (default 0; see :func:`make_decider`).
    allocation_delay_s: float = 0.0

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """Start of an episode: remember the scenario; ``rng`` is this decider's own random stream."""
        self.scenario = scenario
        self.rng = rng

    def place(self, view: SwarmView, server: int) -> Placement:
        """Blocks (and cache budget) for ``server``, which is joining the swarm now."""
        raise NotImplementedError

    def route(self, view: SwarmView, request: Request) -> Route | Chain | Enqueue | None:
        """A chain for ``request`` from block ``request.route_from`` to L on ONLINE servers, None if no
        chain exists now (the request then stalls until a server comes online), or :class:`Enqueue` to
        keep it in a client-side queue until a dispatch opportunity."""
        raise NotImplementedError

    def route_ended(self, view: SwarmView, request: Request) -> None:
        """``request``'s last route answer no longer holds a chain: it completed, failed, was interrupted
        (a recovery is routed next) or lost its reservation. Deciders that count the jobs on their chains
        (JFFC's Z_k, Parallax's current requests) release them here; the default does nothing. Called
        once per such event, possibly for a request this decider never dispatched."""

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        """A new placement for ONLINE ``server`` (it will reload), or None to stay."""
        return None

    def describe(self) -> str:
        """One line naming the decider and its parameters (shown in tables)."""
        return self.name


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., Decider] | str] = {}


def register_decider(name: str, factory: Callable[..., Decider] | str) -> None:
    """Register a decider factory (a callable, or ``"module:attr"`` imported on first use) under ``name``."""
    _REGISTRY[name] = factory


def decider_names() -> list[str]:
    """Names of all registered deciders."""
    _load_builtin()
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., Decider]:
    """The factory registered as ``name``, imported on first use."""
    _load_builtin()
    if name not in _REGISTRY:
        raise DeciderError(f"unknown decider {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, attr = factory.split(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise DeciderError(f"decider {name!r}: cannot load {module}:{attr} ({exc})") from exc
        _REGISTRY[name] = factory
    return factory


def make_decider(name: str, **kwargs: Any) -> Decider:
    """Build the decider registered as ``name`` with ``kwargs`` (an unknown keyword, or a missing required
    one, raises DeciderError naming it and the accepted ones). ``allocation_delay_s`` (s >= 0) is accepted
    by every decider: it sets :attr:`Decider.allocation_delay_s`, unless the decider takes it itself."""
    factory = _factory(name)
    own = "allocation_delay_s" in _parameters(factory)
    delay = None if own else kwargs.pop("allocation_delay_s", None)
    _check_arguments(name, factory, kwargs)
    decider = factory(**kwargs)
    if delay is not None:
        decider.allocation_delay_s = check_allocation_delay(name, delay)
    return decider


def check_allocation_delay(name: str, value: Any) -> float:
    """``value`` as an allocation delay in seconds (a finite number >= 0); DeciderError naming it if not."""
    return float(checked_number(f"decider {name!r}", "allocation_delay_s", value, low_open=False))


def checked_number(
    owner: str,
    label: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = True,
    high_open: bool = True,
    optional: bool = False,
    error: type[PetalgymError] = DeciderError,
) -> float | None:
    """``value`` as a float in the interval from ``low`` to ``high`` (each end left out when its ``*_open``
    is true, so infinity is in only with ``high=math.inf, high_open=False``), or None when ``optional`` and
    ``value`` is None; ``error`` naming ``owner``'s argument ``label`` and the interval if not.

    One check for every numeric knob of a decider or solver, so their messages read alike."""
    if optional and value is None:
        return None
    inside = (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and (low < value if low_open else low <= value)  # NaN is never inside
        and (value < high if high_open else value <= high)
    )
    if not inside:
        if high == math.inf:
            interval = f"a number {'>' if low_open else '>='} {low:g}{'' if high_open else ' or inf'}"
        else:
            interval = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise error(f"{owner}: {label} must be {interval}{' or None' if optional else ''}, got {value!r}")
    return float(value)


def positive_number(owner: str, label: str, value: Any) -> float:
    """``value`` as a finite number > 0; DeciderError naming ``owner``'s argument ``label`` if not."""
    return float(checked_number(owner, label, value))


def whole_number(
    owner: str,
    label: str,
    value: Any,
    minimum: int = 1,
    *,
    optional: bool = False,
    error: type[PetalgymError] = DeciderError,
) -> int | None:
    """``value`` as an integer >= ``minimum`` (or None when ``optional`` and ``value`` is None); ``error``
    naming ``owner``'s argument ``label`` if not."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise error(
            f"{owner}: {label} must be an integer >= {minimum}{' or None' if optional else ''}, got {value!r}"
        )
    return int(value)


class ArrivalWindow:
    """The arrivals of the last ``window_s`` seconds, as a decider sees them: each request counts once,
    at its arrival time, the first time the decider is asked to route it.

    Args:
        window_s: seconds over which arrivals are counted.
    """

    def __init__(self, window_s: float):
        self.window_s = float(window_s)
        self._arrivals: deque[float] = deque()
        self._seen: set[int] = set()

    def note(self, request: Request) -> None:
        """Count ``request``'s arrival unless it was counted before."""
        if request.id not in self._seen:
            self._seen.add(request.id)
            self._arrivals.append(request.arrival)

    def count(self, now: float) -> int:
        """Arrivals counted in [``now`` - ``window_s``, ``now``] (``now`` in s)."""
        arrivals = self._arrivals
        while arrivals and arrivals[0] < now - self.window_s:
            arrivals.popleft()
        return len(arrivals)


def decider_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments the decider ``name`` accepts, with their defaults (``inspect.Parameter.empty``
    for a required one)."""
    return _parameters(_factory(name))


def _parameters(factory: Callable[..., Decider]) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return {}
    return {
        p.name: p.default
        for p in params.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def _check_arguments(name: str, factory: Callable[..., Decider], kwargs: dict[str, Any]) -> None:
    """DeciderError naming an unknown keyword (and the accepted ones) or a missing required one."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = _parameters(factory) | {"allocation_delay_s": 0.0}
    for key in kwargs:
        if key not in accepted:
            known = ", ".join(accepted) or "none"
            raise DeciderError(f"decider {name!r}: unknown argument {key!r} (accepted: {known})")
    missing = [k for k, default in accepted.items() if default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise DeciderError(
            f"decider {name!r} needs the argument {missing[0]!r} (e.g. --decider-arg {missing[0]}=...)"
        )


_BUILTIN_LOADED = False


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED = True
    for module in ("petalgym.baselines", "petalgym.agents"):  # each registers its deciders on import
        try:
            importlib.import_module(module)
        except ImportError as exc:  # pragma: no cover - only when a package is broken
            raise DeciderError(f"cannot import {module}: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# A reference decider: balanced coverage + shortest chain
# --------------------------------------------------------------------------------------------------
class ShortestChainDecider(Decider):
    """Reference decider: each joining server takes the most blocks it can while keeping ``cache_share``
    of its memory for caches, placed on the least-covered window; requests take the fastest chain (total
    request time, no waiting term) and wait for cache when needed.

    Zero-wait shortest chains are cached per (client, l_in, l_out, route_from, placement version).
    """

    name = "shortest"

    def __init__(self, cache_share: float = 0.5):
        if not 0.0 <= cache_share < 1.0:
            raise DeciderError(f"shortest: cache_share must be in [0, 1), got {cache_share!r}")
        self.cache_share = cache_share
        self._cache: dict[tuple[int, int, int, int], Chain] = {}
        self._cache_version = -1

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """New episode: forget the cached chains (placement versions restart with every simulator)."""
        super().reset(scenario, rng)
        self._cache.clear()
        self._cache_version = -1

    def place(self, view: SwarmView, server: int) -> Placement:
        sc = view.scenario
        spec = sc.servers[server]
        m = int(spec.profile.memory_bytes * (1.0 - self.cache_share) // sc.model.block_bytes)
        m = max(1, min(m, max_blocks_on(sc, spec)))
        cov = view.coverage()
        best_start, best_key = 0, None
        for a in range(sc.num_blocks - m + 1):
            window = cov[a : a + m]
            key = (min(window), sum(window))
            if best_key is None or key < best_key:
                best_start, best_key = a, key
        return Placement(best_start, m)

    def route(self, view: SwarmView, request: Request) -> Route | None:
        if self._cache_version != view.placement_version:
            self._cache.clear()
            self._cache_version = view.placement_version
        key = (request.client, request.l_in, request.l_out, request.route_from)
        chain = self._cache.get(key)
        if chain is None:
            fixed, per_block = view.time_model.hop_costs(request.client, request.l_in, request.l_out)
            cost, chain = shortest_chain(view.spans(), fixed, per_block, view.num_blocks, request.route_from)
            if cost == math.inf:
                return None
            self._cache[key] = chain
        return Route(chain, wait=True)

    def describe(self) -> str:
        return f"shortest (cache_share={self.cache_share:g})"


register_decider("shortest", ShortestChainDecider)

__all__ = [
    "ArrivalWindow",
    "Chain",
    "Decider",
    "Enqueue",
    "Hop",
    "Placement",
    "Route",
    "ShortestChainDecider",
    "checked_number",
    "decider_arguments",
    "decider_names",
    "make_decider",
    "positive_number",
    "register_decider",
    "whole_number",
]
