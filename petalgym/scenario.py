"""Scenarios: a typed, validated description of one swarm and its workload, loaded from YAML.

A scenario fixes the model (L blocks, block size, KV-cache geometry), the GPU profiles, the servers and
their locations, the clients, the network (RTT between every client and server), the workload, server
churn, the overhead constants of the performance model and PETALS' own constants. Every field is checked
at load time; an error names the file, the field and the bad value in one line.

Units inside a :class:`Scenario`: seconds and bytes. YAML files use ms / GB (1e9 bytes) where noted.
"""

from __future__ import annotations

import copy
import csv
import importlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from petalgym import catalog, datasets
from petalgym.contention import PREFILL_MODES, Contention
from petalgym.distributions import Distribution, _show, parse_distribution
from petalgym.errors import InfeasibleScenarioError, ScenarioError
from petalgym.topology import is_file, load_topology
from petalgym.workload import RateProfile

_MISSING = object()
_BIG = 1e12  # upper bound on any plain number in a scenario: catches fuzzed or mistyped values
_MAX_LOCATION = 1e9  # upper bound on a cluster or node index
_MAX_TOKENS = 10_000_000  # upper bound on l_in and on l_out
_MAX_REQUESTS = 100_000_000  # upper bound on the requests of an episode (given, or expected)


# --------------------------------------------------------------------------------------------------
# Typed model
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """The LLM: ``num_blocks`` (L) transformer blocks of ``block_bytes`` (s_m) each.

    ``quantization`` (nf4, int8, fp16, or None for a model given in bytes), ``params_per_block`` and
    ``active_params_per_block`` (the weights one token reads: Mixtral's two experts) feed the GPU timing
    estimates; ``petals_kv_groups`` is the KV grouping PETALS sizes its cache budget with and
    ``max_session_tokens`` the longest session a PETALS server accepts (None: no limit);
    ``catalog`` names the catalog entry the model came from (None: a custom model)."""

    name: str
    num_blocks: int
    block_bytes: int
    d_model: int
    kv_groups: int
    dtype_bytes: int
    quantization: str | None = None
    params_per_block: int | None = None
    active_params_per_block: int | None = None
    petals_kv_groups: int = 1
    max_session_tokens: int | None = None
    catalog: str | None = None

    def kv_bytes_per_block(self, tokens: int) -> int:
        """KV-cache bytes of one block for one ``tokens``-token session: 2 d_model tokens dtype / groups."""
        return (2 * self.d_model * int(tokens) * self.dtype_bytes) // self.kv_groups

    def session_bytes(self, l_in: int, l_out: int) -> int:
        """s_c: the KV cache of ONE block for ONE session, allocated for the full length l_in + l_out."""
        return self.kv_bytes_per_block(l_in + l_out)


@dataclass(frozen=True)
class GpuProfile:
    """A GPU type: memory (bytes), per-block decode time tau (s/token), prefill time tauI(l_in) (s).

    ``estimated``: tau and prefill tau come from the catalog's timing rule, not from a measurement."""

    name: str
    memory_bytes: int
    tau_s: float
    prefill_per_token_s: float
    prefill_base_s: float
    max_blocks: int | None
    inference_rps: float
    forward_rps: float
    network_rps: float
    estimated: bool = False
    label: str = ""

    def prefill_tau(self, l_in: float) -> float:
        """tauI_j(l_in): prefill time of one block for a prompt of ``l_in`` tokens, in seconds."""
        return self.prefill_per_token_s * l_in + self.prefill_base_s


@dataclass(frozen=True)
class ServerSpec:
    """One server: its index, a display name, its GPU profile and its location (cluster or node)."""

    id: int
    name: str
    profile: GpuProfile
    location: int


@dataclass(frozen=True)
class ClientSpec:
    """One client: index, name, location (cluster or node) and its share of the requests."""

    id: int
    name: str
    location: int
    weight: float


@dataclass(frozen=True, eq=False)
class Network:
    """Raw round-trip times ``rtt_s[client, server]`` in seconds, how they were obtained, and, where the
    network defines them, the raw RTTs ``server_rtt_s[server, server]`` between servers (None otherwise;
    petalgym's time model never uses them -- the client relays every hop -- but the authors' emulation of
    PETALS' routing does)."""

    kind: str
    rtt_s: np.ndarray
    topology: str | None = None
    server_rtt_s: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Trace:
    """A recorded workload: arrival times (s), prompt and output lengths, and client of each request
    (None: clients are drawn by their weights in each episode)."""

    arrival_s: np.ndarray
    l_in: np.ndarray
    l_out: np.ndarray
    client: np.ndarray | None


@dataclass(frozen=True)
class Workload:
    """Requests: Poisson arrivals at ``arrival_rate`` per second (or a trace), and their lengths."""

    arrival_rate: float
    num_requests: int | None
    horizon_s: float | None
    l_in: Distribution
    l_out: Distribution
    max_wait_s: float | None
    trace: Trace | None = None
    first_arrival: str = "drawn"  # Poisson arrivals: "drawn" (the first gap too) or "zero" (at t = 0)
    rate_profile: RateProfile | None = None  # time-varying Poisson rate: arrival_rate x factor(t)
    trace_window_s: float | None = None  # each episode replays this long a stretch of the trace
    trace_start_s: float = 0.0
    trace_random_start: bool = False  # the stretch starts at a random point of the trace per episode
    trace_note: str = ""  # what was changed in a named trace (provenance)
    warmup_s: float = 0.0  # requests arriving before this are left out of the metrics

    def mean_lengths(self) -> tuple[int, int]:
        """(l_in, l_out): the mean lengths rounded half up (of the trace, if the workload is a trace)."""
        if self.trace is not None:
            l_in, l_out = float(np.mean(self.trace.l_in)), float(np.mean(self.trace.l_out))
        else:
            l_in, l_out = self.l_in.mean, self.l_out.mean
        return max(math.floor(l_in + 0.5), 1), max(math.floor(l_out + 0.5), 1)

    @property
    def max_tokens(self) -> int:
        """The largest l_in + l_out a request of this workload can have."""
        if self.trace is not None:
            return int((self.trace.l_in + self.trace.l_out).max())
        return int(self.l_in.maximum + self.l_out.maximum)


@dataclass(frozen=True)
class Shocks:
    """Correlated failures: per group of servers, shocks arrive as a Poisson process (``rate_per_day``);
    at a shock each up server of the group fails at once with ``probability`` (realism.md section 5)."""

    rate_per_day: float
    probability: float
    #: Server ids per group (a location, or a list of server names).
    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Churn:
    """Server churn: time online (lifetime) then offline (downtime), repeated; off unless ``enabled``.

    ``lifetime_s`` None means no independent departures (only ``shocks`` take servers down)."""

    enabled: bool
    lifetime_s: Distribution | None
    downtime_s: Distribution
    failure_fraction: float
    drain_timeout_s: float
    no_chain_timeout_s: float
    load_s_per_gb: float
    shocks: Shocks | None = None
    preset: str | None = None


@dataclass(frozen=True)
class Overheads:
    """Constants of the performance model (docs/model.md), in seconds."""

    token_overhead_s: float = 0.100
    prefill_overhead_s: float = 0.067
    prefill_per_token_s: float = 0.0007049
    initial_delay_s: float = 0.070


@dataclass(frozen=True)
class PetalsConstants:
    """PETALS' own defaults (docs/deciders.md), used by the PETALS baseline."""

    attn_cache_tokens: int = 4096
    autograd_gib: float = 2.0
    balance_quality: float = 0.75
    mean_balance_check_period_s: float = 120.0
    rebalance: bool = True
    hop_overhead_s: float = 0.018
    lacking_cache_penalty_s: float = 10.0


@dataclass(frozen=True)
class SimulationSettings:
    """The simulator's own mechanics, not any decider's: a back-off retry waits 1, 2, 4, ... s, each wait
    capped at ``backoff_cap_s`` (the paper's emulation of PETALS' retries)."""

    backoff_cap_s: float = 60.0


