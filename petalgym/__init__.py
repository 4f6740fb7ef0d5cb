"""petalgym: block placement and request routing for geo-distributed (PETALS-style) LLM inference.

A faithful discrete-event simulator of the published performance model, Gymnasium environments
(``gym.make("PetalAlloc-v0")``), the paper's baselines and learned agents.
"""

from __future__ import annotations

from petalgym.deciders import Decider, Route, decider_names, make_decider, register_decider
from petalgym.envs import register_envs as _register_envs
from petalgym.errors import DeciderError, InfeasibleScenarioError, PetalgymError, ScenarioError, SolverError
from petalgym.perfmodel import Chain, Hop, Placement, TimeModel
from petalgym.scenario import Scenario, list_scenarios, load_scenario
from petalgym.simulator import Decision, DecisionKind, SimulationResult, Simulator, simulate
from petalgym.tasks import Task, get_task, list_tasks, make_task
from petalgym.tasks import register_tasks as _register_tasks

_register_envs()  # PetalAlloc-v0, PetalPlacement-v0, PetalRouting-v0 (gym.make after import petalgym)
_register_tasks()  # petalgym/<Task>-v0 of petalgym.tasks

__version__ = "0.1.0"

__all__ = [
    "Chain",
    "Decider",
    "DeciderError",
    "Decision",
    "DecisionKind",
    "Hop",
    "InfeasibleScenarioError",
    "PetalgymError",
    "Placement",
    "Route",
    "Scenario",
    "ScenarioError",
    "SimulationResult",
    "Simulator",
    "SolverError",
    "Task",
    "TimeModel",
    "decider_names",
    "get_task",
    "list_scenarios",
    "list_tasks",
    "load_scenario",
    "make_decider",
    "make_task",
    "register_decider",
    "simulate",
]
