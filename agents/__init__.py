"""Agents: everything that maps (observation, instruction) to a 7-d CALVIN action."""
