"""The compiled core: noise tables, seeded perturbations, return shaping, gradient sums and the
policies' forward passes.

Every function here is a thin, documented wrapper over ``esfast._core``; argument checking
happens in the compiled module, which raises ``TypeError`` or ``ValueError`` naming the argument
before any computation. Outputs are float32. Functions that produce a vector accept a
preallocated ``out`` array (float32, C-contiguous, right length) to avoid allocating in loops.

Determinism: sample ``i`` of a noise table depends only on ``(seed, i)``, bit for bit, on any
machine, for any thread count (see ``docs/determinism.md``). ``sample_offsets`` depends only on
its arguments. ``weighted_noise_sum`` is bit-identical for any thread count. ``MLPForward``'s and
``ConvForward``'s outputs are bit-identical on any machine and code path.

Code paths: the kernels that have several (the policies' forward passes, the Atari screen
kernels) are compiled for the baseline x86-64 (SSE2), AVX2 and AVX-512, and run the one this
process selects: :func:`code_path`, :func:`supported_code_paths`, :func:`set_code_path`.
"""

from __future__ import annotations

import atexit
import errno
import time
import weakref
from typing import TYPE_CHECKING

import numpy as np

from esfast import _core

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ConvForward",
    "ConvNetwork",
    "MLPForward",
    "NoiseTable",
    "centered_ranks",
    "code_path",
    "noise_samples",
    "normalized",
    "perturb",
    "perturb_pair",
    "sample_offsets",
    "set_code_path",
    "supported_code_paths",
    "tanh_approx",
    "weighted_noise_sum",
]

_ATTACH_POLL_SECONDS = 0.02
SHARED_HEADER_BYTES: int = _core.SHARED_HEADER_BYTES  # a shared table's segment: this header page, then the samples


def code_path() -> str:
    """The code path this process's kernels run: ``"baseline"``, ``"avx2"`` or ``"avx512"``.

    At import it is the best of :func:`supported_code_paths`; :func:`set_code_path` changes it.
    Every path gives bit-identical results: they differ in speed only.
    """
    return str(_core.code_path())


def supported_code_paths() -> tuple[str, ...]:
    """The code paths this process can run, from the baseline up: the last one is the default.

    ``("baseline", "avx2", "avx512")`` on a CPU with AVX-512 (x86-64-v4), without ``"avx512"`` on
    one with AVX2 only, ``("baseline",)`` on others and on builds other than GCC on x86-64 Linux.
    The environment variable ``ESFAST_CODE_PATH`` (``baseline``, ``avx2``, ``avx512`` or ``auto``),
    read at import, limits this process to the paths up to the one it names, as if the CPU had no
    more; ``ESFAST_NO_AVX512`` (any value) is ``ESFAST_CODE_PATH=avx2``. Another value of
    ``ESFAST_CODE_PATH`` makes the import of esfast fail.
    """
    return tuple(_core.supported_code_paths())


def set_code_path(path: str) -> None:
    """Selects the code path of this process's kernels, to compare the paths in one process.

    Takes effect for the objects made afterwards (:class:`MLPForward`, :class:`ConvForward` with
    ``code_path="auto"``, ``esfast.envs.atari.AreaResize`` and the Atari preprocessing) and at each
    later call of :func:`tanh_approx` and ``esfast._core.palette_to_gray``; objects made before
    keep the path they were made with. Child processes do not inherit it (``ESFAST_CODE_PATH``
    in their environment does the same for them, see :func:`supported_code_paths`).

    Args:
        path: ``"baseline"``, ``"avx2"``, ``"avx512"``, or ``"auto"`` for the default (the best
            supported).

    Raises:
        ValueError: another name, or a path this process does not support (the message names
            those it does).
    """
    _core.set_code_path(path)


