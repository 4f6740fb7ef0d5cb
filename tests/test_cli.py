"""The ``petalgym`` command: output, files and clear errors with exit status 2."""

from __future__ import annotations

import csv

import pytest

from petalgym.cli import main, parse_overrides


def test_parse_overrides():
    assert parse_overrides(["workload.arrival_rate=0.5", "clients.0.location=2"]) == {
        "workload.arrival_rate": 0.5,
        "clients.0.location": 2,
    }


def test_scenarios_lists_builtins(capsys):
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for name in ("clustered-9", "abovenet", "bellcanada-26", "gtsce", "bellcanada-26-churn"):
        assert name in out


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
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 12 and all(r["status"] == "completed" for r in rows)


def test_errors_are_one_line_with_status_2(capsys):
    assert main(["simulate", "--scenario", "no-such-scenario"]) == 2
    err = capsys.readouterr().out
    assert "error:" in err and "no-such-scenario" in err and "Traceback" not in err
    assert main(["simulate", "--decider", "no-such-decider"]) == 2
    assert "no-such-decider" in capsys.readouterr().out
    assert main(["simulate", "--set", "workload.arrival_rate=-3"]) == 2
    assert "workload.arrival_rate" in capsys.readouterr().out
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
    for name in ("evaluation.csv", "evaluation.json", "evaluation.png", "evaluation.md"):
        assert (tmp_path / name).stat().st_size > 0
    markdown = (tmp_path / "evaluation.md").read_text().splitlines()
    assert markdown[0].startswith("| setting | decider | seeds | per-token (s)")
    assert any(line.startswith("| clustered-9 | cg-bp-ws-rr |") for line in markdown[2:])


def test_reproduce_small_grid_beside_the_paper():
    from petalgym import reproduce as rp

    setting = rp.SETTINGS[0]
    ev = rp.paper_grid([0], settings=[setting], rates=[0.1], lengths=[128], progress=False)
    (row,) = rp.comparison_rows(ev, [setting])
    assert row["paper_petals_s"] == 4.76 and row["paper_proposed_s"] == 1.43
    assert 0 < row["proposed_s"] < row["petals_s"]
    assert row["reduction"] == pytest.approx(1 - row["proposed_s"] / row["petals_s"])
    assert row["petals_with_delay_s"] == pytest.approx(row["petals_s"] + 250 / 128)
    assert rp.comparison_table([row], 1).row_count == 1
    header, rule, line = rp.comparison_markdown([row]).splitlines()
    assert header.count("|") == rule.count("|") == line.count("|") == len(rp.COMPARISON_COLUMNS) + 1
    assert line.startswith(f"| {setting.label} | 0.1 | 128 |") and "| 4.76 | 1.43 |" in line


def test_solve_offline_methods(capsys):
    from petalgym.baselines.cg import cg_bprr
    from petalgym.offline import OfflineInstance
    from petalgym.scenario import load_scenario

    instance = OfflineInstance.from_scenario(load_scenario("clustered-9"), 3)
    expected = cg_bprr(instance).mean_per_token(instance)
    assert main(["solve", "--method", "cg-bprr", "--requests", "3"]) == 0
    assert f"{expected:.6g}" in capsys.readouterr().out
    assert main(["solve", "--method", "petals", "--requests", "3", "--seed", "1"]) == 0
    assert "heuristic" in capsys.readouterr().out


def test_solve_bad_input_exits_2(capsys):
    assert main(["solve", "--requests", "0"]) == 2
    assert "at least one request" in capsys.readouterr().out
    # CG-BPRR cannot reserve cache for 10,000 concurrent sessions on clustered-9
    assert main(["solve", "--requests", "10000"]) == 2
    assert "error:" in capsys.readouterr().out


def test_solve_milp_proves_the_paper_case_optimal(capfd):
    from petalgym.baselines.milp import clear_milp_cache

    clear_milp_cache()
    assert main(["solve", "--method", "milp", "--requests", "3"]) == 0
    out = capfd.readouterr().out  # file-descriptor level: HiGHS prints from C++
    assert "optimal" in out and "Running HiGHS" not in out  # the solver banner is silenced
    assert main(["solve", "--method", "milp", "--solver", "cbc", "--requests", "3"]) == 0
    assert "optimal" in capfd.readouterr().out
