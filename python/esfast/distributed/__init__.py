"""Training across processes and machines: a master and worker hosts over ZeroMQ.

- :mod:`~esfast.distributed.protocol`: the wire (messages, frames, validation; docs/protocol.md);
- :mod:`~esfast.distributed.scheduling`: who runs which task of a generation, without sockets;
- :mod:`~esfast.distributed.master`: the master, an :class:`~esfast.evaluators.Evaluator`;
- :mod:`~esfast.distributed.host`: a worker host (``esfast-worker``), one process per machine;
- :mod:`~esfast.distributed.evaluator`: the evaluator processes a host starts;
- :mod:`~esfast.distributed.shm`: shared memory (segment names and clean-up, θ slots).

Whom the master trusts with what (docs/protocol.md, "Handshake" to "Audits"):

- :mod:`~esfast.distributed.keys`: CURVE keys (``esfast keys``), their layout, the key check;
- :mod:`~esfast.distributed.admission` and :mod:`~esfast.distributed.versions`: which ``HELLO``
  the master takes (the environment's fingerprint is :mod:`esfast.envs.probe`);
- :mod:`~esfast.distributed.bounds`: what a task's result can be;
- :mod:`~esfast.distributed.audit`: results repeated by other hosts, compared, and what follows;
- :mod:`~esfast.distributed.connections` and :mod:`~esfast.distributed.log_limit`: what peers
  can make the master hold or write.

Importing the protocol loads neither gymnasium nor MuJoCo.
"""
