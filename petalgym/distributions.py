"""Small, validated probability distributions used in scenarios (lengths, lifetimes, downtimes).

A YAML value is either a plain number (a constant) or a mapping ``{dist: <kind>, ...}``:

    constant     value
    uniform      low, high                (integers: both ends included)
    exponential  mean
    lognormal    mean, sigma  [min, max]  (``mean`` is the mean of the distribution itself)
    weibull      shape, scale [min, max]  (mean = scale * Gamma(1 + 1/shape); shape < 1 is heavy-tailed)
    choice       values, [probs]
    trace        trace, field, [fit]      (lengths of a shipped trace, ``field`` l_in or l_out: ``fit``
                                          ``empirical`` resamples the recorded values, ``lognormal`` draws
                                          from the lognormal fitted to their logarithms, capped at the
                                          recorded maximum)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from petalgym.datasets import AZURE_TRACES, azure_trace
from petalgym.errors import ScenarioError

_KINDS = ("constant", "uniform", "exponential", "lognormal", "weibull", "choice", "trace")
_TRACE_FIELDS = ("l_in", "l_out")
_TRACE_FITS = ("empirical", "lognormal")


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, shortened if longer than ``limit`` characters (a huge list, a
    400-digit integer); never raises (an int beyond Python's int -> str digit limit has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        return "an integer of more than 4300 digits"
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Distribution:
    """A distribution of non-negative numbers; ``integer`` rounds samples to ints."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    integer: bool = False
    #: The recorded values of a ``trace`` distribution (read from the shipped trace when parsed).
    values: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def mean(self) -> float:
        """The expected value (before rounding)."""
        p = self.params
        if self.kind == "constant":
            return float(p["value"])
        if self.kind == "uniform":
            return (p["low"] + p["high"]) / 2.0
        if self.kind in ("exponential", "lognormal"):
            return float(p["mean"])
        if self.kind == "weibull":
            return float(p["scale"] * math.gamma(1.0 + 1.0 / p["shape"]))
        if self.kind == "trace":
            if p.get("fit", "empirical") == "lognormal":
                mu, sigma = self._log_fit
                return float(math.exp(mu + sigma * sigma / 2.0))
            return float(self.values.mean())
        probs = p["probs"]
        return float(np.dot(p["values"], probs))

    @property
    def maximum(self) -> float:
        """The largest value this distribution can produce (``inf`` if unbounded)."""
        p = self.params
        if self.kind == "constant":
            return float(p["value"])
        if self.kind == "uniform":
            return float(p["high"])
        if self.kind == "choice":
            return float(max(p["values"]))
        if self.kind in ("lognormal", "weibull") and p.get("max") is not None:
            return float(p["max"])
        if self.kind == "trace":
            return float(self.values.max())
        return math.inf

    @property
    def _log_fit(self) -> tuple[float, float]:
        """(mu, sigma) of the lognormal fitted (maximum likelihood) to a trace's recorded values."""
        logs = np.log(np.maximum(self.values, 1))
        return float(logs.mean()), float(logs.std())

    def to_raw(self) -> dict[str, Any]:
        """The YAML mapping that parses back into this distribution."""
        params = {k: (list(v) if isinstance(v, list) else v) for k, v in self.params.items()}
        return {"dist": self.kind, **params}

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        """Draw ``size`` samples (a scalar when ``size`` is None) from ``rng``."""
        p = self.params
        n = 1 if size is None else size  # (``size or 1`` would turn size=0 into one sample)
        if self.kind == "constant":
            out = np.full(n, p["value"], dtype=float)
        elif self.kind == "uniform":
            if self.integer:
                out = rng.integers(int(p["low"]), int(p["high"]) + 1, size=n).astype(float)
            else:
                out = rng.uniform(p["low"], p["high"], size=n)
        elif self.kind == "exponential":
            out = rng.exponential(p["mean"], size=n)
        elif self.kind == "lognormal":
            sigma = p["sigma"]
            mu = math.log(p["mean"]) - sigma * sigma / 2.0
            out = rng.lognormal(mu, sigma, size=n)
            out = _clip(out, p)
        elif self.kind == "weibull":
            out = p["scale"] * rng.weibull(p["shape"], size=n)
            out = _clip(out, p)
        elif self.kind == "trace":
            if p.get("fit", "empirical") == "lognormal":
                mu, sigma = self._log_fit
                out = np.minimum(rng.lognormal(mu, sigma, size=n), float(self.values.max()))
            else:
                out = rng.choice(self.values, size=n).astype(float)
        else:
            out = rng.choice(np.asarray(p["values"], dtype=float), size=n, p=p["probs"])
        if self.integer:
            out = np.maximum(np.rint(out), 1).astype(np.int64)
        if size is None:
            return out[0].item()
        return out


