"""petalgym-bench tasks and their reference scores: registry, Gymnasium ids, the bench protocol, and that
every task's bound lies below every baseline on its validation seeds."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from petalgym.bench import bench, grid_points
from petalgym.bounds import alone_bound
from petalgym.deciders import make_decider
from petalgym.errors import PetalgymError, UsageError
from petalgym.simulator import simulate
from petalgym.swarm import RequestStatus
from petalgym.tasks import get_task, list_tasks, make_task


def test_tasks_are_named_versioned_and_split_into_disjoint_seeds():
    tasks = list_tasks()
    assert len(tasks) >= 6
    assert len({t.id for t in tasks}) == len(tasks)
    controls = {t.control for t in tasks}
    assert {"routing", "joint"} <= controls
    for t in tasks:
        assert t.id == f"petalgym/{t.name}-v{t.version}"
        splits = [set(t.train_seeds), set(t.validation_seeds), set(t.test_seeds)]
        assert all(splits) and not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
        assert t.load_scenario().name == t.scenario


@pytest.mark.parametrize("name", ["PaperClustered", "ChurnScattered", "SuccessorTestbed"])
def test_gym_make_builds_the_tasks_environment(name):
    task = get_task(name)
    env = gym.make(task.id)
    obs, _ = env.reset(seed=0)
    inner = env.unwrapped
    assert inner.scenario.name == task.scenario and inner.codec.control == task.control
    assert env.observation_space.contains(obs)
    direct = make_task(name)
    assert direct.scenario.name == task.scenario
    env.close()


def test_task_lookup_and_fixed_arguments_give_clear_errors():
    assert get_task("petalgym/PaperClustered-v0") is get_task("PaperClustered")
    with pytest.raises(UsageError, match="unknown task 'Nope' \\(known: PaperClustered"):
        get_task("Nope")
    with pytest.raises(UsageError, match="fixes 'control'"):
        make_task("PaperClustered", control="routing")


def test_grid_points_enumerate_every_combination():
    assert grid_points({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]


@pytest.mark.slow
def test_bench_follows_the_protocol():
    task = get_task("PaperClustered")
    result = bench(task, test_seeds=[200, 201], train_seeds=[0], validation_seeds=[100])
    assert result["task"] == task.id and result["metric"] == "per_token_s"
    deciders = result["deciders"]
    kinds = {d["kind"] for d in deciders.values()}
    assert kinds == {"random", "baseline", "tuned-baseline", "agent"}
    for d in deciders.values():
        assert {"kind", "mean", "ci95", "failed"} <= set(d)
        assert d["seeds"] == 2 and len(d["values"]) == 2 and np.mean(d["values"]) == pytest.approx(d["mean"])
        assert result["bound"] <= d["mean"] + 1e-9
    # the shipped agent, with its paired improvement over the reference (seed by seed)
    agent = deciders[task.agent]
    assert agent["kind"] == "agent" and agent["improvement"]["over"] == result["reference"]
    ref = np.array(deciders[result["reference"]]["values"])
    paired = (ref - np.array(agent["values"])) / ref
    assert agent["improvement"]["mean"] == pytest.approx(float(paired.mean()))
    assert result["normalised"][task.agent] == pytest.approx(
        (deciders["random"]["mean"] - agent["mean"]) / (deciders["random"]["mean"] - ref.mean())
    )
    assert result["normalised"]["random"] == 0.0
    assert result["normalised"][result["reference"]] == pytest.approx(1.0)
    # the tuned point is the grid's best on the train seeds
    for name, points in result["grid"].items():
        best = min(points, key=lambda p: (p["train_failed"], p["train_mean"]))
        assert deciders[f"{name} tuned"]["args"] == best["args"]
    assert "gbp-cr-jffc" in result["left_out"]  # it cannot plan 2 requests/s on clustered-9
    assert 0.0 <= result["headroom"] < 1.0
    json.dumps(result)  # JSON-ready (NaN aside, which the CLI writes as null)


@pytest.mark.slow
def test_add_agents_scores_an_agent_file_on_a_stored_result(tmp_path):
    """A result read back from JSON (without the reference's per-seed values) gains an agent: the reference is
    re-run on the same seeds and gives the same values; a file agent is labelled and kind ``agent``."""
    from petalgym.agents.policy import pretrained_path
    from petalgym.bench import add_agents

    task = get_task("PaperClustered")
    result = bench(task, test_seeds=[200, 201], train_seeds=[0], validation_seeds=[100], agents={})
    assert not any(d["kind"] == "agent" for d in result["deciders"].values())
    stored = json.loads(json.dumps(result))
    want = stored["deciders"][stored["reference"]].pop("values")
    path = pretrained_path(task.agent)
    add_agents(stored, task, {"mine": ("agent", {"path": str(path)})})
    assert stored["deciders"][stored["reference"]]["values"] == pytest.approx(want)
    mine = stored["deciders"]["mine"]
    assert mine["kind"] == "agent" and mine["decider"] == "agent" and mine["seeds"] == 2
    assert "mine" in stored["normalised"]


@pytest.mark.slow
@pytest.mark.parametrize("task", [t.name for t in list_tasks()])
def test_each_tasks_bound_is_below_every_baseline_on_its_validation_seeds(task):
    """The alone bound holds request by request for every baseline (each completed request took at least
    its bound), and on the mean for every baseline that completes every counted request."""
    t = get_task(task)
    scenario = t.load_scenario()
    seed = t.validation_seeds[0]
    bound = alone_bound(scenario, seed)
    compared = 0
    for name in t.baselines:
        decider = make_decider(name)
        try:
            check = getattr(decider, "check_scenario", None)
            if check is not None:
                check(scenario)
        except PetalgymError:
            continue
        result = simulate(scenario, decider, seed)
        assert [r.arrival for r in result.requests] == pytest.approx(list(bound.arrival_s)), name
        done = [(i, r) for i, r in enumerate(result.requests) if r.status == RequestStatus.COMPLETED]
        assert len(done) > 0, name
        for i, r in done:
            assert bound.time_s[i] <= r.latency + 1e-9, (name, i)
        summary = result.summary()
        if summary["failed"] == 0 and summary["in_flight"] == 0:
            assert getattr(bound, t.metric) <= summary[t.metric] + 1e-9, name
        compared += 1
    assert compared >= 3


def test_cli_lists_tasks_and_rejects_bad_bench_arguments(tmp_path, capsys):
    from petalgym.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "ZoneShocks: Llama-3.1-405B" in out
    assert max(len(line) for line in out.splitlines()) <= 80  # the table fits 80 columns, unbroken:
    for t in list_tasks():  # each task's row holds its name, version, scenario and seeds on one line
        seeds = f"{t.train_seeds.start}-{t.train_seeds.stop - 1}/"
        rows = [[cell.strip() for cell in line.split("│")] for line in out.splitlines()]
        assert any(r[0] == t.name and t.scenario in r and seeds in r[-1] for r in rows), t.name
    assert main(["bench", "--task", "Nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task 'Nope'") and err.count("\n") == 1
    out = tmp_path / "b.json"
    assert main(["bench", "--task", "PaperClustered", "--test-seeds", "5-2", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--test-seeds '5-2'" in err and "Traceback" not in err and not out.exists()
    missing = tmp_path / "nope.npz"
    assert main(["bench", "--task", "PaperClustered", "--agent", str(missing), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --agent {missing}: no such file") and not out.exists()


def test_cli_bench_scores_an_agent_file_beside_the_shipped_one(tmp_path, capsys):
    from petalgym.agents.policy import pretrained_path
    from petalgym.cli import main

    task = get_task("PaperClustered")
    out = tmp_path / "b.json"
    agent = pretrained_path(task.agent)
    argv = ["bench", "--task", task.name, "--test-seeds", "200-200", "--train-seeds", "0-0"]
    argv += ["--validation-seeds", "100-100", "--agent", str(agent), "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "gain" in table and max(len(line) for line in table.splitlines()) <= 80
    result = json.loads(out.read_text())
    labels = {k for k, d in result["deciders"].items() if d["kind"] == "agent"}
    assert labels == {task.agent, f"agent:{agent.stem}"}
    # the same file under two names: the same scores
    assert result["deciders"][task.agent]["values"] == result["deciders"][f"agent:{agent.stem}"]["values"]


def test_random_valid_actions_are_the_tasks_zero():
    """``random-actions`` plays uniformly random valid actions of the task's env (no invalid action, the
    same episode for the same seed); with gap-aligned starts it covers the model, so nothing fails, and it
    is worse than the default heuristic."""
    from petalgym.envs.adapter import RandomActionsDecider

    task = get_task("PaperClustered")
    scenario = task.load_scenario()
    runs = []
    for _ in range(2):
        decider = make_decider("random-actions", task=task.name)
        assert isinstance(decider, RandomActionsDecider) and decider.invalid_action == "raise"
        assert decider.candidate_set == "mixed" and decider.placement_starts == "gaps"
        runs.append(simulate(scenario, decider, 200))
    a = runs[0].summary()
    assert [q.per_token for q in runs[0].requests] == [q.per_token for q in runs[1].requests]
    assert a["failed"] == 0 and a["completed"] == a["arrived"] == 200
    heuristic = simulate(scenario, make_decider("cg-bp-ws-rr"), 200).summary()
    assert a["per_token_s"] > heuristic["per_token_s"]
    other = simulate(scenario, make_decider("random-actions", task=task.name), 201).summary()
    assert other["per_token_s"] != a["per_token_s"]
    with pytest.raises(UsageError, match="unknown task"):
        make_decider("random-actions", task="Nope")