@dataclass(frozen=True, eq=False)
class Scenario:
    """A complete, validated world: model, servers, clients, network, workload, churn and constants."""

    name: str
    description: str
    source: str
    model: ModelSpec
    profiles: dict[str, GpuProfile]
    servers: tuple[ServerSpec, ...]
    clients: tuple[ClientSpec, ...]
    network: Network
    workload: Workload
    churn: Churn
    overheads: Overheads = field(default_factory=Overheads)
    petals: PetalsConstants = field(default_factory=PetalsConstants)
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    contention: Contention = field(default_factory=Contention)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    base_dir: Path | None = field(default=None, repr=False)  # resolves relative trace/topology paths
    _memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def memo(self, key: Any, factory: Callable[[], Any]) -> Any:
        """A value derived from this (immutable) scenario, computed once by ``factory`` and kept with it:
        e.g. its TimeModel or a decider's offline plan. ``dataclasses.replace`` starts a fresh memo."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = factory()
            return value

    @property
    def num_servers(self) -> int:
        return len(self.servers)

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    @property
    def num_blocks(self) -> int:
        return self.model.num_blocks

    def with_overrides(self, overrides: dict[str, Any]) -> Scenario:
        """A new scenario from this one's YAML with dotted-path ``overrides`` applied, re-validated."""
        try:
            data = apply_overrides(self.raw, overrides)
        except ScenarioError as exc:
            raise ScenarioError(f"{self.source}: {exc}") from None
        return scenario_from_dict(data, source=self.source, base_dir=self.base_dir)

    def summary(self) -> str:
        """One line describing the scenario."""
        profiles: dict[str, int] = {}
        for s in self.servers:
            profiles[s.profile.name] = profiles.get(s.profile.name, 0) + 1
        mix = " + ".join(f"{n} {p}" for p, n in profiles.items())
        w = self.workload
        load = (w.trace_note or "trace") if w.trace is not None else f"lambda={w.arrival_rate:g}/s"
        if w.rate_profile is not None:
            load += f" x {w.rate_profile.kind} profile"
        churn = ", churn" if self.churn.enabled else ""
        fifo = ", fifo contention" if self.contention.enabled else ""
        return f"{self.num_servers} servers ({mix}), {self.num_clients} client(s), {load}{churn}{fifo}"


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------
class _Section:
    """A YAML mapping under validation; ``where`` is the path used in error messages."""

    def __init__(self, data: Any, where: str, allowed: set[str] | None = None):
        if data is None:
            data = {}
        label = where or "top level"
        if not isinstance(data, dict):
            raise ScenarioError(f"{label}: expected a mapping, got {type(data).__name__} {_show(data)}")
        bad_keys = [k for k in data if not isinstance(k, str)]
        if bad_keys:
            raise ScenarioError(f"{label}: field names must be strings, got {_show(bad_keys[0])}")
        if allowed is not None:
            unknown = sorted(set(data) - allowed)
            if unknown:
                raise ScenarioError(
                    f"{label}: unknown field {_show(unknown[0])} (allowed: {', '.join(sorted(allowed))})"
                )
        self.data = data
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise ScenarioError(f"{self.at(key)}: missing required field")
            return default
        return self.data[key]

    def num(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: float = 0.0,
        strict: bool = False,
        maximum: float = _BIG,
        integer: bool = False,
    ) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if integer else "a number"
            raise ScenarioError(f"{self.at(key)}: expected {kind}, got {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # (an int may be too large for a float)
            raise ScenarioError(f"{self.at(key)}: expected a finite number, got {_show(value)}")
        if integer and value != int(value):
            raise ScenarioError(f"{self.at(key)}: expected an integer, got {_show(value)}")
        if value < minimum or (strict and value == minimum):
            rel = ">" if strict else ">="
            raise ScenarioError(f"{self.at(key)}: must be {rel} {minimum:g}, got {_show(value)}")
        if value > maximum:
            raise ScenarioError(f"{self.at(key)}: must be <= {maximum:g}, got {_show(value)}")
        return int(value) if integer else float(value)

    def string(self, key: str, default: Any = _MISSING, choices: tuple[str, ...] | None = None) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ScenarioError(f"{self.at(key)}: expected a string, got {_show(value)}")
        if choices is not None and value not in choices:
            raise ScenarioError(f"{self.at(key)}: expected one of {', '.join(choices)}, got {_show(value)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ScenarioError(f"{self.at(key)}: expected true or false, got {_show(value)}")
        return value

    def section(self, key: str, allowed: set[str] | None = None) -> _Section:
        return _Section(self.data.get(key), self.at(key), allowed)

    def items(self, key: str) -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            raise ScenarioError(f"{self.at(key)}: expected a non-empty list, got {_show(value)}")
        return value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-copy ``data`` and set each dotted path (``"workload.arrival_rate"``, ``"servers.0.count"``)."""
    out = copy.deepcopy(data)
    for path, value in overrides.items():
        node: Any = out
        keys = path.split(".")
        for k in keys[:-1]:
            if isinstance(node, list):
                try:
                    node = node[int(k)]
                except (ValueError, IndexError):
                    raise ScenarioError(f"override {_show(path)}: no list item {_show(k)}") from None
            else:
                if not isinstance(node, dict):
                    raise ScenarioError(f"override {_show(path)}: {_show(k)} is not inside a mapping")
                if node.get(k) is None:  # missing, or an empty YAML section (null)
                    node[k] = {}
                node = node[k]
        last = keys[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ScenarioError(f"override {_show(path)}: no list item {_show(last)}") from None
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ScenarioError(f"override {_show(path)}: cannot set a field inside {_show(node)}")
    return out


# --------------------------------------------------------------------------------------------------
# Parsers per section
# --------------------------------------------------------------------------------------------------
_MODEL_FIELDS = {
    "name",
    "num_blocks",
    "params_per_block",
    "active_params_per_block",
    "bits_per_param",
    "size_overhead",
    "block_bytes",
    "block_gb",
    "d_model",
    "kv_groups",
    "dtype_bytes",
    "quantization",
    "petals_kv_groups",
    "max_session_tokens",
}


def _parse_model(value: Any, where: str) -> ModelSpec:
    """``model``: a catalog name, ``{name: <catalog name>, quantization: int8}``, ``{base: <catalog
    name>, ...overrides}`` or a custom model given field by field."""
    known = ", ".join(catalog.models())
    if isinstance(value, str):
        value = {"base": value} if value in catalog.models() else value
        if isinstance(value, str):
            raise ScenarioError(f"{where}: unknown model {_show(value)} (built-in: {known})")
    sec = _Section(value, where, _MODEL_FIELDS | {"base"})
    base = sec.string("base", None)
    named = sec.raw("name", None)
    if base is None and isinstance(named, str) and not sec.has("num_blocks") and named in catalog.models():
        base = named
    quant = sec.string("quantization", None, choices=tuple(catalog.QUANTIZATIONS))
    if quant is not None and sec.has("bits_per_param"):
        raise ScenarioError(f"{where}: give quantization or bits_per_param, not both")
    data: dict[str, Any] = {}
    if base is not None:
        if base not in catalog.models():
            raise ScenarioError(f"{sec.at('base')}: unknown model {_show(base)} (built-in: {known})")
        data = catalog.model_fields(base, quant or "nf4")
    elif quant is not None:
        data = {"bits_per_param": catalog.QUANTIZATIONS[quant], "size_overhead": catalog.SIZE_OVERHEAD}
    data.update({k: v for k, v in sec.data.items() if k not in ("base", "quantization")})
    name = data.pop("name", base or "custom")
    if not isinstance(name, str):
        raise ScenarioError(f"{where}.name: expected a string, got {_show(name)}")
    if quant is None:
        quant = data.pop("quantization", None)
    else:
        data.pop("quantization", None)
    sec = _Section(data, where, _MODEL_FIELDS - {"name", "quantization"})
    num_blocks = sec.num("num_blocks", integer=True, minimum=1, maximum=100_000)
    params = sec.num("params_per_block", None, integer=True, minimum=1)
    if sec.has("block_bytes"):
        block_bytes = sec.num("block_bytes", integer=True, minimum=1)
    elif sec.has("block_gb"):
        block_bytes = round(sec.num("block_gb", strict=True, maximum=1e6) * 1e9)
    else:
        bits = sec.num("bits_per_param", strict=True, maximum=64)
        overhead = sec.num("size_overhead", 1.0, strict=True, maximum=100)
        block_bytes = int(sec.num("params_per_block", strict=True) * bits / 8.0 * overhead)
    if block_bytes < 1:
        raise ScenarioError(f"{where}: block size must be at least 1 byte, got {block_bytes}")
    kv_groups = sec.num("kv_groups", 1, integer=True, minimum=1, maximum=100_000)
    return ModelSpec(
        name=str(name),
        num_blocks=num_blocks,
        block_bytes=block_bytes,
        d_model=sec.num("d_model", integer=True, minimum=1, maximum=10_000_000),
        kv_groups=kv_groups,
        dtype_bytes=sec.num("dtype_bytes", 2, integer=True, minimum=1, maximum=16),
        quantization=quant,
        params_per_block=params,
        active_params_per_block=sec.num("active_params_per_block", params, integer=True, minimum=1),
        petals_kv_groups=sec.num("petals_kv_groups", kv_groups, integer=True, minimum=1, maximum=100_000),
        max_session_tokens=sec.num("max_session_tokens", None, integer=True, minimum=2, maximum=_MAX_TOKENS),
        catalog=base,
    )


_PROFILE_FIELDS = {
    "base",
    "label",
    "memory_gb",
    "tau_ms",
    "prefill_tau_ms",
    "max_blocks",
    "inference_rps",
    "forward_rps",
    "network_rps",
    "bandwidth_gbs",
    "fp16_tflops",
}
_TIMING_FIELDS = ("tau_ms", "prefill_tau_ms", "inference_rps", "forward_rps", "network_rps")


def _catalog_profile(name: str, model: ModelSpec) -> dict[str, Any] | None:
    """Profile fields of catalog GPU ``name`` for ``model``: PETALS' measurement of this model and
    quantisation, else the catalog rule's estimate (needs the model's parameters per block); a model given
    in bytes only gets the GPU's first measurement (BLOOM-176B's), as an estimate; None if neither."""
    gpu = catalog.gpus()[name]
    out: dict[str, Any] = {
        "memory_gb": gpu.memory_gb,
        "max_blocks": None,
        "label": gpu.label,
        "bandwidth_gbs": gpu.bandwidth_gbs,
        "fp16_tflops": gpu.fp16_tflops,
    }
    measured = gpu.measured.get(model.catalog or "")
    if measured is not None and measured.quantization == model.quantization:
        out.update(_measured_fields(measured), estimated=False)
    elif model.params_per_block is not None:
        out.update(_rule_timing(gpu, model))
    elif gpu.measured:
        out.update(_measured_fields(next(iter(gpu.measured.values()))), estimated=True)
    else:
        return None
    return out


def _measured_fields(m: catalog.Measured) -> dict[str, Any]:
    return {
        "tau_ms": m.tau_ms,
        "prefill_tau_ms": dict(m.prefill_tau_ms),
        "inference_rps": m.inference_rps,
        "forward_rps": m.forward_rps,
        "network_rps": m.network_rps,
        "max_blocks": m.max_blocks,
    }


def _parse_profiles(value: Any, where: str, model: ModelSpec) -> dict[str, GpuProfile]:
    """The catalog's GPUs for ``model`` (measured or estimated timing), then ``gpu_profiles``: new
    profiles, or catalog ones changed field by field (``base``: start from another profile)."""
    names = list(catalog.gpus())
    raw: dict[str, dict[str, Any]] = {}
    sec = _Section(value, where)
    for name, spec in sec.data.items():
        psec = _Section(spec, f"{where}.{name}", _PROFILE_FIELDS)
        base = psec.string("base", None)
        if base is not None:
            if base not in catalog.gpus() and base not in raw:
                raise ScenarioError(
                    f"{psec.at('base')}: unknown GPU profile {_show(base)} (built-in: {', '.join(names)})"
                )
            merged = dict(raw[base]) if base in raw else (_catalog_profile(base, model) or {})
        else:
            merged = (_catalog_profile(name, model) or {}) if name in catalog.gpus() else {}
        given = {k: v for k, v in psec.data.items() if k != "base"}
        if any(k in given for k in ("bandwidth_gbs", "fp16_tflops")) and "tau_ms" not in given:
            merged = {**merged, **_estimated(psec, model, merged)}
        if "tau_ms" in given and "prefill_tau_ms" in given:
            merged["estimated"] = False
        merged.update(given)
        raw[name] = merged
    profiles = {}
    for name in names:
        if name not in raw:
            spec = _catalog_profile(name, model)
            if spec is not None:  # (None: a custom model in bytes cannot be timed on this GPU)
                raw[name] = spec
    for name, spec in raw.items():
        spec = dict(spec)
        estimated = bool(spec.pop("estimated", False))
        psec = _Section(spec, f"{where}.{name}", _PROFILE_FIELDS - {"base"})
        if not psec.has("tau_ms"):
            raise ScenarioError(
                f"{where}.{name}: needs tau_ms and prefill_tau_ms, or bandwidth_gbs and fp16_tflops to "
                "estimate them (and a model with params_per_block)"
            )
        pre = psec.section("prefill_tau_ms", {"per_token", "base"})
        profiles[name] = GpuProfile(
            name=name,
            memory_bytes=round(psec.num("memory_gb", strict=True, maximum=1e7) * 1e9),
            tau_s=psec.num("tau_ms", strict=True, maximum=1e7) / 1e3,
            prefill_per_token_s=pre.num("per_token", maximum=1e7) / 1e3,
            prefill_base_s=pre.num("base", maximum=1e7) / 1e3,
            max_blocks=psec.num("max_blocks", None, integer=True, minimum=1, maximum=100_000),
            inference_rps=psec.num("inference_rps", 300.0, strict=True),
            forward_rps=psec.num("forward_rps", 3000.0, strict=True),
            network_rps=psec.num("network_rps", 3000.0, strict=True),
            estimated=estimated,
            label=psec.string("label", ""),
        )
    return profiles


def _rule_timing(gpu: catalog.GpuEntry, model: ModelSpec) -> dict[str, Any]:
    """The catalog rule's timing of ``model`` (with its parameters per block) on ``gpu``."""
    params = int(model.params_per_block or 0)
    bits = 8.0 * model.block_bytes / params
    if model.quantization is not None:
        bits = catalog.QUANTIZATIONS[model.quantization]
    active = model.active_params_per_block or params
    return {**catalog.estimate_timing(gpu, params, active, bits, model.d_model), "estimated": True}


