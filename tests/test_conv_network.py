"""esfast.core.ConvNetwork and ConvForward (cpp/src/conv.cpp, conv_network.cpp): every code path
against a float32 replica of the kernel's arithmetic, other layer shapes, threads, bad arguments."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import numpy_reference as ref
import pytest

from esfast.core import ConvForward, ConvNetwork

CODE_PATHS = ("avx512", "avx2", "baseline")


def frames(count: int, seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Pixels with some structure (a smooth background plus noise)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, shape[1])[:, None] * np.linspace(0, 1, shape[2])[None, :]
    base = 200 * rows[None, None] * rng.uniform(0.2, 1.0, (count, shape[0], 1, 1))
    return np.clip(base + rng.integers(0, 56, (count, *shape)), 0, 255).astype(np.uint8)


def random_theta(network: ConvNetwork, conv_layers, hidden: tuple[int, ...], shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Weights of norm about 1 per unit, VBN gains in [0.5, 2], shifts of order 0.5."""
    rng = np.random.default_rng(seed)
    theta = np.zeros(network.num_params, np.float32)
    for layer in ref.conv_unpack(theta, shape, hidden, network.actions, conv_layers):
        w = layer["w"]
        fan_in = w[0].size if w.ndim == 4 else w.shape[0]
        w[...] = rng.standard_normal(w.shape) / np.sqrt(fan_in)
        if "gamma" in layer:
            layer["gamma"][...] = rng.uniform(0.5, 2.0, layer["gamma"].shape)
            layer["beta"][...] = rng.normal(0, 0.5, layer["beta"].shape)
        else:
            layer["w"][...] *= 10
            layer["b"][...] = rng.normal(0, 0.5, layer["b"].shape)
    return theta


def supported(path: str) -> bool:
    try:
        ConvForward(NETWORK, np.zeros(NETWORK.num_params, np.float32), code_path=path)
    except ValueError:
        return False
    return True


SMALL = (2, 20, 20)
NETWORK = ConvNetwork(SMALL, ref.PAPER_CONV_LAYERS, (8,), 3, frames(2, 0, SMALL))

CASES = [
    # (observation shape, conv layers, hidden, actions): the paper's network, the smallest input,
    # hidden widths that are not multiples of 8 or 16, and other conv layers (other steps,
    # filters that leave 8-wide and single columns).
    ((4, 84, 84), ref.PAPER_CONV_LAYERS, (256,), 6),
    ((2, 20, 20), ref.PAPER_CONV_LAYERS, (100, 7), 18),
    ((3, 17, 23), ((8, 3, 1), (12, 2, 2)), (10,), 5),
    ((1, 30, 30), ((24, 5, 3), (40, 3, 1)), (33, 9), 4),
]


@pytest.mark.parametrize(("shape", "conv_layers", "hidden", "actions"), CASES)
def test_every_code_path_equals_the_kernels_arithmetic(shape, conv_layers, hidden, actions) -> None:
    batch = frames(5, seed=1, shape=shape)
    network = ConvNetwork(shape, conv_layers, hidden, actions, batch)
    assert network.normalized_units == sum(f for f, _, _ in conv_layers) + sum(hidden)
    assert network.reference_size == 5 and network.actions == actions
    theta = random_theta(network, conv_layers, hidden, shape, seed=2)
    observations = frames(3, seed=3, shape=shape)
    mean, var, logits, dense_inputs = ref.conv_network_exact(theta, batch, observations, hidden, actions, conv_layers)
    assert 0 < np.mean(dense_inputs == 0) < 1
    paths = [path for path in CODE_PATHS if supported(path)]
    assert "baseline" in paths
    for path in paths:
        forward = ConvForward(network, theta, code_path=path)
        assert forward.code_path == path
        statistics = forward.refresh()
        assert statistics.dtype == np.float64 and statistics.shape == (2, network.normalized_units)
        np.testing.assert_array_equal(statistics[0], mean, err_msg=path)
        np.testing.assert_array_equal(statistics[1], var, err_msg=path)
        for observation, expected in zip(observations, logits):
            np.testing.assert_array_equal(forward.logits(observation), expected, err_msg=path)
            assert forward(observation) == int(np.argmax(expected))


def test_automatic_path_is_a_named_one() -> None:
    forward = ConvForward(NETWORK, np.zeros(NETWORK.num_params, np.float32))
    assert forward.code_path in CODE_PATHS and supported(forward.code_path)


