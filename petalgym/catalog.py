"""Built-in model and GPU constants, as measured for BLOOM-176B in NF4 (paper-notes sections 1, 2, 6).

Scenario files may refer to these by name or override any field.
"""

from __future__ import annotations

from typing import Any

#: BLOOM-176B in NF4: 70 blocks of 2,466,437,120 parameters, 4.25 bits each, +1 % overhead (~1.3234 GB).
MODELS: dict[str, dict[str, Any]] = {
    "bloom-176b": {
        "num_blocks": 70,
        "params_per_block": 2_466_437_120,
        "bits_per_param": 4.25,
        "size_overhead": 1.01,
        "d_model": 14336,
        "kv_groups": 1,
        "dtype_bytes": 2,
    },
}

#: GPU profiles. ``memory_gb`` is 1e9 bytes. tau and prefill tau are per block; prefill tau is
#: ``per_token * l_in + base`` ms. The *_rps figures are PETALS' measured throughputs (tokens/s/block).
GPU_PROFILES: dict[str, dict[str, Any]] = {
    "a100": {
        "memory_gb": 86.13,
        "tau_ms": 3.2197,
        "prefill_tau_ms": {"per_token": 0.0743, "base": 32.99},
        "max_blocks": None,
        "inference_rps": 369.2,
        "forward_rps": 20829.0,
        "network_rps": 3020.0,
    },
    "mig-1g": {
        "memory_gb": 9.75,
        "tau_ms": 16.2488,
        "prefill_tau_ms": {"per_token": 0.1041, "base": 206.35},
        "max_blocks": 4,
        "inference_rps": 61.55,
        "forward_rps": 2758.0,
        "network_rps": 3138.0,
    },
}