def _estimated(psec: _Section, model: ModelSpec, merged: dict[str, Any]) -> dict[str, Any]:
    """Timing estimated by the catalog rule for a profile given by its bandwidth and FP16 throughput."""
    if model.params_per_block is None:
        raise ScenarioError(
            f"{psec.where}: estimating tau from bandwidth_gbs / fp16_tflops needs a model with "
            "params_per_block (a catalog model, or one given by its parameters)"
        )
    bw = psec.num("bandwidth_gbs", merged.get("bandwidth_gbs", _MISSING), strict=True, maximum=1e7)
    tflops = psec.num("fp16_tflops", merged.get("fp16_tflops", _MISSING), strict=True, maximum=1e7)
    gpu = catalog.GpuEntry(name="custom", label="", memory_gb=0.0, bandwidth_gbs=bw, fp16_tflops=tflops)
    return _rule_timing(gpu, model)


def _locations_from(entry: _Section, key: str, count: int) -> list[int | None]:
    loc = entry.raw(key, None)
    if loc is None or loc == "auto":
        return [None] * count
    if isinstance(loc, list):
        if len(loc) != count:
            raise ScenarioError(
                f"{entry.at(key)}: expected {count} locations (one per server), got {_show(loc)}"
            )
        out = []
        for i, v in enumerate(loc):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ScenarioError(f"{entry.at(key)}[{i}]: expected a non-negative integer, got {_show(v)}")
            if v > _MAX_LOCATION:
                raise ScenarioError(f"{entry.at(key)}[{i}]: must be <= {_MAX_LOCATION:g}, got {_show(v)}")
            out.append(v)
        return out
    if isinstance(loc, bool) or not isinstance(loc, int) or loc < 0:
        raise ScenarioError(
            f"{entry.at(key)}: expected a non-negative integer, a list or 'auto', got {_show(loc)}"
        )
    if loc > _MAX_LOCATION:
        raise ScenarioError(f"{entry.at(key)}: must be <= {_MAX_LOCATION:g}, got {_show(loc)}")
    return [loc] * count


