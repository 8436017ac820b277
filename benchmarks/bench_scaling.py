"""Scaling: time per generation on 1 to 32 worker processes whose episodes sleep.

The real path end to end: the benchmark process owns a real :class:`esfast.distributed.master.Master` on
``tcp://127.0.0.1:0`` and starts real worker hosts, ``python -m esfast.distributed.host --master ENDPOINT
--procs 1 --quiet``, each with one evaluator process. Episodes run in
``EsfastBench/Sleep-v0`` (``benchmarks/sleep_env.py``, the run's ``env_module``; the workers
find it through ``PYTHONPATH``): every step sleeps, so an episode costs a fixed wall time and
almost no CPU, and 32 evaluators fit on a 2-core machine. Everything else is what training
runs: θ broadcast, pair tasks with noise-table offsets and episode seeds, perturbation, the
policy, results with observation sums for 1% of pairs.

For each worker count W in ``--workers`` (default 1 2 4 8 16 32), workers are added to the ones
already running until there are W; warm-up generations (``2 W`` pairs each, not timed) run until
every worker has taken part in one, and one more after that; then ``--generations`` generations
of ``--pairs`` pair tasks are timed (``Master.evaluate`` wall time) and their median reported.

The ideal is the total episode time divided by W: ``pairs x t_pair / W``, with ``t_pair`` (two
episodes) measured at the start of the run by running pair tasks in this process with the same
environment, policy and task code the evaluators use (so sleep overshoot and the policy's own
cost are in the ideal, and only the distribution overhead counts against efficiency).
Efficiency = ideal / measured. Also printed: speed-up over the measured 1-worker generation, and
``Master.generation_stats()`` of every timed generation. Target: >= 90% at 32 workers.

With ``--hosts H`` (root only: network namespaces) the workers of each count W are spread over
min(H, W) worker hosts instead (``esfast-worker --procs W/H`` each, the remainder one more on the
first hosts), each in its own network namespace with its own /dev/shm, joined to the master by a
veth link shaped with ``tbf`` to ``--bandwidth`` each way (default 100mbit) and a TCP relay that
delays every chunk by ``--delay-ms`` ± ``--jitter-ms`` each way (default 20 ± 5 ms). This is the
harness of the namespace-host tests, ``tests/netns_hosts.py`` (imported from ``tests/``, not
copied; docs/clusters.md, "Several hosts on one machine"); its relays run as processes of their own
so that they do not share this process's interpreter lock with the master. Hosts are started
afresh for each worker count. Target: >= 90% at 32 workers over 4 hosts with 20 ms delay.

Every process the benchmark starts is stopped when it ends, also on failure or Ctrl-C (and every
namespace, link and relay with it).

Usage: python benchmarks/bench_scaling.py [--workers 1 2 4 ...] [--pairs P] [--generations G]
       [--step-ms MS] [--steps N] [--quick]
       [--hosts H [--delay-ms MS] [--jitter-ms MS] [--bandwidth RATE]]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import machine
import numpy as np

from esfast.distributed.shm import segment_owner

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"  # the namespace-host harness (--hosts)
TARGET_EFFICIENCY = 0.90
TABLE_SIZE = 1_000_000
TABLE_SEED = 7
RUN_SEED = 0
RECORD_OBS_PROBABILITY = 0.01


def configure_sleep_env(step_ms: float, steps: int) -> None:
    """Sets the sleep environment's parameters for this process and the workers it starts."""
    os.environ["ESFAST_SLEEP_STEP_SECONDS"] = repr(step_ms / 1000)
    os.environ["ESFAST_SLEEP_EPISODE_STEPS"] = str(steps)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> list[int]:
    """Waits for workers told to stop; SIGTERM (they clean up), then SIGKILL. Returns killed pids."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    killed = []
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(5.0)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
                killed.append(worker.pid)
    return killed


def remove_segments(pids: list[int]) -> None:
    """Removes the shared-memory files of worker hosts that had to be killed (they could not)."""
    for path in Path("/dev/shm").glob("esfast-*"):
        owner = segment_owner(path.name)
        if owner is not None and owner.pid in pids:
            path.unlink(missing_ok=True)


def spread(workers: int, hosts: int) -> list[int]:
    """Evaluator processes per host: ``workers`` over at most ``hosts`` hosts, as evenly as possible."""
    count = min(workers, hosts)
    return [workers // count + (1 if i < workers % count else 0) for i in range(count)]


def run(args: argparse.Namespace) -> None:
    configure_sleep_env(args.step_ms, args.steps)
    # Imported after configure_sleep_env: the module reads its parameters when imported.
    import sleep_env

    from esfast import core
    from esfast.config import PolicySettings
    from esfast.distributed.local_host import start_local_worker
    from esfast.distributed.master import Master
    from esfast.envs import make_env
    from esfast.es import population_offsets
    from esfast.policies import MLPPolicy
    from esfast.runner import EpisodeRunner
    from esfast.seeding import Purpose, derive_seed
    from esfast.tasks import GenerationSpec, PairTask, WorkerSetup

    cores = len(os.sched_getaffinity(0))
    print(f"machine: {platform.machine()}, {cores} core(s) available ({os.cpu_count()} in total), python {platform.python_version()}")
    layout = (
        f"over at most {args.hosts} namespace hosts (esfast-worker --procs W/{args.hosts} each), links: tbf {args.bandwidth} each way, "
        f"relay delay {args.delay_ms:g} ms ± {args.jitter_ms:g} ms each way"
        if args.hosts
        else "each: esfast-worker --procs 1"
    )
    print(
        f"settings: workers {' '.join(map(str, args.workers))} ({layout}), {args.pairs} pairs per generation "
        f"({2 * args.pairs} episodes), episodes of {args.steps} steps x {args.step_ms:g} ms sleep, "
        f"{args.generations} timed generations per worker count (median reported)"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (the cores are shared with other work)")

    policy = PolicySettings(hidden_dims=(16,))
    env = make_env(sleep_env.ENV_ID, "sleep_env")
    mlp = MLPPolicy(env.observation_space, env.action_space, policy)
    env.close()
    setup = WorkerSetup(sleep_env.ENV_ID, "sleep_env", policy, mlp.num_params, mlp.obs_dim, TABLE_SIZE, TABLE_SEED)
    theta = np.random.default_rng(RUN_SEED).standard_normal(mlp.num_params).astype(np.float32) * np.float32(0.1)
    mean, std = np.zeros(mlp.obs_dim, dtype=np.float32), np.ones(mlp.obs_dim, dtype=np.float32)

    def population(generation: int, pairs: int) -> list[PairTask]:
        offsets = population_offsets(RUN_SEED, generation, pairs, mlp.num_params, TABLE_SIZE)
        rng = np.random.default_rng(derive_seed(RUN_SEED, Purpose.OBSTAT, generation))
        record = rng.random(pairs) < RECORD_OBS_PROBABILITY
        return [PairTask(i, int(offsets[i]), derive_seed(RUN_SEED, Purpose.EPISODE, generation, i), bool(record[i])) for i in range(pairs)]

    def pair_cost() -> float:
        """Seconds per pair task run in this process, with the evaluators' code: the ideal's unit."""
        table = core.NoiseTable(TABLE_SIZE, TABLE_SEED)
        runner = EpisodeRunner(setup, table)
        spec = GenerationSpec(0, 0.02, mean, std, None)
        calibration = population(0, args.calibration_pairs)
        runner.run_pair(theta, spec, calibration[0])  # first-call costs out of the measurement
        start = time.perf_counter()
        for task in calibration:
            runner.run_pair(theta, spec, task)
        cost = (time.perf_counter() - start) / len(calibration)
        runner.close()
        table.close()
        return cost

    t_pair = pair_cost()
    nominal = 2 * args.steps * args.step_ms / 1000
    print(
        f"pair cost measured in this process: {t_pair * 1e3:.2f} ms over {args.calibration_pairs} pairs "
        f"(sleep alone: {nominal * 1e3:.2f} ms)"
    )

    master = Master("tcp://127.0.0.1:0", setup)
    workers: list[subprocess.Popen[bytes]] = []
    network = None
    if args.hosts:
        sys.path.insert(0, str(TESTS))
        from netns_hosts import HostNetwork, NamespacesUnavailable

        logs = Path(tempfile.mkdtemp(prefix="bench-scaling-hosts-"))
        print(f"namespace hosts' and relays' output: {logs}")
        port = int(master.endpoint.rsplit(":", 1)[1])
        try:
            network = HostNetwork(
                logs, port, bandwidth=args.bandwidth, delay=args.delay_ms / 1000, jitter=args.jitter_ms / 1000, relay_processes=True
            )
        except NamespacesUnavailable as error:
            master.close()
            raise SystemExit(f"bench_scaling.py: error: {error}") from None
    rows: list[dict[str, Any]] = []
    generation = 0

    def evaluate(pairs: list[PairTask]) -> tuple[float, dict[str, Any]]:
        nonlocal generation
        spec = GenerationSpec(generation, 0.02, mean, std, None)
        started = time.perf_counter()
        pair_results, _ = master.evaluate(theta, spec, pairs, [])
        wall = time.perf_counter() - started
        if [r.pair for r in pair_results] != [t.pair for t in pairs]:
            raise AssertionError("the master returned pair results out of order")
        generation += 1
        return wall, master.generation_stats()

    try:
        for count in args.workers:
            if network is not None:  # hosts of fixed sizes: new ones for each count
                network.close()
                procs = spread(count, args.hosts)
                processes = [host.process.popen for host in (network.host(n, ("--quiet",)) for n in procs) if host.process]
                expected = len(procs)
            else:
                while len(workers) < count:
                    workers.append(start_local_worker(master.endpoint, 1))
                processes, expected = workers, count
            joined_at = time.perf_counter()
            deadline = joined_at + args.join_timeout
            complete = 0
            warmups = 0
            while complete < 2:  # a generation with every host, then one more
                _, stats = evaluate(population(generation, 2 * count))
                warmups += 1
                complete = complete + 1 if stats["hosts"] >= expected and stats["procs"] >= count else 0
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {stats['hosts']} of {expected} worker hosts took part within {args.join_timeout:.0f} s")
                dead = [w.pid for w in processes if w.poll() is not None]
                if dead:
                    raise RuntimeError(f"worker host(s) {dead} exited")
            where = f" over {expected} namespace host(s) ({'+'.join(map(str, procs))})" if network is not None else ""
            print(f"\n{count} worker(s){where}: {warmups} warm-up generation(s) in {time.perf_counter() - joined_at:.1f} s")
            walls = []
            for _ in range(args.generations):
                wall, stats = evaluate(population(generation, args.pairs))
                walls.append(wall)
                print(
                    f"  generation {generation - 1}: {wall:.3f} s, efficiency {args.pairs * t_pair / count / wall:.1%}; "
                    f"master stats {stats}"
                )
            rows.append({"workers": count, "median": statistics.median(walls), "walls": walls})
    finally:
        master.close()
        if network is not None:
            network.close()
        killed = stop_workers(workers)
        remove_segments(killed)
        if killed:
            print(f"worker hosts {killed} had to be killed; their shared-memory files were removed")

    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"pair cost measured again after the run (not used; shows how the machine drifted): {pair_cost() * 1e3:.2f} ms")
    one = next((r["median"] for r in rows if r["workers"] == 1), None)
    print(f"\n{'workers':>7} {'median s/gen':>12} {'min':>7} {'max':>7} {'ideal s':>8} {'efficiency':>10} {'speed-up vs 1':>13}")
    for row in rows:
        ideal = args.pairs * t_pair / row["workers"]
        speedup = f"{one / row['median']:.2f}x" if one else "-"
        print(
            f"{row['workers']:>7} {row['median']:>12.3f} {min(row['walls']):>7.3f} {max(row['walls']):>7.3f} {ideal:>8.3f} "
            f"{ideal / row['median']:>10.1%} {speedup:>13}"
        )
    last = rows[-1]
    efficiency = args.pairs * t_pair / last["workers"] / last["median"]
    print(
        f"\ntarget: >= {TARGET_EFFICIENCY:.0%} efficiency at {last['workers']} workers: measured {efficiency:.1%}, "
        f"ratio {efficiency / TARGET_EFFICIENCY:.2f} ({'met' if efficiency >= TARGET_EFFICIENCY else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="worker counts, increasing (default 1 2 4 8 16 32)"
    )
    parser.add_argument("--pairs", type=int, default=256, help="pair tasks per timed generation (default 256)")
    parser.add_argument("--generations", type=int, default=3, help="timed generations per worker count (default 3)")
    parser.add_argument("--step-ms", type=float, default=10.0, help="sleep per environment step in ms (default 10)")
    parser.add_argument("--steps", type=int, default=5, help="steps per episode (default 5)")
    parser.add_argument("--calibration-pairs", type=int, default=20, help="pairs run in this process to measure a pair's cost (default 20)")
    parser.add_argument("--join-timeout", type=float, default=180.0, help="seconds for new workers to join (default 180)")
    parser.add_argument("--quick", action="store_true", help="workers 1 2 4 8, 64 pairs, 2 generations")
    parser.add_argument("--hosts", type=int, help="spread the workers over this many namespace hosts (root only; see above)")
    parser.add_argument("--delay-ms", type=float, help="with --hosts: relay delay each way (default 20)")
    parser.add_argument("--jitter-ms", type=float, help="with --hosts: relay jitter, ± (default 5)")
    parser.add_argument("--bandwidth", help="with --hosts: each link's rate each way, in tc's units (default 100mbit)")
    args = parser.parse_args()
    network_options = {"delay_ms": 20.0, "jitter_ms": 5.0, "bandwidth": "100mbit"}
    if args.hosts is None and any(getattr(args, name) is not None for name in network_options):
        parser.error("--delay-ms, --jitter-ms and --bandwidth go with --hosts")
    if args.hosts is not None and args.hosts < 1:
        parser.error("--hosts must be at least 1")
    for name, default in network_options.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    print(machine.describe(), flush=True)
    if args.quick:
        args.workers, args.pairs, args.generations = [1, 2, 4, 8], 64, 2
    if sorted(args.workers) != args.workers or args.workers[0] < 1 or args.pairs < 1 or args.generations < 1 or args.steps < 1:
        parser.error("workers must be increasing and >= 1; pairs, generations and steps >= 1")
    run(args)


if __name__ == "__main__":
    main()
