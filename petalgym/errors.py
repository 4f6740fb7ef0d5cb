"""Exceptions raised by petalgym. Each message names the offending file, field, decider or value."""

from __future__ import annotations


class PetalgymError(Exception):
    """Base class of every error petalgym raises on purpose."""


class ScenarioError(PetalgymError, ValueError):
    """A scenario file or dictionary is malformed or inconsistent (raised at load time)."""


class InfeasibleScenarioError(ScenarioError):
    """The scenario is well formed but cannot be served (e.g. its servers cannot cover all blocks)."""


class UsageError(PetalgymError, ValueError):
    """A function or command was called with a bad argument (a negative seed, no seeds, ...)."""


class DeciderError(PetalgymError, RuntimeError):
    """A decider returned an invalid placement or an infeasible chain."""


class SolverError(PetalgymError, RuntimeError):
    """An offline solver is missing, failed, or found no solution."""