def _parse_servers(
    value: Any, where: str, profiles: dict[str, GpuProfile]
) -> list[tuple[str, GpuProfile, int | None]]:
    if not isinstance(value, list) or not value:
        raise ScenarioError(f"{where}: expected a non-empty list of servers, got {_show(value)}")
    out: list[tuple[str, GpuProfile, int | None]] = []
    for i, item in enumerate(value):
        sec = _Section(item, f"{where}[{i}]", {"profile", "count", "location", "name"})
        pname = sec.string("profile")
        if pname not in profiles:
            known = ", ".join(sorted(profiles))
            known = known if len(known) <= 300 else f"{known[:280]}..."
            raise ScenarioError(
                f"{sec.at('profile')}: unknown GPU profile {_show(pname)} (known: {known}; "
                "define others under gpu_profiles)"
            )
        count = sec.num("count", 1, integer=True, minimum=1, maximum=100_000)
        name = sec.string("name", None)
        for k, loc in enumerate(_locations_from(sec, "location", count)):
            label = f"{pname}-{len(out)}" if name is None else (name if count == 1 else f"{name}-{k}")
            out.append((label, profiles[pname], loc))
    return out


def _parse_clients(value: Any, where: str) -> tuple[list[tuple[str, int | None, float]], float | None]:
    """(name, location, weight) per client, and the sum of their rates if they are given by rate."""
    if value is None:
        value = [{"name": "client"}]
    if not isinstance(value, list) or not value:
        raise ScenarioError(f"{where}: expected a non-empty list of clients, got {_show(value)}")
    out = []
    rated = []
    for i, item in enumerate(value):
        sec = _Section(item, f"{where}[{i}]", {"name", "location", "weight", "rate"})
        (loc,) = _locations_from(sec, "location", 1)
        if sec.has("rate") and sec.has("weight"):
            raise ScenarioError(f"{where}[{i}]: give rate or weight, not both")
        rated.append(sec.has("rate"))
        share = (
            sec.num("rate", strict=True, maximum=1e6)
            if sec.has("rate")
            else sec.num("weight", 1.0, strict=True)
        )
        out.append((sec.string("name", f"client-{i}"), loc, share))
    if any(rated) and not all(rated):
        i = rated.index(False)
        raise ScenarioError(f"{where}[{i}].rate: give every client a rate (requests/s), or none")
    return out, (sum(w for _, _, w in out) if rated and all(rated) else None)


_NETWORK_FIELDS = {
    "kind",
    "rtt_ms",
    "intra_rtt_ms",
    "inter_rtt_ms",
    "cluster_rtt_ms",
    "topology",
    "seed",
    "low_degree",
    "client_nodes",
    "server_rtt_ms",
}


def _parse_network(
    value: Any,
    where: str,
    servers: list[tuple[str, GpuProfile, int | None]],
    clients: list[tuple[str, int | None, float]],
    base_dir: Path | None,
) -> tuple[Network, list[int], list[int]]:
    """The network section: (RTTs, server locations, client locations), by one parser per ``kind``."""
    sec = _Section(value, where, _NETWORK_FIELDS)
    if not sec.data:
        raise ScenarioError(f"{where}: missing required section")
    kind = sec.string("kind", choices=("matrix", "clusters", "topology", "ripe-atlas"))
    s_loc = [loc for _, _, loc in servers]
    c_loc = [loc for _, loc, _ in clients]
    if kind == "matrix":
        return _matrix_network(sec, s_loc, c_loc)
    if kind == "clusters":
        return _cluster_network(sec, s_loc, c_loc)
    # (server entries may have a count: name the server itself, not an entry index)
    labels = [f"servers ({name}).location" for name, _, _ in servers]
    labels += [f"clients[{i}].location" for i in range(len(clients))]
    if kind == "ripe-atlas":
        return _ripe_network(sec, s_loc, c_loc, labels)
    return _topology_network(sec, s_loc, c_loc, base_dir, labels)


def _rtt_matrix(sec: _Section, key: str, what: str) -> np.ndarray:
    """The matrix of RTTs (ms) under ``key``: numbers, finite, in [0, 1e7]; ``what`` names its shape."""
    raw = sec.raw(key)
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise ScenarioError(f"{sec.at(key)}: expected {what} of numbers, got {_show(raw)}") from None
    ok = np.isfinite(arr) & (arr >= 0) & (arr <= 1e7)
    if arr.ndim == 2 and not ok.all():
        raise ScenarioError(f"{sec.at(key)}: entries must be finite, >= 0 and <= 1e7 ms, got {arr[~ok][0]:g}")
    return arr


def _matrix_network(
    sec: _Section, s_loc: list[int | None], c_loc: list[int | None]
) -> tuple[Network, list[int], list[int]]:
    """kind: matrix -- ``rtt_ms`` gives every client x server RTT."""
    n_c, n_s = len(c_loc), len(s_loc)
    arr = _rtt_matrix(sec, "rtt_ms", "a clients x servers matrix")
    if arr.shape != (n_c, n_s):
        raise ScenarioError(
            f"{sec.at('rtt_ms')}: expected shape {n_c} clients x {n_s} servers, got {arr.shape}"
        )
    servers = None
    if sec.has("server_rtt_ms"):
        servers = _rtt_matrix(sec, "server_rtt_ms", "a servers x servers matrix")
        if servers.shape != (n_s, n_s):
            raise ScenarioError(
                f"{sec.at('server_rtt_ms')}: expected shape {n_s} x {n_s} servers, got {servers.shape}"
            )
        servers = servers / 1e3
    return Network("matrix", arr / 1e3, None, servers), [v or 0 for v in s_loc], [v or 0 for v in c_loc]


def _cluster_network(
    sec: _Section, s_loc: list[int | None], c_loc: list[int | None]
) -> tuple[Network, list[int], list[int]]:
    """kind: clusters -- every server and client sits in a cluster; RTTs by ``cluster_rtt_ms`` (a
    matrix) or ``intra_rtt_ms`` / ``inter_rtt_ms``."""
    if any(v is None for v in s_loc + c_loc):
        raise ScenarioError(
            f"{sec.where}: kind 'clusters' needs a 'location' (cluster index) on every server and client"
        )
    servers, clients = [int(v) for v in s_loc], [int(v) for v in c_loc]  # type: ignore[arg-type]
    if not sec.has("cluster_rtt_ms"):  # cluster indices are labels: no (n x n) matrix, which may be huge
        intra = sec.num("intra_rtt_ms", maximum=1e7)
        inter = sec.num("inter_rtt_ms", maximum=1e7)
        same = np.asarray(clients)[:, None] == np.asarray(servers)[None, :]
        among = np.asarray(servers)[:, None] == np.asarray(servers)[None, :]
        rtt = np.where(same, intra, inter) / 1e3
        return Network("clusters", rtt, None, np.where(among, intra, inter) / 1e3), servers, clients
    n_clusters = max(servers + clients) + 1
    mat = _rtt_matrix(sec, "cluster_rtt_ms", "a square matrix")
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] < n_clusters:
        raise ScenarioError(
            f"{sec.at('cluster_rtt_ms')}: expected a square matrix covering {n_clusters} clusters, "
            f"got shape {mat.shape}"
        )
    rtt, among = mat[np.ix_(clients, servers)] / 1e3, mat[np.ix_(servers, servers)] / 1e3
    return Network("clusters", rtt, None, among), servers, clients


def _topology_network(
    sec: _Section,
    s_loc: list[int | None],
    c_loc: list[int | None],
    base_dir: Path | None,
    labels: list[str],
) -> tuple[Network, list[int], list[int]]:
    """kind: topology -- servers and clients on nodes of a Topology Zoo graph (given, or drawn with
    ``seed``: servers on distinct nodes of the largest component, clients on low-degree nodes, or with
    ``client_nodes: any`` on any node no server uses, as the authors' scripts draw them); raw RTT = 2 x
    the shortest-path delay."""
    topo = _load_network_topology(sec, base_dir)
    rng = np.random.default_rng(sec.num("seed", 0, integer=True, maximum=2**63 - 1))
    n_nodes = topo.num_nodes
    for i, v in enumerate(s_loc + c_loc):
        if v is not None and v >= n_nodes:
            raise ScenarioError(f"{labels[i]}: node {v} is not in topology {topo.name} (0..{n_nodes - 1})")
    component = topo.largest_component()
    taken = {v for v in s_loc if v is not None}
    free = [v for v in component if v not in taken]
    need = sum(v is None for v in s_loc)
    if need > len(free):
        raise ScenarioError(
            f"{sec.where}: cannot place {need} servers on distinct nodes: topology {topo.name} has only "
            f"{len(free)} free nodes in its largest component"
        )
    picks = list(rng.choice(free, size=need, replace=False)) if need else []
    s_nodes = [int(v) if v is not None else int(picks.pop(0)) for v in s_loc]
    if sec.string("client_nodes", "low-degree", choices=("low-degree", "any")) == "any":
        low = [v for v in component if v not in set(s_nodes)] or list(component)
    else:
        max_degree = sec.num("low_degree", 2, integer=True, minimum=1)
        low = _low_degree_nodes(topo, component, set(s_nodes), max_degree)
    c_nodes = [int(v) if v is not None else int(rng.choice(low)) for v in c_loc]
    rtt, among = topo.rtt_matrix(c_nodes, s_nodes), topo.rtt_matrix(s_nodes, s_nodes)
    return Network("topology", rtt, topology=topo.name, server_rtt_s=among), s_nodes, c_nodes


