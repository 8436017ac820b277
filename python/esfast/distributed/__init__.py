"""Training across processes and machines: a master and worker hosts over ZeroMQ.

- :mod:`~esfast.distributed.protocol`: the wire (messages, frames, validation; docs/protocol.md);
- :mod:`~esfast.distributed.scheduling`: who runs which task of a generation, without sockets;
- :mod:`~esfast.distributed.master`: the master, an :class:`~esfast.evaluators.Evaluator`;
- :mod:`~esfast.distributed.host`: a worker host (``esfast-worker``), one process per machine;
- :mod:`~esfast.distributed.evaluator`: the evaluator processes a host starts;
- :mod:`~esfast.distributed.shm`: shared memory (segment names and clean-up, θ slots).

Importing the protocol loads neither gymnasium nor MuJoCo.
"""