class NoiseTable:
    """A read-only table of standard-normal float32 samples generated from a seed.

    ``NoiseTable(size, seed)`` generates a private table with ``threads`` threads (default: the
    machine's cores). ``NoiseTable.create_shared`` generates one into named shared memory that
    other processes map with ``NoiseTable.attach`` without copying or regenerating, so a host
    needs one table however many processes use it.

    Views returned by :meth:`get` and :attr:`array` are zero-copy and read-only; they stay valid
    after :meth:`close`, which only gives up this object's hold on the memory (and, for a shared
    table this process created, removes its name).

    Args:
        size: number of samples, >= 1 (the paper used 250,000,000: 1 GB).
        seed: integer in [0, 2**64).
        threads: threads used to generate the table and by kernels that take it; None for the
            machine's cores.

    Raises:
        TypeError, ValueError: bad arguments.
        MemoryError-like OSError (ENOMEM): the table does not fit in this machine's memory.
    """

    __slots__ = ("__weakref__", "_impl")

    def __init__(self, size: int, seed: int, *, threads: int | None = None) -> None:
        self._impl = _core.NoiseTable.create(size, seed, threads)

    @classmethod
    def _wrap(cls, impl: _core.NoiseTable) -> NoiseTable:
        table = cls.__new__(cls)
        table._impl = impl
        return table

    @classmethod
    def create_shared(cls, name: str, size: int, seed: int, *, threads: int | None = None) -> NoiseTable:
        """Generates a table into the shared-memory segment ``name`` (``/dev/shm/<name>`` on Linux).

        The segment is removed when this table is closed, garbage-collected, or when the process
        exits normally. If a segment of that name was left by a process that no longer runs
        (killed with SIGKILL, say), it is replaced.

        Args:
            name: 1 to 200 letters, digits, '.', '_' or '-' (a leading '/' is allowed).
            size: number of samples, >= 1.
            seed: integer in [0, 2**64).
            threads: generating threads; None for the machine's cores.

        Raises:
            FileExistsError: a live process already holds a segment of that name.
            OSError: shared memory could not be allocated (ENOSPC, ENOMEM).
        """
        table = cls._wrap(_core.NoiseTable.create_shared(name, size, seed, threads))
        _owned_shared.add(table)
        return table

    @classmethod
    def attach(cls, name: str, *, timeout: float = 0.0, threads: int | None = None) -> NoiseTable:
        """Maps the shared table ``name`` read-only, without copying or regenerating it.

        Args:
            name: the name given to :meth:`create_shared`.
            timeout: seconds to wait for the segment to exist and be fully generated.
            threads: threads for kernels that take this table; None for the machine's cores.

        Raises:
            FileNotFoundError: no such segment (after ``timeout``).
            BlockingIOError: the segment is still being generated (after ``timeout``).
            OSError: the segment is not an esfast table of this layout version (EINVAL).
        """
        deadline = time.monotonic() + max(0.0, float(timeout))
        while True:
            try:
                return cls._wrap(_core.NoiseTable.attach(name, threads))
            except OSError as error:
                if error.errno not in (errno.ENOENT, errno.EAGAIN) or time.monotonic() >= deadline:
                    raise
            time.sleep(_ATTACH_POLL_SECONDS)

    @staticmethod
    def remove_if_stale(name: str) -> bool:
        """Removes the shared segment ``name`` if it is an esfast table whose creator no longer runs
        (nothing holds its lock, and no process has the recorded creator's id and start time).

        Returns:
            Whether a segment was removed.
        """
        return bool(_core.NoiseTable.remove_if_stale(name))

    def __len__(self) -> int:
        return int(self._impl.size)

    @property
    def size(self) -> int:
        """Number of samples."""
        return int(self._impl.size)

    @property
    def seed(self) -> int:
        """The seed the table was generated from."""
        return int(self._impl.seed)

    @property
    def name(self) -> str | None:
        """The shared-memory name (with its leading '/'), or None for a private table."""
        return self._impl.name

    @property
    def owner(self) -> bool:
        """True if this object generated the table, False if it attached to it."""
        return bool(self._impl.owner)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return bool(self._impl.closed)

    @property
    def threads(self) -> int:
        """Threads used by kernels that take this table."""
        return int(self._impl.threads)

    def get(self, offset: int, dim: int) -> NDArray[np.float32]:
        """The samples ``[offset, offset + dim)`` as a read-only, zero-copy float32 array of shape (dim,).

        Raises:
            ValueError: the slice does not lie in the table, or the table is closed.
        """
        return self._impl.view(offset, dim)

    @property
    def array(self) -> NDArray[np.float32]:
        """All samples as a read-only, zero-copy float32 array of shape (size,)."""
        return self._impl.view(0, self._impl.size)

    def close(self) -> None:
        """Gives up this object's hold on the memory; a shared table created here is unlinked.

        Views already handed out stay valid. Idempotent.
        """
        self._impl.close()

    def __enter__(self) -> NoiseTable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = f"shared {self.name!r}" if self.name else "private"
        state = ", closed" if self.closed else ""
        return f"NoiseTable(size={self.size}, seed={self.seed}, {kind}{state})"


# Shared tables this process created, closed at interpreter exit so that no segment outlives a
# normal exit even if a reference to the table is still alive somewhere.
_owned_shared: weakref.WeakSet[NoiseTable] = weakref.WeakSet()


