"""The evaluation harness: common random numbers, aggregation with confidence intervals, outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from petalgym.errors import PetalgymError
from petalgym.evaluation import (
    DeciderSpec,
    Evaluation,
    RunSpec,
    confidence_interval,
    evaluate,
    format_pm,
    run_one,
)


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
    assert csv_path.read_text().splitlines()[0].startswith("setting,scenario,decider,detail,note,seed")
    payload = json.loads(ev.to_json(tmp_path / "e.json").read_text())
    assert payload["aggregate"][0]["n"] == 2
    png = ev.plot(tmp_path / "e.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ev.table().row_count == 1


def test_charts_give_every_decider_its_colour_and_stay_readable(tmp_path):
    """18 deciders get 18 colours (a 10-colour cycle gave petals and ppo-placement the same blue); a grid
    of many settings stays at most MAX_FIGURE_PX wide (the ablations chart was 5,280 px)."""
    import matplotlib.image as mpimg

    from petalgym.evaluation import MAX_FIGURE_PX, decider_colours

    names = [f"d{i}" for i in range(18)]
    assert len(set(decider_colours(names).values())) == 18
    many = {f"s{k}": {"workload.num_requests": 4 + k} for k in range(12)}
    ev = evaluate(
        "clustered-9", ["shortest", "petals", "round-robin"], range(1), settings=many, progress=False
    )
    height, width, _ = mpimg.imread(ev.plot(tmp_path / "grid.png")).shape
    assert width <= MAX_FIGURE_PX and height <= MAX_FIGURE_PX
    small = {"": {"workload.num_requests": 8}}
    one = evaluate("clustered-9", ["shortest", "petals"], range(2), settings=small, progress=False)
    image = mpimg.imread(one.plot(tmp_path / "one.png"))
    assert image.shape[1] <= MAX_FIGURE_PX and image.shape[0] < image.shape[1] * 2
    # every bar carries its value with its CI, in both layouts
    two = evaluate("clustered-9", ["shortest", "petals"], range(2), settings=dict(list(many.items())[:2]),
                   progress=False)  # fmt: skip
    for ev_ in (one, two):
        (ax,) = ev_.chart().axes
        labels = sorted(t.get_text() for t in ax.texts)
        expected = sorted(format_pm(a["per_token_s"], a["per_token_s_ci95"]) for a in ev_.aggregate())
        assert labels == expected and all(" ± " in x for x in labels)


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


def test_evaluate_accepts_decider_instances_and_checks_its_inputs():
    from petalgym.deciders import make_decider

    mine = make_decider("cg-bp-ws-rr", sessions_factor=0.5)
    small = {"": {"workload.num_requests": 10}}
    ev = evaluate("clustered-9", [mine], range(2), settings=small, progress=False)
    assert [r["decider"] for r in ev.rows] == ["cg-bp-ws-rr"] * 2 and mine.sessions_used is None  # copies ran
    ev = evaluate(
        "clustered-9", [DeciderSpec.of(mine, "R/2"), "cg-bp-ws-rr"], [0], settings=small, progress=False
    )
    detail = {r["decider"]: r["detail"] for r in ev.rows}
    assert detail["R/2"] != detail["cg-bp-ws-rr"] and "|R|=" in detail["R/2"]
    with pytest.raises(PetalgymError, match="no seeds"):
        evaluate("clustered-9", ["cg-bp-ws-rr"], [], progress=False)
    with pytest.raises(PetalgymError, match="seeds must be integers >= 0"):
        evaluate("clustered-9", ["cg-bp-ws-rr"], [-1], progress=False)
    with pytest.raises(PetalgymError, match="labelled 'cg-bp-ws-rr'"):
        evaluate("clustered-9", ["cg-bp-ws-rr", "cg-bp-ws-rr"], [0], progress=False)
    with pytest.raises(PetalgymError, match="unknown argument 'x'"):
        evaluate("clustered-9", ["cg-bp-ws-rr:x=1"], [0], progress=False)


def test_seeds_without_a_value_are_counted_and_shown():
    """A seed whose every request failed has no per-token time: it is counted, not dropped silently."""
    rows = [
        {"setting": "s", "decider": "d", "seed": k, "per_token_s": v, "ttft_s": v, "later_token_s": v,
         "wait_s": 0.0, "failed": 0.0 if v == v else 5.0, "decide_s": 0.0}
        for k, v in enumerate([1.0, 2.0, math.nan])
    ]  # fmt: skip
    ev = Evaluation(rows)
    (agg,) = ev.aggregate()
    assert agg["n"] == 3 and agg["per_token_s_nan"] == 1 and agg["per_token_s"] == pytest.approx(1.5)
    assert "(1 of 3 seeds without)" in ev.to_markdown()
