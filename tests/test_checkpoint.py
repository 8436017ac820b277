"""Checkpoint files: round trip, and every damaged, foreign or out-of-range file refused in one line."""

from __future__ import annotations

import errno
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import esfast.checkpoint as checkpoint_module
from esfast import core
from esfast.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from esfast.config import Config, apply_overrides
from esfast.errors import CheckpointError
from esfast.es import OpenES
from esfast.policies import ObStat

CONFIG = apply_overrides(Config(), ["env_id=CartPole-v1", "episodes_per_batch=8"])


def make_state(optimizer: str = "adam", num_params: int = 10, obs_dim: int = 3) -> dict[str, Any]:
    """The state a trainer saves (OpenES, observation statistics, counters), after one update."""
    es = OpenES(num_params, sigma=0.02, stepsize=0.01, pop_pairs=4, seed=0, optimizer=optimizer, table=core.NoiseTable(1000, 0))
    es.tell(np.arange(8.0).reshape(4, 2))
    obstat = ObStat((obs_dim,))
    obstat.increment(np.arange(obs_dim, dtype=np.float64), np.full(obs_dim, 2.0), 5.0)
    state = es.state_dict()
    state.update({f"obstat_{k}": v for k, v in obstat.state_dict().items()})
    state.update(timestep_limit=-1, timesteps_total=120, episodes_total=8, time_elapsed=1.5)
    return state


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints" / "latest.npz"
    save_checkpoint(path, make_state(), CONFIG)
    return path


def raw_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def rewrite(path: Path, drop: tuple[str, ...] = (), **changes: Any) -> Path:
    """Writes the file again with some arrays changed or dropped, as a hand edit would."""
    arrays = {key: value for key, value in raw_arrays(path).items() if key not in drop}
    arrays.update({key: np.asarray(value) for key, value in changes.items()})
    np.savez(path, **arrays)
    return path


def load_error(path: Path) -> str:
    """The CheckpointError's message, checked to be one line."""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == b[key].dtype and value.shape == b[key].shape, key
            np.testing.assert_array_equal(value, b[key], err_msg=key)
        else:
            assert type(value) is type(b[key]) and value == b[key], key


# Round trip --------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_round_trip_every_key_and_dtype(tmp_path: Path, optimizer: str) -> None:
    state = make_state(optimizer)
    state["reference_batch"] = np.arange(2 * 4 * 5 * 5, dtype=np.uint8).reshape(2, 4, 5, 5)
    state["log_record"] = json.dumps({"generation": 1})
    path = tmp_path / "c.npz"
    save_checkpoint(path, state, CONFIG)
    loaded, config = load_checkpoint(path)
    assert config == CONFIG
    assert set(loaded) == set(state) | {"format_version"} and loaded["format_version"] == FORMAT_VERSION
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)
        else:
            assert loaded[key] == value and type(loaded[key]) is type(value), key
    assert loaded["theta"].dtype == np.float32 and loaded["obstat_sum"].dtype == np.float64
    assert {k for k in loaded if k.startswith("optimizer_")} == (
        {"optimizer_t", "optimizer_m", "optimizer_v"} if optimizer == "adam" else {"optimizer_t", "optimizer_v"}
    )
    es = OpenES(10, sigma=0.02, stepsize=0.01, pop_pairs=4, seed=0, optimizer=optimizer, table=core.NoiseTable(1000, 0))
    es.load_state_dict(loaded)
    np.testing.assert_array_equal(es.theta, state["theta"])
    assert es.generation == 1 and not list(tmp_path.glob("*.tmp"))


def test_saving_overwrites_and_leaves_no_temporary_file(saved: Path) -> None:
    state = make_state()
    state["generation"] = 7
    save_checkpoint(saved, state, CONFIG)
    assert load_checkpoint(saved)[0]["generation"] == 7
    assert [p.name for p in saved.parent.iterdir()] == ["latest.npz"]


def test_a_value_numpy_would_pickle_is_refused_on_save(tmp_path: Path) -> None:
    state = make_state()
    state["extra"] = {"not": "an array"}
    with pytest.raises(ValueError, match="checkpoint value 'extra' is not numbers or a string"):
        save_checkpoint(tmp_path / "c.npz", state, CONFIG)
    assert not list(tmp_path.iterdir())


# Failed saves ------------------------------------------------------------------------------------


