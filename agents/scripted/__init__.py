"""The scripted expert agent (privileged: plans from robot_obs and scene_obs)."""

from agents.scripted.expert import ScriptedExpert

__all__ = ["ScriptedExpert"]
