"""Ray integration: the ``"ray"`` backend of the evaluation harness and the RLlib environment registry.

Install with ``pip install "petalgym[ray]"``. Two independent parts:

* :func:`run_grid_ray` runs every :class:`~petalgym.evaluation.RunSpec` of a grid as one Ray task (one CPU
  each) on a local Ray (started here, or the one this process already initialised) or on a cluster
  (``address="ray://host:10001"`` or ``"auto"``). Each distinct :class:`~petalgym.scenario.Scenario`
  object is put in the object store once; scenarios given by name are loaded inside the task. Rows come
  back in spec order and equal the local backend's for the same seeds (only the wall-clock and decider
  timings differ), because a run depends on nothing but its spec. Every node of a cluster needs petalgym
  (and the deciders' extras) installed, e.g. through ``runtime_env``.
* :func:`register_rllib_envs` registers ``PetalAlloc-v0``, ``PetalPlacement-v0`` and ``PetalRouting-v0``
  with Ray Tune's registry, so that ``PPOConfig().environment("PetalRouting-v0", env_config={...})``
  builds them in every RLlib env runner (``env_config`` holds the env's keyword arguments). With
  ``obs_mode="rllib"`` the observation is ``{"observations", "action_mask"}``, the layout of RLlib's
  action-masking RLModule (see ``examples/rllib_ppo.py``).

Versions: Ray's ``rllib`` extra pins one Gymnasium release (ray 2.60 pins ``gymnasium==1.2.2``), which
petalgym supports (``gymnasium>=1.2,<2``). The evaluation backend needs Ray core only, which pins no
Gymnasium.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from petalgym.envs import ENV_IDS
from petalgym.errors import PetalgymError

if TYPE_CHECKING:
    import gymnasium as gym

    from petalgym.evaluation import RunSpec

#: Keys of a result row that measure time on the machine (they differ between runs and backends).
TIMING_KEYS: frozenset[str] = frozenset({"wall_s", "decide_s"})


class RayNotInstalledError(PetalgymError, ImportError):
    """Ray (or RLlib) is needed but not installed."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError(
            'Ray is not installed: install petalgym[ray] (pip install "petalgym[ray]")'
        ) from None
    return ray


def ensure_ray(
    address: str | None = None, *, num_cpus: int | None = None, **init_kwargs: Any
) -> tuple[Any, bool]:
    """Return ``(ray, started)``: reuse this process's Ray session if one is initialised (``address`` is
    then ignored), else ``ray.init(address)`` (a new local Ray when ``address`` is None, with ``num_cpus``
    CPUs, default all). ``started`` tells whether this call initialised Ray.

    A local Ray started here has Ray's usage-stats reporting off unless ``RAY_USAGE_STATS_ENABLED`` is set.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    kwargs.update(init_kwargs)
    ray.init(address=address, **kwargs)
    return ray, True


def _run_task(scenario: Any, spec: RunSpec) -> dict[str, Any]:
    """Body of one Ray task: put the scenario back into the spec and run it."""
    from petalgym.evaluation import run_one

    return run_one(dataclasses.replace(spec, scenario=scenario))


def _remote(ray: Any, num_cpus: float) -> Any:
    """The Ray remote function of :func:`_run_task` asking for ``num_cpus`` per task. A run whose worker
    process dies (a system failure) is run again, up to twice: runs are seeded, so the retry gives the
    same row; an error the run raises is not retried and reaches the caller."""
    return ray.remote(num_cpus=num_cpus, max_retries=2)(_run_task)


def run_grid_ray(
    specs: Sequence[RunSpec],
    address: str | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    *,
    num_cpus: int | None = None,
    cpus_per_task: float = 1.0,
    shutdown: bool | None = None,
) -> list[dict[str, Any]]:
    """Run every spec as a Ray task and return the rows in spec order.

    Args:
        specs: the runs (see :class:`~petalgym.evaluation.RunSpec`).
        address: a Ray cluster (``"auto"``, ``"ray://host:10001"``, ...); None starts a local Ray. Ignored
            when this process already initialised Ray (that session is reused).
        on_row: called with each row as its task finishes (completion order, for progress bars).
        num_cpus: CPUs of a local Ray started here (default: all).
        cpus_per_task: Ray CPUs reserved per task.
        shutdown: shut Ray down at the end; default: only if this call started it.

    Raises:
        RayNotInstalledError: Ray is not installed.
        PetalgymError: the first error a run raised (e.g. a bad scenario override), as the local backend
            raises it; the remaining tasks are cancelled.
    """
    specs = list(specs)
    ray, started = ensure_ray(address, num_cpus=num_cpus)
    remote = _remote(ray, cpus_per_task)
    try:
        refs: dict[int, Any] = {}  # id(scenario object) -> ObjectRef: each Scenario object stored once
        pending: dict[Any, int] = {}
        for i, spec in enumerate(specs):
            scenario = spec.scenario
            if isinstance(scenario, str):
                arg: Any = scenario
            else:
                if id(scenario) not in refs:
                    refs[id(scenario)] = ray.put(scenario)
                arg = refs[id(scenario)]
            pending[remote.remote(arg, dataclasses.replace(spec, scenario=""))] = i
        rows: list[dict[str, Any] | None] = [None] * len(specs)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    rows[i] = _get(ray, ref)
                    if on_row is not None:
                        on_row(rows[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return [r for r in rows if r is not None]
    finally:
        if shutdown if shutdown is not None else started:
            ray.shutdown()


def _get(ray: Any, ref: Any) -> dict[str, Any]:
    """``ray.get`` that re-raises a task's petalgym error as itself (not wrapped in a RayTaskError)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, PetalgymError):
            raise cause from None
        raise


