"""The policy server: any agent the project builds, served over WebSocket to many clients, with dynamic
batching (python -m harness.serve; docs/SERVING.md).

    server.py     PolicyServer, ServeSettings, run_server: connections, sessions, token, HTTP /stats
    batching.py   Batcher: observations of different sessions stepped together; ServerStats
    protocols.py  the server's side of the native, vla-eval and openpi protocols
    process.py    ServerProcess: a server in its own process, restarted when it dies (server=auto)
    __main__.py   the command line (configs/serve.yaml)
"""
