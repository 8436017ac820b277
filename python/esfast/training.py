"""The training loop: OpenES over policies evaluated by an :class:`~esfast.evaluators.Evaluator`.

Per generation the trainer asks OpenES for the population's offsets, builds one task per
antithetic pair (episode seed and whether to record observations derived from (seed,
generation, pair)) plus the evaluation episodes, lets the evaluator run them, and feeds the
returns back in pair order. Observation statistics are merged in pair order too, so results
do not depend on how many processes ran the episodes or in which order they finished.

With ``config.timesteps_per_batch`` set (the paper's variable batch), a generation whose
``episodes_per_batch`` episodes fall short of that many steps runs further rounds of pairs, sized
by :func:`next_round_pairs` from the steps of the rounds before, until it has enough; then one
update takes every pair of the generation. The round sizes are a function of episode lengths, so
they too are the same whoever ran the episodes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from esfast import core
from esfast.checkpoint import load_checkpoint, save_checkpoint
from esfast.config import MAX_PAIRS_PER_GENERATION, Config, load_config
from esfast.cores import available_cores
from esfast.distributed.master import local_cluster
from esfast.distributed.shm import hostname, remove_stale_segments, segment_name
from esfast.envs import make_env
from esfast.errors import CheckpointError, PolicyError, RunExistsError, TrainingDiverged
from esfast.es import OpenES
from esfast.evaluators import Evaluator
from esfast.interrupts import deferred_sigint, uninterrupted
from esfast.policies import ObStat, make_policy
from esfast.run_directory import RunDirectory
from esfast.seeding import Purpose, derive_rng, derive_seed
from esfast.tasks import EvalResult, EvalTask, GenerationSpec, PairResult, PairTask, WorkerSetup, reference_digest
from esfast.tensorboard_log import TensorBoardLog, require_tensorboard

logger = logging.getLogger(__name__)

# Makes the evaluator of a run from its description and the trainer's (shared) noise table:
# SerialEvaluator, local_cluster(procs), or a lambda around esfast.distributed.master.Master.
EvaluatorFactory = Callable[[WorkerSetup, core.NoiseTable], Evaluator]

# Fields every log.jsonl record has (more may follow).
LOG_FIELDS = (
    "generation",
    "timesteps_total",
    "episodes_total",
    "pairs",
    "time_elapsed",
    "return_mean",
    "return_max",
    "eval_return_mean",
    "steps_per_second",
)


def next_round_pairs(pairs: int, steps: int, timesteps_per_batch: int) -> int:
    """Pairs of a generation's next round of episodes; 0 when the generation has enough.

    A generation's first round is its ``episodes_per_batch / 2`` pairs. While its episodes so far
    total fewer than ``timesteps_per_batch`` steps, another round follows, sized to make up the
    difference at the mean steps per pair so far: ceil((timesteps_per_batch - steps) / (steps /
    pairs)), at least one pair, and no more than MAX_PAIRS_PER_GENERATION pairs in all (which
    take at least 2 * MAX_PAIRS_PER_GENERATION = MAX_TIMESTEPS_PER_BATCH steps, so the bound
    never cuts a generation short). Integer arithmetic, so the result is exact.

    Args:
        pairs: the pairs the generation has run (>= 1).
        steps: the summed lengths of their episodes (both of each pair).
        timesteps_per_batch: the config's; 0 never adds a round.

    Returns:
        The number of pairs of the next round, or 0.
    """
    if steps >= timesteps_per_batch or pairs >= MAX_PAIRS_PER_GENERATION:
        return 0
    wanted = -(-(timesteps_per_batch - steps) * pairs // max(steps, 1))  # ceil(missing steps / mean steps per pair)
    return max(1, min(wanted, MAX_PAIRS_PER_GENERATION - pairs))


def default_workers() -> int:
    """Evaluator processes when the config names none: the cores this process may use (:mod:`esfast.cores`)."""
    return available_cores()


class Trainer:
    """Trains a policy with OpenES and writes the run directory.

    Run directory (:class:`~esfast.run_directory.RunDirectory`): ``config.json``, ``log.jsonl``
    (one object per generation) and ``checkpoints/`` (``gen_NNNNN.npz`` every ``snapshot_freq``
    generations and ``latest.npz``), locked while the trainer is open. The trainer holds the
    noise table and the evaluator (worker processes) until :meth:`close`; it is a context
    manager, and :meth:`train` may be called again to continue.

    Args:
        config: the run's configuration.
        out_dir: the run directory (created).
        evaluator: makes where episodes run; None: ``local_cluster(workers)``, a master on a
            loopback port with one worker host of ``config.run.workers`` evaluator processes (one
            per core by default), as ``esfast train`` runs it.
        resume: continue from ``out_dir/checkpoints/latest.npz``.

    Raises:
        ConfigError, EnvError, PolicyError, CheckpointError: with a one-line message.
        RunLockedError: another live process trains in ``out_dir``.
        RunExistsError: ``out_dir`` holds a run already and ``resume`` is not set.
    """

    def __init__(self, config: Config, out_dir: str | Path, *, evaluator: EvaluatorFactory | None = None, resume: bool = False) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.evaluator: Evaluator | None = None
        self.table: core.NoiseTable | None = None
        self.interrupted = False
        self.diverged = False
        self.unsaved = False  # a generation updated in memory whose checkpoint or log record failed
        self.tensorboard: TensorBoardLog | None = None
        self.run_dir = RunDirectory(self.out_dir)  # fails early, before any resource is taken
        self.run_dir.lock()
        try:
            if config.run.tensorboard:
                require_tensorboard()  # before any process or table is made
            if not resume and self.run_dir.latest.exists():
                raise RunExistsError(
                    f"{self.out_dir} already holds a run; continue it with --resume {self.out_dir} or choose another --out"
                )
            env = make_env(config.env_id, config.env_module, atari=config.atari, env_kwargs=config.env_kwargs)
            try:
                self.reference_batch = self._reference_batch(env, resume) if config.atari is not None else None
                self.policy = make_policy(env.observation_space, env.action_space, config.policy, self.reference_batch)
            finally:
                env.close()
            self.obs_dim = self.policy.obs_stat_dim
            if config.run.noise_table_size < self.policy.num_params:  # checked before the table is made
                raise PolicyError(
                    f"run.noise_table_size ({config.run.noise_table_size}) must be at least the policy's "
                    f"{self.policy.num_params} parameters"
                )
            workers = config.run.workers if config.run.workers is not None else default_workers()
            self.workers = max(1, min(workers, config.pop_pairs))
            # Shared, so that worker hosts on this machine map it instead of generating their own.
            if removed := remove_stale_segments():
                logger.info("removed %d shared-memory segment%s of killed esfast processes", removed, "" if removed == 1 else "s")
            self.table = core.NoiseTable.create_shared(segment_name(None), config.run.noise_table_size, config.run.seed)
            self._build(resume, evaluator or local_cluster(self.workers))
            self.run_dir.write_config(config)
            if config.run.tensorboard:
                self.tensorboard = TensorBoardLog(self.run_dir.tensorboard, self.generation)
                self.tensorboard.catch_up(self.run_dir.records())
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        uninterrupted(self.close)  # the run is ending: a signal now must not leave workers or the lock behind

    def _reference_batch(self, env: gym.Env, resume: bool) -> np.ndarray:
        """The VBN reference batch: the checkpoint's when resuming, else collected with random actions."""
        if resume:
            state, _ = load_checkpoint(self.run_dir.latest)
            if "reference_batch" not in state:
                raise CheckpointError(f"{self.out_dir} holds a checkpoint without the Atari network's reference batch")
            return np.ascontiguousarray(state["reference_batch"], dtype=np.uint8)
        from esfast.envs.atari import collect_reference_batch  # imports ale_py: only for Atari runs

        assert self.config.atari is not None
        seed = derive_seed(self.config.run.seed, Purpose.REFERENCE_BATCH)
        return collect_reference_batch(env, self.config.atari.reference_batch_size, seed=seed)

    def _build(self, resume: bool, make_evaluator: EvaluatorFactory) -> None:
        config, seed = self.config, self.config.run.seed
        assert self.table is not None
        self.es = OpenES(
            self.policy.num_params,
            sigma=config.es.noise_stdev,
            stepsize=config.optimizer.stepsize,
            pop_pairs=config.pop_pairs,
            seed=seed,
            optimizer=config.optimizer.type,
            momentum=config.optimizer.momentum,
            l2coeff=config.es.l2coeff,
            return_proc_mode=config.es.return_proc_mode,
            elite_fraction=config.es.elite_fraction,
            table=self.table,
            theta=self.policy.initial_theta(derive_rng(seed, Purpose.INIT)),
        )
        self.obstat = ObStat((self.obs_dim,))
        self.timestep_limit, self.limit_threshold, self.limit_ratio = config.timestep_limit()
        self.timesteps_total = 0
        self.episodes_total = 0
        self.time_elapsed = 0.0
        self.last_record: dict[str, Any] | None = None  # the log record of the current generation
        if resume:
            self._load(self.run_dir.latest)
        self.run_dir.reconcile_log(self.generation, self.last_record)
        batch = self.reference_batch
        self.setup = WorkerSetup(
            config.env_id,
            config.env_module,
            config.policy,
            self.policy.num_params,
            self.obs_dim,
            len(self.table),
            self.table.seed,
            self.table.name,
            hostname(),
            config.atari,
            None if batch is None else reference_digest(batch),
            batch,
            env_kwargs=config.env_kwargs,
        )
        self.evaluator = make_evaluator(self.setup, self.table)

    # State ---------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self.es.generation

    @property
    def theta(self) -> np.ndarray:
        return self.es.theta

    def state_dict(self) -> dict[str, Any]:
        state = self.es.state_dict()
        state.update({f"obstat_{k}": v for k, v in self.obstat.state_dict().items()})
        state.update(
            timestep_limit=-1 if self.timestep_limit is None else self.timestep_limit,
            timesteps_total=self.timesteps_total,
            episodes_total=self.episodes_total,
            time_elapsed=self.time_elapsed,
        )
        if self.reference_batch is not None:
            state["reference_batch"] = self.reference_batch
        if self.last_record is not None:
            state["log_record"] = json.dumps(self.last_record)
        return state

    def _load(self, path: Path) -> None:
        state, saved = load_checkpoint(path)
        theta_size = int(np.asarray(state["theta"]).size)
        if theta_size != self.policy.num_params:
            raise CheckpointError(f"{path} holds a policy with {theta_size} parameters; this config's policy has {self.policy.num_params}")
        if saved.env_id != self.config.env_id:
            raise CheckpointError(f"{path} is a checkpoint for {saved.env_id}, this run is for {self.config.env_id}")
        try:
            self.es.load_state_dict(state)
            self.obstat.load_state_dict({k[len("obstat_") :]: v for k, v in state.items() if k.startswith("obstat_")})
        except (ValueError, PolicyError) as error:
            raise CheckpointError(f"{path} does not fit this run: {error}") from None
        limit = int(state["timestep_limit"])
        self.timestep_limit = None if limit < 0 else limit
        self.timesteps_total = int(state["timesteps_total"])
        self.episodes_total = int(state["episodes_total"])
        self.time_elapsed = float(state["time_elapsed"])
        if "log_record" in state:  # checkpoints since the log and the checkpoint are kept in agreement
            try:
                self.last_record = json.loads(str(state["log_record"]))
            except json.JSONDecodeError:
                raise CheckpointError(f"{path} holds a log record that is not JSON") from None

    def save(self, *, snapshot: bool = False) -> Path:
        """Writes ``checkpoints/latest.npz`` (and ``gen_NNNNN.npz`` when ``snapshot``).

        Raises:
            OSError: the checkpoint cannot be written; the previous one is left as it was.
        """
        state = self.state_dict()
        if snapshot:
            save_checkpoint(self.run_dir.snapshot(self.generation), state, self.config)
        save_checkpoint(self.run_dir.latest, state, self.config)
        return self.run_dir.latest

    # Generations ---------------------------------------------------------------------------

    def tasks(self, generation: int) -> tuple[list[PairTask], list[EvalTask]]:
        """The tasks of a generation's first round, its ``pop_pairs`` pairs and the evaluation
        episodes: a function of (seed, generation) and the config only."""
        seed = self.config.run.seed
        evals = [EvalTask(k, derive_seed(seed, Purpose.EVAL, generation, k)) for k in range(self.config.eval_episodes())]
        return self.pair_tasks(generation, 0, self.config.pop_pairs), evals

    def pair_tasks(self, generation: int, start: int, stop: int) -> list[PairTask]:
        """The tasks of pairs ``start`` to ``stop - 1`` of a generation: a function of (seed,
        generation, pair) and the config only, whichever round the pair runs in."""
        seed = self.config.run.seed
        offsets = self.es.offsets(generation, pairs=stop)  # pair i's offset is the same for any stop
        # Draws in pair order from one generator: the first `stop` of them whatever `stop` is.
        record = derive_rng(seed, Purpose.OBSTAT, generation).random(stop)[start:] < self.config.es.calc_obstat_prob
        record &= self.obs_dim > 0  # the Atari network keeps no observation statistics
        return [
            PairTask(i, int(offsets[i]), derive_seed(seed, Purpose.EPISODE, generation, i), bool(record[i - start]))
            for i in range(start, stop)
        ]

    def step(self) -> dict[str, Any]:
        """Runs one generation and returns its log record (nothing is written to the run directory).

        Raises:
            TrainingDiverged: θ, the optimizer's state or the observation statistics became
                non-finite (now, or in an earlier call).
        """
        results = self._evaluate()
        with deferred_sigint():
            return self._update(*results)

    def _evaluate(self) -> tuple[float, list[PairResult], list[EvalResult], int]:
        """Runs the current generation's episodes, in as many rounds as ``timesteps_per_batch``
        asks for (Ctrl-C interrupts it; nothing has changed then).

        Returns:
            The start time, the pair results in pair order, the evaluation results, the rounds.
        """
        if self.evaluator is None:
            raise RuntimeError("the trainer is closed")
        if self.diverged:
            raise TrainingDiverged(f"the run diverged in generation {self.generation}; resume it from its last finite checkpoint")
        start = time.perf_counter()
        generation = self.generation
        pairs, evals = self.tasks(generation)
        spec = GenerationSpec(generation, self.es.sigma, self.obstat.mean, self.obstat.std, self.timestep_limit)
        pair_results, eval_results = self.evaluator.evaluate(self.es.theta, spec, pairs, evals)
        pair_results = self._in_order(generation, pair_results, 0, len(pairs))
        steps, rounds = sum(sum(r.lengths) for r in pair_results), 1
        while extra := next_round_pairs(len(pair_results), steps, self.config.es.timesteps_per_batch):
            pairs = self.pair_tasks(generation, len(pair_results), len(pair_results) + extra)
            more, _ = self.evaluator.evaluate(self.es.theta, spec, pairs, [])  # evaluation episodes: the first round's
            more = self._in_order(generation, more, pairs[0].pair, len(pairs))
            pair_results.extend(more)
            steps, rounds = steps + sum(sum(r.lengths) for r in more), rounds + 1
        return start, pair_results, eval_results, rounds

    @staticmethod
    def _in_order(generation: int, results: list[PairResult], first: int, count: int) -> list[PairResult]:
        """A round's results sorted by pair, checked to be those of pairs ``first`` to ``first + count - 1``."""
        results = sorted(results, key=lambda r: r.pair)
        if [r.pair for r in results] != list(range(first, first + count)):
            raise RuntimeError(f"generation {generation}: the evaluator returned results for the wrong pairs")
        return results

    def _update(self, start: float, pair_results: list[PairResult], eval_results: list[EvalResult], rounds: int) -> dict[str, Any]:
        """Updates θ, the statistics and the counters from a generation's results (pairs in pair
        order, as :meth:`_evaluate` returns them); its log record."""
        assert self.evaluator is not None
        generation = self.generation
        eval_results.sort(key=lambda r: r.index)
        returns = np.array([r.returns for r in pair_results], dtype=np.float64)
        lengths = np.array([r.lengths for r in pair_results], dtype=np.int64)
        shift = self.config.es.return_shift  # ARS's shift: the update sees returns less a constant per step
        update = self.es.tell(returns - shift * lengths if shift else returns, pairs=len(pair_results))
        for result in pair_results:
            if result.obs_count and result.obs_sum is not None and result.obs_sumsq is not None:
                self.obstat.increment(result.obs_sum, result.obs_sumsq, result.obs_count)
        moments = [value for value in self.es.optimizer.state_dict().values() if isinstance(value, np.ndarray)]
        finite = {
            "θ": bool(np.isfinite(self.es.theta).all()),
            "the optimizer's state": all(np.isfinite(m).all() for m in moments),
            "the observation statistics": self.obstat.finite(),
        }
        if not all(finite.values()):
            self.diverged = True
            what = next(name for name, ok in finite.items() if not ok)
            kept = f"the last finite checkpoint is generation {generation}" if generation else "no generation completed: no checkpoint"
            raise TrainingDiverged(
                f"{what} became non-finite in generation {generation + 1}; training stopped (a step size or σ too large?); {kept}"
            )
        steps = int(lengths.sum()) + sum(r.length for r in eval_results)
        self.timesteps_total += int(lengths.sum())
        self.episodes_total += lengths.size
        if (
            self.limit_threshold is not None
            and self.limit_ratio is not None
            and self.timestep_limit is not None
            and np.mean(lengths == self.timestep_limit) > self.limit_threshold
        ):
            self.timestep_limit = int(self.limit_ratio * self.timestep_limit)
        elapsed = time.perf_counter() - start
        self.time_elapsed += elapsed
        record: dict[str, Any] = {
            "generation": self.generation,
            "timesteps_total": self.timesteps_total,
            "episodes_total": self.episodes_total,
            "pairs": len(pair_results),
            "rounds": rounds,
            "time_elapsed": round(self.time_elapsed, 3),
            "return_mean": float(returns.mean()),
            "return_max": float(returns.max()),
            "return_min": float(returns.min()),
            "eval_return_mean": float(np.mean([r.ret for r in eval_results])) if eval_results else None,
            "eval_length_mean": float(np.mean([r.length for r in eval_results])) if eval_results else None,
            "episode_length_mean": float(lengths.mean()),
            "steps_per_second": round(steps / elapsed, 1),
            "timestep_limit": self.timestep_limit,
            "obs_count": self.obstat.count,
            **update,
            **self.evaluator.generation_stats(),
        }
        self.last_record = record
        return record

    def done(self) -> bool:
        run = self.config.run
        return (run.generations is not None and self.generation >= run.generations) or (
            run.timesteps is not None and self.timesteps_total >= run.timesteps
        )

    def train(self, *, seconds: float | None = None, on_generation: Callable[[dict[str, Any]], bool | None] | None = None) -> None:
        """Runs generations until the budget is spent; may be called again to go on.

        After each generation its checkpoint is written, then its log record; Ctrl-C (or SIGTERM)
        is held back from the update to the log record, so the latest checkpoint and the log always
        agree. Ctrl-C during the episodes ends the call with KeyboardInterrupt, the run as of the
        last generation saved. Progress goes to the ``esfast.training`` logger, one line per generation.

        Args:
            seconds: also stop after the generation under way when this much wall time has passed.
            on_generation: called with each generation's log record once its checkpoint and log
                record are written; a true return value stops the run there (train() returns).

        Raises:
            KeyboardInterrupt: Ctrl-C or SIGTERM; the checkpoint is the last completed generation's.
            TrainingDiverged: θ became non-finite; the last finite checkpoint is kept.
            OSError: a checkpoint could not be written; the previous one and the log still agree.
        """
        deadline = None if seconds is None else time.monotonic() + seconds
        snapshot_freq = self.config.es.snapshot_freq
        self.interrupted = False
        try:
            if self.unsaved:  # a save or log write failed last time: finish it before going on
                with deferred_sigint():
                    self.save()
                    self.run_dir.reconcile_log(self.generation, self.last_record)
                    self.unsaved = False
                if self.tensorboard is not None:
                    self.tensorboard.catch_up(self.run_dir.records())
            while not self.done() and (deadline is None or time.monotonic() < deadline):
                results = self._evaluate()
                with deferred_sigint():
                    record = self._update(*results)
                    self.unsaved = True
                    self.save(snapshot=snapshot_freq > 0 and self.generation % snapshot_freq == 0)
                    self.run_dir.append(record)
                    self.unsaved = False
                if self.tensorboard is not None:
                    self.tensorboard.write(record)
                logger.info(format_progress(record))
                if on_generation is not None and on_generation(record):
                    return
        except KeyboardInterrupt:
            self.interrupted = True
            if not self.run_dir.latest.exists():
                self.save()  # interrupted before the first generation: the run can still be resumed
            raise

    def close(self) -> None:
        """Stops the evaluator, releases the noise table and the run directory's lock. Idempotent;
        the table and the lock are released even if stopping the evaluator fails."""
        evaluator, self.evaluator = self.evaluator, None
        table, self.table = self.table, None
        tensorboard, self.tensorboard = self.tensorboard, None
        try:
            if tensorboard is not None:
                tensorboard.close()
        finally:
            self._close_resources(evaluator, table)

    def _close_resources(self, evaluator: Evaluator | None, table: core.NoiseTable | None) -> None:
        try:
            if evaluator is not None:
                evaluator.close(interrupted=self.interrupted)
        finally:
            try:
                if table is not None:
                    table.close()
            finally:
                self.run_dir.unlock()


def format_progress(record: dict[str, Any]) -> str:
    """One console line for a generation's log record."""
    eval_text = f"{record['eval_return_mean']:9.1f}" if record["eval_return_mean"] is not None else "        -"
    seconds = int(record["time_elapsed"])
    hosts = f" | hosts {record['hosts']}" if "hosts" in record else ""
    return (
        f"gen {record['generation']:5d} | steps {record['timesteps_total']:>11,} | episodes {record['episodes_total']:>8,} | "
        f"return mean {record['return_mean']:9.1f} max {record['return_max']:9.1f} | eval {eval_text} | "
        f"{record['steps_per_second']:>8,.0f} steps/s | {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{hosts}"
    )


def resolved_config(path: Path) -> Config:
    """The config saved in a run directory.

    Raises:
        ConfigError: a missing, unreadable or damaged ``config.json`` (one line).
    """
    return load_config(path / "config.json")
