"""Non-learned deciders (installed as ``petalgym.baselines``); importing this module registers them."""