#: RTT between two RIPE Atlas destinations i and j (the successor paper's construction): this share of
#: each end's median latency to the measuring anchor (ms) plus this many ms per km of great-circle distance.
RIPE_MEDIAN_SHARE = 0.3
RIPE_MS_PER_KM = 0.01


def _ripe_network(
    sec: _Section, s_loc: list[int | None], c_loc: list[int | None], labels: list[str]
) -> tuple[Network, list[int], list[int]]:
    """kind: ripe-atlas -- servers and clients on distinct destinations of the shipped European RIPE Atlas
    measurements (given as ``location`` = destination index, or drawn with ``seed``); RTT(i, j) =
    0.3 x median_i + 0.3 x median_j + 0.01 ms/km x great-circle distance (0 between a node and itself)."""
    atlas = datasets.ripe_atlas()
    n_nodes = len(atlas)
    n_s = len(s_loc)
    for i, v in enumerate(s_loc + c_loc):
        if v is not None and v >= n_nodes:
            raise ScenarioError(
                f"{labels[i]}: destination {v} is not in the RIPE Atlas data (0..{n_nodes - 1})"
            )
    rng = np.random.default_rng(sec.num("seed", 0, integer=True, maximum=2**63 - 1))
    taken = {v for v in s_loc + c_loc if v is not None}
    free = np.asarray([v for v in range(n_nodes) if v not in taken])
    need = sum(v is None for v in s_loc + c_loc)
    if need > len(free):
        raise ScenarioError(f"{sec.where}: cannot place {need} servers and clients on distinct destinations")
    picks = [int(v) for v in rng.choice(free, size=need, replace=False)]
    nodes = [int(v) if v is not None else picks.pop(0) for v in s_loc + c_loc]
    s_nodes, c_nodes = nodes[:n_s], nodes[n_s:]

    def rtt_s(a: list[int], b: list[int]) -> np.ndarray:
        ia, ib = np.asarray(a), np.asarray(b)
        km = datasets.great_circle_km(
            atlas.latitude[ia][:, None],
            atlas.longitude[ia][:, None],
            atlas.latitude[ib][None, :],
            atlas.longitude[ib][None, :],
        )
        ms = RIPE_MEDIAN_SHARE * (atlas.median_ms[ia][:, None] + atlas.median_ms[ib][None, :])
        ms = ms + RIPE_MS_PER_KM * km
        return np.where(ia[:, None] == ib[None, :], 0.0, ms) / 1e3

    return Network("ripe-atlas", rtt_s(c_nodes, s_nodes), None, rtt_s(s_nodes, s_nodes)), s_nodes, c_nodes


def _load_network_topology(sec: _Section, base_dir: Path | None) -> Any:
    """The topology named by ``topology``: a shipped one, or a file relative to the scenario's folder."""
    name = sec.string("topology")
    ref = name
    if base_dir is not None and name.lower() not in ("abovenet", "bellcanada", "gtsce"):
        candidate = base_dir / name
        if is_file(candidate):
            ref = str(candidate)
    try:
        return load_topology(ref)
    except ScenarioError as exc:
        raise ScenarioError(f"{sec.at('topology')}: {exc}") from None


def _low_degree_nodes(topo: Any, component: list[int], used: set[int], max_degree: int) -> list[int]:
    """Nodes for clients: of degree <= ``max_degree`` among the component's nodes no server uses (all
    its nodes if every one is used), else those of the least degree."""
    pool = [v for v in component if v not in used] or list(component)
    low = [v for v in pool if topo.degree(v) <= max_degree]
    if not low:
        dmin = min(topo.degree(v) for v in pool)
        low = [v for v in pool if topo.degree(v) == dmin]
    return low


def _trace_rows(path: Path, where: str, n_clients: int) -> list[tuple[float, int, int, int]]:
    """The (arrival_s, l_in, l_out, client) rows of a trace CSV file, validated."""
    rows = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        need = {"arrival_s", "l_in", "l_out"}
        if not need <= cols:
            raise ScenarioError(
                f"{where}: trace {path.name} needs columns {sorted(need)}, has {sorted(cols)}"
            )
        for line, row in enumerate(reader, start=2):
            try:
                t = float(row["arrival_s"])
                li = int(row["l_in"])
                lo = int(row["l_out"])
                c = int(row["client"]) if row.get("client") not in (None, "") else 0
            except (TypeError, ValueError):
                raise ScenarioError(
                    f"{where}: trace {path.name} line {line}: bad value in {_show(row, 200)}"
                ) from None
            if (
                not math.isfinite(t)
                or t < 0
                or not 1 <= li <= _MAX_TOKENS
                or not 1 <= lo <= _MAX_TOKENS
                or not 0 <= c < n_clients
            ):
                raise ScenarioError(
                    f"{where}: trace {path.name} line {line}: need arrival_s >= 0, l_in and l_out in 1..1e7 "
                    f"and client in 0..{n_clients - 1}, got {_show(row, 200)}"
                )
            rows.append((t, li, lo, c))
    return rows


def _read_trace(path_value: str, where: str, base_dir: Path | None, n_clients: int) -> Trace:
    path = Path(path_value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not is_file(path):
        raise ScenarioError(f"{where}: trace file {_show(str(path), 300)} does not exist")
    try:
        rows = _trace_rows(path, where, n_clients)
    except UnicodeDecodeError:
        raise ScenarioError(f"{where}: trace {path.name} is not a UTF-8 text (CSV) file") from None
    except (OSError, csv.Error) as exc:
        raise ScenarioError(f"{where}: trace {path.name} cannot be read ({exc})") from None
    if not rows:
        raise ScenarioError(f"{where}: trace {path.name} has no requests")
    rows.sort(key=lambda r: r[0])
    arr = np.asarray(rows, dtype=float)
    return Trace(
        arr[:, 0], arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64), arr[:, 3].astype(np.int64)
    )


def _inline_trace(sec: _Section, n_clients: int) -> Trace:
    """A trace written into the scenario: equal-length lists ``arrival_s``, ``l_in``, ``l_out`` and
    optionally ``client`` (as :func:`with_workload` writes a Trace)."""
    columns = {}
    for key in ("arrival_s", "l_in", "l_out", "client"):
        if key == "client" and not sec.has("client"):
            continue
        values = sec.items(key)
        columns[key] = values
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1:
        raise ScenarioError(f"{sec.where}: arrival_s, l_in, l_out and client need the same length")
    n = sizes.pop()
    client = columns.get("client", [0] * n)
    rows = []
    for i in range(n):
        t, li, lo, c = columns["arrival_s"][i], columns["l_in"][i], columns["l_out"][i], client[i]
        ok = (
            all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (t, li, lo, c))
            and math.isfinite(t)
            and t >= 0
            and all(float(x).is_integer() for x in (li, lo, c))
            and 1 <= li <= _MAX_TOKENS
            and 1 <= lo <= _MAX_TOKENS
            and 0 <= c < n_clients
        )
        if not ok:
            raise ScenarioError(
                f"{sec.where}[{i}]: need arrival_s >= 0, l_in and l_out in 1..1e7 and client in "
                f"0..{n_clients - 1}, got {_show((t, li, lo, c))}"
            )
        rows.append((float(t), int(li), int(lo), int(c)))
    rows.sort(key=lambda r: r[0])
    arr = np.asarray(rows, dtype=float)
    return Trace(
        arr[:, 0], arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64), arr[:, 3].astype(np.int64)
    )


_NAMED_TRACE_FIELDS = {
    "name",
    "start_s",
    "duration_s",
    "rate",
    "time_scale",
    "thin",
    "lengths",
    "max_tokens",
    "seed",
}


