"""Learned deciders (installed as ``petalgym.agents``)."""
