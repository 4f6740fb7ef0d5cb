"""The documentation site: it builds with ``mkdocs build --strict``, and every code block in it runs.

``python`` blocks of a page run in order in one fresh interpreter, from the root of a copy of the
repository (where a new user pastes them; files they write land in the copy); every line of a ``bash``
block is a ``petalgym`` or ``python -m petalgym`` command and exits with status 0; ``shell`` blocks
are the README's two setup commands (CI runs those on a fresh clone), nothing else."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def test_every_block_has_a_language_the_tests_run():
    for page in PAGES:
        for lang, _ in FENCE.findall(page.read_text()):
            assert lang in ("python", "bash", "shell"), (page.name, lang)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=lambda p: p.name)
def test_python_blocks_run(page, checkout):
    code = "\n\n".join(blocks(page, "python"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=checkout)
    assert out.returncode == 0, f"{page.name}:\n{out.stderr[-3000:]}"
    assert out.stdout.strip(), f"{page.name}: its examples print what they compute"


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=lambda p: p.name)
def test_bash_blocks_run(page, checkout):
    for body in blocks(page, "bash"):
        for line in filter(None, (x.strip() for x in body.splitlines())):
            argv = shlex.split(line)
            if argv[0] == "petalgym":
                argv = ["python", "-m", "petalgym", *argv[1:]]
            assert argv[:3] == ["python", "-m", "petalgym"], line
            argv[0] = sys.executable
            out = subprocess.run(argv, capture_output=True, text=True, cwd=checkout)
            assert out.returncode == 0, f"{page.name}: {line}\n{out.stderr[-3000:]}"


def test_shell_blocks_are_the_readmes_setup_commands():
    readme = (ROOT / "README.md").read_text()
    commands = set(re.findall(r"^    (python3 -m venv .+)$", readme, flags=re.M))
    assert len(commands) == 2
    shown = {b.strip() for p in PAGES for b in blocks(p, "shell")}
    assert shown == commands


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "index.html").is_file()
    assert "AgentDecider" in (tmp_path / "site" / "reference" / "index.html").read_text()


def test_user_facing_text_points_to_nothing_a_user_does_not_have():
    """README, the docs pages and the package's docstrings and data cite the docs, never the development
    notes (paper-notes, ../shared), issue numbers or commits."""
    banned = re.compile(r"paper-notes|\.\./shared|\bissue \d+|git history|notes section", re.I)
    files = [ROOT / "README.md", *PAGES, *sorted((ROOT / "petalgym").rglob("*.py"))]
    files += sorted((ROOT / "petalgym").rglob("*.yaml"))
    found = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in files for m in banned.finditer(f.read_text())]
    assert not found, found
