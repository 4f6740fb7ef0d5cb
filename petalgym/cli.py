"""The ``petalgym`` command: list scenarios, simulate, evaluate, solve, reproduce the paper, train agents."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from petalgym.errors import PetalgymError, UsageError

console = Console()
errors = Console(stderr=True)  # error lines go to standard error


class _HelpFormatter(argparse.HelpFormatter):
    """Help lines end with the option's default unless the line names it: ``none`` for an optional value
    left unset (None), nothing for a switch (False) or a required option."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text or action.required:
            return text
        if default is None and action.nargs != 0:
            return text + " (default: none)"
        if default is None or default is False or default is argparse.SUPPRESS:  # (0 is shown)
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one ``error:`` line (no usage block) and exits with status 2;
    help shows every option's default."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        errors.print(f"[red]error:[/red] {self.prog}: {message}", highlight=False, soft_wrap=True)
        raise SystemExit(2)


def _int_at_least(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


_SEED = _int_at_least(0)
_POSITIVE = _int_at_least(1)


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["workload.arrival_rate=0.5", ...]`` -> {"workload.arrival_rate": 0.5} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise PetalgymError(f"--set {item!r}: expected key=value, e.g. workload.arrival_rate=0.5")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = _number_or_yaml(value)
        except yaml.YAMLError:
            raise PetalgymError(f"--set {item!r}: the value is not valid YAML") from None
    return out


def _number_or_yaml(text: str) -> Any:
    """A float for any text Python reads as a finite number (YAML 1.1 reads ``3e-4`` as a string), else the
    text parsed as YAML."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if number == number and abs(number) != float("inf"):
            return number
    return value


def parse_kwargs(items: Sequence[str] | None) -> dict[str, Any]:
    """``["solver=cbc", "time_limit_s=30"]`` -> keyword arguments (values parsed as YAML)."""
    return parse_overrides(items)


# --------------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------------
def cmd_scenarios(args: argparse.Namespace) -> int:
    from petalgym.scenario import list_scenarios, load_scenario

    scenarios = [load_scenario(name) for name in list_scenarios()]
    if args.describe:
        for sc in scenarios:
            console.print(f"[bold]{sc.name}[/bold] ({sc.summary()}, L={sc.num_blocks}): {sc.description}")
        return 0
    table = Table(title="Built-in scenarios (--describe: what each is for)")
    table.add_column("name", no_wrap=True)
    table.add_column("L", justify="right")
    table.add_column("swarm", overflow="fold")
    for sc in scenarios:
        table.add_row(sc.name, str(sc.num_blocks), sc.summary())
    console.print(table)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from petalgym.tasks import list_tasks

    title = 'petalgym-bench tasks: gym.make("petalgym/<task>-v<v>") or petalgym.make_task("<task>")'
    table = Table(title=title, show_edge=False, pad_edge=False)  # 80 columns with the longest names
    for col in ("task", "v", "scenario", "control", "seeds train/val/test"):
        table.add_column(col, no_wrap=True)
    for t in list_tasks():
        seeds = "/".join(f"{r.start}-{r.stop - 1}" for r in (t.train_seeds, t.validation_seeds, t.test_seeds))
        table.add_row(t.name, str(t.version), t.scenario, t.control, seeds)
    console.print(table)
    for t in list_tasks():
        console.print(f"{t.name}: {t.description}", highlight=False)
    return 0


def _seed_range(text: str | None, what: str) -> range | None:
    """``"200-204"`` -> range(200, 205); None stays None."""
    if text is None:
        return None
    lo, dash, hi = str(text).partition("-")
    try:
        first, last = int(lo), int(hi) if dash else int(lo)
    except ValueError:
        raise PetalgymError(f"--{what}-seeds {text!r}: expected FIRST-LAST, e.g. 200-204") from None
    if first < 0 or last < first:
        raise PetalgymError(f"--{what}-seeds {text!r}: expected 0 <= FIRST <= LAST")
    return range(first, last + 1)


def _bench_agents(task: Any, paths: Sequence[str] | None) -> dict[str, tuple[str, dict[str, Any]]] | None:
    """The agents `petalgym bench` scores: the task's shipped one and every ``--agent`` file."""
    if not paths:
        return None
    from petalgym.bench import shipped_agents

    agents = shipped_agents(task)
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"--agent {path}: no such file")
        agents[f"agent:{Path(path).stem}"] = ("agent", {"path": str(path)})
    return agents


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from petalgym.bench import bench
    from petalgym.evaluation import _nan_to_none, format_pm
    from petalgym.tasks import get_task

    task = get_task(args.task)
    out = Path(args.json) if args.json else None
    if out is not None and out.exists() and out.is_dir():
        raise PetalgymError(f"--json {out}: is a directory")
    result = bench(
        task,
        test_seeds=_seed_range(args.test_seeds, "test"),
        train_seeds=_seed_range(args.train_seeds, "train"),
        validation_seeds=_seed_range(args.validation_seeds, "validation"),
        agents=_bench_agents(task, args.agent),
        workers=args.workers,
        progress=not args.no_progress,
    )
    from rich import box

    table = Table(
        title=f"{task.id}: {task.metric} on test seeds (bound {result['bound']:.4g})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("decider", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("mean ± 95 % CI", justify="right", no_wrap=True)
    table.add_column("failed", justify="right")
    table.add_column("norm.", justify="right")
    table.add_column("args / gain", overflow="fold")
    norm = result.get("normalised", {})
    for label, d in result["deciders"].items():
        n = norm.get(label, float("nan"))
        if "improvement" in d:
            imp = d["improvement"]
            extra = f"{format_pm(imp['mean'], imp['ci95'], 1, scale=100)} %"
        else:
            extra = ", ".join(f"{k}={v}" for k, v in d.get("args", {}).items())
        table.add_row(
            label,
            {"baseline": "default", "tuned-baseline": "tuned"}.get(d["kind"], d["kind"]),
            format_pm(d["mean"], d["ci95"]),
            f"{d['failed']:.1f}",
            "-" if n != n else f"{n:.3f}",
            extra,
        )
    console.print(table)
    for label, reason in result["left_out"].items():
        console.print(f"left out: {label}: {reason}", highlight=False)
    if "headroom" in result:
        val = result["validation"]
        console.print(
            f"reference: {result['reference']}; headroom (validation seeds): {100 * result['headroom']:.1f} %"
            f" (reference {val['reference_mean']:.4g} vs bound {val['bound']:.4g})"
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_nan_to_none(result), indent=1))
        console.print(f"written: {out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from petalgym import catalog
    from petalgym.perfmodel import petals_cache_bytes_per_block
    from petalgym.scenario import load_scenario

    table = Table(
        title=f"Model catalog ({args.quantization})" + ("" if args.wide else " (--wide: all columns)")
    )
    cols = ("model", "blocks", "GB/block", "KV B/token/block", "max session")
    wide = ("d_model", "heads / KV", "params/block", "active/block", "PETALS cache MB/block (tokens)")
    for col in cols + (wide if args.wide else ()):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in catalog.models().items():
        sc = load_scenario("clustered-9", {"model": {"name": name, "quantization": args.quantization}})
        spec = sc.model
        budget = petals_cache_bytes_per_block(spec, sc.petals.attn_cache_tokens)
        row = [name, str(m.num_blocks), f"{spec.block_bytes / 1e9:.4f}", f"{spec.kv_bytes_per_block(1):,}",
               f"{spec.max_session_tokens:,}"]  # fmt: skip
        if args.wide:
            row += [f"{m.d_model:,}", f"{m.heads} / {m.kv_heads}", f"{spec.params_per_block:,}",
                    f"{spec.active_params_per_block:,}",
                    f"{budget / 1e6:.1f} ({sc.petals.attn_cache_tokens:,})"]  # fmt: skip
        table.add_row(*row)
    (Console(width=max(console.width, 150)) if args.wide else console).print(table)
    console.print("Config sources: petalgym/data/catalog/models.yaml.")
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    from petalgym.scenario import load_scenario

    sc = load_scenario("clustered-9", {"model": {"name": args.model, "quantization": args.quantization}})
    table = Table(
        title=f"GPUs: one {args.model} block ({args.quantization})"
        + ("" if args.wide else ", --wide: labels")
    )
    cols = ("gpu", "memory GB", "tau ms", f"prefill ms (l_in {args.l_in})", "max blocks", "timing")
    for col in (*cols, *(("label",) if args.wide else ())):
        table.add_column(col, justify="left" if col in ("gpu", "timing", "label") else "right")
    for name, p in sc.profiles.items():
        row = [
            name,
            f"{p.memory_bytes / 1e9:.2f}",
            f"{p.tau_s * 1e3:.3f}",
            f"{p.prefill_tau(args.l_in) * 1e3:.1f}",
            "-" if p.max_blocks is None else str(p.max_blocks),
            "estimate" if p.estimated else "measured",
        ]
        table.add_row(*row, *((p.label,) if args.wide else ()))
    (Console(width=max(console.width, 130)) if args.wide else console).print(table)
    console.print(
        "Estimates: tau = c0 + kappa x (weight bytes read per token) / bandwidth, prefill from bandwidth and "
        "FP16 compute, calibrated on the measured A100 and MIG 1g anchors (petalgym.catalog.timing_rule)."
    )
    return 0


# --------------------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    if value != value:  # nan
        return "-"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _fmt_extra(value: Any) -> str:
    """A counter by cause as ``cause: n, ...`` (``none`` when empty); numbers as in the summary."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt(value)
    return str(value)


def cmd_simulate(args: argparse.Namespace) -> int:
    from petalgym.deciders import make_decider
    from petalgym.scenario import load_scenario
    from petalgym.simulator import simulate

    scenario = load_scenario(args.scenario, parse_overrides(args.set))
    decider = make_decider(args.decider, **parse_kwargs(args.decider_arg))
    result = simulate(scenario, decider, seed=args.seed, check_invariants=args.check)
    summary = result.summary()
    table = Table(title=f"{scenario.name} | {decider.describe()} | seed {args.seed}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, _fmt(value))
    for key, value in result.extra.items():
        table.add_row(key, _fmt_extra(value))
    console.print(f"[dim]{scenario.summary()}[/dim]")
    console.print(table)
    if args.csv:
        path = result.to_csv(args.csv)
        console.print(f"per-request records written to {path}")
    return 0


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------
#: The deciders `petalgym evaluate` runs by default (the paper's algorithms and PETALS, docs/deciders.md,
#: the peer algorithms, simple references, and the two shipped learned agents: numpy exports, no torch
#: needed); those that cannot model the scenario are left out with a note.
DEFAULT_DECIDERS = (
    "petals",
    "petals-opt-order",
    "petals-opt-number",
    "petals-opt-rr",
    "cg-bprr",
    "cg-bp-ws-rr",
    "milp",
    "gbp-cr-jffc",
    "gbp-cr-jsq",
    "gbp-cr-sed",
    "jffc-only",
    "helix",
    "parallax",
    "parallax-dp",
    "random",
    "round-robin",
    "ppo-routing",
    "ppo-placement",
)


def agent_labels(paths: Sequence[str]) -> list[str]:
    """``agent:<stem>`` per model file; files sharing a stem are told apart by their folders (more of the
    path until the labels differ)."""
    parts = [Path(p).resolve().parts for p in paths]
    depth = [1] * len(paths)
    while True:
        labels = ["/".join(pp[-d:]) for pp, d in zip(parts, depth, strict=True)]
        clash = {lab for lab in labels if labels.count(lab) > 1}
        if not clash:
            return [f"agent:{lab.removesuffix('.zip')}" for lab in labels]
        grown = False
        for i, lab in enumerate(labels):
            if lab in clash and depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:  # the same file twice
            raise PetalgymError(f"--agent {paths[labels.index(next(iter(clash)))]} is given twice")


def _applicable_defaults(args: argparse.Namespace) -> list[str]:
    """The default deciders that can run on the scenario: a shipped agent trained for other shapes (more
    servers than it observes) is left out with a note, rather than failing the whole evaluation."""
    from petalgym.deciders import make_decider
    from petalgym.scenario import load_scenario

    scenario = load_scenario(args.scenario, parse_overrides(args.set))
    names = []
    for name in DEFAULT_DECIDERS:
        decider = make_decider(name)
        check = getattr(decider, "check_scenario", None)
        try:
            if check is not None:
                check(scenario)
        except PetalgymError as exc:
            console.print(f"note: {name} left out: {exc}", highlight=False)
            continue
        names.append(name)
    return names


def cmd_evaluate(args: argparse.Namespace) -> int:
    from petalgym.evaluation import DeciderSpec, evaluate

    names = args.deciders.split(",") if args.deciders else _applicable_defaults(args)
    specs = [DeciderSpec.parse(n) for n in names if n.strip()]
    for path, label in zip(args.agent or [], agent_labels(args.agent or []), strict=True):
        if not Path(path).is_file():
            raise PetalgymError(f"--agent {path}: no such file")
        specs.append(DeciderSpec("agent", {"path": path}, label=label))
    reference = args.reference if any(s.display == args.reference for s in specs) else None
    settings = {"": parse_overrides(args.set)}
    ev = evaluate(
        args.scenario,
        specs,
        range(args.seed0, args.seed0 + args.seeds),
        settings=settings,
        reference=reference,
        workers=args.workers,
        backend=args.backend,
        address=args.address,
        progress=not args.no_progress,
    )
    title = f"{args.scenario}: mean ± 95 % CI over {args.seeds} seeds"
    if args.wide:
        Console(width=max(console.width, 170)).print(ev.table(title))
    else:
        console.print(ev.table(title, compact=True))
    out = Path(args.output)
    files = [
        ev.to_csv(out / "evaluation.csv"),
        ev.to_json(out / "evaluation.json"),
        ev.plot(out / "evaluation.png"),
        out / "evaluation.md",
    ]
    ev.to_markdown(out / "evaluation.md")
    console.print("written: " + ", ".join(str(f) for f in files))
    return 0


# --------------------------------------------------------------------------------------------------
# solve
# --------------------------------------------------------------------------------------------------
def cmd_solve(args: argparse.Namespace) -> int:
    from petalgym.baselines.offline_solve import solve_offline
    from petalgym.scenario import load_scenario

    scenario = load_scenario(args.scenario, parse_overrides(args.set))
    limit = f", {args.solver}, time limit {args.time_limit:g} s" if args.method == "milp" else ""
    doing = f"solving: {args.method} for {args.requests} request(s) on {scenario.name}{limit}"
    console.print(doing + " ...", highlight=False)
    with console.status(doing):  # a spinner on a terminal while the solver runs
        instance, sol = solve_offline(
            scenario,
            args.requests,
            args.method,
            solver=args.solver,
            time_limit_s=args.time_limit,
            seed=args.seed,
        )
    head = Table(
        title=f"{scenario.name}: offline BPRR with {instance.num_requests} request(s), method {sol.method}"
    )
    head.add_column("quantity")
    head.add_column("value", justify="right")
    head.add_row("status", sol.status)
    head.add_row("objective: sum over requests of l_out x per-token time (s)", f"{sol.objective:.6g}")
    head.add_row("average per-token time, decode only (s per token)", f"{sol.mean_per_token(instance):.6g}")
    head.add_row("lower bound on the objective (s)", "-" if sol.bound is None else f"{sol.bound:.6g}")
    head.add_row("gap (objective - bound) / objective", "-" if sol.gap is None else f"{100 * sol.gap:.4g} %")
    head.add_row("solve time (s, wall)", f"{sol.solve_time_s:.3g}")
    if "theorem2_bound" in sol.info:
        head.add_row(
            "Theorem 2 bound on the average per-token time (s per token)", f"{sol.info['theorem2_bound']:.6g}"
        )
    if "over_budget" in sol.info:
        head.add_row("requests over a server's PETALS cache budget", str(sol.info["over_budget"]))
    console.print(head)
    place = Table(title="placement")
    for col in ("server", "profile", "blocks", "count"):
        place.add_column(col)
    for j, p in enumerate(sol.placement):
        place.add_row(
            scenario.servers[j].name,
            scenario.servers[j].profile.name,
            f"[{p.start}, {p.start + p.num_blocks})",
            str(p.num_blocks),
        )
    console.print(place)
    routes = Table(title="routes")
    for col in ("client", "chain: server \\[first block:end]", "requests"):
        routes.add_column(col)
    for c, items in sol.routes.items():
        for chain, count in items:
            hops = " > ".join(escape(f"{h[0]}[{h[1]}:{h[2]}]") for h in chain)
            routes.add_row(scenario.clients[c].name, hops, str(count))
    console.print(routes)
    return 0


# --------------------------------------------------------------------------------------------------
# reproduce
# --------------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cmd_reproduce(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from petalgym import reproduce as rp

    seeds = range(args.seed0, args.seed0 + args.seeds)
    out = Path(args.output)
    common = dict(
        workers=args.workers, backend=args.backend, address=args.address, progress=not args.no_progress
    )
    grid = rp.paper_grid(seeds, ablations=args.ablations, draws=not args.no_draws, **common)
    cells = rp.paper_cells(grid)
    rows = rp.comparison_rows(grid)
    terminal = Console(width=max(console.width, 170)) if args.wide else console
    terminal.print(rp.paper_cell_table(cells, args.seeds, args.wide))
    terminal.print(rp.comparison_table(rows, args.seeds, args.wide))
    out.mkdir(parents=True, exist_ok=True)
    payload = {"cells": [dataclasses.asdict(c) for c in cells], "grid": rows}
    paths = [
        grid.combined().to_csv(out / "paper_grid.csv"),
        _write(out / "paper_cells.md", rp.paper_cell_markdown(cells)),
        _write(out / "paper_comparison.md", rp.comparison_markdown(rows)),
        grid.defaults.plot(out / "paper_grid.png", title="per-token time, paper grid (petalgym defaults)"),
    ]
    if not args.no_successor:
        successor = rp.successor_grid(seeds, **common)
        srows = rp.successor_rows(successor)
        terminal.print(rp.successor_table(srows, args.seeds, args.wide))
        payload["successor"] = srows
        paths += [
            successor.to_csv(out / "successor.csv"),
            _write(out / "successor.md", rp.successor_markdown(srows)),
        ]
    paths.append(_write(out / "paper_comparison.json", json.dumps(payload, indent=1, default=str)))
    if args.sweeps:
        paths += list(rp.run_sweeps(seeds, out, **common).values())
    console.print("written: " + ", ".join(str(p) for p in paths))
    return 0


# --------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------
def parse_mixture(items: Sequence[str] | None) -> list[dict[str, Any]] | None:
    """``["workload.arrival_rate=0.1,1,2"]`` -> one override dict per value (several keys: zipped)."""
    if not items:
        return None
    columns: dict[str, list[Any]] = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not values.strip():
            raise PetalgymError(
                f"--mix {item!r}: expected key=value1,value2,..., e.g. workload.arrival_rate=1,2"
            )
        try:
            columns[key.strip()] = list(yaml.safe_load(f"[{values}]"))
        except yaml.YAMLError:
            raise PetalgymError(f"--mix {item!r}: the values are not valid YAML") from None
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1:
        raise PetalgymError(f"--mix: every key needs the same number of values, got {sorted(sizes)}")
    n = sizes.pop()
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def cmd_train(args: argparse.Namespace) -> int:
    import shlex

    from petalgym.agents.train import train

    command = "petalgym " + " ".join(shlex.quote(a) for a in (args.argv or []))
    result = train(
        args.env,
        output=args.output,
        scenario=args.scenario,
        algo=args.algo,
        timesteps=args.timesteps,
        seed=args.seed,
        n_envs=args.n_envs,
        config=args.config,
        hyperparams=parse_overrides(args.hp),
        scenario_overrides=parse_overrides(args.set),
        scenario_mixture=parse_mixture(args.mix),
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        checkpoint_freq=args.checkpoint_freq,
        tensorboard=not args.no_tensorboard,
        progress=not args.no_progress,
        export=args.export,
        export_best=args.export_best,
        threads=args.threads,
        verbose=args.verbose,
        command=command,
    )
    table = Table(title=f"{args.algo} on {args.env}: {result.metadata['scenario']['name']}")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    table.add_row("model", str(result.model_path))
    table.add_row("metadata", str(result.metadata_path))
    if result.best_model_path is not None:
        table.add_row("best validation model", str(result.best_model_path))
    if result.exported is not None:
        table.add_row("exported", str(result.exported))
    table.add_row(
        "checkpoints",
        result.checkpoint_note or f"{len(result.checkpoints)} in {Path(args.output) / 'checkpoints'}",
    )
    if result.eval_history:
        last = result.eval_history[-1]
        table.add_row(
            "validation (last)",
            f"per-token {last['per_token_s']:.4f} s, wait {last['wait_s']:.3f} s, "
            f"failed {last['failed']:.2f}, default action {100 * last['default_action_share']:.1f} %",
        )
    if not args.no_tensorboard:
        table.add_row("tensorboard", f"tensorboard --logdir {Path(args.output) / 'tb'}")
    console.print(table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from petalgym.agents.exported import export_file

    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"OUT {out} exists (pass --force to overwrite it)")
    path = export_file(args.model, out)
    size = path.stat().st_size
    console.print(
        f"exported the actor of {args.model} to {path} ({size / 1e6:.2f} MB) and {path.with_suffix('.json')}"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="petalgym",
        description="Block placement and request routing for geo-distributed LLM inference (PETALS-style).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scenarios", help="list the built-in scenarios")
    p.add_argument("--describe", action="store_true", help="print each scenario's description")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("tasks", help="list the petalgym-bench tasks")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("bench", help="a task's reference scores: baselines, tuned baselines, random, bound")
    p.add_argument("--task", required=True, help="task name or id (see `petalgym tasks`)")
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--test-seeds", help="FIRST-LAST instead of the task's test seeds (a quick look)")
    p.add_argument("--train-seeds", help="FIRST-LAST instead of the task's train seeds")
    p.add_argument("--validation-seeds", help="FIRST-LAST instead of the task's validation seeds")
    p.add_argument(
        "--agent",
        action="append",
        metavar="MODEL",
        help="also score this trained agent (repeatable; .npz export, or a trusted SB3 .zip)",
    )
    p.add_argument("--workers", type=_SEED, default=1, help="processes (0: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)

    from petalgym import catalog

    quantizations = tuple(catalog.QUANTIZATIONS)
    p = sub.add_parser("models", help="list the model catalog: blocks, bytes per block, KV bytes per token")
    p.add_argument("--quantization", choices=quantizations, default="nf4", help="weight format")
    p.add_argument("--wide", action="store_true", help="all columns (wider than 80 characters)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("gpus", help="list the GPU catalog: memory and (measured or estimated) block timing")
    p.add_argument("--model", choices=tuple(catalog.models()), default="bloom-176b", help="catalog model")
    p.add_argument("--quantization", choices=quantizations, default="nf4", help="weight format")
    p.add_argument("--l-in", type=_POSITIVE, default=20, help="prompt length for the prefill column")
    p.add_argument("--wide", action="store_true", help="also each GPU's label (wider than 80 characters)")
    p.set_defaults(func=cmd_gpus)

    p = sub.add_parser("simulate", help="simulate one episode with one decider and print a summary")
    p.add_argument("--scenario", default="clustered-9", help="built-in scenario name or YAML path")
    p.add_argument("--seed", type=_SEED, default=0, help="episode seed")
    p.add_argument("--decider", default="cg-bp-ws-rr", help="registered decider name")
    p.add_argument("--decider-arg", action="append", metavar="KEY=VALUE", help="decider keyword argument")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="scenario override, e.g. workload.arrival_rate=0.5",
    )
    p.add_argument("--csv", help="write per-request records to this CSV file")
    p.add_argument("--check", action="store_true", help="check invariants after every event (slow)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("evaluate", help="run deciders over seeds and print/write a comparison table")
    p.add_argument("--scenario", default="clustered-9", help="built-in scenario name or YAML path")
    p.add_argument(
        "--deciders", help=f"comma-separated decider names (default: {','.join(DEFAULT_DECIDERS)})"
    )
    p.add_argument(
        "--agent",
        action="append",
        metavar="MODEL",
        help="add a trained agent (repeatable): a numpy export (.npz, safe) or an SB3 zip (.zip: it is "
        "unpickled, so only from a trusted source)",
    )
    p.add_argument("--seeds", type=_POSITIVE, default=10, help="number of seeds")
    p.add_argument("--seed0", type=_SEED, default=0, help="first seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="scenario override")
    p.add_argument("--reference", default="petals", help="decider that reductions are computed against")
    p.add_argument("--workers", type=_SEED, default=1, help="processes for the local backend (0: all cores)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="where runs execute")
    p.add_argument("--address", help="Ray cluster address (backend ray); default: a local Ray")
    p.add_argument("--output", default="results/evaluate", help="directory for CSV, JSON and the plot")
    p.add_argument("--wide", action="store_true", help="every column in the terminal (markdown has all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("solve", help="solve the offline problem (place blocks + route R requests)")
    p.add_argument("--scenario", default="clustered-9", help="built-in scenario name or YAML path")
    p.add_argument("--requests", type=_POSITIVE, default=3, help="number of requests |R|")
    p.add_argument("--method", choices=("cg-bprr", "milp", "petals"), default="cg-bprr", help="solver")
    p.add_argument("--solver", choices=("highs", "cbc"), default="highs", help="MILP solver")
    p.add_argument("--time-limit", type=float, default=60.0, help="MILP time limit (s)")
    p.add_argument("--seed", type=_SEED, default=0, help="join order for --method petals")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="scenario override")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("reproduce", help="the paper's experiments: our numbers beside the paper's")
    p.add_argument("--seeds", type=_POSITIVE, default=5, help="number of seeds")
    p.add_argument("--seed0", type=_SEED, default=0, help="first seed")
    p.add_argument("--ablations", action="store_true", help="also run the three PETALS ablations")
    p.add_argument(
        "--no-draws", action="store_true", help="skip the replay on the clustered script's own arrival draws"
    )
    p.add_argument("--sweeps", action="store_true", help="also sweep C, eta, lambda and l_out (plots)")
    p.add_argument(
        "--no-successor",
        action="store_true",
        help="skip the successor paper's testbed (PETALS, BPRR, JFFC only, GBP-CR + GCA + JFFC)",
    )
    p.add_argument("--workers", type=_SEED, default=1, help="processes for the local backend (0: all cores)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="where runs execute")
    p.add_argument("--address", help="Ray cluster address (backend ray); default: a local Ray")
    p.add_argument("--output", default="results/reproduce", help="directory for tables and plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--wide", action="store_true", help="every column in the terminal (markdown has all)")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "train", help="train an RL agent (stable-baselines3 / sb3-contrib; needs petalgym[rl])"
    )
    p.add_argument(
        "--env", default="PetalRouting-v0", help="PetalRouting-v0, PetalPlacement-v0 or PetalAlloc-v0"
    )
    p.add_argument("--scenario", help="built-in scenario name or YAML path (default: clustered-9)")
    p.add_argument(
        "--algo", choices=("maskable-ppo", "ppo", "a2c", "dqn"), default="maskable-ppo", help="algorithm"
    )
    p.add_argument("--timesteps", type=_POSITIVE, help="agent decisions to train for (default: the config's)")
    p.add_argument("--output", required=True, help="directory for the model, metadata, checkpoints, logs")
    p.add_argument("--seed", type=_SEED, default=0, help="training seed")
    p.add_argument(
        "--n-envs", type=_POSITIVE, help="parallel envs (SubprocVecEnv if > 1; default: the config's)"
    )
    p.add_argument("--config", help="hyper-parameter YAML merged over petalgym/configs/agents/<algo>.yaml")
    p.add_argument(
        "--hp", action="append", metavar="KEY=VALUE", help="hyper-parameter override, e.g. n_steps=2048"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="scenario override")
    p.add_argument(
        "--mix",
        action="append",
        metavar="KEY=V1,V2,...",
        help="train on scenario variants, one drawn per episode (e.g. workload.arrival_rate=1,2,4)",
    )
    p.add_argument(
        "--eval-freq", type=_SEED, help="validation every N timesteps (0: never; default: the config's)"
    )
    p.add_argument(
        "--eval-episodes",
        type=_POSITIVE,
        help="validation episodes, held-out simulator seeds (default: the config's)",
    )
    p.add_argument(
        "--checkpoint-freq", type=_SEED, help="checkpoint every N timesteps (0: never; default: the config's)"
    )
    p.add_argument(
        "--export",
        metavar="PATH",
        help="also copy the model (+ .json sidecar) to PATH.zip, or export its actor to PATH.npz (numpy)",
    )
    p.add_argument("--export-best", action="store_true", help="export the best validation model instead")
    p.add_argument("--threads", type=_POSITIVE, default=1, help="torch threads")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard logs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (0, 1 or 2)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "export",
        help="write a trained model's actor as numpy arrays (.npz + .json): runs without torch, no pickle",
    )
    p.add_argument("model", help="a model zip from `petalgym train` (it is unpickled: trusted files only)")
    p.add_argument("out", help="the .npz to write (its .json sidecar is written beside it)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``petalgym`` command; bad input prints one ``error:`` line and exits with status 2."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, after one error: line)
        return int(exc.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except PetalgymError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
