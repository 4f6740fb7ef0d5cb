"""Gymnasium environments over the petalgym simulator.

``PetalAlloc-v0`` (control chosen by ``control=``), ``PetalPlacement-v0`` (placement only) and
``PetalRouting-v0`` (routing only) are registered when :mod:`petalgym` is imported, so
``gym.make("PetalAlloc-v0")`` works after ``import petalgym`` and ``gym.make("petalgym:PetalAlloc-v0")``
works without it (Gymnasium imports the module before the id).
"""

from __future__ import annotations

import gymnasium as gym

#: Registered environment ids and their entry points.
ENV_IDS: dict[str, str] = {
    "PetalAlloc-v0": "petalgym.envs.petal_alloc:PetalAllocEnv",
    "PetalPlacement-v0": "petalgym.envs.petal_alloc:PetalPlacementEnv",
    "PetalRouting-v0": "petalgym.envs.petal_alloc:PetalRoutingEnv",
}


def register_envs() -> None:
    """Register the petalgym environments with Gymnasium (idempotent)."""
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


def __getattr__(name: str):  # lazy: importing petalgym stays light until an env is built
    if name in ("PetalAllocEnv", "PetalPlacementEnv", "PetalRoutingEnv"):
        from petalgym.envs import petal_alloc

        return getattr(petal_alloc, name)
    if name in ("DeciderPolicy", "PolicyDecider"):
        from petalgym.envs import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module 'petalgym.envs' has no attribute {name!r}")


__all__ = [
    "ENV_IDS",
    "DeciderPolicy",
    "PetalAllocEnv",
    "PetalPlacementEnv",
    "PetalRoutingEnv",
    "PolicyDecider",
    "register_envs",
]
