"""The ``petalgym`` command: output, files and clear errors with exit status 2."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest

from petalgym.cli import main, parse_overrides


def test_parse_overrides():
    assert parse_overrides(["workload.arrival_rate=0.5", "clients.0.location=2"]) == {
        "workload.arrival_rate": 0.5,
        "clients.0.location": 2,
    }
    # YAML 1.1 reads 3e-4 as a string; a number Python reads is a number (a bad learning rate was refused)
    parsed = parse_overrides(["learning_rate=3e-4", "n=1E3", "name=cg-bp", "x=inf", "flag=true"])
    assert parsed == {"learning_rate": 3e-4, "n": 1000.0, "name": "cg-bp", "x": "inf", "flag": True}
    assert isinstance(parsed["learning_rate"], float)


def test_scenarios_lists_builtins(capsys):
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for name in ("clustered-9", "abovenet", "bellcanada-26", "gtsce", "bellcanada-26-churn"):
        assert name in out
    assert max(len(line) for line in out.splitlines()) <= 80 and "Topology Zoo" not in out
    assert main(["scenarios", "--describe"]) == 0
    assert "Topology Zoo" in capsys.readouterr().out  # the descriptions, on request


def test_simulate_prints_summary_and_writes_csv(tmp_path, capsys):
    path = tmp_path / "requests.csv"
    code = main(
        [
            "simulate",
            "--scenario",
            "clustered-9",
            "--seed",
            "1",
            "--decider",
            "cg-bp-ws-rr",
            "--set",
            "workload.num_requests=12",
            "--csv",
            str(path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "per_token_s" in out and "completed" in out
    assert "{}" not in out and re.search(r"interruptions\s+│\s+none", out)  # counters read as words
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 12 and all(r["status"] == "completed" for r in rows)
    code = main(["simulate", "--scenario", "bellcanada-26-churn", "--set", "workload.horizon_s=3000"])
    assert code == 0 and re.search(r"leaves\s+│\s+failure: \d+", capsys.readouterr().out)


@pytest.mark.slow
def test_python_dash_m_petalgym_is_the_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "petalgym", "tasks"], capture_output=True, text=True)
    assert out.returncode == 0 and "PaperClustered" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "petalgym", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def test_errors_are_one_line_with_status_2(capsys):
    assert main(["simulate", "--scenario", "no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no-such-scenario" in err and "Traceback" not in err
    assert main(["simulate", "--decider", "no-such-decider"]) == 2
    assert "no-such-decider" in capsys.readouterr().err
    assert main(["simulate", "--set", "workload.arrival_rate=-3"]) == 2
    assert "workload.arrival_rate" in capsys.readouterr().err
    assert main(["simulate", "--set", "nonsense"]) == 2


def test_evaluate_writes_table_csv_json_png(tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--deciders",
            "petals,cg-bp-ws-rr",
            "--seeds",
            "2",
            "--no-progress",
            "--set",
            "workload.num_requests=15",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "vs petals" in out and "cg-bp-ws-rr" in out
    assert max(len(line) for line in out.splitlines()) <= 80 and "TTFT" not in out  # the compact table
    argv = ["evaluate", "--deciders", "petals", "--seeds", "1", "--no-progress", "--wide"]
    assert main([*argv, "--set", "workload.num_requests=5", "--output", str(tmp_path / "wide")]) == 0
    assert "TTFT" in capsys.readouterr().out
    for name in ("evaluation.csv", "evaluation.json", "evaluation.png", "evaluation.md"):
        assert (tmp_path / name).stat().st_size > 0
    markdown = (tmp_path / "evaluation.md").read_text().splitlines()
    assert markdown[0].startswith("| setting | decider | seeds | per-token (s)")
    assert any(line.startswith("| clustered-9 | cg-bp-ws-rr |") for line in markdown[2:])


def test_reproduce_small_grid_beside_the_paper():
    """One paper cell group (clustered, client 0, lambda 0.1, l_out 128): the paper's numbers, the
    replay (-paper deciders on clustered-9-authors at the script's 1 request/s), the replay on the
    script's own arrival draws and petalgym's defaults, with the differences."""
    from petalgym import reproduce as rp

    setting = rp.SETTINGS[0]
    grid = rp.paper_grid([0, 1], settings=[setting], rates=[0.1], lengths=[128], progress=False)
    assert {r["decider"] for r in grid.replay.rows} == {"petals-paper", "cg-bp-ws-rr-paper"}
    assert {r["scenario"] for r in grid.replay.rows} == {"clustered-9-authors"}
    assert {r["setting"].split(" |")[0] for r in grid.replay.rows} == {"replay", "draws"}
    assert all("lambda=1 " in r["setting"] for r in grid.replay.rows)  # the script's hard-coded rate
    (row,) = rp.comparison_rows(grid, [setting])
    assert row["replay_lambda"] == 1.0 and row["lambda"] == 0.1
    for kind in ("replay", "defaults"):
        d = row[kind]
        assert 0 < d["proposed_s"] < d["petals_s"]
    # the replay carries the authors' allocation delays (250 s / 60 s over 128 tokens at least)
    assert row["replay"]["petals_s"] > 250 / 128 and row["replay"]["proposed_s"] > 60 / 128
    assert row["defaults"]["petals_s"] < 250 / 128
    cells = rp.paper_cells(grid, [setting])
    by_name = {c.name.split(": ")[-1]: c for c in cells}
    petals = by_name["PETALS per-token"]
    assert petals.paper[0] == 4.76 and petals.replay[0] == pytest.approx(row["replay"]["petals_s"])
    assert by_name["CG-BP + WS-RR per-token"].paper[0] == 1.43
    assert by_name["reduction"].paper[0] == pytest.approx(1 - 1.43 / 4.76)
    assert petals.draws is not None and petals.defaults[0] == pytest.approx(row["defaults"]["petals_s"])
    (span,) = [c for c in cells if c.is_range]
    assert span.paper == (0.64, 0.77) and span.draws is None
    lines = rp.paper_cell_markdown(cells).splitlines()
    assert lines[0].count("|") == len(rp.PAPER_CELL_COLUMNS) + 1
    delta = petals.replay[0] - 4.76
    line = next(x for x in lines if "PETALS per-token" in x)
    assert "| 4.76 |" in line and f"{delta:+.2f} s" in line
    assert "paper delays" not in rp.comparison_markdown([row])
    header, rule, body = rp.comparison_markdown([row]).splitlines()
    assert header.count("|") == rule.count("|") == body.count("|") == len(rp.GRID_COLUMNS) + 1
    assert body.startswith(f"| {setting.label} | 0.1 | 128 | 1 |")
    # the terminal tables: compact ones fit 80 columns with every value on one line; --wide has all
    from rich.console import Console

    for table, wide_table, compact in (
        (rp.paper_cell_table(cells, 2), rp.paper_cell_table(cells, 2, wide=True), rp.PAPER_CELL_COMPACT),
        (rp.comparison_table([row], 2), rp.comparison_table([row], 2, wide=True), rp.GRID_COMPACT),
    ):
        terminal = Console(width=80, record=True, file=io.StringIO())
        terminal.print(table)
        text = terminal.export_text()
        assert max(map(len, text.splitlines())) <= 80
        assert [c.header for c in table.columns] == list(compact)
        values = [cell for column in table.columns[1:] for cell in column.cells]
        assert values and all(any(v in line for line in text.splitlines()) for v in values), text
        assert len(wide_table.columns) > len(table.columns)


def test_the_script_arrival_draws_are_matlab_s():
    """numpy's legacy MT19937 reproduces MATLAB's rng(42, 'twister') + exprnd: the scattered branch of
    test_general_case_online.m spends 28 uniforms before its arrivals, and its inter_arrivals.txt
    (TingyangSunJeff/LLM_inference_simulator 3f78053) begins 0, 30693.6992850885, 4983.29276202322 ms."""
    from petalgym.reproduce import script_arrival_times

    times = script_arrival_times(4, 0.1, skipped=28)
    gaps_ms = np.diff(times, prepend=0.0) * 1e3
    assert gaps_ms[0] == 0.0
    assert gaps_ms[1] == pytest.approx(30693.6992850885, rel=1e-12)
    assert gaps_ms[2] == pytest.approx(4983.29276202322, rel=1e-12)
    assert gaps_ms[3] == pytest.approx(17688.7850436503, rel=1e-12)


def test_solve_offline_methods(capsys):
    from petalgym.baselines.cg import cg_bprr
    from petalgym.offline import OfflineInstance
    from petalgym.scenario import load_scenario

    instance = OfflineInstance.from_scenario(load_scenario("clustered-9"), 3)
    expected = cg_bprr(instance).mean_per_token(instance)
    assert main(["solve", "--method", "cg-bprr", "--requests", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{expected:.6g}" in out
    assert "decode only (s per token)" in out and "Theorem 2 bound on the average per-token time" in out
    assert main(["solve", "--method", "petals", "--requests", "3", "--seed", "1"]) == 0
    assert "heuristic" in capsys.readouterr().out


def test_solve_bad_input_exits_2(capsys):
    assert main(["solve", "--requests", "0"]) == 2
    assert "--requests: must be an integer >= 1, got 0" in capsys.readouterr().err
    # CG-BPRR cannot reserve cache for 10,000 concurrent sessions on clustered-9
    assert main(["solve", "--requests", "10000"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_solve_milp_proves_the_paper_case_optimal(capfd):
    assert main(["solve", "--method", "milp", "--requests", "3"]) == 0
    out = capfd.readouterr().out  # file-descriptor level: HiGHS prints from C++
    assert "optimal" in out and "Running HiGHS" not in out  # the solver banner is silenced
    assert "solving: milp for 3 request(s) on clustered-9, highs, time limit 60 s ..." in out  # said first
    assert main(["solve", "--method", "milp", "--solver", "cbc", "--requests", "3"]) == 0
    assert "optimal" in capfd.readouterr().out


# --------------------------------------------------------------------------------------------------
# Bad input (issue 10, point 7): one error: line, status 2, nothing written
# --------------------------------------------------------------------------------------------------
def one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in out, out
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["simulate", "--seed", "-1"], ["--seed", "-1"]),
        (["evaluate", "--seeds", "0"], ["--seeds", "0"]),
        (["evaluate", "--seeds", "two"], ["--seeds", "two"]),
        (["simulate", "--decider", "agent"], ["agent", "path"]),
        (["simulate", "--decider-arg", "sesions_factor=2"], ["sesions_factor", "sessions_factor"]),
        (["evaluate", "--deciders", "cg-bp-ws-rr:foo=1", "--seeds", "1"], ["foo", "num_sessions"]),
        (["evaluate", "--agent", "no/such/model.zip", "--seeds", "1"], ["no/such/model.zip"]),
        (["solve", "--requests", "-2"], ["--requests", "-2"]),
    ],
)
def test_bad_arguments_are_one_error_line_with_status_2(argv, names, capsys, tmp_path):
    out_dir = tmp_path / "results"
    extra = ["--output", str(out_dir)] if argv[0] == "evaluate" else []
    assert main(argv + extra) == 2
    line = one_error_line(capsys.readouterr().err)
    for name in names:
        assert name in line
    assert not out_dir.exists()  # nothing written (before: --seeds 0 overwrote results/ with an empty table)


def test_a_missing_agent_file_fails_before_any_simulation(tmp_path, capsys, monkeypatch):
    import petalgym.evaluation as ev

    ran = []
    monkeypatch.setattr(ev, "run_grid", lambda *a, **k: ran.append(1) or [])
    assert main(["evaluate", "--deciders", "cg-bp-ws-rr", "--agent", str(tmp_path / "x.zip")]) == 2
    assert not ran and "x.zip" in one_error_line(capsys.readouterr().err)


def test_agents_with_the_same_stem_get_distinct_labels(tmp_path):
    from petalgym.cli import agent_labels

    a, b = tmp_path / "run1" / "model.zip", tmp_path / "run2" / "model.zip"
    assert agent_labels([str(a), str(b)]) == ["agent:run1/model", "agent:run2/model"]
    assert agent_labels([str(a)]) == ["agent:model"]
    with pytest.raises(Exception, match="given twice"):
        agent_labels([str(a), str(a)])


@pytest.mark.slow
def test_cg_bprr_infeasible_at_the_workloads_size_falls_back_and_says_so(tmp_path, capsys):
    """CG-BP cannot reserve cache for 2,000 concurrent sessions on clustered-9: cg-bprr uses a feasible
    |R| and the table says which (before: the whole grid aborted)."""
    code = main(
        ["evaluate", "--deciders", "cg-bprr,cg-bp-ws-rr", "--seeds", "1", "--no-progress",
         "--set", "workload.num_requests=2000", "--set", "workload.arrival_rate=5", "--output", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    md = (tmp_path / "evaluation.md").read_text()
    assert "cg-bprr: |R| = " in md and "infeasible at the 2000 sessions asked for" in md


def test_every_option_has_help_and_shows_its_default(capsys):
    import argparse

    from petalgym.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in sub.choices.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.option_strings)
                shown = formatter._expand_help(action)
                if action.nargs != 0 and not action.required:  # an option with a value states its default
                    assert "default" in shown, (name, action.option_strings, shown)
    assert main(["evaluate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "number of seeds (default: 10)" in text and "first seed (default: 0)" in text
    assert "(default: results/evaluate)" in text
    assert "only from a trusted source" in text  # --agent: an SB3 zip is unpickled
