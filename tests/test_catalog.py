"""The model and GPU catalogs against docs/realism.md (sections 2 and 3): parameters and bytes per block,
KV bytes, PETALS' cache budgets, the timing rule's calibration on the measured anchors and its
estimates; clear errors for unknown names."""

from __future__ import annotations

import pytest

from petalgym import catalog
from petalgym.cli import main
from petalgym.errors import ScenarioError
from petalgym.perfmodel import petals_cache_bytes_per_block
from petalgym.scenario import load_scenario

#: realism.md section 2: params/block, active/block, NF4 / INT8 / 16-bit GB per block, KV B/token/block.
MODEL_TABLE = {
    "bloom-176b": (2_466_437_120, 2_466_437_120, 1.3234, 2.4911, 4.9822, 57_344),
    "llama-2-70b": (855_654_400, 855_654_400, 0.4591, 0.8642, 1.7284, 4_096),
    "llama-3.1-70b": (855_654_400, 855_654_400, 0.4591, 0.8642, 1.7284, 4_096),
    "llama-3.1-405b": (3_187_703_808, 3_187_703_808, 1.7104, 3.2196, 6.4392, 4_096),
    "mixtral-8x22b": (2_504_060_928, 692_121_600, 1.3436, 2.5291, 5.0582, 4_096),
    "falcon-180b": (2_219_894_784, 2_219_894_784, 1.1911, 2.2421, 4.4842, 2_048),
    "qwen2.5-72b": (877_684_736, 877_684_736, 0.4709, 0.8865, 1.7729, 4_096),
}


def model(name: str, quantization: str = "nf4"):
    """clustered-9 with ``name`` in ``quantization`` and enough A100s for any model of the catalog."""
    big = [{"profile": "a100", "count": 16, "location": 1}]
    return load_scenario(
        "clustered-9", {"model": {"name": name, "quantization": quantization}, "servers": big}
    )


@pytest.mark.parametrize("name", list(MODEL_TABLE))
def test_models_match_the_realism_table(name):
    params, active, nf4, int8, fp16, kv = MODEL_TABLE[name]
    spec = model(name).model
    assert spec.params_per_block == params and spec.active_params_per_block == active
    for quant, gb in (("nf4", nf4), ("int8", int8), ("fp16", fp16)):
        assert model(name, quant).model.block_bytes / 1e9 == pytest.approx(gb, abs=5e-5)
    assert spec.kv_bytes_per_block(1) == kv
    assert catalog.models()[name].kv_bytes_per_token == kv


def test_llama_2_7b_is_the_small_one():
    spec = model("llama-2-7b").model
    assert spec.num_blocks == 32 and spec.kv_groups == 1
    # 32 blocks + untied embeddings and LM head (32,000 x 4096 each): the published 6.74 B parameters
    assert (32 * spec.params_per_block + 2 * 32_000 * 4096) / 1e9 == pytest.approx(6.74, abs=0.005)


@pytest.mark.parametrize(("name", "mb", "tokens"), [
    ("bloom-176b", 234.9, 4096), ("llama-3.1-70b", 67.1, 16384), ("llama-3.1-405b", 67.1, 16384),
    ("qwen2.5-72b", 67.1, 16384), ("falcon-180b", 33.6, 16384), ("mixtral-8x22b", 100.7, 4096),
])  # fmt: skip
def test_petals_cache_budget_follows_its_gqa_default(name, mb, tokens):
    """realism.md 2 (c): 16,384 cache tokens with grouped-query attention, 4,096 without; Mixtral's
    PETALS config says no GQA, so its budget is sized as BLOOM-style (100.7 MB)."""
    sc = model(name)
    assert sc.petals.attn_cache_tokens == tokens
    assert petals_cache_bytes_per_block(sc.model, tokens) / 1e6 == pytest.approx(mb, abs=0.05)
    assert sc.model.max_session_tokens == (8192 if tokens == 16384 else 2048)


def test_the_timing_rule_is_calibrated_on_the_two_anchors():
    rule = catalog.timing_rule()
    assert rule.overhead_ms == pytest.approx(1.3584, abs=5e-5)
    assert rule.kappa == pytest.approx(2.8678, abs=5e-5)
    assert rule.base0_ms == pytest.approx(8.224, abs=5e-4)
    assert rule.base_kappa == pytest.approx(38.157, abs=5e-4)
    assert rule.flops_share == pytest.approx(0.2128, abs=5e-5)
    bloom = catalog.model_fields("bloom-176b")
    for name, tau, base in (("a100", 3.2197, 32.99), ("mig-1g", 16.2488, 206.35)):
        est = catalog.estimate_timing(
            catalog.gpus()[name], bloom["params_per_block"], bloom["active_params_per_block"], 4.25, 14336
        )
        assert est["tau_ms"] == pytest.approx(tau, abs=1e-9)  # the rule reproduces both anchors
        assert est["prefill_tau_ms"]["base"] == pytest.approx(base, abs=1e-9)
    params = bloom["params_per_block"]
    a100 = catalog.estimate_timing(catalog.gpus()["a100"], params, params, 4.25, 14336)
    assert a100["prefill_tau_ms"]["per_token"] == pytest.approx(0.0743, abs=1e-12)


