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


@pytest.fixture(scope="session")
def checkout(tmp_path_factory) -> Path:
    """A copy of the repository's tracked files: a fresh clone's root, to run snippets from as a new user
    would (its ``petalgym/`` folder then comes first on ``sys.path``), without writing into this one."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parent.parent
    dest = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (root / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, dest / name)
    else:  # not a git checkout: everything but what a run or an install leaves behind
        skip = shutil.ignore_patterns(".git", ".venv", "site", "results", "runs", "__pycache__", "*.egg-info")
        shutil.copytree(root, dest, ignore=skip, dirs_exist_ok=True)
    return dest
