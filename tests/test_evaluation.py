"""The run description that travels to worker hosts (WorkerSetup), and the in-process evaluator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from esfast.config import AtariSettings, PolicySettings
from esfast.evaluation import WorkerSetup, reference_digest
from esfast.protocol import Message, decode, encode

MLP = WorkerSetup("CartPole-v1", None, PolicySettings(hidden_dims=(8,)), 58, 4, 1000, 3, "esfast-x", "node-1")


def _through_the_wire(setup: WorkerSetup) -> WorkerSetup:
    run, arrays = setup.to_wire()
    message = decode([bytes(f) for f in encode(Message("WELCOME", {"worker": "w1", "run": run}, arrays))])
    return WorkerSetup.from_wire(message["run"], message.arrays)


def test_an_mlp_run_round_trips() -> None:
    assert _through_the_wire(MLP) == MLP


def test_an_atari_run_carries_its_reference_batch() -> None:
    batch = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84), dtype=np.uint8)
    setup = dataclasses.replace(MLP, env_id="ALE/Pong-v5", policy=PolicySettings(type="AtariPolicy", hidden_dims=(256,), nonlin_type="relu"),
                                obs_dim=0, atari=AtariSettings(noop_max=5), reference_digest=reference_digest(batch), reference_batch=batch)
    received = _through_the_wire(setup)
    assert received == setup and received.atari == AtariSettings(noop_max=5)
    assert received.reference_batch is not None
    np.testing.assert_array_equal(received.reference_batch, batch)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_params": 0}, "'num_params' must be an integer >= 1"),
        ({"obs_dim": -1}, "'obs_dim' must be an integer >= 0"),
        ({"table_name": 5}, "'table_name' must be a string or null"),
        ({"policy": {"type": "Pickle"}}, "policy.type must be one of"),
        ({"reference_digest": "0" * 32}, "reference batch is missing or does not match"),
        ({"extra": 1}, "must have exactly the fields"),
    ],
)
def test_a_malformed_run_is_refused(change: dict[str, object], message: str) -> None:
    run, _ = MLP.to_wire()
    with pytest.raises(ValueError, match=message):
        WorkerSetup.from_wire({**run, **change})


def test_a_reference_batch_that_does_not_match_its_digest_is_refused() -> None:
    batch = np.zeros((2, 1, 20, 20), dtype=np.uint8)
    run, _ = dataclasses.replace(MLP, reference_digest=reference_digest(batch), reference_batch=batch).to_wire()
    with pytest.raises(ValueError, match="does not match its digest"):
        WorkerSetup.from_wire(run, (np.ones_like(batch),))
