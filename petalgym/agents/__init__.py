"""Learned deciders (installed as ``petalgym.agents``).

Importing this package registers, in :mod:`petalgym.deciders`:

* ``"agent"``: a model trained by ``petalgym train``, ``make_decider("agent", path="model.zip")``
  (:class:`petalgym.agents.policy.AgentDecider`);
* the shipped models (``agents/pretrained/``, see its README): ``"ppo-routing"`` and ``"ppo-placement"``
  (clustered-9), ``"ppo-placement-2rps"`` and ``"ppo-placement-load"`` (the study's overload agents), and
  one agent per petalgym-bench task, ``"ppo-<task in lower case>"`` (:data:`TASK_AGENTS`).

Factories are ``"module:attr"`` strings imported on first use, so importing this package imports neither
torch nor stable-baselines3 (the ``rl`` extra): the core works without them. Training lives in
:mod:`petalgym.agents.train` (``petalgym train``), the study in :mod:`petalgym.agents.study`.
"""

from collections.abc import Callable
from typing import Any

from petalgym.deciders import register_decider

#: name -> "module:factory" of every learned decider.
AGENTS: dict[str, str] = {
    "agent": "petalgym.agents.policy:AgentDecider",
    "ppo-routing": "petalgym.agents.policy:ppo_routing",
    "ppo-placement": "petalgym.agents.policy:ppo_placement",
    "ppo-placement-2rps": "petalgym.agents.policy:ppo_placement_2rps",
    "ppo-placement-load": "petalgym.agents.policy:ppo_placement_load",
}

#: petalgym-bench task -> the registry name of its shipped agent (``agents/pretrained/tasks/<Task>.npz``,
#: trained by ``configs/agents/tasks/<Task>.yaml``; its task's :attr:`~petalgym.tasks.Task.agent`).
TASK_AGENTS: dict[str, str] = {
    task: f"ppo-{task.lower()}"
    for task in (
        "PaperClustered",
        "PaperScattered",
        "ChurnScattered",
        "SuccessorTestbed",
        "MixedSpot",
        "ZoneShocks",
        "LargeSwarm",
        "DiurnalLoad",
        "LoadFollowing",
    )
}


def _shipped(name: str) -> Callable[..., Any]:
    """The factory of the shipped model ``name`` (imports the loader on first use)."""

    def factory(**kwargs: Any) -> Any:
        from petalgym.agents.policy import pretrained

        return pretrained(name, **kwargs)

    factory.__doc__ = f"``{name!r}``: a shipped agent (agents/pretrained, numpy export)."
    return factory


for _name, _target in AGENTS.items():
    register_decider(_name, _target)
for _name in TASK_AGENTS.values():
    register_decider(_name, _shipped(_name))
