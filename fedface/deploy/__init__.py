"""Real multi-machine federation on Flower's deployment engine (SuperLink + SuperNodes, TLS, node authentication).

``certs`` (CA, server certificate, node keys), ``config`` (the deploy file), ``procs`` (processes by PID, network
checks), ``launch`` (the steps), ``shards`` (one-machine try-out: simulation shards as node folders), ``cli``
(`scripts/deploy`). Walkthrough: docs/deploy.md.
"""