def _named_trace(sec: _Section, model: ModelSpec) -> tuple[Trace, dict[str, Any], str]:
    """A shipped trace (``workload.trace: {name: azure-conv-2023, ...}``), mapped onto the scenario:

    * ``lengths``: ``cap`` (default: a prompt is cut so that prompt + output fit ``max_tokens``, the
      model's longest PETALS session unless given; an output longer than that is cut too), ``drop``
      (requests that do not fit are left out), ``keep``, or ``{scale: s}`` (both lengths x s, at least 1);
    * time: ``rate`` (a target mean rate, requests/s: every inter-arrival time x trace rate / rate),
      ``time_scale`` (that factor given directly) or ``thin`` (keep each request with probability p,
      drawn with ``seed``), at most one of them;
    * window: ``start_s`` (s into the trace, or ``random``: a random start per episode) and
      ``duration_s`` (in the trace's own seconds, before time scaling).

    Returns the mapped trace (clients drawn per episode), the window and a note of what was changed."""
    name = sec.string("name", choices=tuple(datasets.AZURE_TRACES))
    rec = datasets.azure_trace(name)
    t, l_in, l_out = rec.arrival_s.copy(), rec.l_in.copy(), rec.l_out.copy()
    notes = []
    cap = sec.num("max_tokens", model.max_session_tokens, integer=True, minimum=2, maximum=_MAX_TOKENS)
    mode = sec.raw("lengths", "cap")
    if isinstance(mode, dict):
        scale = _Section(mode, sec.at("lengths"), {"scale"}).num("scale", strict=True, maximum=1e3)
        l_in = np.maximum(np.rint(l_in * scale), 1).astype(np.int64)
        l_out = np.maximum(np.rint(l_out * scale), 1).astype(np.int64)
        notes.append(f"lengths x {scale:g}")
    elif mode not in ("cap", "drop", "keep"):
        raise ScenarioError(
            f"{sec.at('lengths')}: expected cap, drop, keep or {{scale: s}}, got {_show(mode)}"
        )
    elif cap is not None and mode == "cap":
        over = int(np.sum(l_in + l_out > cap))
        l_out = np.minimum(l_out, cap - 1)
        l_in = np.maximum(np.minimum(l_in, cap - l_out), 1)
        if over:
            notes.append(f"{over} prompts capped to fit {cap} tokens")
    elif cap is not None and mode == "drop":
        keep = l_in + l_out <= cap
        notes.append(f"{int(np.sum(~keep))} requests over {cap} tokens dropped")
        t, l_in, l_out = t[keep], l_in[keep], l_out[keep]
    given = [k for k in ("rate", "time_scale", "thin") if sec.has(k)]
    if len(given) > 1:
        raise ScenarioError(f"{sec.where}: give one of rate, time_scale and thin, not {' and '.join(given)}")
    scale = 1.0
    if sec.has("rate"):  # the rate of the requests kept (after any drop), not of the whole trace
        span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
        kept_rate = (len(t) - 1) / span if span > 0 else rec.rate
        scale = kept_rate / sec.num("rate", strict=True, maximum=1e6)
    elif sec.has("time_scale"):
        scale = sec.num("time_scale", strict=True, maximum=1e9)
    elif sec.has("thin"):
        p = sec.num("thin", strict=True, maximum=1.0)
        keep = np.random.default_rng(sec.num("seed", 0, integer=True, maximum=2**63 - 1)).random(len(t)) < p
        t, l_in, l_out = t[keep], l_in[keep], l_out[keep]
        notes.append(f"thinned to {100 * p:g} %")
    if scale != 1.0:
        notes.append(f"inter-arrival times x {scale:.4g}")
    if len(t) == 0:
        raise ScenarioError(f"{sec.where}: no request of trace {name!r} is left after the mapping")
    start = sec.raw("start_s", 0.0)
    random_start = start == "random"
    start_s = 0.0 if random_start else sec.num("start_s", 0.0, maximum=1e9)
    duration = sec.num("duration_s", None, strict=True, maximum=1e9)
    if random_start and duration is None:
        raise ScenarioError(f"{sec.at('start_s')}: a random start needs duration_s")
    if not random_start and start_s > float(t[-1]):
        raise ScenarioError(
            f"{sec.at('start_s')}: the trace ends at {float(t[-1]):.1f} s, got {_show(start)}"
        )
    if duration is None and start_s > 0:
        duration = float(t[-1]) - start_s + 1.0
    if duration is not None:
        notes.append(
            f"window of {duration:g} s" + (" at a random start" if random_start else f" from {start_s:g} s")
        )
    window = {
        "trace_window_s": None if duration is None else duration * scale,
        "trace_start_s": start_s * scale,
        "trace_random_start": random_start,
    }
    note = f"{name} (Azure LLM inference 2023, CC-BY 4.0), " + ("; ".join(notes) if notes else "unchanged")
    return Trace(t * scale, l_in, l_out, None), window, note


def _parse_rate_profile(value: Any, where: str) -> RateProfile:
    sec = _Section(value, where, {"kind", "times_s", "factors", "period_s", "amplitude", "phase_s"})
    kind = sec.string("kind", choices=("piecewise", "diurnal"))
    if kind == "diurnal":
        amplitude = sec.num("amplitude", strict=False)
        if amplitude >= 1.0:
            raise ScenarioError(
                f"{sec.at('amplitude')}: must be < 1 (the rate must stay positive), got {amplitude:g}"
            )
        return RateProfile(
            "diurnal",
            period_s=sec.num("period_s", 86400.0, strict=True),
            amplitude=amplitude,
            phase_s=sec.num("phase_s", 0.0, maximum=1e9),
        )
    times = [float(sec_num) for sec_num in _numbers(sec, "times_s", positive=False)]
    factors = [float(x) for x in _numbers(sec, "factors", positive=True)]
    if len(times) != len(factors):
        raise ScenarioError(
            f"{where}: times_s and factors need the same length, got {len(times)} and {len(factors)}"
        )
    if times[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(times)):
        raise ScenarioError(f"{sec.at('times_s')}: must start at 0 and increase, got {_show(times)}")
    period = sec.num("period_s", None, strict=True)
    if period is not None and period <= times[-1]:
        raise ScenarioError(
            f"{sec.at('period_s')}: must exceed the last time ({times[-1]:g} s), got {period:g}"
        )
    return RateProfile("piecewise", tuple(times), tuple(factors), period)


def _numbers(sec: _Section, key: str, positive: bool) -> list[float]:
    """A non-empty list of finite numbers (> 0 with ``positive``, else >= 0)."""
    values = sec.items(key)
    if not values:
        raise ScenarioError(f"{sec.at(key)}: expected a non-empty list")
    for i, v in enumerate(values):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (v <= 0 if positive else v < 0):
            rel = "> 0" if positive else ">= 0"
            raise ScenarioError(f"{sec.at(key)}[{i}]: expected a number {rel}, got {_show(v)}")
    return values


