"""Non-learned deciders (installed as ``petalgym.baselines``).

Importing this package registers every baseline under its name in :mod:`petalgym.deciders`; the module
behind a name is imported on first use.
"""

from petalgym.deciders import register_decider

#: name -> "module:factory" of every baseline decider.
BASELINES: dict[str, str] = {
    "petals": "petalgym.baselines.petals:PetalsDecider",
    "cg-bprr": "petalgym.baselines.cg:CGBPRRDecider",
    "cg-bp-ws-rr": "petalgym.baselines.cg:CGBPWSRRDecider",
    "cg-bp-ws-rr-follow": "petalgym.baselines.cg:CGFollowDecider",
    "milp": "petalgym.baselines.milp:MILPDecider",
    "random": "petalgym.baselines.simple:RandomDecider",
    "random-actions": "petalgym.envs.adapter:RandomActionsDecider",
    "round-robin": "petalgym.baselines.simple:RoundRobinDecider",
    "petals-opt-order": "petalgym.baselines.ablations:optimized_order",
    "petals-opt-number": "petalgym.baselines.ablations:optimized_number",
    "petals-opt-rr": "petalgym.baselines.ablations:optimized_rr",
    "petals-paper": "petalgym.baselines.paper:PetalsPaperDecider",
    "cg-bp-ws-rr-paper": "petalgym.baselines.paper:CGBPWSRRPaperDecider",
    "gbp-cr-jffc": "petalgym.baselines.composition:jffc",
    "gbp-cr-jsq": "petalgym.baselines.composition:jsq",
    "gbp-cr-sed": "petalgym.baselines.composition:sed",
    "gbp-cr-sa-jsq": "petalgym.baselines.composition:sa_jsq",
    "gbp-cr-jiq": "petalgym.baselines.composition:jiq",
    "jffc-only": "petalgym.baselines.composition:jffc_only",
    "helix": "petalgym.baselines.helix:HelixDecider",
    "parallax": "petalgym.baselines.parallax:ParallaxDecider",
    "parallax-dp": "petalgym.baselines.parallax:parallax_dp",
    "replicas-first": "petalgym.baselines.replicas_first:ReplicasFirstDecider",
}

for _name, _target in BASELINES.items():
    register_decider(_name, _target)
