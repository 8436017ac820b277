"""The kernels' code paths (cpp/include/esfast/dispatch.hpp): every path this CPU supports, run in
this one process through esfast.core.set_code_path, gives the baseline path's results bit for
bit, for every kernel with more than one path; and the selection API and its environment
variables behave as documented.

Bit for bit means the same bytes: NaN payloads and the sign of zero included.
"""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy_reference as ref
import pytest

from esfast import _core
from esfast.core import (
    ConvForward,
    ConvNetwork,
    MLPForward,
    code_path,
    set_code_path,
    supported_code_paths,
    tanh_approx,
)

ALL_PATHS = ("baseline", "avx2", "avx512")
PATHS = supported_code_paths()
F32 = np.float32


@pytest.fixture(autouse=True)
def restore_code_path() -> Iterator[None]:
    """Every test here leaves the process on the path it found."""
    before = code_path()
    yield
    set_code_path(before)


def on_every_path(run: Callable[[str], object]) -> dict[str, object]:
    """run(path) after selecting each supported path in turn."""
    results = {}
    for path in PATHS:
        set_code_path(path)
        results[path] = run(path)
    return results


def assert_same_bits(results: dict[str, object]) -> None:
    """Each path's results (nested lists or tuples of arrays, bools and ints) equal the baseline's, byte for byte."""

    def compare(ours: object, base: object, where: str) -> None:
        if isinstance(base, (list, tuple)):
            assert isinstance(ours, type(base)) and len(ours) == len(base), where
            for i, (a, b) in enumerate(zip(ours, base)):
                compare(a, b, f"{where}[{i}]")
        elif isinstance(base, np.ndarray):
            assert isinstance(ours, np.ndarray) and ours.dtype == base.dtype and ours.shape == base.shape, where
            as_int = np.dtype(f"u{base.dtype.itemsize}")
            np.testing.assert_array_equal(ours.view(as_int), base.view(as_int), err_msg=where)
        else:
            assert ours == base, where

    for path, result in results.items():
        compare(result, results["baseline"], path)


# ---- the selection


def test_supported_paths_start_at_the_baseline_and_the_default_is_the_best() -> None:
    assert PATHS[0] == "baseline"
    assert PATHS == ALL_PATHS[: len(PATHS)]
    set_code_path("auto")
    assert code_path() == PATHS[-1]


def test_each_supported_path_can_be_selected() -> None:
    for path in PATHS:
        set_code_path(path)
        assert code_path() == path


def test_unknown_and_unsupported_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="path must be 'auto', 'avx512', 'avx2' or 'baseline', got 'sse2'"):
        set_code_path("sse2")
    with pytest.raises(TypeError):
        set_code_path(2)  # type: ignore[arg-type]
    supported = ", ".join(f"'{p}'" for p in PATHS)
    for path in ALL_PATHS[len(PATHS) :]:  # none on an AVX-512 CPU: see the environment test below
        with pytest.raises(ValueError, match=f"path '{path}' is not supported here: this process runs {supported}"):
            set_code_path(path)
    assert code_path() in PATHS


def test_objects_keep_the_path_they_were_made_with() -> None:
    set_code_path("baseline")
    forward = MLPForward(
        np.zeros(3 * 2 + 2, F32),
        (3, 2),
        hidden_activation="tanh",
        obs_mean=np.zeros(3, F32),
        obs_inv_std=np.ones(3, F32),
        obs_clip=5.0,
        normalized=np.empty(3, F32),
    )
    resize = _core.AreaResize((210, 160), (84, 84))
    network = ConvNetwork((1, 20, 20), ref.PAPER_CONV_LAYERS, (4,), 2, np.zeros((1, 1, 20, 20), np.uint8))
    conv = ConvForward(network, np.zeros(network.num_params, F32))
    set_code_path("auto")
    assert (forward.code_path, resize.code_path, conv.code_path) == ("baseline",) * 3
    assert ConvForward(network, np.zeros(network.num_params, F32)).code_path == PATHS[-1]
    assert ConvForward(network, np.zeros(network.num_params, F32), code_path="baseline").code_path == "baseline"


