"""Running esfast under a cluster's engine: one module per engine (docs/clusters.md).

An engine only places, starts, restarts and scales ``esfast-master`` and ``esfast-worker``; the
transport between them is esfast's own (docs/protocol.md).
"""