def _clip(out: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Samples clipped to the optional ``min`` / ``max`` (0 is a bound, not "none")."""
    low, high = p.get("min"), p.get("max")
    return np.clip(out, 0.0 if low is None else low, np.inf if high is None else high)


def _number(value: Any, where: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where}: expected a finite number, got {_show(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ScenarioError(f"{where}: expected a finite number, got {_show(value)}")
    if value < minimum or (strict and value == minimum):
        rel = ">" if strict else ">="
        raise ScenarioError(f"{where}: must be {rel} {minimum:g}, got {_show(value)}")
    return float(value)


def parse_distribution(
    value: Any, where: str, *, integer: bool = False, positive: bool = True
) -> Distribution:
    """Parse a YAML value into a :class:`Distribution`; errors name ``where`` and the bad value."""
    if not isinstance(value, dict):
        v = _number(value, where, strict=positive)
        if integer and v != int(v):
            raise ScenarioError(f"{where}: expected an integer, got {_show(value)}")
        return Distribution("constant", {"value": int(v) if integer else v}, integer)
    kind = value.get("dist")
    if kind not in _KINDS:
        raise ScenarioError(f"{where}.dist: expected one of {', '.join(_KINDS)}, got {_show(kind)}")
    allowed = {
        "constant": {"value"},
        "uniform": {"low", "high"},
        "exponential": {"mean"},
        "lognormal": {"mean", "sigma", "min", "max"},
        "weibull": {"shape", "scale", "min", "max"},
        "choice": {"values", "probs"},
        "trace": {"trace", "field", "fit"},
    }[kind]
    unknown = set(value) - allowed - {"dist"}
    if unknown:
        raise ScenarioError(
            f"{where}: unknown field(s) {sorted(unknown, key=str)} for dist {kind!r} "
            f"(allowed: {sorted(allowed)})"
        )
    required = {
        "constant": {"value"},
        "uniform": {"low", "high"},
        "exponential": {"mean"},
        "lognormal": {"mean", "sigma"},
        "weibull": {"shape", "scale"},
        "choice": {"values"},
        "trace": {"trace", "field"},
    }[kind]
    missing = required - set(value)
    if missing:
        raise ScenarioError(f"{where}: dist {kind!r} needs field(s) {sorted(missing)}")
    params: dict[str, Any] = {}
    if kind == "trace":
        return _trace_distribution(value, where, integer)
    if kind == "choice":
        vals = value["values"]
        if not isinstance(vals, list) or not vals:
            raise ScenarioError(f"{where}.values: expected a non-empty list, got {_show(vals)}")
        params["values"] = [_number(v, f"{where}.values[{i}]", strict=positive) for i, v in enumerate(vals)]
        if integer and any(v != int(v) for v in params["values"]):
            raise ScenarioError(f"{where}.values: expected integers, got {_show(vals)}")
        probs = value.get("probs")
        if probs is None:
            params["probs"] = [1.0 / len(vals)] * len(vals)
        else:
            if not isinstance(probs, list) or len(probs) != len(vals):
                raise ScenarioError(f"{where}.probs: expected {len(vals)} probabilities, got {_show(probs)}")
            ps = [_number(q, f"{where}.probs[{i}]") for i, q in enumerate(probs)]
            total = sum(ps)
            if not math.isclose(total, 1.0, rel_tol=1e-6):
                raise ScenarioError(f"{where}.probs: must sum to 1, got {total:g}")
            params["probs"] = [q / total for q in ps]
    else:
        for key in allowed & set(value):
            if value[key] is None and key in ("min", "max"):
                continue
            strict = (positive and key in ("value", "mean", "high")) or key in ("shape", "scale")
            params[key] = _number(value[key], f"{where}.{key}", strict=strict)
        if kind == "uniform" and params["low"] > params["high"]:
            raise ScenarioError(f"{where}: low ({params['low']:g}) > high ({params['high']:g})")
        if kind == "uniform" and positive and integer and params["low"] < 1:
            raise ScenarioError(f"{where}.low: must be >= 1, got {params['low']:g}")
        if (
            kind in ("lognormal", "weibull")
            and params.get("min") is not None
            and params.get("max") is not None
            and params["min"] > params["max"]
        ):
            raise ScenarioError(f"{where}: min ({params['min']:g}) > max ({params['max']:g})")
        if kind == "constant" and integer and params["value"] != int(params["value"]):
            raise ScenarioError(f"{where}.value: expected an integer, got {_show(value['value'])}")
    return Distribution(kind, params, integer)


def _trace_distribution(value: dict, where: str, integer: bool) -> Distribution:
    """A ``trace`` distribution: the recorded ``field`` of a shipped trace (petalgym.datasets)."""
    name = value["trace"]
    if not isinstance(name, str) or name not in AZURE_TRACES:
        raise ScenarioError(f"{where}.trace: unknown trace {_show(name)} (known: {', '.join(AZURE_TRACES)})")
    column = value["field"]
    if column not in _TRACE_FIELDS:
        raise ScenarioError(f"{where}.field: expected one of {', '.join(_TRACE_FIELDS)}, got {_show(column)}")
    fit = value.get("fit", "empirical")
    if fit not in _TRACE_FITS:
        raise ScenarioError(f"{where}.fit: expected one of {', '.join(_TRACE_FITS)}, got {_show(fit)}")
    recorded = getattr(azure_trace(name), column)
    values = np.maximum(np.asarray(recorded, dtype=float), 1.0)
    values.flags.writeable = False
    return Distribution("trace", {"trace": name, "field": column, "fit": fit}, integer, values)
