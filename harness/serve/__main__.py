"""python -m harness.serve [hydra overrides]: serve an agent over WebSocket (configs/serve.yaml).

An invalid configuration (a setting, the agent's checkpoint) is reported in one line (exit status 2)
before anything is loaded or bound. Stopped by SIGTERM / Ctrl-C; prints its statistics then.
"""

from __future__ import annotations

import json
import os
import sys

from omegaconf import DictConfig

from agents import make_policy
from harness.config_errors import config_errors, exit_on_config_error, resolve_config
from harness.hydra_app import hydra_app
from harness.serve.batching import build_in_compute_thread
from harness.serve.server import ServeSettings, run_server

_SERVER_KEYS = ("host", "port", "protocol", "token", "max_batch", "max_wait_ms", "max_message_mb", "observation")


@hydra_app("serve")  # configs/serve.yaml, wherever the package is installed
def main(cfg: DictConfig) -> None:
    with exit_on_config_error("harness.serve"):
        resolved = resolve_config(cfg)
        with config_errors():
            settings = ServeSettings(**{k: resolved[k] for k in _SERVER_KEYS})
            # configs/agent/<name>.yaml: name, options (factory); scene: the clients' env's, for agents that read it
            try:
                policy, executor = build_in_compute_thread(
                    lambda: make_policy(**resolved["agent"], scene=resolved["scene"]), int(resolved.get("threads") or 0))
            except KeyboardInterrupt:  # the load goes on in the compute thread, which the interpreter's exit would join
                print("harness.serve: interrupted while loading the agent", file=sys.stderr, flush=True)
                os._exit(130)

    def ready(port: int) -> None:
        print(f"serving {policy.spec.name} on ws://{settings.host}:{port} (protocol {settings.protocol}, "
              f"max_batch {settings.max_batch}, max_wait_ms {settings.max_wait_ms:g}"
              f"{', token required' if settings.token else ''})", flush=True)

    stats = run_server(policy, settings, on_ready=ready, executor=executor)
    print(json.dumps(stats, indent=2), flush=True)


if __name__ == "__main__":
    main()
