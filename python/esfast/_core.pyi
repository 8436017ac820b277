# Type stub for the compiled module esfast._core (bindings/core_module.cpp).
# tests/test_core_stub.py checks that these names match dir(esfast._core).
from typing import Any

import numpy as np
from numpy.typing import NDArray

SHARED_LAYOUT_VERSION: int

class NoiseTable:
    @staticmethod
    def create(size: int, seed: int, threads: int | None = None) -> NoiseTable: ...
    @staticmethod
    def create_shared(name: str, size: int, seed: int, threads: int | None = None) -> NoiseTable: ...
    @staticmethod
    def attach(name: str, threads: int | None = None) -> NoiseTable: ...
    @staticmethod
    def remove_if_stale(name: str) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def owner(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def threads(self) -> int: ...
    def view(self, offset: int, dim: int) -> NDArray[np.float32]: ...
    def close(self) -> None: ...

def noise_samples(seed: int, start: int, count: int) -> NDArray[np.float32]: ...
def sample_offsets(seed: int, count: int, dim: int, table_size: int) -> NDArray[np.int64]: ...
def perturb(
    theta: NDArray[np.float32], table: NoiseTable, offset: int, sigma: float, out: NDArray[np.float32]
) -> NDArray[np.float32]: ...
def perturb_pair(
    theta: NDArray[np.float32],
    table: NoiseTable,
    offset: int,
    sigma: float,
    out_plus: NDArray[np.float32],
    out_minus: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]: ...
def centered_ranks(x: Any) -> NDArray[np.float32]: ...
def normalized(x: Any) -> NDArray[np.float32]: ...
def weighted_noise_sum(
    table: NoiseTable,
    offsets: NDArray[np.int64],
    weights: NDArray[np.float32],
    dim: int,
    out: NDArray[np.float32],
) -> NDArray[np.float32]: ...

class MLPForward:
    def __init__(
        self,
        theta: NDArray[np.float32],
        sizes: Any,
        hidden_activation: str,
        obs_mean: NDArray[np.float32],
        obs_inv_std: NDArray[np.float32],
        obs_clip: float,
        normalized: NDArray[np.float32],
        action_mid: NDArray[np.float32] | None,
        action_half: NDArray[np.float32] | None,
        action_bounded: NDArray[np.bool_] | None,
        action_low: NDArray[np.float32] | None,
        action_high: NDArray[np.float32] | None,
    ) -> None: ...
    def __call__(self, observation: Any, noise: NDArray[np.float32] | None = None) -> NDArray[np.float32]: ...

def tanh_approx(x: NDArray[np.float32]) -> NDArray[np.float32]: ...