#: realism.md section 3.2: estimated tau (ms per block per token, NF4) and BLOOM's tauI(20) (ms).
ESTIMATES = {
    "rtx-3090": (5.41, 2.77, 6.60, 2.50, 5.01, 2.80, 65.4),
    "rtx-4090": (5.12, 2.67, 6.22, 2.42, 4.75, 2.70, 59.7),
    "rtx-5090": (3.48, 2.09, 4.10, 1.95, 3.27, 2.11, 37.5),
    "a10g": (7.68, 3.55, 9.53, 3.13, 7.05, 3.61, 96.1),
    "l4": (14.01, 5.75, 17.71, 4.91, 12.74, 5.86, 180.4),
    "t4": (13.22, 5.47, 16.69, 4.69, 12.03, 5.58, 173.2),
    "v100-32gb": (5.58, 2.82, 6.81, 2.54, 5.15, 2.86, 68.0),
    "a100-40gb": (3.80, 2.21, 4.51, 2.04, 3.56, 2.23, 42.2),
    "a100": (3.22, 2.00, 3.76, 1.88, 3.03, 2.02, 34.5),
    "h100-80gb": (2.49, 1.75, 2.82, 1.68, 2.38, 1.76, 23.8),
    "mi300x": (2.07, 1.61, 2.28, 1.56, 2.00, 1.61, 18.1),
}
COLUMNS = ("bloom-176b", "llama-3.1-70b", "llama-3.1-405b", "mixtral-8x22b", "falcon-180b", "qwen2.5-72b")


@pytest.mark.parametrize("gpu", list(ESTIMATES))
def test_estimates_match_the_realism_table(gpu):
    *taus, prefill20 = ESTIMATES[gpu]
    for name, tau in zip(COLUMNS, taus, strict=True):
        profile = model(name).profiles[gpu]
        assert profile.tau_s * 1e3 == pytest.approx(tau, abs=0.006), name
        assert profile.estimated == (not (name == "bloom-176b" and gpu == "a100"))
    assert model("bloom-176b").profiles[gpu].prefill_tau(20) * 1e3 == pytest.approx(prefill20, abs=0.06)


def test_measured_anchors_are_used_as_measured_and_labelled():
    sc = model("bloom-176b")
    for name, tau, cap in (("a100", 3.2197, None), ("mig-1g", 16.2488, 4)):
        p = sc.profiles[name]
        assert not p.estimated and p.tau_s == pytest.approx(tau / 1e3) and p.max_blocks == cap
    # the same GPU with another quantisation or model is an estimate
    assert model("bloom-176b", "int8").profiles["a100"].estimated
    assert model("llama-3.1-70b").profiles["mig-1g"].max_blocks is None


def test_a_custom_gpu_by_bandwidth_and_compute_is_estimated():
    sc = load_scenario("clustered-9", {"model": "llama-3.1-70b", "gpu_profiles": {
        "my-gpu": {"memory_gb": 48, "bandwidth_gbs": 2039, "fp16_tflops": 312}}})  # fmt: skip
    mine, a100 = sc.profiles["my-gpu"], sc.profiles["a100"]
    assert mine.estimated and mine.tau_s == pytest.approx(a100.tau_s) and mine.memory_bytes == 48e9
    faster = load_scenario("clustered-9", {"model": "llama-3.1-70b", "gpu_profiles": {
        "fast": {"base": "rtx-4090", "bandwidth_gbs": 2016}}}).profiles["fast"]  # fmt: skip
    assert (
        faster.tau_s < sc.profiles["rtx-4090"].tau_s
        and faster.memory_bytes == sc.profiles["rtx-4090"].memory_bytes
    )


@pytest.mark.parametrize(("overrides", "match"), [
    ({"model": "gpt-5"}, "model: unknown model 'gpt-5'"),
    ({"model": {"name": "llama-3.1-70b", "quantization": "int4"}}, "model.quantization"),
    ({"model": {"base": "llama-3.1-70b", "quantization": "int8", "bits_per_param": 8}}, "not both"),
    ({"servers": [{"profile": "rtx-9090"}]}, r"servers\[0\].profile: unknown GPU profile 'rtx-9090'"),
    ({"gpu_profiles": {"x": {"base": "rtx-9090"}}}, r"gpu_profiles.x.base: unknown GPU profile"),
    ({"gpu_profiles": {"x": {"memory_gb": 10}}}, r"gpu_profiles.x: needs tau_ms"),
])  # fmt: skip
def test_unknown_names_are_clear_errors(overrides, match):
    with pytest.raises(ScenarioError, match=match):
        load_scenario("clustered-9", overrides)


def test_cli_lists_models_and_gpus(capsys):
    assert main(["models", "--wide"]) == 0
    out = capsys.readouterr().out
    assert "llama-3.1-405b" in out and "3,187,703,808" in out and "234.9 (4,096)" in out
    assert main(["models"]) == 0  # fits 80 columns: the wide ones left out
    out = capsys.readouterr().out
    assert "llama-3.1-405b" in out and "3,187,703,808" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert main(["gpus", "--model", "llama-3.1-70b"]) == 0
    out = capsys.readouterr().out
    assert "rtx-4090" in out and "estimate" in out and "2.004" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert main(["gpus"]) == 0
    assert "measured" in capsys.readouterr().out
    assert main(["gpus", "--model", "gpt-5"]) == 2
    assert "error:" in capsys.readouterr().err