def _in_fresh_process(code: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ESFAST_CODE_PATH", "ESFAST_NO_AVX512")}
    return subprocess.run([sys.executable, "-c", code], env={**env, **environment}, capture_output=True, text=True)


SHOW = "from esfast import _core; print(_core.code_path(), *_core.supported_code_paths())"


def _lower(path: str, limit: str) -> str:
    return ALL_PATHS[min(ALL_PATHS.index(path), ALL_PATHS.index(limit))]


@pytest.mark.parametrize(
    ("environment", "limit"),
    [
        ({}, "avx512"),
        ({"ESFAST_CODE_PATH": "auto"}, "avx512"),
        ({"ESFAST_CODE_PATH": ""}, "avx512"),
        ({"ESFAST_CODE_PATH": "avx512"}, "avx512"),
        ({"ESFAST_CODE_PATH": "avx2"}, "avx2"),
        ({"ESFAST_CODE_PATH": "baseline"}, "baseline"),
        ({"ESFAST_NO_AVX512": "1"}, "avx2"),
        ({"ESFAST_NO_AVX512": "1", "ESFAST_CODE_PATH": "baseline"}, "baseline"),
    ],
)
def test_the_environment_limits_the_paths_of_a_process(environment: dict[str, str], limit: str) -> None:
    """The default is the best path the CPU has, up to the one the environment names; paths above it are refused."""
    cpu_best = _in_fresh_process(SHOW).stdout.split()[0]
    best = _lower(cpu_best, limit)
    run = _in_fresh_process(SHOW, **environment)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [best, *ALL_PATHS[: ALL_PATHS.index(best) + 1]]


def test_a_path_above_the_environment_limit_is_refused_by_name() -> None:
    code = (
        "import numpy as np; from esfast import core\n"
        "network = core.ConvNetwork((1, 20, 20), ((2, 8, 4),), (2,), 2, np.zeros((1, 1, 20, 20), np.uint8))\n"
        "theta = np.zeros(network.num_params, np.float32)\n"
        "for attempt in (lambda: core.set_code_path('avx2'), lambda: core.ConvForward(network, theta, code_path='avx2')):\n"
        "    try:\n"
        "        attempt()\n"
        "    except ValueError as error:\n"
        "        print(error)\n"
    )
    run = _in_fresh_process(code, ESFAST_CODE_PATH="baseline")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("path 'avx2' is not supported here: this process runs 'baseline'")
    assert lines[1].startswith("code_path 'avx2' is not supported here: this process runs 'baseline'")
    if PATHS[-1] != "baseline":
        assert "limited by ESFAST_CODE_PATH or ESFAST_NO_AVX512" in lines[0]


def test_an_unknown_path_in_the_environment_fails_the_import() -> None:
    run = _in_fresh_process("import esfast", ESFAST_CODE_PATH="avx-512")
    assert run.returncode != 0
    assert "ESFAST_CODE_PATH must be 'baseline', 'avx2', 'avx512' or 'auto', got 'avx-512'" in run.stderr


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64", reason="reads the x86 flags of /proc/cpuinfo")
def test_the_best_path_matches_the_cpu_flags() -> None:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd"} <= flags:
        expected = "avx512"
    elif "avx2" in flags:
        expected = "avx2"
    else:
        expected = "baseline"
    assert _in_fresh_process(SHOW).stdout.split()[0] == expected


# ---- every kernel with several paths, on each


MLP_SIZES = [(348, 256, 256, 17), (20, 130, 121, 9), (11, 64, 64, 6), (6, 8, 17), (3, 1)]


@pytest.mark.parametrize("sizes", MLP_SIZES)
@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_mlp_forward_is_the_same_on_every_path(sizes: tuple[int, ...], activation: str) -> None:
    rng = np.random.default_rng(sum(sizes))
    theta = (rng.standard_normal(sum(n * m + m for n, m in itertools.pairwise(sizes))) * 0.5).astype(F32)
    mean = rng.standard_normal(sizes[0]).astype(F32)
    inv_std = rng.uniform(0.2, 3.0, sizes[0]).astype(F32)
    outputs = sizes[-1]
    bounds = {
        "action_mid": rng.standard_normal(outputs).astype(F32),
        "action_half": rng.uniform(0.5, 2, outputs).astype(F32),
        "action_bounded": rng.random(outputs) < 0.7,
        "action_low": np.full(outputs, -1.5, F32),
        "action_high": np.full(outputs, 1.5, F32),
    }
    observations = [(rng.standard_normal(sizes[0]) * 4).astype(dtype) for dtype in (np.float64, np.float32)]
    observations.append(np.full(sizes[0], 1e30))  # clipped: saturates every tanh
    observations.append(np.where(np.arange(sizes[0]) == 0, np.nan, 0.25))  # a NaN, through every layer
    noise = (rng.standard_normal(outputs) * 0.1).astype(F32)

    def run(path: str) -> list[object]:
        normalized = np.empty(sizes[0], F32)
        raw = MLPForward(
            theta, sizes, hidden_activation=activation, obs_mean=mean, obs_inv_std=inv_std, obs_clip=5.0, normalized=normalized
        )
        squashed = MLPForward(
            theta,
            sizes,
            hidden_activation=activation,
            obs_mean=mean,
            obs_inv_std=inv_std,
            obs_clip=5.0,
            normalized=np.empty(sizes[0], F32),
            **bounds,
        )
        assert raw.code_path == squashed.code_path == path
        results: list[object] = []
        for obs in observations:
            results += [raw(obs), normalized.copy(), squashed(obs), squashed(obs, noise)]
        return results

    assert_same_bits(on_every_path(run))


def test_tanh_approx_is_the_same_on_every_path() -> None:
    rng = np.random.default_rng(1)
    specials = np.array([0.0, -0.0, 1e-45, -1e-45, 3.9e-4, 4e-4, 7.9, 7.91, -7.91, 1e30, np.inf, -np.inf, np.nan], F32)
    x = np.concatenate([specials, np.linspace(-10, 10, 20_001, dtype=F32), rng.standard_normal(10_007).astype(F32) * 3])
    assert_same_bits(on_every_path(lambda path: tanh_approx(x)))


def _frames(count: int, seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Pixels with some structure (a smooth background plus noise)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, shape[1])[:, None] * np.linspace(0, 1, shape[2])[None, :]
    base = 200 * ramp[None, None] * rng.uniform(0.2, 1.0, (count, shape[0], 1, 1))
    return np.clip(base + rng.integers(0, 56, (count, *shape)), 0, 255).astype(np.uint8)


CONV_CASES = [
    # The paper's network on Atari observations; one with other steps, filters and widths.
    ((4, 84, 84), ref.PAPER_CONV_LAYERS, (256,), 6),
    ((1, 30, 30), ((24, 5, 3), (40, 3, 1)), (33, 9), 4),
]


@pytest.mark.parametrize(("shape", "conv_layers", "hidden", "actions"), CONV_CASES)
def test_conv_forward_refresh_and_steps_are_the_same_on_every_path(shape, conv_layers, hidden, actions) -> None:
    network = ConvNetwork(shape, conv_layers, hidden, actions, _frames(4, seed=1, shape=shape))
    rng = np.random.default_rng(2)
    theta = np.zeros(network.num_params, F32)
    for layer in ref.conv_unpack(theta, shape, hidden, actions, conv_layers):
        w = layer["w"]
        w[...] = rng.standard_normal(w.shape) / np.sqrt(w[0].size if w.ndim == 4 else w.shape[0])
        if "gamma" in layer:  # VBN gains and shifts
            layer["gamma"][...] = rng.uniform(0.5, 2.0, layer["gamma"].shape)
            layer["beta"][...] = rng.normal(0, 0.5, layer["beta"].shape)
        else:  # the output layer's bias
            layer["b"][...] = rng.normal(0, 0.5, layer["b"].shape)
    observations = _frames(3, seed=3, shape=shape)

    def run(path: str) -> list[object]:
        forward = ConvForward(network, theta)  # "auto": the selected path
        assert forward.code_path == path
        results: list[object] = [forward.refresh()]
        for observation in observations:
            results += [forward.logits(observation), forward(observation)]
        return results

    assert_same_bits(on_every_path(run))


def test_palette_lookup_is_the_same_on_every_path() -> None:
    rng = np.random.default_rng(7)
    indices = rng.integers(0, 256, 210 * 160 + 5, dtype=np.uint8)  # 5 past a multiple of 64
    table = rng.integers(0, 256, 256, dtype=np.uint8)
    known = np.ones(256, np.uint8)
    holes = known.copy()
    holes[indices[-3]] = 0  # in the scalar tail
    holes_early = known.copy()
    holes_early[indices[100]] = 0  # in the vector part

    def run(path: str) -> list[object]:
        if path != "avx512":  # the vector lookup needs AVX-512 (and VBMI)
            assert not _core.palette_to_gray_vectorized()
        out = np.empty_like(indices)
        ok = _core.palette_to_gray(indices, table, known, out)
        in_place = indices.copy()
        ok_in_place = _core.palette_to_gray(in_place, table, known, in_place)
        short = np.empty(37, np.uint8)  # shorter than one vector
        ok_short = _core.palette_to_gray(indices[:37], table, known, short)
        # With an unknown index only the verdict is specified, not the output.
        missing = _core.palette_to_gray(indices, table, holes, np.empty_like(indices))
        missing_early = _core.palette_to_gray(indices, table, holes_early, np.empty_like(indices))
        return [ok, out, ok_in_place, in_place, ok_short, short, missing, missing_early]

    results = on_every_path(run)
    assert_same_bits(results)
    np.testing.assert_array_equal(results["baseline"][1], table[indices])
    assert [results["baseline"][i] for i in (0, 2, 4, 6, 7)] == [True, True, True, False, False]


@pytest.mark.parametrize(
    ("source", "target"),
    [((210, 160), (84, 84)), ((210, 160), (105, 80)), ((37, 45), (20, 11)), ((64, 64), (64, 64)), ((600, 40), (257, 7))],
)
def test_area_resize_is_the_same_on_every_path(source: tuple[int, int], target: tuple[int, int]) -> None:
    rng = np.random.default_rng(source[0] * target[1])
    images = rng.integers(0, 256, (2, *source), dtype=np.uint8)
    white = np.full(source, 255, np.uint8)

    def run(path: str) -> list[object]:
        resize = _core.AreaResize(source, target)
        assert resize.code_path == path
        results: list[object] = []
        for a, b in ((images[0], None), (images[0], images[1]), (white, None)):
            out = np.empty(target, np.uint8)
            resize(a, out, b)
            results.append(out)
        return results

    results = on_every_path(run)
    assert_same_bits(results)
    assert (results["baseline"][2] == 255).all()
