"""Shared pytest setup: make ``tests/`` importable (``from strategies import ...``) and register hypothesis
profiles: ``petalgym`` (default: no deadline, since simulated episodes vary in length) and ``petalgym-ci``
(the same, derandomised). Pick one with the HYPOTHESIS_PROFILE environment variable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("petalgym", deadline=None, suppress_health_check=_SUPPRESS)
settings.register_profile("petalgym-ci", deadline=None, suppress_health_check=_SUPPRESS, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "petalgym"))


@pytest.fixture(scope="session")
def clustered9():
    """The shipped clustered-9 scenario (the paper's testbed), loaded once."""
    from petalgym.scenario import load_scenario

    return load_scenario("clustered-9")
