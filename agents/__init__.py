"""Learned deciders (installed as ``petalgym.agents``).

Importing this package registers, in :mod:`petalgym.deciders`:

* ``"agent"``: a model trained by ``petalgym train``, ``make_decider("agent", path="model.zip")``
  (:class:`petalgym.agents.policy.AgentDecider`);
* the shipped models (``agents/pretrained/``, see its README): ``"ppo-routing"`` and ``"ppo-placement"``
  (clustered-9), ``"ppo-placement-2rps"`` and ``"ppo-placement-load"`` (the study's overload agents).

Factories are ``"module:attr"`` strings imported on first use, so importing this package imports neither
torch nor stable-baselines3 (the ``rl`` extra): the core works without them. Training lives in
:mod:`petalgym.agents.train` (``petalgym train``), the study in :mod:`petalgym.agents.study`.
"""

from petalgym.deciders import register_decider

#: name -> "module:factory" of every learned decider.
AGENTS: dict[str, str] = {
    "agent": "petalgym.agents.policy:AgentDecider",
    "ppo-routing": "petalgym.agents.policy:ppo_routing",
    "ppo-placement": "petalgym.agents.policy:ppo_placement",
    "ppo-placement-2rps": "petalgym.agents.policy:ppo_placement_2rps",
    "ppo-placement-load": "petalgym.agents.policy:ppo_placement_load",
}

for _name, _target in AGENTS.items():
    register_decider(_name, _target)
