"""OpenAI-ES with an ask/tell interface, for any black-box objective.

The loop of estool, pycma, evosax and EvoTorch works as it is: a population is a sequence of
``2 * pop_pairs`` candidates, and ``tell`` takes one fitness per candidate, in that order::

    es = OpenES(num_params, sigma=0.02, stepsize=0.01, pop_pairs=50, seed=0, maximize=False)
    for generation in range(100):
        solutions = es.ask()                   # np.asarray(solutions): (2 * pop_pairs, num_params)
        es.tell([loss(x) for x in solutions])  # θ+σε₀, θ−σε₀, θ+σε₁, θ−σε₁, ...

The antithetic pairs stay available: ``solutions.pairs()``, ``solutions.pair(i)``,
``solutions.vectors()`` (pop_pairs, 2, num_params), and ``tell`` also takes returns of shape
(pop_pairs, 2).

Each generation's population is fixed by (seed, generation): its noise offsets come from
``sample_offsets`` with a seed derived from both, so a population can be rebuilt anywhere from
those two numbers and the noise table.

A generation may also be given more pairs than ``pop_pairs`` (``ask(pairs=P)``,
``tell(returns, pairs=P)``: the trainer's variable batch, ``config.timesteps_per_batch``). A
larger population extends the fixed one: pair i has the same noise whatever the size, because a
longer ``sample_offsets`` request extends a shorter one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from esfast import core
from esfast.config import MAX_COUNT, MAX_PAIRS_PER_GENERATION, RETURN_PROC_MODES
from esfast.optimizers import Adam, make_optimizer
from esfast.seeding import Purpose, derive_rng, derive_seed

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = ["OpenES", "Population", "default_table_size", "population_offsets"]


def default_table_size(num_params: int) -> int:
    """Noise-table length used when none is given: at least 2**22 and 64 slices of θ."""
    return max(1 << 22, 64 * num_params)


def population_offsets(seed: int, generation: int, pop_pairs: int, num_params: int, table_size: int) -> NDArray[np.int64]:
    """The noise offsets of generation ``generation`` of a run with seed ``seed``: (pop_pairs,) int64.

    Offset i does not depend on ``pop_pairs``: a larger population extends a smaller one.
    """
    return core.sample_offsets(derive_seed(seed, Purpose.OFFSETS, generation), pop_pairs, num_params, table_size)


@dataclass(eq=False)  # a population of arrays: identity, not element-wise comparison
class Population:
    """One generation's candidates: the antithetic pairs θ ± σ·table[offsets[i] : offsets[i] + num_params].

    A sequence of ``2 * pop_pairs`` candidates in the order θ + σε₀, θ − σε₀, θ + σε₁, ...:
    ``len``, iteration and ``population[k]`` go over them one at a time (each a new float32
    array of shape (num_params,)), and ``np.asarray(population)`` is all of them as one
    (2 * pop_pairs, num_params) float32 array, so that a loop written for estool, pycma or evosax
    works as it is. :meth:`pairs`, :meth:`pair` and :meth:`vectors` give the same vectors by
    antithetic pair; :meth:`pair` can write into given buffers.
    """

    generation: int
    offsets: NDArray[np.int64]
    theta: NDArray[np.float32]
    sigma: float
    table: core.NoiseTable

    @property
    def pop_pairs(self) -> int:
        """Antithetic pairs: half the number of candidates."""
        return len(self.offsets)

    def __len__(self) -> int:
        """Candidates: ``2 * pop_pairs``."""
        return 2 * len(self.offsets)

    def __getitem__(self, index: int) -> NDArray[np.float32]:
        """Candidate ``index``: θ + σε_{index // 2} when ``index`` is even, θ − σε_{index // 2} when odd.

        Raises:
            TypeError: an index that is not an integer.
            IndexError: an index out of [-len, len).
        """
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"population indices must be integers, got {type(index).__name__}")
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"population index {index} is out of range for {size} candidates")
        pair, sign = divmod(int(index) % size, 2)
        return self.pair(pair)[sign]

    def __iter__(self) -> Iterator[NDArray[np.float32]]:
        """The candidates in order: θ + σε₀, θ − σε₀, θ + σε₁, ..."""
        for plus, minus in self.pairs():
            yield plus
            yield minus

    def pairs(self) -> Iterator[tuple[NDArray[np.float32], NDArray[np.float32]]]:
        """The antithetic pairs ``(θ + σε_i, θ − σε_i)`` in order, each two new arrays of shape (num_params,)."""
        for i in range(self.pop_pairs):
            yield self.pair(i)

    def pair(
        self, i: int, *, out_plus: NDArray[np.float32] | None = None, out_minus: NDArray[np.float32] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(θ + σε_i, θ − σε_i) for pair ``i``."""
        return core.perturb_pair(self.theta, self.table, int(self.offsets[i]), self.sigma, out_plus=out_plus, out_minus=out_minus)

    def vectors(self) -> NDArray[np.float32]:
        """All members as one (pop_pairs, 2, num_params) array: [:, 0] is θ + σε, [:, 1] is θ − σε."""
        out = np.empty((self.pop_pairs, 2, self.theta.size), dtype=np.float32)
        for i in range(self.pop_pairs):
            self.pair(i, out_plus=out[i, 0], out_minus=out[i, 1])
        return out

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> NDArray[Any]:
        """The candidates as one new (2 * pop_pairs, num_params) array (float32 unless ``dtype`` says otherwise).

        Raises:
            ValueError: ``copy=False``: the array is computed on request, so it is always new.
        """
        if copy is False:
            raise ValueError("a Population's array is computed when asked for: np.asarray(population, copy=False) cannot avoid that")
        array = self.vectors().reshape(len(self), self.theta.size)
        return array if dtype is None else array.astype(dtype, copy=False)


def process_returns(returns: NDArray[np.float64], mode: str) -> NDArray[np.float32]:
    """Shapes returns of shape (pairs, 2) for the update: centered ranks, normalized, or raw."""
    if mode == "centered_rank":
        return core.centered_ranks(returns)
    if mode == "normalized":
        return core.normalized(returns)
    if mode == "raw":
        return returns.astype(np.float32)
    raise ValueError(f"return_proc_mode must be one of {', '.join(RETURN_PROC_MODES)}, got {mode!r}")


def elite_pairs(returns: NDArray[np.float64], fraction: float) -> NDArray[np.int64] | None:
    """The pairs an update with ``elite_fraction`` ``fraction`` uses, in pair order; None: all of them.

    ``returns`` has shape (pairs, 2). The ceil(fraction × pairs) pairs (at least one; a product
    within 1e-6 of an integer counts as that integer, so 1/3 of 60 is 20) with the highest
    max(r⁺, r⁻) are kept; a stable sort puts the lower pair index first among equals, so the
    choice is a function of the returns alone.
    """
    count = len(returns)
    keep = min(count, max(1, math.ceil(fraction * count - 1e-6)))
    if keep == count:
        return None
    best = np.max(returns, axis=1)
    order = np.argsort(-best, kind="stable")[:keep]
    return np.sort(order)


class OpenES:
    """The OpenAI-ES update: antithetic sampling, return shaping, Adam or SGD, L2 decay.

    Args:
        num_params: length of θ.
        sigma: noise standard deviation σ (> 0).
        stepsize: optimizer step size (> 0).
        pop_pairs: antithetic pairs per generation (>= 1).
        seed: run seed; fixes the initial θ (if not given) and every generation's offsets.
        optimizer: ``"adam"`` (β1 0.9, β2 0.999, ε 1e-8) or ``"sgd"`` (with ``momentum``).
        momentum: SGD momentum.
        l2coeff: L2 coefficient: the update descends ``-g + l2coeff * θ``.
        return_proc_mode: ``"centered_rank"``, ``"normalized"`` or ``"raw"``.
        elite_fraction: the fraction of a generation's pairs the update uses, in (0, 1]: the
            ceil(fraction × pairs) pairs whose better episode returned the most (ties: the lower
            pair index first), shaped among themselves; 1 (the paper) uses every pair. Mania et al.
            2018's "top directions" (ARS V2-t).
        table: the noise table; None creates a private one of :func:`default_table_size` from ``seed``.
        theta: initial θ (copied to float32); None draws N(0, 1) from ``seed``.
        maximize: whether :meth:`tell` gets values to maximize (returns, fitness); False:
            values to minimize (losses).

    Raises:
        ValueError: a non-positive population, sigma or step size, or an unknown mode.
    """

    def __init__(
        self,
        num_params: int,
        *,
        sigma: float,
        stepsize: float,
        pop_pairs: int,
        seed: int,
        optimizer: str = "adam",
        momentum: float = 0.9,
        l2coeff: float = 0.0,
        return_proc_mode: str = "centered_rank",
        elite_fraction: float = 1.0,
        table: core.NoiseTable | None = None,
        theta: ArrayLike | None = None,
        maximize: bool = True,
    ) -> None:
        if not (isinstance(num_params, (int, np.integer)) and num_params >= 1):
            raise ValueError(f"num_params must be a positive integer, got {num_params!r}")
        if not (isinstance(pop_pairs, (int, np.integer)) and pop_pairs >= 1):
            raise ValueError(f"pop_pairs must be a positive integer, got {pop_pairs!r}")
        if not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        if not (np.isfinite(stepsize) and stepsize > 0):
            raise ValueError(f"stepsize must be a positive number, got {stepsize!r}")
        if not (np.isfinite(l2coeff) and l2coeff >= 0):
            raise ValueError(f"l2coeff must be >= 0, got {l2coeff!r}")
        if return_proc_mode not in RETURN_PROC_MODES:
            raise ValueError(f"return_proc_mode must be one of {', '.join(RETURN_PROC_MODES)}, got {return_proc_mode!r}")
        numeric = isinstance(elite_fraction, (int, float, np.integer, np.floating)) and not isinstance(elite_fraction, (bool, np.bool_))
        if not (numeric and 0 < elite_fraction <= 1):
            raise ValueError(f"elite_fraction must be a number in (0, 1], got {elite_fraction!r}")
        if not isinstance(maximize, (bool, np.bool_)):
            raise ValueError(f"maximize must be True or False, got {maximize!r}")
        self.elite_fraction = float(elite_fraction)
        self.maximize = bool(maximize)
        self.num_params = int(num_params)
        self.sigma = float(sigma)
        self.pop_pairs = int(pop_pairs)
        self.seed = int(seed)
        self.l2coeff = float(l2coeff)
        self.return_proc_mode = return_proc_mode
        self.table = table if table is not None else core.NoiseTable(default_table_size(self.num_params), self.seed)
        if len(self.table) < self.num_params:
            raise ValueError(f"the noise table ({len(self.table)} samples) is shorter than num_params ({self.num_params})")
        if theta is None:
            self.theta = derive_rng(self.seed, Purpose.INIT).standard_normal(self.num_params).astype(np.float32)
        else:
            self.theta = np.array(theta, dtype=np.float32).reshape(-1)
            if self.theta.size != self.num_params:
                raise ValueError(f"theta must have {self.num_params} elements, got {self.theta.size}")
        self.optimizer = make_optimizer(optimizer, self.num_params, stepsize=stepsize, momentum=momentum)
        self.optimizer_name = optimizer
        self.generation = 0
        self._offsets: tuple[int, NDArray[np.int64]] | None = None  # (generation, offsets of the most pairs asked for)

    def _pairs(self, pairs: int | None) -> int:
        """``pairs``, checked (None: ``pop_pairs``)."""
        if pairs is None:
            return self.pop_pairs
        if isinstance(pairs, (bool, np.bool_)) or not isinstance(pairs, (int, np.integer)) or not 1 <= pairs <= MAX_PAIRS_PER_GENERATION:
            raise ValueError(f"pairs must be an integer in [1, 2**{MAX_PAIRS_PER_GENERATION.bit_length() - 1}] or None, got {pairs!r}")
        return int(pairs)

    def offsets(self, generation: int | None = None, *, pairs: int | None = None) -> NDArray[np.int64]:
        """Noise offsets of a generation (default: the current one) for ``pairs`` pairs (default:
        ``pop_pairs``); read-only. Offset i is the same for any ``pairs``.

        Raises:
            ValueError: ``pairs`` not an integer in [1, 2**23].
        """
        gen = self.generation if generation is None else generation
        count = self._pairs(pairs)
        if self._offsets is None or self._offsets[0] != gen or len(self._offsets[1]) < count:
            offsets = population_offsets(self.seed, gen, max(count, self.pop_pairs), self.num_params, len(self.table))
            offsets.flags.writeable = False
            self._offsets = (gen, offsets)
        return self._offsets[1][:count]

    def ask(self, *, pairs: int | None = None) -> Population:
        """The current generation's population: ``2 * pop_pairs`` candidates (see :class:`Population`),
        or ``2 * pairs``: the first ``pop_pairs`` pairs and more drawn the same way.

        Raises:
            ValueError: ``pairs`` not an integer in [1, 2**23].
        """
        return Population(self.generation, self.offsets(pairs=pairs), self.theta, self.sigma, self.table)

    def tell(self, returns: ArrayLike, *, pairs: int | None = None) -> dict[str, float]:
        """Updates θ from the returns of the current population and advances the generation.

        Args:
            returns: one value per candidate, to maximize (or to minimize, for an ES made with
                ``maximize=False``), as an array or a list: shape (2 * pop_pairs,) in the
                population's order θ + σε₀, θ − σε₀, θ + σε₁, ..., or (pop_pairs, 2) with column
                0 for θ + σε_i and column 1 for θ − σε_i. NaN is refused; infinite values are
                ranked first or last by ``centered_rank`` and refused by the other modes.
            pairs: the population's size if it was not ``pop_pairs`` (``ask(pairs=...)``): the
                returns are then of shape (2 * pairs,) or (pairs, 2).

        Returns:
            Update statistics: ``grad_norm``, ``update_ratio`` (|step| / |θ|).

        Raises:
            ValueError: values that are not real numbers, of another shape, NaN, or infinite
                outside ``centered_rank``, or ``pairs`` not an integer in [1, 2**23]; one line,
                before anything changes.
        """
        count = self._pairs(pairs)
        try:
            given = np.asarray(returns)
            if given.dtype.kind not in "biuf":  # strings ("1.0") and objects are not returns
                raise TypeError(given.dtype)
            values = given.astype(np.float64)
        except (TypeError, ValueError, OverflowError):  # ragged lists, strings, None
            raise ValueError(f"returns must be real numbers, one per candidate: shape ({2 * count},) or ({count}, 2)") from None
        if values.shape == (2 * count,):
            values = values.reshape(count, 2)  # candidate 2i is θ + σε_i, 2i + 1 is θ − σε_i
        if values.shape != (count, 2):
            raise ValueError(f"returns must have shape ({2 * count},) or ({count}, 2), got {values.shape}")
        if np.isnan(values).any():
            raise ValueError("returns must not contain NaN")
        if not self.maximize:
            values = -values
        offsets = self.offsets(pairs=count)
        elite = elite_pairs(values, self.elite_fraction)
        if elite is not None:
            values, offsets = values[elite], offsets[elite]
        shaped = process_returns(values, self.return_proc_mode)
        weights = (shaped[:, 0] - shaped[:, 1]).astype(np.float32)
        gradient = core.weighted_noise_sum(self.table, offsets, weights, self.num_params)
        gradient /= np.float32(2 * len(offsets))
        step = self.optimizer.step(-gradient + np.float32(self.l2coeff) * self.theta)
        self.theta = self.theta + step
        self.generation += 1
        theta_norm = float(np.linalg.norm(self.theta))
        return {
            "grad_norm": float(np.linalg.norm(gradient)),
            "update_ratio": float(np.linalg.norm(step)) / theta_norm if theta_norm > 0 else 0.0,
        }

    def state_dict(self) -> dict[str, object]:
        """Everything needed to continue: θ, generation, optimizer state, settings."""
        state: dict[str, object] = {
            "theta": self.theta.copy(),
            "generation": self.generation,
            "seed": self.seed,
            "sigma": self.sigma,
            "pop_pairs": self.pop_pairs,
            "l2coeff": self.l2coeff,
            "return_proc_mode": self.return_proc_mode,
            "elite_fraction": self.elite_fraction,
            "maximize": self.maximize,
            "optimizer": self.optimizer_name,
            "table_size": len(self.table),
            "table_seed": self.table.seed,
        }
        state.update({f"optimizer_{k}": v for k, v in self.optimizer.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restores :meth:`state_dict` output, checked whole before anything changes.

        The ES settings in ``state`` (``sigma``, ``pop_pairs``, ...) are not restored: they come
        from the constructor, as a resumed run's config gives them. ``maximize`` must agree when
        ``state`` has it (the optimizer's moments point the way it says); a state without it is
        one of a maximizing ES.

        Raises:
            ValueError: one line: a missing key, θ of another size or not finite, a generation out of
                [0, 2**53], a state from a different optimizer or noise table, one that maximizes
                where this ES minimizes or the reverse, or optimizer state of the wrong shape,
                non-finite or negative where it cannot be.
        """
        optimizer_keys = {f"optimizer_{key}": value for key, value in self.optimizer.state_dict().items()}
        missing = [key for key in ("theta", "generation", "optimizer", "table_size", "table_seed", *optimizer_keys) if key not in state]
        if missing:
            raise ValueError(f"state lacks {', '.join(repr(key) for key in missing)}")
        theta = _float32_array(state["theta"], "theta")
        if theta.shape != (self.num_params,):
            raise ValueError(f"state holds theta of shape {theta.shape}, this ES has ({self.num_params},)")
        if not np.isfinite(theta).all():
            raise ValueError("state holds theta with NaN or infinite values")
        generation = _integer(state["generation"], "generation", MAX_COUNT)
        if str(state["optimizer"]) != self.optimizer_name:
            raise ValueError(f"state is for optimizer {state['optimizer']!r}, this ES uses {self.optimizer_name!r}")
        if (
            _integer(state["table_size"], "table_size", 2**64 - 1) != len(self.table)
            or _integer(state["table_seed"], "table_seed", 2**64 - 1) != self.table.seed
        ):
            raise ValueError("state was made with a different noise table (size or seed)")
        maximize = state.get("maximize", True)
        if isinstance(maximize, np.ndarray) and maximize.ndim == 0:
            maximize = maximize.item()
        if not isinstance(maximize, (bool, np.bool_)):
            raise ValueError(f"state holds maximize = {_short(maximize)}, which must be True or False")
        if bool(maximize) != self.maximize:
            wanted, other = ("maximizes", "minimizes") if maximize else ("minimizes", "maximizes")
            raise ValueError(f"state is of an ES that {wanted}, this ES {other} (maximize={self.maximize})")
        optimizer_state: dict[str, np.ndarray | int] = {}
        for key, current in optimizer_keys.items():
            name = key[len("optimizer_") :]
            if not isinstance(current, np.ndarray):
                optimizer_state[name] = _integer(state[key], key, MAX_COUNT)
                continue
            value = _float32_array(state[key], key)
            if value.shape != current.shape:
                raise ValueError(f"state holds {key} of shape {value.shape}, this ES's {self.optimizer_name} optimizer has {current.shape}")
            if not np.isfinite(value).all():
                raise ValueError(f"state holds {key} with NaN or infinite values")
            if isinstance(self.optimizer, Adam) and name == "v" and (value < 0).any():
                raise ValueError(f"state holds {key} with negative values (Adam's second moments are >= 0)")
            optimizer_state[name] = value
        self.theta = theta
        self.generation = generation
        self.optimizer.load_state_dict(optimizer_state)


def _float32_array(value: object, key: str) -> NDArray[np.float32]:
    """A float32 copy of ``value``, which must be an array of real numbers (values float32 cannot hold become inf)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError):  # e.g. ragged nested lists
        raise ValueError(f"state holds {key} that is not an array of numbers") from None
    if array.dtype.kind not in "iuf":
        raise ValueError(f"state holds {key} of dtype {array.dtype}, not an array of numbers")
    with np.errstate(over="ignore"):
        return array.astype(np.float32)


def _integer(value: object, key: str, high: int) -> int:
    """``value`` (an int, a numpy integer or a 0-d integer array, not a bool) in [0, high]."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= high:
        bound = "2**53" if high == MAX_COUNT else str(high)
        raise ValueError(f"state holds {key} = {_short(value)}, which must be an integer in [0, {bound}]")
    return int(value)


def _short(value: object) -> str:
    """``repr(value)`` cut to 60 characters."""
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
