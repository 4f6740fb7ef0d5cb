"""The evaluation harness: common random numbers, aggregation with confidence intervals, outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from petalgym.errors import PetalgymError
from petalgym.evaluation import DeciderSpec, Evaluation, RunSpec, confidence_interval, evaluate, run_one


def test_confidence_interval_matches_student_t():
    values = [1.0, 2.0, 4.0, 7.0]
    mean, half = confidence_interval(values)
    assert mean == pytest.approx(3.5)
    sd = np.std(values, ddof=1)
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * sd / 2.0)
    assert math.isnan(confidence_interval([3.0])[1])
    assert math.isnan(confidence_interval([])[0])


def test_decider_spec_parse():
    spec = DeciderSpec.parse("shortest:cache_share=0.25")
    assert spec.name == "shortest" and spec.kwargs == {"cache_share": 0.25}
    assert spec.display == "shortest:cache_share=0.25"
    assert DeciderSpec.parse("petals").display == "petals"
    with pytest.raises(PetalgymError, match="name:key=value"):
        DeciderSpec.parse("shortest:oops")


def test_common_random_numbers_and_reduction():
    ev = evaluate(
        "clustered-9",
        ["petals", "cg-bp-ws-rr"],
        range(3),
        reference="petals",
        progress=False,
        settings={"c0": {"workload.num_requests": 30}},
    )
    assert len(ev.rows) == 6
    agg = {a["decider"]: a for a in ev.aggregate()}
    assert agg["petals"]["n"] == 3 and "reduction" not in agg["petals"]
    # the reduction is the mean of per-seed paired reductions
    per_seed = {(r["decider"], r["seed"]): r["per_token_s"] for r in ev.rows}
    red = [1 - per_seed[("cg-bp-ws-rr", s)] / per_seed[("petals", s)] for s in range(3)]
    assert agg["cg-bp-ws-rr"]["reduction"] == pytest.approx(np.mean(red))
    assert agg["cg-bp-ws-rr"]["reduction"] > 0.3  # the proposed method is much faster on clustered-9


def test_same_seed_same_arrivals_across_deciders():
    a = run_one(RunSpec("clustered-9", DeciderSpec("petals"), 5, {"workload.num_requests": 20}))
    b = run_one(RunSpec("clustered-9", DeciderSpec("cg-bp-ws-rr"), 5, {"workload.num_requests": 20}))
    assert a["arrived"] == b["arrived"] == 20


def test_workers_do_not_change_results():
    kwargs = dict(settings={"": {"workload.num_requests": 20}}, progress=False)
    serial = evaluate("clustered-9", ["cg-bp-ws-rr", "shortest"], range(2), workers=1, **kwargs)
    pooled = evaluate("clustered-9", ["cg-bp-ws-rr", "shortest"], range(2), workers=2, **kwargs)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_s", "decide_s")} for r in rows]  # noqa: E731
    assert strip(serial.rows) == strip(pooled.rows)


def test_outputs(tmp_path):
    ev = evaluate(
        "clustered-9", ["shortest"], range(2), settings={"": {"workload.num_requests": 10}}, progress=False
    )
    csv_path = ev.to_csv(tmp_path / "e.csv")
    assert csv_path.read_text().splitlines()[0].startswith("setting,scenario,decider,seed")
    payload = json.loads(ev.to_json(tmp_path / "e.json").read_text())
    assert payload["aggregate"][0]["n"] == 2
    png = ev.plot(tmp_path / "e.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ev.table().row_count == 1


def test_bad_override_fails_before_simulating():
    with pytest.raises(PetalgymError, match="arrival_rate"):
        evaluate(
            "clustered-9",
            ["shortest"],
            range(1),
            settings={"x": {"workload.arrival_rate": -1}},
            progress=False,
        )
    with pytest.raises(PetalgymError, match="unknown backend"):
        Evaluation([]).rows and None
        from petalgym.evaluation import run_grid

        run_grid([], backend="nope", progress=False)
