"""One model, many simulators: the evaluation's policy server (`server=auto|on|off`).

With a server, this rank starts one policy server (harness/serve, in its own process, on the agent's
device) and its env workers run `agent=remote` clients of it, instead of one model copy per worker: the
model is loaded once, and the observations of all workers are stepped together in batches.

    server=auto   a server for model agents (agent=vla) when workers > 1 and either the model runs on an
                  accelerator or the workers outnumber the rank's CPU cores (the default); none otherwise
    server=on     a server for any agent config (agent=scripted, agent=custom, ...)
    server=off    every worker builds its own agent

The server binds 127.0.0.1 on a free port with a random token, uses the protocol the harness speaks
(native: the agent's own observations and actions, so the results are those of the agent in-process),
and is started again if it dies (its clients reconnect and run their chain again). Its statistics
(latency percentiles, batch sizes, peak memory) go into results.json.
"""

from __future__ import annotations

import secrets
from typing import Any

from harness.envs.scene_axes import COLOR_PERMUTATIONS
from harness.eval.config import SERVER_MODES, ServerOptions
from harness.eval.specs import AgentConfig, AgentSource, agent_device
from harness.ranks import rank_cores, torch_threads
from harness.serve.process import ServerProcess
from harness.serve.server import ServeSettings
from harness.sim.layout import get_layout

MODEL_AGENTS = ("vla",)


def wants_server(mode: str, agent: AgentSource, workers: int, cores: int | None = None) -> bool:
    """Whether this evaluation runs its agent in a policy server. `cores`: the rank's CPU cores (default: the
    machine's). On CPU a server pays only when the workers outnumber the cores: with a core each, a model per
    worker steps without waiting, while a server's clients wait in lockstep for their batch (measured on 2
    cores, docs/SERVING.md: 2 workers 0.75x with a server; 4 workers 1.04x and half the memory)."""
    if mode not in SERVER_MODES:
        raise ValueError(f"server must be one of {SERVER_MODES}, got {mode!r}")
    is_config = isinstance(agent, AgentConfig)
    if mode == "off" or (mode == "auto" and not (is_config and agent.factory is None and agent.name in MODEL_AGENTS)):
        return False
    if mode == "auto":
        on_cpu = str(agent_device(agent) or "cpu").startswith("cpu")
        return workers > 1 and (not on_cpu or workers > (cores if cores is not None else rank_cores()))
    if not is_config or agent.name == "remote":
        what = "a remote agent is served already" if is_config else "an agent object or factory cannot be sent to a server"
        raise ValueError(f"server=on serves an agent config (agent=vla, agent=scripted, ...): {what}")
    return True


class PolicyServerForWorkers:
    """A context: starts the server, gives the workers' agent (a remote client of it), stops it after
    and keeps its last statistics in `stats`."""

    def __init__(self, agent: AgentConfig, options: ServerOptions, workers: int, local_world_size: int = 1,
                 scene: str | None = None, block_colors: int = 0) -> None:
        threads = options.threads or torch_threads(rank_cores(local_world_size) - workers)
        # the workers' env's scene and blocks (`env.perturb.block_colors` recolours them), for a served agent that
        # reads the layout
        block_sizes = get_layout(scene).recolored(COLOR_PERMUTATIONS[block_colors]).block_sizes if scene and block_colors else None
        served = {"name": agent.name, **agent.kwargs, **({"factory": agent.factory} if agent.factory else {}),
                  "scene": scene, "block_sizes": block_sizes}
        settings = ServeSettings(port=0, token=secrets.token_hex(16), max_batch=options.max_batch,
                                 max_wait_ms=options.max_wait_ms)
        self.server = ServerProcess(served, settings, threads=threads)
        self.options, self.threads = options, threads
        self.stats: dict[str, Any] | None = None

    def __enter__(self) -> AgentConfig:
        self.server.start()
        return AgentConfig(name="remote", kwargs={
            "url": self.server.url, "protocol": "native", "token": self.server.settings.token,
            "timeout_s": self.options.timeout_s, "reconnect_timeout_s": self.options.reconnect_timeout_s})

    def __exit__(self, *exc: Any) -> None:
        stats = self.server.close()
        if stats is not None:
            self.stats = {**stats, "threads": self.threads, "restarts": self.server.restarts,
                          "max_batch": self.options.max_batch, "max_wait_ms": self.options.max_wait_ms}
