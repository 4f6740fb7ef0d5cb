"""The paper's ablations of PETALS (docs/reproducing.md): each swaps one PETALS component for the
proposed method's, so that the gain of each component can be measured on its own.

* ``petals-opt-order``: PETALS' block choice, but servers join in CG-BP's order (increasing amortised
  per-block time t~_j) instead of a random order;
* ``petals-opt-number``: PETALS' block choice with CG-BP's conservative block counts m_j (all memory left
  becomes cache) instead of PETALS' fixed cache budget;
* ``petals-opt-rr``: PETALS' placement with per-request WS-RR routing (waiting instead of back-off).

CG-BP's quantities use the online design |R| (:func:`petalgym.baselines.cg.design_num_sessions`), the
same |R| the proposed CG-BP + WS-RR uses.
"""

from __future__ import annotations

from typing import Any

from petalgym.baselines.cg import CGBPResult, CGBPWSRRDecider, cg_bp_placement, design_num_sessions
from petalgym.baselines.petals import PetalsDecider
from petalgym.offline import OfflineInstance
from petalgym.scenario import Scenario


def _cg_bp(scenario: Scenario) -> CGBPResult:
    """CG-BP at the design |R| for ``scenario`` (computed once per scenario object)."""

    def compute() -> CGBPResult:
        n = design_num_sessions(scenario)
        return cg_bp_placement(OfflineInstance.from_scenario(scenario, n), n)

    return scenario.memo("ablations.cg_bp", compute)


def cg_join_order(scenario: Scenario) -> list[int]:
    """Servers in CG-BP's visiting order (increasing t~_j, ties by index)."""
    return list(_cg_bp(scenario).order)


def cg_num_blocks(scenario: Scenario, server: int) -> int:
    """CG-BP's conservative block count m_j for ``server`` (at least 1: the simulator places every server)."""
    return max(1, _cg_bp(scenario).num_blocks[server])


def optimized_order(**kwargs: Any) -> PetalsDecider:
    """PETALS with servers joining in CG-BP's order ("Optimized Order")."""
    return PetalsDecider(join_order=cg_join_order, name="petals-opt-order", **kwargs)


def optimized_number(**kwargs: Any) -> PetalsDecider:
    """PETALS' block choice with CG-BP's block counts ("Optimized Number")."""
    return PetalsDecider(num_blocks=cg_num_blocks, name="petals-opt-number", **kwargs)


def optimized_rr(**kwargs: Any) -> PetalsDecider:
    """PETALS' placement with WS-RR routing ("Optimized RR")."""
    return PetalsDecider(router=CGBPWSRRDecider(), name="petals-opt-rr", **kwargs)