def _parse_workload(
    value: Any, where: str, base_dir: Path | None, n_clients: int, model: ModelSpec, client_rate: float | None
) -> Workload:
    sec = _Section(
        value,
        where,
        {
            "arrival_rate",
            "num_requests",
            "horizon_s",
            "l_in",
            "l_out",
            "trace",
            "max_wait_s",
            "first_arrival",
            "rate_profile",
            "warmup_s",
        },
    )
    trace = None
    window: dict[str, Any] = {}
    note = ""
    if sec.has("trace"):
        raw = sec.raw("trace")
        if isinstance(raw, dict) and "name" in raw:
            trace, window, note = _named_trace(sec.section("trace", _NAMED_TRACE_FIELDS), model)
        elif isinstance(raw, dict):
            trace = _inline_trace(sec.section("trace", {"arrival_s", "l_in", "l_out", "client"}), n_clients)
        else:
            trace = _read_trace(sec.string("trace"), sec.at("trace"), base_dir, n_clients)
    if client_rate is not None and trace is None:
        rate = sec.num("arrival_rate", client_rate, strict=True, maximum=1e6)
        if not math.isclose(rate, client_rate, rel_tol=1e-9):
            raise ScenarioError(
                f"{sec.at('arrival_rate')}: the clients' rates sum to {client_rate:g}/s, got {rate:g} "
                "(give one of them)"
            )
    else:
        rate = sec.num(
            "arrival_rate", 0.0 if trace is not None else _MISSING, strict=trace is None, maximum=1e6
        )
    n_req = sec.num("num_requests", None, integer=True, minimum=1, maximum=_MAX_REQUESTS)
    horizon = sec.num("horizon_s", None, strict=True)
    if trace is None and n_req is None and horizon is None:
        raise ScenarioError(f"{where}: give num_requests or horizon_s (or a trace)")
    profile = None
    if sec.has("rate_profile"):
        if trace is not None:
            raise ScenarioError(f"{sec.at('rate_profile')}: a trace brings its own arrival times")
        profile = _parse_rate_profile(sec.raw("rate_profile"), sec.at("rate_profile"))
    peak = rate * (profile.peak if profile is not None else 1.0)
    if profile is not None and horizon is None:  # thinning draws n x peak / long-run factor candidates
        long_run = profile.mean_factor(None)
        if n_req * profile.peak / long_run > _MAX_REQUESTS:
            raise ScenarioError(
                f"{sec.at('rate_profile')}: {n_req} requests at a long-run factor of {long_run:g} (peak "
                f"{profile.peak:g}) need over {_MAX_REQUESTS:.0e} candidate draws; give horizon_s"
            )
    if trace is None and n_req is None and peak * horizon > _MAX_REQUESTS:
        raise ScenarioError(
            f"{where}: arrival_rate x horizon_s = {rate:g}/s x {horizon:g} s = {rate * horizon:.3g} expected "
            f"requests, more than {_MAX_REQUESTS:.0e} (lower them, or cap with num_requests)"
        )
    l_in = parse_distribution(sec.raw("l_in", 20), sec.at("l_in"), integer=True)
    l_out = parse_distribution(sec.raw("l_out", 128), sec.at("l_out"), integer=True)
    for key, dist in (("l_in", l_in), ("l_out", l_out)):
        if dist.maximum > _MAX_TOKENS:
            raise ScenarioError(f"{sec.at(key)}: lengths must be <= 1e7 tokens, got up to {dist.maximum:g}")
    return Workload(
        arrival_rate=rate,
        num_requests=n_req,
        horizon_s=horizon,
        l_in=l_in,
        l_out=l_out,
        max_wait_s=sec.num("max_wait_s", None, strict=True),
        trace=trace,
        first_arrival=sec.string("first_arrival", "drawn", choices=("drawn", "zero")),
        rate_profile=profile,
        trace_note=note,
        warmup_s=sec.num("warmup_s", 0.0, maximum=1e9),
        **window,
    )


#: Churn presets (realism.md section 5, fitted to skypilot spot traces): fields a preset sets unless the
#: scenario gives them. Weibull scales in seconds (1.5 h, 1.1 h).
CHURN_PRESETS: dict[str, dict[str, Any]] = {
    "spot-independent": {
        "lifetime_s": {"dist": "weibull", "shape": 0.6, "scale": 1.5 * 3600.0},
        "downtime_s": {"dist": "weibull", "shape": 0.7, "scale": 1.1 * 3600.0},
        "failure_fraction": 1.0,
    },
    "zone-shocks": {
        "lifetime_s": "never",
        "downtime_s": {"dist": "weibull", "shape": 0.7, "scale": 1.1 * 3600.0},
        "failure_fraction": 1.0,
        "shocks": {"rate_per_day": 8.0, "probability": 0.6, "groups": "location"},
    },
}


def _parse_shocks(value: Any, where: str, servers: tuple[ServerSpec, ...]) -> Shocks | None:
    if value is None:
        return None
    sec = _Section(value, where, {"rate_per_day", "probability", "groups"})
    groups_raw = sec.raw("groups", "location")
    if groups_raw == "location":
        by_location: dict[int, list[int]] = {}
        for spec in servers:
            by_location.setdefault(spec.location, []).append(spec.id)
        groups = tuple(tuple(ids) for _, ids in sorted(by_location.items()))
    elif isinstance(groups_raw, list) and groups_raw:
        ids_by_name = {spec.name: spec.id for spec in servers}
        found = []
        for g, group in enumerate(groups_raw):
            if not isinstance(group, list) or not group:
                raise ScenarioError(
                    f"{sec.at('groups')}[{g}]: expected a non-empty list of server names, got {_show(group)}"
                )
            for name in group:
                if not isinstance(name, str) or name not in ids_by_name:
                    raise ScenarioError(
                        f"{sec.at('groups')}[{g}]: unknown server {_show(name)} "
                        f"(servers are named like {_show(servers[0].name)})"
                    )
            found.append(tuple(ids_by_name[n] for n in group))
        groups = tuple(found)
    else:
        raise ScenarioError(
            f"{sec.at('groups')}: expected 'location' or a list of lists of server names, "
            f"got {_show(groups_raw)}"
        )
    return Shocks(
        rate_per_day=sec.num("rate_per_day", strict=True),
        probability=sec.num("probability", strict=True, maximum=1.0),
        groups=groups,
    )


def _parse_churn(value: Any, where: str, servers: tuple[ServerSpec, ...]) -> Churn:
    fields = {
        "enabled",
        "preset",
        "lifetime_s",
        "downtime_s",
        "failure_fraction",
        "drain_timeout_s",
        "no_chain_timeout_s",
        "load_s_per_gb",
        "shocks",
    }
    sec = _Section(value, where, fields)
    preset = sec.string("preset", None, tuple(CHURN_PRESETS))
    if preset is not None:
        merged = {**CHURN_PRESETS[preset], **sec.data}
        own, given = CHURN_PRESETS[preset].get("shocks"), sec.data.get("shocks")
        if isinstance(own, dict) and isinstance(given, dict):  # a shock field given alone keeps the rest
            merged["shocks"] = {**own, **given}
        sec = _Section(merged, where, fields)
    lifetime_raw = sec.raw("lifetime_s", {"dist": "exponential", "mean": 3600.0})
    lifetime = None if lifetime_raw == "never" else parse_distribution(lifetime_raw, sec.at("lifetime_s"))
    return Churn(
        enabled=sec.boolean("enabled", preset is not None),
        lifetime_s=lifetime,
        downtime_s=parse_distribution(
            sec.raw("downtime_s", {"dist": "exponential", "mean": 600.0}), sec.at("downtime_s")
        ),
        failure_fraction=sec.num("failure_fraction", 0.5, maximum=1.0),
        drain_timeout_s=sec.num("drain_timeout_s", 300.0),
        no_chain_timeout_s=sec.num("no_chain_timeout_s", 300.0, strict=True),
        load_s_per_gb=sec.num("load_s_per_gb", 2.0),
        shocks=_parse_shocks(sec.raw("shocks", None), sec.at("shocks"), servers),
        preset=preset,
    )


def _parse_overheads(value: Any, where: str) -> Overheads:
    sec = _Section(
        value, where, {"token_overhead_ms", "prefill_overhead_ms", "prefill_per_token_ms", "initial_delay_ms"}
    )
    d = Overheads()
    return Overheads(
        token_overhead_s=sec.num("token_overhead_ms", d.token_overhead_s * 1e3, maximum=1e7) / 1e3,
        prefill_overhead_s=sec.num("prefill_overhead_ms", d.prefill_overhead_s * 1e3, maximum=1e7) / 1e3,
        prefill_per_token_s=sec.num("prefill_per_token_ms", d.prefill_per_token_s * 1e3, maximum=1e7) / 1e3,
        initial_delay_s=sec.num("initial_delay_ms", d.initial_delay_s * 1e3, maximum=1e7) / 1e3,
    )


def _parse_petals(value: Any, where: str, model: ModelSpec) -> PetalsConstants:
    """``petals``: PETALS' constants; ``attn_cache_tokens`` defaults to PETALS' own default for the model
    (4096 tokens per block without grouped-query attention, 16384 with it)."""
    d = PetalsConstants(attn_cache_tokens=catalog.PETALS_CACHE_TOKENS[model.petals_kv_groups > 1])
    if isinstance(value, dict) and "backoff_cap_s" in value:
        raise ScenarioError(
            f"{where}.backoff_cap_s: the back-off cap is the simulator's, not PETALS': set "
            "simulation.backoff_cap_s instead"
        )
    sec = _Section(value, where, set(d.__dataclass_fields__))
    return PetalsConstants(
        attn_cache_tokens=sec.num("attn_cache_tokens", d.attn_cache_tokens, integer=True, minimum=1),
        autograd_gib=sec.num("autograd_gib", d.autograd_gib),
        balance_quality=sec.num("balance_quality", d.balance_quality, maximum=1.0),
        mean_balance_check_period_s=sec.num(
            "mean_balance_check_period_s", d.mean_balance_check_period_s, strict=True
        ),
        rebalance=sec.boolean("rebalance", d.rebalance),
        hop_overhead_s=sec.num("hop_overhead_s", d.hop_overhead_s),
        lacking_cache_penalty_s=sec.num("lacking_cache_penalty_s", d.lacking_cache_penalty_s),
    )