@atexit.register
def _close_owned_shared() -> None:
    for table in list(_owned_shared):
        table.close()


def _impl_of(table: object) -> _core.NoiseTable:
    if not isinstance(table, NoiseTable):
        raise TypeError(f"table must be an esfast.core.NoiseTable, got {type(table).__name__}")
    return table._impl


def _vector_like(theta: object) -> NDArray[np.float32]:
    """An uninitialized float32 output for ``theta``; empty if ``theta`` is not a 1-D array, so
    that the compiled module reports the problem with ``theta`` itself."""
    if isinstance(theta, np.ndarray) and theta.ndim == 1:
        return np.empty(theta.shape[0], dtype=np.float32)
    return np.empty(0, dtype=np.float32)


def noise_samples(seed: int, start: int, count: int) -> NDArray[np.float32]:
    """Samples ``[start, start + count)`` of the noise table of ``seed``, computed directly.

    ``NoiseTable(size, seed).get(start, count)`` holds the same values; this computes them without a
    table, at any position below 2**64, e.g. to check a table or to draw a few samples.

    Returns:
        float32 array of shape (count,).
    """
    return _core.noise_samples(seed, start, count)


def sample_offsets(seed: int, count: int, dim: int, table_size: int) -> NDArray[np.int64]:
    """``count`` offsets uniform on ``[0, table_size - dim]``, a function of the arguments only.

    Offset ``k`` depends only on ``(seed, k, table_size - dim)``, so the first ``m`` offsets of a
    longer request equal a request for ``m``.

    Args:
        seed: integer in [0, 2**64).
        count: number of offsets, >= 0.
        dim: length of each perturbation, 1 <= dim <= table_size.
        table_size: length of the noise table, >= 1.

    Returns:
        int64 array of shape (count,).
    """
    return _core.sample_offsets(seed, count, dim, table_size)


