"""The model and GPU catalogs (package data ``petalgym/data/catalog/*.yaml``) and the timing rule.

* Models: each entry gives a block's architecture; :func:`params_per_block` derives its parameters
  (docs/realism.md section 2), :func:`model_fields` the scenario fields of the model under a
  quantisation (``nf4``, ``int8``, ``fp16``: PETALS' ``get_block_size``, params x bits / 8 x 1.01).
* GPUs: memory, peak bandwidth and FP16 throughput; PETALS' own measurements where they exist (BLOOM-176B
  in NF4 on the A100-80GB and its MIG 1g.10gb slice, docs/model.md).
* :func:`estimate_timing`: tau and prefill tau for any (GPU, model, quantisation) pair without a
  measurement, by a rule calibrated on the two measured GPUs (docs/realism.md section 3.2). Its
  constants are computed from the measurements here, never typed in; every estimate is labelled as
  such (``GpuProfile.estimated``, ``petalgym gpus``).

Scenario files refer to models and GPUs by name and may override any field. The catalogs are read
once and kept immutable (``MappingProxyType`` of frozen entries).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

import yaml

#: Bits per parameter of each quantisation, and PETALS' size overhead (get_block_size).
QUANTIZATIONS: dict[str, float] = {"nf4": 4.25, "int8": 8.0, "fp16": 16.0}
SIZE_OVERHEAD = 1.01
#: PETALS' default attention-cache budget per block (tokens): 4096 without grouped-query attention,
#: 16384 with it; and its longest session (tokens): 2048 without GQA, 8192 with it.
PETALS_CACHE_TOKENS = {False: 4096, True: 16384}
PETALS_MAX_SESSION_TOKENS = {False: 2048, True: 8192}

_ARCHS = ("bloom", "llama", "qwen2", "mixtral", "falcon")


@dataclass(frozen=True)
class ModelEntry:
    """A catalog model: the architecture of its transformer block (see models.yaml)."""

    name: str
    arch: str
    num_blocks: int
    d_model: int
    heads: int
    kv_heads: int
    ffn: int | None = None
    experts: int = 1
    active_experts: int = 1
    vocab: int | None = None
    petals_kv_groups: int | None = None
    source: str = ""

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def kv_groups(self) -> int:
        """Query heads per KV head (1: no grouped-query attention)."""
        return self.heads // self.kv_heads

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes of one block per token: 2 (K and V) x KV heads x head dim x 2 bytes."""
        return 2 * self.kv_heads * self.head_dim * 2


def params_per_block(m: ModelEntry, active: bool = False) -> int:
    """Parameters of one transformer block of ``m`` (with ``active``: the experts one token uses)."""
    d, kvd = m.d_model, m.kv_heads * m.head_dim
    if m.arch == "bloom":  # fused QKV + output projection with biases, 4d MLP with biases, 2 LayerNorms
        return 12 * d * d + 13 * d
    attention = 2 * d * d + 2 * d * kvd  # q and o (d x d), k and v (d x kvd)
    if m.arch == "falcon":  # no biases: fused QKV d (d + 2 kvd), dense d^2, 4d MLP 8 d^2, 2 LayerNorms
        return d * (d + 2 * kvd) + d * d + 8 * d * d + 4 * d
    ffn = m.ffn or 0
    if m.arch == "mixtral":
        experts = m.active_experts if active else m.experts
        return attention + experts * 3 * d * ffn + d * m.experts + 2 * d  # + router, 2 RMSNorms
    total = attention + 3 * d * ffn + 2 * d  # SwiGLU MLP, 2 RMSNorms
    if m.arch == "qwen2":
        total += d + 2 * kvd  # QKV biases
    return total