def _parse_contention(value: Any, where: str) -> Contention:
    """``contention``: ``none`` (default, the paper's model), ``fifo``, or {mode, alpha, prefill}."""
    if value is None or isinstance(value, str):
        value = {"mode": value or "none"}
    sec = _Section(value, where, {"mode", "alpha", "prefill"})
    return Contention(
        mode=sec.string("mode", "none", ("none", "fifo")),
        alpha=sec.num("alpha", 0.5, maximum=1.0),
        prefill=sec.string("prefill", "per_block", PREFILL_MODES),
    )


def _parse_simulation(value: Any, where: str) -> SimulationSettings:
    d = SimulationSettings()
    sec = _Section(value, where, set(d.__dataclass_fields__))
    return SimulationSettings(
        backoff_cap_s=sec.num("backoff_cap_s", d.backoff_cap_s, strict=True, maximum=1e7)
    )


_TOP_FIELDS = {
    "name",
    "description",
    "model",
    "gpu_profiles",
    "servers",
    "clients",
    "network",
    "workload",
    "churn",
    "overheads",
    "petals",
    "simulation",
    "contention",
}


def scenario_from_dict(data: Any, source: str = "<dict>", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario mapping (as read from YAML) into a :class:`Scenario`.

    Raises :class:`ScenarioError` naming ``source``, the field path and the bad value.
    """
    try:
        return _scenario_from_dict(data, source, base_dir)
    except ScenarioError as exc:
        msg = str(exc)
        if not msg.startswith(source):
            msg = f"{source}: {msg}"
        raise type(exc)(msg) from None
    except RecursionError:
        raise ScenarioError(f"{source}: top level: the document is nested too deeply") from None


def _scenario_from_dict(data: Any, source: str, base_dir: Path | None) -> Scenario:
    top = _Section(data, "", _TOP_FIELDS)
    name = top.string("name", Path(source).stem if source != "<dict>" else "custom")
    model = _parse_model(top.raw("model", "bloom-176b"), "model")
    profiles = _parse_profiles(top.data.get("gpu_profiles"), "gpu_profiles", model)
    server_rows = _parse_servers(top.raw("servers"), "servers", profiles)
    client_rows, client_rate = _parse_clients(top.data.get("clients"), "clients")
    network, s_loc, c_loc = _parse_network(
        top.data.get("network"), "network", server_rows, client_rows, base_dir
    )
    servers = tuple(
        ServerSpec(id=i, name=label, profile=prof, location=int(s_loc[i]))
        for i, (label, prof, _) in enumerate(server_rows)
    )
    clients = tuple(
        ClientSpec(id=i, name=cname, location=int(c_loc[i]), weight=w)
        for i, (cname, _, w) in enumerate(client_rows)
    )
    workload = _parse_workload(
        top.data.get("workload"), "workload", base_dir, len(clients), model, client_rate
    )
    scenario = Scenario(
        name=name,
        description=top.string("description", ""),
        source=source,
        model=model,
        profiles=profiles,
        servers=servers,
        clients=clients,
        network=network,
        workload=workload,
        churn=_parse_churn(top.data.get("churn"), "churn", servers),
        overheads=_parse_overheads(top.data.get("overheads"), "overheads"),
        petals=_parse_petals(top.data.get("petals"), "petals", model),
        simulation=_parse_simulation(top.data.get("simulation"), "simulation"),
        contention=_parse_contention(top.data.get("contention"), "contention"),
        raw=copy.deepcopy(data),
        base_dir=base_dir,
    )
    check_feasible(scenario)
    return scenario


def max_blocks_on(scenario: Scenario, server: ServerSpec, tokens: int | None = None) -> int:
    """Most blocks ``server`` can host while keeping cache for one session of ``tokens`` tokens."""
    m = scenario.model
    tokens = scenario.workload.max_tokens if tokens is None else tokens
    per_block = m.block_bytes + m.kv_bytes_per_block(tokens)
    count = min(server.profile.memory_bytes // per_block, m.num_blocks)
    if server.profile.max_blocks is not None:
        count = min(count, server.profile.max_blocks)
    return int(count)


def check_feasible(scenario: Scenario) -> None:
    """Raise :class:`InfeasibleScenarioError` if a server cannot hold one block with the cache of one
    session, or if all servers together cannot cover the model's L blocks."""
    m = scenario.model
    tokens = scenario.workload.max_tokens
    total = 0
    for s in scenario.servers:
        k = max_blocks_on(scenario, s, tokens)
        if k < 1:
            need = (m.block_bytes + m.kv_bytes_per_block(tokens)) / 1e9
            raise InfeasibleScenarioError(
                f"servers[{s.id}] ({s.name}, profile {s.profile.name}): {s.profile.memory_bytes / 1e9:g} GB "
                f"cannot hold one block plus the cache of one {tokens}-token session ({need:.4g} GB)"
            )
        total += k
    if total < m.num_blocks:
        raise InfeasibleScenarioError(
            f"servers: infeasible: the {scenario.num_servers} servers can host at most {total} blocks in "
            f"total (keeping cache for one session), but the model has {m.num_blocks} blocks "
            "(model.num_blocks)"
        )


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _scenario_dir() -> Path:
    """configs/scenarios, installed as the package data of ``petalgym.configs``."""
    configs = importlib.import_module("petalgym.configs")
    return Path(configs.__file__).parent / "scenarios"


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped with petalgym."""
    return sorted(p.name[:-5] for p in _scenario_dir().iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path | Scenario, overrides: dict[str, Any] | None = None) -> Scenario:
    """Load a built-in scenario by name, or a YAML file by path, and apply dotted-path ``overrides``."""
    if isinstance(name_or_path, Scenario):
        return name_or_path.with_overrides(overrides) if overrides else name_or_path
    ref = str(name_or_path)
    builtin = _scenario_dir() / f"{ref}.yaml"
    if is_file(builtin):
        path, source, base_dir = builtin, f"{ref}.yaml", None
    else:
        path = Path(ref)
        if not is_file(path):
            raise ScenarioError(
                f"scenario {_show(ref, 300)}: no such file, and not a built-in scenario "
                f"({', '.join(list_scenarios())})"
            )
        source, base_dir = str(path), path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{source}: not a UTF-8 text (YAML) file (byte {exc.start})") from None
    except OSError as exc:
        raise ScenarioError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problem = " ".join(str(problem).split())
        problem = problem if len(problem) <= 120 else f"{problem[:100]}..."
        raise ScenarioError(f"{source}:{where}: invalid YAML ({problem})") from None
    except RecursionError:
        raise ScenarioError(f"{source}: invalid YAML (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ScenarioError(f"{source}: invalid YAML ({' '.join(str(exc).split())[:120]})") from None
    if overrides:
        if not isinstance(data, dict):
            raise ScenarioError(f"{source}: expected a mapping at the top level")
        try:
            data = apply_overrides(data, overrides)
        except ScenarioError as exc:
            raise ScenarioError(f"{source}: {exc}") from None
        except RecursionError:
            raise ScenarioError(f"{source}: top level: the document is nested too deeply") from None
    return scenario_from_dict(data, source=source, base_dir=base_dir)


def with_workload(scenario: Scenario, **changes: Any) -> Scenario:
    """``scenario`` with workload fields changed: numbers, None (the default), a :class:`Trace` (written
    into the scenario) or a :class:`~petalgym.distributions.Distribution`. The one override path:
    the changes become dotted-path overrides of the scenario's YAML, re-validated, so later
    :meth:`Scenario.with_overrides` calls keep them."""
    overrides = {}
    for key, value in changes.items():
        if isinstance(value, Trace):
            value = {
                "arrival_s": [float(x) for x in value.arrival_s],
                "l_in": [int(x) for x in value.l_in],
                "l_out": [int(x) for x in value.l_out],
                "client": [int(x) for x in value.client],
            }
        elif isinstance(value, Distribution):
            value = value.to_raw()
        overrides[f"workload.{key}"] = value
    return scenario.with_overrides(overrides)