def test_a_full_disk_keeps_the_previous_checkpoint_and_no_temporary_file(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before, _ = load_checkpoint(saved)

    def savez_until_full(file: io.BufferedWriter, **arrays: np.ndarray) -> None:
        file.write(b"PK\x03\x04" + b"\0" * 1000)  # part of a zip, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_until_full)
    state = make_state()
    state["generation"] = 2
    with pytest.raises(OSError) as info:
        save_checkpoint(saved, state, CONFIG)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"cannot write checkpoint {saved}: No space left on device"
    assert [p.name for p in saved.parent.iterdir()] == ["latest.npz"]
    monkeypatch.undo()
    assert_same_state(load_checkpoint(saved)[0], before)


def test_too_many_open_files_is_one_line(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_descriptors(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(checkpoint_module, "open", no_descriptors, raising=False)
    with pytest.raises(OSError, match=r"^cannot write checkpoint .*latest\.npz: Too many open files$") as info:
        save_checkpoint(saved, make_state(), CONFIG)
    assert info.value.errno == errno.EMFILE
    assert [p.name for p in saved.parent.iterdir()] == ["latest.npz"]


def test_an_interrupted_save_leaves_no_temporary_file(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(file: io.BufferedWriter, **arrays: np.ndarray) -> None:
        file.write(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, make_state(), CONFIG)
    assert [p.name for p in saved.parent.iterdir()] == ["latest.npz"]


# Unreadable files --------------------------------------------------------------------------------


def test_missing_and_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nothing.npz") == f"no checkpoint at {tmp_path / 'nothing.npz'}"
    assert load_error(tmp_path).startswith(f"cannot read checkpoint {tmp_path}: ")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "latest.npz"
    path.write_bytes(b"")
    assert load_error(path).startswith(f"cannot read checkpoint {path}: ")


def test_truncated_files(saved: Path) -> None:
    data = saved.read_bytes()
    for length in (1, 4, 30, 100, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 22, len(data) - 1):
        saved.write_bytes(data[:length])
        load_error(saved)


def test_bit_flips_are_refused_or_harmless(saved: Path) -> None:
    """A flipped bit anywhere: a CheckpointError, or (in bytes no reader looks at) the same state."""
    data = saved.read_bytes()
    reference, config = load_checkpoint(saved)
    rng = np.random.default_rng(2024)
    positions = [*rng.integers(0, len(data), 200).tolist(), *range(len(data) - 120, len(data), 3)]
    refused = 0
    for position in positions:
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        saved.write_bytes(bytes(flipped))
        try:
            state, loaded_config = load_checkpoint(saved)
        except CheckpointError as error:
            assert "\n" not in str(error)
            refused += 1
            continue
        assert_same_state(state, reference)
        assert loaded_config == config
    assert refused > len(positions) // 2  # the CRC of every array catches flips in the data


def test_a_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latest.npz"
    path.write_bytes(pickle.dumps(make_state()))
    assert "cannot read checkpoint" in load_error(path)


def test_a_foreign_npz(tmp_path: Path) -> None:
    path = tmp_path / "latest.npz"
    rng = np.random.default_rng(0)
    np.savez(path, a=rng.random(5), b=rng.integers(0, 9, (3, 3)))
    assert load_error(path) == f"{path} is not an esfast checkpoint (no theta or config)"


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "latest.npz"
    np.savez(path, theta=np.array([object(), 1], dtype=object), config=np.asarray("{}"))
    assert "holds Python objects" in load_error(path)


def test_a_zip_that_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "latest.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hello")
    assert "is not an esfast checkpoint (entry 'hello.txt' is not one array)" in load_error(path)


def test_a_compressed_npz_is_refused(tmp_path: Path, saved: Path) -> None:
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **raw_arrays(saved))
    assert "is compressed" in load_error(path)


def test_a_header_claiming_more_than_the_file_holds(tmp_path: Path, saved: Path) -> None:
    """A shape of 10**12 elements is refused from the header, before any memory is taken."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    path = tmp_path / "latest.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("theta.npy", header.getvalue() + b"\0" * 40)
    assert "array 'theta' of shape (1000000000000,) does not fit its" in load_error(path)


# Out-of-range state ------------------------------------------------------------------------------


def test_format_version(saved: Path) -> None:
    rewrite(saved, format_version=FORMAT_VERSION + 1)
    assert load_error(saved) == f"{saved} has checkpoint format 2, this esfast reads {FORMAT_VERSION}"
    rewrite(saved, format_version="1")
    assert "has checkpoint format '1'" in load_error(saved)
    rewrite(saved, drop=("format_version",))
    assert load_error(saved) == f"{saved} has checkpoint format none, this esfast reads {FORMAT_VERSION}"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"generation": -5}, "holds generation = -5, which must be an integer in [0, 2**53]"),
        ({"generation": 2**62}, "holds generation = 4611686018427387904, which must be an integer in [0, 2**53]"),
        ({"generation": 1.0}, "holds generation = 1.0, which must be an integer"),
        ({"generation": np.array([1, 2])}, "holds generation = an array of dtype int64 and shape (2,)"),
        ({"obstat_count": 0.0}, "holds obstat_count = 0.0, which must be a finite number > 0"),
        ({"obstat_count": np.nan}, "holds obstat_count = nan, which must be a finite number > 0"),
        ({"obstat_sum": np.array([0.0, np.inf, 0.0])}, "observation sums with NaN or infinite values"),
        ({"obstat_sumsq": np.array([1.0, -1.0, 1.0])}, "negative sums of squares"),
        ({"obstat_sumsq": np.ones(4)}, "holds observation sums of dtypes float64, float64 and shapes (3,), (4,)"),
        ({"obstat_sum": np.ones(3, dtype=np.float32)}, "holds observation sums of dtypes float32, float64"),
        ({"theta": np.zeros(10)}, "holds theta of dtype float64 and shape (10,); it must be float32"),
        ({"theta": np.zeros((2, 5), dtype=np.float32)}, "holds theta of dtype float32 and shape (2, 5)"),
        ({"theta": np.full(10, np.nan, dtype=np.float32)}, "holds a theta with NaN or infinite values"),
        ({"optimizer_m": np.zeros(9, dtype=np.float32)}, "holds optimizer_m of dtype float32 and shape (9,); it must be finite float32"),
        ({"optimizer_v": np.full(10, np.inf, dtype=np.float32)}, "holds optimizer_v of dtype float32 and shape (10,)"),
        ({"optimizer_t": -1}, "holds optimizer_t = -1, which must be an integer in [0, 2**53]"),
        ({"optimizer": "rmsprop"}, "holds optimizer = 'rmsprop', which must be one of adam, sgd"),
        ({"return_proc_mode": "ranks"}, "holds return_proc_mode = 'ranks', which must be one of"),
        ({"seed": -1}, "holds seed = -1, which must be an integer in [0, 9223372036854775807]"),
        ({"seed": np.uint64(2**63)}, "holds seed = 9223372036854775808"),
        ({"table_size": 0}, "holds table_size = 0, which must be an integer in [1, 2**40]"),
        ({"pop_pairs": 0}, "holds pop_pairs = 0"),
        ({"sigma": np.inf}, "holds sigma = inf, which must be a finite number > 0"),
        ({"l2coeff": -0.5}, "holds l2coeff = -0.5, which must be a finite number >= 0"),
        ({"timestep_limit": 0}, "holds timestep_limit = 0, which must be -1 (none) or an integer in [1, 2**53]"),
        ({"timestep_limit": -2}, "holds timestep_limit = -2"),
        ({"timesteps_total": -1}, "holds timesteps_total = -1"),
        ({"episodes_total": 2.5}, "holds episodes_total = 2.5"),
        ({"time_elapsed": np.nan}, "holds time_elapsed = nan, which must be a finite number >= 0"),
        ({"time_elapsed": -1.0}, "holds time_elapsed = -1.0"),
        ({"time_elapsed": "1"}, "holds time_elapsed = '1'"),
        ({"reference_batch": np.zeros((1, 4, 5, 5), dtype=np.uint8)}, "holds a reference_batch of dtype uint8 and shape (1, 4, 5, 5)"),
        ({"log_record": 3}, "holds a log_record of dtype int64; it must be a JSON string"),
        ({"config": "{"}, "holds an unusable config: Expecting property name"),
        ({"config": "[]"}, "holds an unusable config: not a JSON object"),
        ({"config": '{"config": {"noise_stdev": Infinity}}'}, "holds an unusable config: config.noise_stdev must be a positive number"),
        ({"config": np.zeros(3)}, "holds an unusable config: not a JSON string"),
    ],
)
def test_out_of_range_state(saved: Path, changes: dict[str, Any], message: str) -> None:
    rewrite(saved, **changes)
    text = load_error(saved)
    assert text.startswith(str(saved)) and message in text


@pytest.mark.parametrize(
    "key", ["generation", "timesteps_total", "timestep_limit", "obstat_count", "obstat_sumsq", "optimizer", "optimizer_v"]
)
def test_missing_keys(saved: Path, key: str) -> None:
    rewrite(saved, drop=(key,))
    assert "is not a complete esfast checkpoint: it lacks " in load_error(saved)
    assert key in load_error(saved)


def test_values_at_the_bounds_load(saved: Path) -> None:
    rewrite(
        saved,
        generation=2**53,
        timesteps_total=2**53,
        episodes_total=0,
        timestep_limit=2**53,
        time_elapsed=0.0,
        seed=2**63 - 1,
        table_seed=np.uint64(2**64 - 1),
        obstat_count=1e-300,
    )
    state, _ = load_checkpoint(saved)
    assert state["generation"] == 2**53 and state["table_seed"] == 2**64 - 1 and state["timestep_limit"] == 2**53