def _read(name: str) -> dict[str, Any]:
    text = resources.files("petalgym").joinpath("data", "catalog", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@functools.cache
def models() -> MappingProxyType[str, ModelEntry]:
    """The model catalog (read once; immutable)."""
    out = {}
    for name, data in _read("models.yaml").items():
        entry = ModelEntry(name=name, **data)
        if entry.arch not in _ARCHS or entry.d_model % entry.heads or entry.heads % entry.kv_heads:
            raise ValueError(f"models.yaml: bad entry {name!r}")  # a packaging error, caught by the tests
        out[name] = entry
    return MappingProxyType(out)


def model_fields(name: str, quantization: str = "nf4") -> dict[str, Any]:
    """The scenario ``model`` fields of catalog model ``name`` under ``quantization``."""
    m = models()[name]
    petals_groups = m.petals_kv_groups or m.kv_groups
    return {
        "num_blocks": m.num_blocks,
        "params_per_block": params_per_block(m),
        "active_params_per_block": params_per_block(m, active=True),
        "bits_per_param": QUANTIZATIONS[quantization],
        "size_overhead": SIZE_OVERHEAD,
        "d_model": m.d_model,
        "kv_groups": m.kv_groups,
        "dtype_bytes": 2,
        "petals_kv_groups": petals_groups,
        "max_session_tokens": PETALS_MAX_SESSION_TOKENS[petals_groups > 1],
        "quantization": quantization,
    }


@dataclass(frozen=True)
class Measured:
    """PETALS' measurement of one model (and quantisation) on one GPU."""

    quantization: str
    tau_ms: float
    prefill_tau_ms: dict[str, float]
    inference_rps: float
    forward_rps: float
    network_rps: float
    max_blocks: int | None = None


@dataclass(frozen=True)
class GpuEntry:
    """A catalog GPU: usable memory (GB = 1e9 bytes), peak bandwidth (GB/s), dense FP16 (TFLOPS)."""

    name: str
    label: str
    memory_gb: float
    bandwidth_gbs: float
    fp16_tflops: float
    source: str = ""
    measured: dict[str, Measured] = field(default_factory=dict)


@functools.cache
def gpus() -> MappingProxyType[str, GpuEntry]:
    """The GPU catalog (read once; immutable)."""
    out = {}
    for name, data in _read("gpus.yaml").items():
        measured = {k: Measured(**v) for k, v in (data.pop("measured", None) or {}).items()}
        out[name] = GpuEntry(name=name, measured=measured, **data)
    return MappingProxyType(out)


# --------------------------------------------------------------------------------------------------
# The timing rule
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimingRule:
    """tau = overhead + kappa x s_act / BW (ms; s_act: weight GB read per token and block, BW in TB/s);
    prefill tau(l) = base0 + base_kappa x s_tot / BW (ms) + l x 2 P_act / (flops_share x FLOPS) (s)."""

    overhead_ms: float
    kappa: float
    base0_ms: float
    base_kappa: float
    flops_share: float


#: The calibration: BLOOM-176B in NF4 on the A100-80GB and on its MIG 1g slice.
ANCHOR_MODEL, ANCHOR_GPUS = "bloom-176b", ("a100", "mig-1g")


@functools.cache
def timing_rule() -> TimingRule:
    """The rule's five constants from the two anchors (two decode times, two prefill intercepts, the
    A100's prefill slope): exact on both anchors by construction."""
    fast, slow = (gpus()[g] for g in ANCHOR_GPUS)
    mf, ms = fast.measured[ANCHOR_MODEL], slow.measured[ANCHOR_MODEL]
    model = models()[ANCHOR_MODEL]
    gb = _block_gb(model, mf.quantization)
    x_fast, x_slow = gb / (fast.bandwidth_gbs / 1e3), gb / (slow.bandwidth_gbs / 1e3)
    kappa = (ms.tau_ms - mf.tau_ms) / (x_slow - x_fast)
    base_kappa = (ms.prefill_tau_ms["base"] - mf.prefill_tau_ms["base"]) / (x_slow - x_fast)
    share = (
        2
        * params_per_block(model, active=True)
        / (mf.prefill_tau_ms["per_token"] / 1e3 * fast.fp16_tflops * 1e12)
    )
    return TimingRule(
        overhead_ms=mf.tau_ms - kappa * x_fast,
        kappa=kappa,
        base0_ms=mf.prefill_tau_ms["base"] - base_kappa * x_fast,
        base_kappa=base_kappa,
        flops_share=share,
    )


def _block_gb(model: ModelEntry, quantization: str, active: bool = False) -> float:
    return params_per_block(model, active) * QUANTIZATIONS[quantization] / 8 * SIZE_OVERHEAD / 1e9


def estimate_timing(
    gpu: GpuEntry, params: int, active_params: int, bits: float, d_model: int
) -> dict[str, Any]:
    """Profile fields (ms, tokens/s) estimated by :func:`timing_rule` for a block of ``params``
    parameters (``active_params`` read per token) at ``bits`` per parameter, of width ``d_model``.

    PETALS' announced throughputs are estimated too: inference = 1 / tau; forward scales the A100's
    BLOOM measurement by FLOPS and by parameters per block; network scales it by the hidden size (bytes
    sent per token)."""
    rule = timing_rule()
    bw_tbs = gpu.bandwidth_gbs / 1e3
    s_act = active_params * bits / 8 * SIZE_OVERHEAD / 1e9
    s_tot = params * bits / 8 * SIZE_OVERHEAD / 1e9
    tau = rule.overhead_ms + rule.kappa * s_act / bw_tbs
    per_token_ms = 2 * active_params / (rule.flops_share * gpu.fp16_tflops * 1e12) * 1e3
    anchor = gpus()[ANCHOR_GPUS[0]]
    ref = anchor.measured[ANCHOR_MODEL]
    ref_params = params_per_block(models()[ANCHOR_MODEL], active=True)
    return {
        "tau_ms": tau,
        "prefill_tau_ms": {
            "per_token": per_token_ms,
            "base": rule.base0_ms + rule.base_kappa * s_tot / bw_tbs,
        },
        "inference_rps": 1e3 / tau,
        "forward_rps": ref.forward_rps
        * (gpu.fp16_tflops / anchor.fp16_tflops)
        * (ref_params / active_params),
        "network_rps": ref.network_rps * models()[ANCHOR_MODEL].d_model / d_model,
    }
