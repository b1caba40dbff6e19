"""Agents: everything that maps (observation, instruction) to a 7-d CALVIN action.

`load_agent(checkpoint_dir, device=...)` loads a VLA checkpoint; it is imported lazily so that
`import agents` (and the scripted/random agents) stays free of torch and transformers.
"""

from typing import Any


def load_agent(checkpoint: Any, device: str = "cpu", **kwargs: Any) -> Any:
    """Load a VLA checkpoint folder into a ready `agents.vla.agent.VLAAgent` (see there for kwargs)."""
    from .vla.agent import load_agent as _load

    return _load(checkpoint, device=device, **kwargs)
