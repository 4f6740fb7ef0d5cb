"""The README's two commands stay true: CI runs the test command verbatim; the main job is `evaluate`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [m.strip() for m in re.findall(r"^    (python3 -m venv .+)$", section, flags=re.M)]


def test_readme_has_exactly_two_setup_commands():
    main_job, tests = _commands()
    assert main_job.endswith("petalgym evaluate")
    assert tests.endswith("pytest")
    for cmd in (main_job, tests):
        assert "pip install torch==2.13.0" in cmd  # the CPU wheel, not a CUDA build


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_quick_tour_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text().split("## Quick tour (Python)", 1)[1].split("\n## ", 1)[0]
    (block,) = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert float(printed["cg-bp-ws-rr"]) < float(printed["petals"])
    assert (tmp_path / "requests.csv").read_text().count("\n") > 10