def test_forwards_of_one_network_refresh_and_step_from_threads() -> None:
    shape, hidden = (4, 84, 84), (256,)
    network = ConvNetwork(shape, ref.PAPER_CONV_LAYERS, hidden, 6, frames(16, seed=4, shape=shape))
    thetas = [random_theta(network, ref.PAPER_CONV_LAYERS, hidden, shape, seed=5 + i) for i in range(3)]
    observations = frames(8, seed=8, shape=shape)
    alone = []
    for theta in thetas:
        forward = ConvForward(network, theta)
        alone.append((forward.refresh(), [forward.logits(o) for o in observations]))
    results: list[object] = [None] * len(thetas)

    def run(index: int) -> None:
        forward = ConvForward(network, thetas[index])
        results[index] = (forward.refresh(), [forward.logits(o) for o in observations])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(thetas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for (statistics, logits), (expected_statistics, expected_logits) in zip(results, alone):  # type: ignore[misc]
        np.testing.assert_array_equal(statistics, expected_statistics)
        for got, expected in zip(logits, expected_logits):
            np.testing.assert_array_equal(got, expected)


def test_unpickled_arrays_are_accepted() -> None:
    """An unpickled array has its own dtype instance (as in a spawned evaluator process): equal,
    not identical, to numpy's uint8."""
    batch = pickle.loads(pickle.dumps(frames(2, 0, SMALL)))
    assert batch.dtype is not np.dtype(np.uint8)
    network = ConvNetwork(SMALL, ref.PAPER_CONV_LAYERS, (8,), 3, batch)
    forward = ConvForward(network, random_theta(network, ref.PAPER_CONV_LAYERS, (8,), SMALL, seed=9))
    forward.refresh()
    np.testing.assert_array_equal(forward.logits(batch[0]), forward.logits(np.array(batch[0], np.uint8)))


def test_bad_network_arguments() -> None:
    batch = frames(2, 0, SMALL)
    good = dict(observation_shape=SMALL, conv_layers=ref.PAPER_CONV_LAYERS, hidden_dims=(8,), actions=3, reference_batch=batch)
    cases = [
        ({"observation_shape": (2, 20)}, ValueError, "observation_shape must be (channels, height, width)"),
        ({"observation_shape": (2, 0, 20)}, ValueError, "each of observation_shape must be in [1, 65536], got 0"),
        ({"observation_shape": "abc"}, TypeError, "observation_shape must be a sequence of ints"),
        ({"observation_shape": (2, 19, 20), "reference_batch": frames(2, 0, (2, 19, 20))}, ValueError, "does not fit its input"),
        ({"conv_layers": ()}, ValueError, "conv_layers must be a sequence of at least one (filters, kernel, stride)"),
        ({"conv_layers": ((16, 8),)}, ValueError, "each of conv_layers must be (filters, kernel, stride)"),
        ({"conv_layers": ((16, 8, 0),)}, ValueError, "must be in [1, 65536], got 0"),
        ({"hidden_dims": ()}, ValueError, "hidden_dims must have at least one entry"),
        ({"hidden_dims": (8, 2.5)}, TypeError, "each of hidden_dims must be an int, got float"),
        ({"actions": 0}, ValueError, "actions must be in [1, 1048576], got 0"),
        ({"reference_batch": batch.astype(np.float32)}, TypeError, "reference_batch must have dtype uint8, got float32"),
        ({"reference_batch": batch[:, :1]}, ValueError, "reference_batch must have shape (n >= 1, 2, 20, 20), got (2, 1, 20, 20)"),
        ({"reference_batch": batch[:0]}, ValueError, "reference_batch must have shape (n >= 1, 2, 20, 20), got (0, 2, 20, 20)"),
        ({"reference_batch": batch.tolist()}, TypeError, "reference_batch must be a numpy array of dtype uint8, got list"),
    ]
    for change, error, message in cases:
        with pytest.raises(error) as info:
            ConvNetwork(**{**good, **change})
        assert message in str(info.value), (change, str(info.value))


def test_bad_forward_arguments() -> None:
    theta = np.zeros(NETWORK.num_params, np.float32)
    with pytest.raises(ValueError, match=rf"theta must have shape \({NETWORK.num_params},\), got \(10,\)"):
        ConvForward(NETWORK, theta[:10])
    with pytest.raises(TypeError, match="theta must have dtype float32, got float64"):
        ConvForward(NETWORK, theta.astype(np.float64))
    with pytest.raises(ValueError, match="theta must be C-contiguous"):
        ConvForward(NETWORK, np.zeros(2 * NETWORK.num_params, np.float32)[::2])
    with pytest.raises(TypeError, match=r"network must be an esfast\.core\.ConvNetwork, got NoneType"):
        ConvForward(None, theta)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="code_path must be 'auto', 'avx512', 'avx2' or 'baseline', got 'sse'"):
        ConvForward(NETWORK, theta, code_path="sse")
    forward = ConvForward(NETWORK, theta)
    observation = frames(1, 0, SMALL)[0]
    assert forward(observation) == 0  # zero weights before the first refresh: all logits 0
    with pytest.raises(TypeError, match="observation must have dtype uint8, got int64"):
        forward(observation.astype(np.int64))
    with pytest.raises(ValueError, match=r"observation must have shape \(2, 20, 20\), got \(20, 20\)"):
        forward(observation[0])
    with pytest.raises(TypeError, match="observation must be a numpy array of dtype uint8, got NoneType"):
        forward.logits(None)  # type: ignore[arg-type]
