"""The README's two commands stay true: CI runs the test command verbatim; the main job is `evaluate`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [m.strip() for m in re.findall(r"^    (python3 -m venv .+)$", section, flags=re.M)]


def test_readme_has_exactly_two_setup_commands():
    main_job, tests = _commands()
    assert main_job.endswith("petalgym evaluate")
    assert tests.endswith("pytest")
    assert "torch" not in main_job and "[rl" not in main_job  # the main job runs without torch
    assert "pip install torch==2.13.0" in tests  # the CPU wheel, not a CUDA build


@pytest.mark.slow
def test_the_main_job_runs_its_shipped_agents_without_torch(tmp_path):
    """`petalgym evaluate`'s default deciders, shipped agents included, with torch and SB3 unimportable."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'stable_baselines3', 'sb3_contrib'):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from petalgym.cli import main\n"
        "sys.exit(main(['evaluate', '--seeds', '1', '--set', 'workload.num_requests=10', '--output', "
        f"{str(tmp_path)!r}, '--no-progress']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ppo-routing" in out.stdout and "ppo-placement" in out.stdout


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci
    assert any(line.strip().startswith("mkdocs build --strict") for line in ci)  # the docs build in CI


def test_the_docs_say_an_sb3_zip_must_come_from_a_trusted_source():
    """Loading an SB3 zip unpickles it: the training and tasks pages say so where they load one."""
    for page in ("training.md", "tasks.md"):
        assert "trust" in (ROOT / "docs" / page).read_text(), page


@pytest.mark.parametrize("where", ["anywhere", "root"])
def test_quick_tour_runs(where, tmp_path, checkout):
    """The README's Python, pasted into a fresh interpreter in any folder and at a checkout's root."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text().split("## Quick tour (Python)", 1)[1].split("\n## ", 1)[0]
    (block,) = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    cwd = tmp_path if where == "anywhere" else checkout
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = dict(line.split() for line in out.stdout.splitlines())
    assert float(printed["cg-bp-ws-rr"]) < float(printed["petals"])
    assert (cwd / "requests.csv").read_text().count("\n") > 10


@pytest.mark.slow
def test_the_package_imports_the_same_from_the_repository_root_and_from_anywhere(tmp_path):
    """No local folder shadows part of the package: baselines, agents and configs live inside petalgym/."""
    import subprocess
    import sys

    code = (
        "import petalgym, petalgym.baselines.petals, petalgym.agents.policy, petalgym.configs\n"
        "from petalgym.agents.config import config_dir\n"
        "assert (config_dir() / 'maskable-ppo.yaml').is_file()\n"
        "print(petalgym.make_decider('ppo-routing').name, petalgym.load_scenario('clustered-9').name)\n"
    )
    for where in (ROOT, tmp_path):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=where)
        assert out.returncode == 0, (where, out.stderr)
        assert out.stdout.split() == ["ppo-routing", "clustered-9"]
    for folder in ("baselines", "agents", "configs"):
        assert not (ROOT / folder).exists() and (ROOT / "petalgym" / folder / "__init__.py").is_file()