def rows_equal(a: dict[str, Any], b: dict[str, Any], ignore: frozenset[str] = TIMING_KEYS) -> bool:
    """True if two result rows have the same keys and values outside ``ignore`` (NaN equals NaN)."""
    if a.keys() != b.keys():
        return False
    for key, u in a.items():
        if key in ignore:
            continue
        v = b[key]
        if u != v and not (isinstance(u, float) and isinstance(v, float) and u != u and v != v):
            return False
    return True


# --------------------------------------------------------------------------------------------------
# RLlib
# --------------------------------------------------------------------------------------------------
def rllib_env_creator(env_id: str) -> Callable[[dict[str, Any]], gym.Env]:
    """An RLlib env creator for ``env_id``: ``creator(env_config)`` is ``gym.make(env_id, **env_config)``
    (``env_config`` may be RLlib's ``EnvContext``; its worker/vector indices are not passed on)."""
    if env_id not in ENV_IDS:
        raise PetalgymError(f"unknown petalgym env {env_id!r} (known: {', '.join(ENV_IDS)})")

    def creator(env_config: dict[str, Any] | None = None) -> gym.Env:
        import gymnasium as gym

        import petalgym  # noqa: F401  (registers the ids with Gymnasium in this worker)

        return gym.make(env_id, **dict(env_config or {}))

    creator.__name__ = f"make_{env_id.replace('-', '_')}"
    return creator


def register_rllib_envs(env_ids: Sequence[str] | None = None) -> list[str]:
    """Register petalgym's environments (default: all of :data:`petalgym.envs.ENV_IDS`) with Ray Tune's
    registry under their Gymnasium ids; returns the ids. Call it before building an RLlib algorithm
    (after ``ray.init``, or let the algorithm start Ray)."""
    _import_ray()
    try:
        from ray.tune.registry import register_env
    except ImportError:
        raise RayNotInstalledError(
            "registering RLlib environments needs RLlib and Ray Tune: install petalgym[ray] "
            '(pip install "petalgym[ray]")'
        ) from None
    ids = list(ENV_IDS if env_ids is None else env_ids)
    for env_id in ids:
        register_env(env_id, rllib_env_creator(env_id))
    return ids


__all__ = [
    "TIMING_KEYS",
    "RayNotInstalledError",
    "ensure_ray",
    "register_rllib_envs",
    "rllib_env_creator",
    "rows_equal",
    "run_grid_ray",
]
