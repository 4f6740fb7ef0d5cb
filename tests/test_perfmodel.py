"""The performance model (paper-notes sections 1-6): the paper's worked numbers, computed from the shipped
constants, per-request times evaluated by hand, the shortest-chain DP against brute force, chain
feasibility and Theorem 2's bound."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petalgym import catalog
from petalgym.perfmodel import (
    Hop,
    TimeModel,
    cache_slots,
    chain_errors,
    conservative_num_blocks,
    petals_num_blocks,
    session_cache_bytes,
    session_capacity,
    shortest_chain,
    theorem2_bound,
)
from petalgym.scenario import scenario_from_dict


@pytest.fixture(scope="module")
def bloom(clustered9):
    """BLOOM-176B as shipped (catalog constants)."""
    return clustered9.model


# --------------------------------------------------------------------------------------------------
# The paper's numbers, from the shipped constants
# --------------------------------------------------------------------------------------------------
def test_bloom_constants_come_from_the_catalog(bloom):
    spec = catalog.model_fields("bloom-176b")
    assert bloom.num_blocks == 70
    assert bloom.d_model == 14336
    assert bloom.block_bytes == int(
        spec["params_per_block"] * spec["bits_per_param"] / 8 * spec["size_overhead"]
    )


def test_session_cache_is_8_49_mb(bloom):
    s_c = session_cache_bytes(bloom, 20, 128)
    assert s_c == 2 * bloom.d_model * (20 + 128) * bloom.dtype_bytes // bloom.kv_groups
    assert s_c / 1e6 == pytest.approx(8.49, abs=0.005)  # paper: s_c ~= 8.49 MB


def test_block_size_is_1_3234_gb(bloom):
    assert bloom.block_bytes / 1e9 == pytest.approx(1.3234, abs=5e-5)  # paper: s_m ~= 1.3234 GB


def test_petals_block_counts(clustered9, bloom):
    a100, mig = clustered9.profiles["a100"], clustered9.profiles["mig-1g"]
    assert clustered9.petals.attn_cache_tokens == 4096
    assert a100.memory_bytes == round(86.13e9)
    assert petals_num_blocks(bloom, a100, attn_cache_tokens=4096) == 53  # paper: 53 blocks on ~86 GB
    assert petals_num_blocks(bloom, mig, attn_cache_tokens=4096) == 4  # paper: 4 on a MIG slice
    # PETALS v2.2.0's larger cache budget leaves room for fewer blocks
    assert petals_num_blocks(bloom, a100, attn_cache_tokens=8192) < 53


def test_session_capacity_21_on_80gb(bloom):
    s_c = session_cache_bytes(bloom, 20, 128)
    assert session_capacity(80e9, 53, bloom.block_bytes, s_c) == 21  # paper: ~21 concurrent sessions


def test_slots_and_capacity_by_hand():
    # 10 GB, 3 blocks of 2 GB, 0.5 GB per block-session: 4 GB left = 8 slots = 2 sessions of 3 blocks
    assert cache_slots(10e9, 3, 2e9, 0.5e9) == 8
    assert session_capacity(10e9, 3, 2e9, 0.5e9) == 2
    assert cache_slots(5e9, 3, 2e9, 0.5e9) == 0  # blocks alone overflow memory
    assert session_capacity(10e9, 0, 2e9, 0.5e9) == 0


def test_conservative_num_blocks_by_hand():
    # floor(10 / (1 + 0.25 * 4)) = 5, capped by L and by the GPU
    assert conservative_num_blocks(10e9, 1e9, 0.25e9, 4, 70) == 5
    assert conservative_num_blocks(10e9, 1e9, 0.25e9, 4, 3) == 3
    assert conservative_num_blocks(10e9, 1e9, 0.25e9, 4, 70, max_blocks=2) == 2


# --------------------------------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------------------------------
TAU_MS = (3.0, 12.0)
PRE_MS = ((0.1, 20.0), (0.3, 150.0))  # (per token, base) per profile
RTT_MS = ((10.0, 40.0), (70.0, 5.0))  # client x server


@pytest.fixture(scope="module")
def two_server():
    """1 model of 6 blocks, 2 servers with different profiles, 2 clients, an explicit RTT matrix."""
    return scenario_from_dict(
        {
            "model": {"name": "m", "num_blocks": 6, "block_gb": 1.0, "d_model": 1000},
            "gpu_profiles": {
                f"p{i}": {
                    "memory_gb": 20.0,
                    "tau_ms": TAU_MS[i],
                    "prefill_tau_ms": {"per_token": PRE_MS[i][0], "base": PRE_MS[i][1]},
                }
                for i in range(2)
            },
            "servers": [{"profile": "p0"}, {"profile": "p1"}],
            "clients": [{"name": "a"}, {"name": "b"}],
            "network": {"kind": "matrix", "rtt_ms": [list(r) for r in RTT_MS]},
            "workload": {"arrival_rate": 1.0, "num_requests": 1},
        }
    )


def test_request_time_equals_the_formula_by_hand(two_server):
    tm = TimeModel(two_server)
    o = two_server.overheads
    chain = (Hop(0, 0, 4), Hop(1, 4, 6))  # server 0 processes 4 blocks, server 1 two
    k = {0: 4, 1: 2}
    l_in, l_out = 17, 33
    for c in range(2):
        prefill = sum(
            RTT_MS[c][j] / 1e3
            + o.prefill_per_token_s * l_in
            + o.prefill_overhead_s
            + k[j] * (PRE_MS[j][0] * l_in + PRE_MS[j][1]) / 1e3
            for j in (0, 1)
        )
        token = sum(RTT_MS[c][j] / 1e3 + o.token_overhead_s + k[j] * TAU_MS[j] / 1e3 for j in (0, 1))
        expected = o.initial_delay_s + prefill + (l_out - 1) * token
        assert tm.prefill_time(chain, c, l_in) == pytest.approx(prefill, rel=1e-12)
        assert tm.token_time(chain, c) == pytest.approx(token, rel=1e-12)
        assert tm.request_time(chain, c, l_in, l_out) == pytest.approx(expected, rel=1e-12)
        # the per-hop costs used by routing add up to the same total
        fixed, per_block = tm.hop_costs(c, l_in, l_out)
        total = o.initial_delay_s + sum(fixed[j] + per_block[j] * k[j] for j in (0, 1))
        assert total == pytest.approx(expected, rel=1e-12)
        t_tok, tau = tm.token_costs(c)
        assert sum(t_tok[j] + tau[j] * k[j] for j in (0, 1)) == pytest.approx(token, rel=1e-12)


def test_overheads_are_the_papers(two_server):
    o = two_server.overheads
    assert (o.token_overhead_s, o.prefill_overhead_s, o.initial_delay_s) == pytest.approx((0.1, 0.067, 0.07))
    assert o.prefill_per_token_s == pytest.approx(0.7049e-3)


def test_amortised_block_time_by_hand(two_server):
    tm = TimeModel(two_server)
    o = two_server.overheads
    t_star = max(RTT_MS[0][1], RTT_MS[1][1]) / 1e3 + o.token_overhead_s
    assert tm.amortised_block_time(1, 3) == pytest.approx(TAU_MS[1] / 1e3 + t_star / 3)


def test_theorem2_bound_by_hand():
    t_tilde = [0.5, 0.2, 0.3, 0.25]
    m = [2, 3, 4, 1]
    tau = [0.1, 0.05, 0.07, 0.2]
    # sorted by t~: server 1 (3 blocks), server 3 (1 block), server 2 (4 blocks) -> 8 >= L = 6, K = server 2
    expected = 0.2 * 3 + 0.25 * 1 + 0.3 * 4 - 0.07 * (3 + 1 + 4 - 6)
    assert theorem2_bound(t_tilde, m, 6, tau) == pytest.approx(expected)
    # exact cover by the fastest server alone: no correction term
    assert theorem2_bound(t_tilde, m, 3, tau) == pytest.approx(0.2 * 3)
    # servers that cannot cover L: no bound
    assert theorem2_bound(t_tilde, m, 11, tau) == math.inf


# --------------------------------------------------------------------------------------------------
# Chains
# --------------------------------------------------------------------------------------------------
SPANS = {0: (0, 3), 1: (2, 5), 2: (3, 6)}


def test_chain_errors_accepts_feasible_chains():
    assert chain_errors((Hop(0, 0, 3), Hop(2, 3, 6)), SPANS, 6) is None
    assert chain_errors((Hop(0, 0, 3), Hop(1, 3, 5), Hop(2, 5, 6)), SPANS, 6) is None
    assert chain_errors((Hop(1, 4, 5), Hop(2, 5, 6)), SPANS, 6, start=4) is None


@pytest.mark.parametrize(
    ("chain", "start", "needle"),
    [
        ((), 0, "empty"),
        ((Hop(0, 0, 3), (2, 3)), 0, "expected (server, start, end)"),
        ((Hop(0, 0, 3), Hop(1, 3, 5), Hop(0, 5, 3)), 0, "server 0 appears twice"),
        ((Hop(0, 0, 3), Hop(7, 3, 6)), 0, "server 7 hosts no blocks"),
        ((Hop(0, 0, 3), Hop(2, 4, 6)), 0, "starts at block 4, expected 3"),
        ((Hop(0, 1, 3), Hop(2, 3, 6)), 0, "starts at block 1, expected 0"),
        ((Hop(2, 0, 6),), 0, "server 2 hosts blocks [3, 6), not block 0"),
        ((Hop(0, 0, 2), Hop(1, 2, 5), Hop(2, 5, 6)), 0, "ends at 2, but server 0 processes up to"),
        ((Hop(0, 0, 3), Hop(1, 3, 5)), 0, "ends at block 5, not at the last block 6"),
        ((Hop(0, 0, 3), Hop(2, 3, 6)), 2, "starts at block 0, expected 2"),
    ],
)
def test_chain_errors_names_each_problem(chain, start, needle):
    err = chain_errors(chain, SPANS, 6, start)
    assert err is not None and needle in err


def brute_force(spans, fixed, per_block, num_blocks, start, wait):
    """Cheapest chain cost by enumerating every chain (exponential; tiny cases only)."""
    best = math.inf

    def go(pos: int, cost: float, used: frozenset[int]) -> None:
        nonlocal best
        if pos == num_blocks:
            best = min(best, cost)
            return
        for j, a, e in spans:
            if j not in used and a <= pos < e:
                k = e - pos
                c = cost + fixed[j] + per_block[j] * k + (wait(j, k) if wait else 0.0)
                go(e, c, used | {j})

    go(start, 0.0, frozenset())
    return best


@st.composite
def placements(draw: st.DrawFn):
    """Random spans on L <= 8 blocks, random hop costs and an optional random wait (inf = forbidden)."""
    num_blocks = draw(st.integers(1, 8))
    n = draw(st.integers(1, 7))
    spans = []
    for j in range(n):
        a = draw(st.integers(0, num_blocks - 1))
        e = draw(st.integers(a + 1, num_blocks))
        spans.append((j, a, e))
    costs = st.floats(0.0, 10.0, allow_nan=False)
    fixed = draw(st.lists(costs, min_size=n, max_size=n))
    per_block = draw(st.lists(costs, min_size=n, max_size=n))
    start = draw(st.integers(0, num_blocks - 1))
    wait = None
    if draw(st.booleans()):
        table = draw(
            st.dictionaries(
                st.tuples(st.integers(0, n - 1), st.integers(1, num_blocks)),
                st.one_of(costs, st.just(math.inf)),
            )
        )
        wait = lambda j, k: table.get((j, k), 0.0)  # noqa: E731
    return spans, fixed, per_block, num_blocks, start, wait


@settings(max_examples=300)
@given(placements())
def test_shortest_chain_matches_brute_force(case):
    spans, fixed, per_block, num_blocks, start, wait = case
    cost, chain = shortest_chain(spans, fixed, per_block, num_blocks, start, wait)
    best = brute_force(spans, fixed, per_block, num_blocks, start, wait)
    if best == math.inf:
        assert cost == math.inf and chain == ()
        return
    assert cost == pytest.approx(best, rel=1e-9, abs=1e-12)
    assert chain_errors(chain, {j: (a, e) for j, a, e in spans}, num_blocks, start) is None
    recomputed = sum(
        fixed[h.server] + per_block[h.server] * h.blocks + (wait(h.server, h.blocks) if wait else 0.0)
        for h in chain
    )
    assert recomputed == pytest.approx(cost, rel=1e-9, abs=1e-12)
