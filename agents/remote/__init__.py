"""Remote agents: the policy runs in a policy server, reached over WebSocket with msgpack.

    wire.py     the wire formats (vla-eval's RFC-0002 messages, openpi's frames), shared with harness/serve
    mapping.py  a third-party server's observation layout and action convention, declared
    client.py   the connection, one class per protocol (native, vla_eval, openpi)
    agent.py    RemoteAgent (agent=remote)
"""

from agents.remote.agent import RemoteAgent

__all__ = ["RemoteAgent"]