def perturb(
    theta: NDArray[np.float32],
    table: NoiseTable,
    offset: int,
    sigma: float,
    *,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """θ + σ·ε with ε = ``table[offset : offset + dim]``.

    Args:
        theta: float32 array of shape (dim,), C-contiguous.
        table: the noise table.
        offset: start of ε, in [0, len(table) - dim].
        sigma: finite noise scale (negative gives θ - |σ|ε).
        out: float32 array of shape (dim,) to write to; may be ``theta`` itself.

    Returns:
        ``out``, or a new float32 array of shape (dim,).
    """
    return _core.perturb(theta, _impl_of(table), offset, sigma, _vector_like(theta) if out is None else out)


def perturb_pair(
    theta: NDArray[np.float32],
    table: NoiseTable,
    offset: int,
    sigma: float,
    *,
    out_plus: NDArray[np.float32] | None = None,
    out_minus: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The antithetic pair (θ + σ·ε, θ − σ·ε) in one pass over θ and ε.

    Args:
        theta: float32 array of shape (dim,).
        table, offset, sigma: as for :func:`perturb`.
        out_plus, out_minus: float32 arrays of shape (dim,), not overlapping θ or each other.

    Returns:
        (plus, minus), float32 arrays of shape (dim,).
    """
    plus = _vector_like(theta) if out_plus is None else out_plus
    minus = _vector_like(theta) if out_minus is None else out_minus
    return _core.perturb_pair(theta, _impl_of(table), offset, sigma, plus, minus)


def centered_ranks(x: ArrayLike) -> NDArray[np.float32]:
    """Ranks of all elements of ``x`` scaled to [-0.5, 0.5]: ``rank / (n - 1) - 0.5``.

    Ranks run from 0 (smallest) to n - 1 over the flattened array; equal values share the mean
    of their ranks, so the result does not depend on the order of ties. A single element gives 0.

    Args:
        x: real numbers of any shape (e.g. returns of shape (pairs, 2)); no NaN.

    Returns:
        float32 array of the same shape as ``x``.
    """
    return _core.centered_ranks(x)


def normalized(x: ArrayLike) -> NDArray[np.float32]:
    """``(x - mean) / std`` over all elements of ``x`` (population std); zeros if ``x`` is constant.

    Args:
        x: finite real numbers of any shape.

    Returns:
        float32 array of the same shape as ``x``.
    """
    return _core.normalized(x)


def weighted_noise_sum(
    table: NoiseTable,
    offsets: NDArray[np.int64],
    weights: NDArray[np.float32],
    dim: int,
    *,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Σ_i weights[i] · table[offsets[i] : offsets[i] + dim], the ES gradient's heavy part.

    Each element is accumulated in float64 in the order of ``offsets`` and rounded once, by the
    table's threads, each owning a disjoint range of the output: the result is bit-identical for
    any thread count.

    Args:
        table: the noise table.
        offsets: int64 array of shape (n,), each in [0, len(table) - dim].
        weights: float32 array of shape (n,), finite.
        dim: length of the result, 1 <= dim <= len(table).
        out: float32 array of shape (dim,) to write to.

    Returns:
        ``out``, or a new float32 array of shape (dim,).
    """
    impl = _impl_of(table)
    if out is None:
        valid_dim = isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and 0 < dim <= impl.size
        out = np.empty(int(dim) if valid_dim else 0, dtype=np.float32)
    return _core.weighted_noise_sum(impl, offsets, weights, dim, out)


class MLPForward:
    """The forward pass of a feed-forward policy over a flat float32 θ, one observation per call.

    A call normalizes the observation (``clip((obs - obs_mean) * obs_inv_std, ±obs_clip)``, the
    difference taken in the observation's precision), runs the dense layers with
    ``hidden_activation`` after each but the last and, if action bounds are given, maps the
    outputs into them: ``mid + half * tanh(y)`` on bounded dimensions, ``mid + half * y`` on
    the others, then adds ``noise`` (if any) and clips to ``[low, high]``.

    Layout of θ: for each layer in order its weight of shape (inputs, outputs), row-major, then
    its bias (outputs,). θ and the statistics arrays are held by reference, not copied: refilling
    them in place (``np.copyto``) takes effect at the next call.

    Arithmetic: each output sums its products in input order in float32 and adds the bias last,
    with no fused multiply-add, so AVX-512, AVX2 and baseline CPUs give bit-identical results; tanh is a
    rational approximation whose absolute error is below 1e-6 (:func:`tanh_approx`). Results
    differ from numpy's BLAS ``x @ W + b`` and ``np.tanh`` by float rounding only.

    The dense layers and activations run the code path selected when the object is made
    (:func:`code_path`; :attr:`code_path`). Not for concurrent calls on one object: each call
    writes ``normalized``.

    Args:
        theta: float32 array of shape (num_params,), C-contiguous.
        sizes: layer widths ``(inputs, hidden..., outputs)``, at least two.
        hidden_activation: ``"tanh"``, ``"relu"`` or ``"identity"``.
        obs_mean, obs_inv_std: float32 arrays of shape (inputs,).
        obs_clip: positive bound of the normalized observation.
        normalized: float32 array of shape (inputs,) that receives the normalized observation.
        action_mid, action_half, action_low, action_high: float32 arrays of shape (outputs,), and
        action_bounded: bool array of shape (outputs,); all five or none (raw outputs).

    Raises:
        TypeError, ValueError: arguments of the wrong type, dtype, shape or size.
    """

    __slots__ = ("_impl",)

    def __init__(
        self,
        theta: NDArray[np.float32],
        sizes: Sequence[int],
        *,
        hidden_activation: str,
        obs_mean: NDArray[np.float32],
        obs_inv_std: NDArray[np.float32],
        obs_clip: float,
        normalized: NDArray[np.float32],
        action_mid: NDArray[np.float32] | None = None,
        action_half: NDArray[np.float32] | None = None,
        action_bounded: NDArray[np.bool_] | None = None,
        action_low: NDArray[np.float32] | None = None,
        action_high: NDArray[np.float32] | None = None,
    ) -> None:
        self._impl = _core.MLPForward(
            theta,
            sizes,
            hidden_activation,
            obs_mean,
            obs_inv_std,
            obs_clip,
            normalized,
            action_mid,
            action_half,
            action_bounded,
            action_low,
            action_high,
        )

    @property
    def code_path(self) -> str:
        """The code path the layers run: ``"avx512"``, ``"avx2"`` or ``"baseline"``."""
        return str(self._impl.code_path)

    def __call__(self, observation: ArrayLike, noise: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """The outputs (or action) for one observation.

        Args:
            observation: shape (inputs,); float64 and float32 are read as they are, other real
                dtypes converted.
            noise: float32 array of shape (outputs,) added to the action; only with action bounds.

        Returns:
            A new float32 array of shape (outputs,).
        """
        return self._impl(observation, noise)


def tanh_approx(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """tanh as :class:`MLPForward` computes it: absolute error below 1e-6 for every float.

    Runs on the selected code path (:func:`code_path`), with the same bits on each.

    Args:
        x: float32 array of shape (n,).

    Returns:
        A new float32 array of shape (n,).
    """
    return _core.tanh_approx(x)


class ConvNetwork:
    """The geometry and reference batch of a convolutional policy with virtual batch normalization.

    Layers: ``conv_layers`` (each followed by VBN and relu), one dense layer per entry of
    ``hidden_dims`` (each followed by VBN and relu), then a dense output layer of ``actions``
    units with a bias; parameter layout as in :mod:`esfast.policies.conv`. The reference batch is
    copied. :class:`ConvForward` objects made from one network share its refresh scratch memory
    (about the batch size times the conv outputs, in float32), under a lock.

    Args:
        observation_shape: ``(channels, height, width)`` of a ``uint8`` observation.
        conv_layers: ``(filters, kernel, stride)`` per conv layer, at least one; each kernel must
            fit its input.
        hidden_dims: widths of the hidden dense layers, at least one.
        actions: number of outputs.
        reference_batch: ``uint8`` array of shape ``(n, *observation_shape)``, n >= 1.

    Raises:
        TypeError, ValueError: arguments of the wrong type, dtype, shape or size.
    """

    __slots__ = ("_impl",)

    def __init__(
        self,
        observation_shape: Sequence[int],
        conv_layers: Sequence[Sequence[int]],
        hidden_dims: Sequence[int],
        actions: int,
        reference_batch: NDArray[np.uint8],
    ) -> None:
        self._impl = _core.ConvNetwork(observation_shape, conv_layers, hidden_dims, actions, reference_batch)

    @property
    def num_params(self) -> int:
        """Length of the parameter vector."""
        return int(self._impl.num_params)

    @property
    def normalized_units(self) -> int:
        """Units with VBN statistics: all conv filters, then all hidden widths."""
        return int(self._impl.normalized_units)

    @property
    def actions(self) -> int:
        """Number of outputs."""
        return int(self._impl.actions)

    @property
    def reference_size(self) -> int:
        """Observations in the reference batch."""
        return int(self._impl.reference_size)


class ConvForward:
    """One parameter vector of a :class:`ConvNetwork`: VBN folded into the weights, then steps.

    :meth:`refresh` runs the reference batch through the network under θ, computes each
    normalized unit's mean and population variance of its pre-activations (float64; conv
    layers: over examples and positions), and folds ``gamma / sqrt(var + 1e-5)`` into the
    weights and ``beta - mean * scale`` into a bias. A call then maps one observation to the
    argmax of the outputs with those frozen weights.

    θ is held by reference and read at each :meth:`refresh` only: after writing new values into
    it, refresh before the next step. The folded weights are a snapshot.

    Arithmetic (see ``cpp/include/esfast/conv_network.hpp``): every output sums its products in
    one fixed order in float32, with no fused multiply-add, so the result is the same bit for
    bit on every machine and ``code_path``; it differs from a numpy/BLAS computation by float
    rounding only. The dense layers skip the inputs that are zero after the relu, which changes
    no bit of their sums as long as the weights are finite.

    Calls on one object are serialized by a lock; the GIL is released while the kernel runs.

    Args:
        network: the network.
        theta: float32 array of shape (num_params,), C-contiguous.
        code_path: ``"auto"`` (the process's selected path, :func:`code_path`, at construction),
            or ``"avx512"``, ``"avx2"``, ``"baseline"`` to force one (for tests: all give identical
            results).

    Raises:
        TypeError, ValueError: arguments of the wrong type, dtype, shape or size; a code path
            this process does not support (:func:`supported_code_paths`).
    """

    __slots__ = ("_impl",)

    def __init__(self, network: ConvNetwork, theta: NDArray[np.float32], *, code_path: str = "auto") -> None:
        if not isinstance(network, ConvNetwork):
            raise TypeError(f"network must be an esfast.core.ConvNetwork, got {type(network).__name__}")
        self._impl = _core.ConvForward(network._impl, theta, code_path)

    @property
    def code_path(self) -> str:
        """The code path the kernels run: ``"avx512"``, ``"avx2"`` or ``"baseline"``."""
        return str(self._impl.code_path)

    def refresh(self) -> NDArray[np.float64]:
        """Recomputes the VBN statistics from θ's current contents and folds them into the weights.

        Returns:
            A new float64 array of shape (2, normalized_units): means, then variances.
        """
        return self._impl.refresh()

    def __call__(self, observation: NDArray[np.uint8]) -> int:
        """The action for one observation: the first index of the largest output (a NaN wins).

        Args:
            observation: ``uint8`` array of the network's observation shape.

        Raises:
            TypeError, ValueError: not a ``uint8`` array of that shape.
        """
        return self._impl(observation)

    def logits(self, observation: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The output layer's values for one observation, as a new float32 array of shape (actions,)."""
        return self._impl.logits(observation)
