"""Master capacity: the real :class:`esfast.distributed.master.Master` against simulated worker hosts on loopback.

The benchmark process owns a real ``Master`` (bound to ``tcp://127.0.0.1:0``) and calls
``master.evaluate(theta, spec, pairs, evals)`` exactly as the trainer does. ``--hosts`` simulated
worker hosts run in separate processes. Each speaks the protocol with a raw pyzmq ``DEALER``
socket and esfast.distributed.protocol's codec: ``HELLO`` (no table), waits for ``WELCOME``, sends
``READY`` with its credit (``--credit``, default 36: an 18-core host with the worker's prefetch
of 2 tasks per evaluator), then answers every ``TASKS`` message at once with one ``RESULT``
holding a result for each of its tasks (no environment runs) and giving the credit back in its
``credit`` field, as a real host does. Results of pairs with ``record_obs`` carry observation sums, as real ones do. A
simulated host copies each ``THETA`` into its own buffer (the real host writes it to shared
memory) and answers heartbeats with its own, once a second.

Two figures:

1. **Results absorbed per second.** After warm-up generations (until every host has joined),
   each of ``--generations`` timed generations hands out ``--pairs`` pair tasks (and ``--evals`` eval
   tasks) with a fresh θ of ``--params`` float32. The rate is episodes / wall time of
   ``evaluate()``, counting **2 episodes per pair task** and 1 per eval task; the wall time
   covers everything the master does in a generation (θ encoding and broadcast, dispatch,
   decoding and checking every result, ordering them). The master's main-thread CPU time over
   the same interval is printed too: a ratio near 1 means its Python loop was saturated, so the
   figure is the master's capacity on this core; well below 1 means the master waited for the
   simulated hosts (which share this machine's cores with it), so the figure is a lower bound.
   The results returned are checked (pair order, values) so a fast but wrong master cannot pass.
   By default a host answers a TASKS message with one RESULT (the fewest messages, the master's
   best case); ``--result-batch 1`` sends one RESULT (with one credit) per result instead, which is
   what a real host does when its evaluators finish one at a time.
2. **θ broadcast per host.** ``--broadcasts`` generations whose population is two credits' worth
   of tasks per host, so the master's first dispatch sends θ to every host (a host whose READY
   the master has not read yet gets it on a later pass). Each host timestamps (``CLOCK_MONOTONIC``,
   one clock for all processes of a Linux machine) the moment ``recv_multipart`` has returned the complete ``THETA`` message; the benchmark
   timestamps the call to ``evaluate()``. Printed: the latency to the first, the median and the
   last host, and the per-host cost (last − first) / (hosts − 1), i.e. what each additional host
   adds to a generation's start. The same receipts are also reported for the timed generations
   (under load). The references, measured in the same run after the master has stopped: one
   in-memory copy of θ (``np.copyto``), and a raw pyzmq transfer of the same bytes to one other
   process over loopback TCP with a 2-byte acknowledgement (no master), which is what each extra
   host should cost if the master adds nothing. These are loopback figures: a real network adds
   size / bandwidth per host, which this benchmark does not measure.

Every process the benchmark starts is stopped when it ends, also on failure or Ctrl-C.

Usage: python benchmarks/bench_master.py [--hosts H] [--pairs P] [--generations G] [--result-batch B] [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import multiprocessing.connection
import os
import platform
import pstats
import signal
import statistics
import time
from typing import Any

import machine
import numpy as np
import zmq

from esfast.config import PolicySettings
from esfast.distributed.master import Master
from esfast.distributed.protocol import HEARTBEAT_INTERVAL, Message, decode, encode, result_message
from esfast.distributed.versions import software_versions
from esfast.tasks import EvalResult, EvalTask, GenerationSpec, PairResult, PairTask, WorkerSetup

TARGET_EPISODES_PER_SECOND = 100_000
EPISODE_LENGTH = 500  # what a simulated episode reports as its length (CartPole's limit, which the master enforces)
RECORD_OBS_PROBABILITY = 0.01  # the paper's calc_obstat_prob


def pair_returns(pair: int) -> tuple[float, float]:
    """What a simulated host reports for a pair: a function of the pair, so results can be checked."""
    return pair + 0.25, -(pair + 0.25)


# Simulated worker host (runs in its own process) ---------------------------------------------


def _result_objects(tasks: list[dict[str, Any]], obs: tuple[np.ndarray, np.ndarray]) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """The result objects (and arrays) of a RESULT answering ``tasks``, built without dataclasses.

    Wire-identical to ``esfast.distributed.protocol.result_message`` (checked in :func:`check_result_builder`),
    but cheaper, so the simulated hosts take less of the CPU the master shares with them.
    """
    objects: list[dict[str, Any]] = []
    arrays: list[np.ndarray] = []
    for task in tasks:
        if task["kind"] == "pair":
            plus, minus = pair_returns(task["pair"])
            index, count = None, 0
            if task["record_obs"]:
                index, count = len(arrays), 2 * EPISODE_LENGTH
                arrays += obs
            objects.append(
                {
                    "task": task["task"],
                    "returns": [plus, minus],
                    "lengths": [EPISODE_LENGTH, EPISODE_LENGTH],
                    "obs_count": count,
                    "obs_arrays": index,
                }
            )
        else:
            objects.append({"task": task["task"], "return": float(task["index"]), "length": EPISODE_LENGTH})
    return objects, arrays


def check_result_builder(obs_dim: int) -> None:
    """Asserts that the simulated hosts' RESULT frames equal esfast.distributed.protocol.result_message's."""
    obs = (np.full(obs_dim, 1.0, dtype="<f8"), np.full(obs_dim, 2.0, dtype="<f8"))
    wire = [
        {"task": 0, "kind": "pair", "pair": 0, "offset": 5, "episode_seed": 7, "record_obs": False},
        {"task": 1, "kind": "pair", "pair": 1, "offset": 9, "episode_seed": 8, "record_obs": True},
        {"task": 2, "kind": "eval", "index": 0, "episode_seed": 9},
    ]
    objects, arrays = _result_objects(wire, obs)
    ours = encode(Message("RESULT", {"generation": 3, "results": objects, "credit": 3}, tuple(arrays)))
    reference = result_message(
        3,
        [
            (0, PairResult(0, pair_returns(0), (EPISODE_LENGTH, EPISODE_LENGTH), None, None, 0)),
            (1, PairResult(1, pair_returns(1), (EPISODE_LENGTH, EPISODE_LENGTH), obs[0], obs[1], 2 * EPISODE_LENGTH)),
            (2, EvalResult(0, 0.0, EPISODE_LENGTH)),
        ],
        credit=3,
    )
    assert [bytes(f) for f in ours] == [bytes(f) for f in encode(reference)], "simulated RESULT differs from result_message"


def simulated_host(
    index: int, endpoint: str, credit: int, batch: int, report: multiprocessing.connection.Connection, parent: int, fingerprint: str
) -> None:
    """A worker host without evaluators: answers every TASKS message at once, with RESULT messages
    of ``batch`` results each (0: one RESULT for the whole TASKS message), each giving its credit back.

    Sends ``{"theta": [(generation, receipt time, bytes)], "tasks": n, "cpu": s}`` on ``report``
    when the master says STOP (or the benchmark goes away).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark process stops us
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    receipts: list[tuple[int, float, int]] = []
    handled = 0
    theta_copy: np.ndarray | None = None
    obs: tuple[np.ndarray, np.ndarray] | None = None
    hello = {
        "host": f"sim{index}",
        "pid": os.getpid(),
        "procs": max(1, credit // 2),
        "table": None,
        "versions": software_versions(),
        "session": None,
    }
    sock.send_multipart(encode(Message("HELLO", hello)))
    sock.send_multipart(encode(Message("FINGERPRINT", {"fingerprint": fingerprint})))  # as the master's own environment gives it
    last_heartbeat = time.monotonic()
    try:
        while True:
            if not sock.poll(int(HEARTBEAT_INTERVAL * 1000)):
                if os.getppid() != parent:
                    return
            else:
                frames = sock.recv_multipart(copy=False)
                received = time.monotonic()
                message = decode([f.buffer for f in frames])
                kind = message.type
                if kind == "TASKS":
                    tasks = message["tasks"]
                    step = batch or max(1, len(tasks))
                    for first in range(0, len(tasks), step):
                        objects, arrays = _result_objects(tasks[first : first + step], obs)  # type: ignore[arg-type]
                        fields = {"generation": message["generation"], "results": objects, "credit": len(objects)}
                        sock.send_multipart(encode(Message("RESULT", fields, tuple(arrays))), copy=False)
                        handled += len(objects)
                elif kind == "THETA":
                    receipts.append((message["generation"], received, sum(a.nbytes for a in message.arrays)))
                    if theta_copy is None or theta_copy.shape != message.arrays[0].shape:
                        theta_copy = np.empty_like(message.arrays[0])
                    np.copyto(theta_copy, message.arrays[0])
                elif kind == "WELCOME":
                    obs_dim = message["run"]["obs_dim"]
                    obs = (np.full(obs_dim, 0.5, dtype="<f8"), np.full(obs_dim, 0.25, dtype="<f8"))
                    sock.send_multipart(encode(Message("READY", {"credit": credit})))
                elif kind in ("STOP", "REFUSE"):
                    return
            now = time.monotonic()
            if now - last_heartbeat >= HEARTBEAT_INTERVAL:
                sock.send_multipart(encode(Message("HEARTBEAT")))
                last_heartbeat = now
    finally:
        try:
            report.send({"theta": receipts, "tasks": handled, "cpu": time.process_time()})
        except OSError:
            pass
        sock.close()
        context.term()


# The benchmark --------------------------------------------------------------------------------


def population(rng: np.random.Generator, pairs: int, evals: int, num_params: int, table_size: int) -> tuple[list[PairTask], list[EvalTask]]:
    offsets = rng.integers(0, table_size - num_params + 1, size=pairs)
    seeds = rng.integers(0, 2**63 - 1, size=pairs + evals)
    record = rng.random(pairs) < RECORD_OBS_PROBABILITY
    pair_tasks = [PairTask(i, int(offsets[i]), int(seeds[i]), bool(record[i])) for i in range(pairs)]
    eval_tasks = [EvalTask(k, int(seeds[pairs + k])) for k in range(evals)]
    return pair_tasks, eval_tasks


def check(pairs: list[PairTask], evals: list[EvalTask], results: tuple[list[Any], list[Any]], obs_dim: int) -> None:
    pair_results, eval_results = results
    if len(pair_results) != len(pairs) or len(eval_results) != len(evals):
        raise AssertionError(f"got {len(pair_results)} + {len(eval_results)} results for {len(pairs)} + {len(evals)} tasks")
    for task, result in zip(pairs, pair_results):
        if result.pair != task.pair or result.returns != pair_returns(task.pair):
            raise AssertionError(f"pair {task.pair}: wrong result {result}")
        if task.record_obs != (result.obs_sum is not None) or (result.obs_sum is not None and result.obs_sum.shape != (obs_dim,)):
            raise AssertionError(f"pair {task.pair}: observation sums do not match record_obs={task.record_obs}")
    for task, result in zip(evals, eval_results):
        if result.index != task.index:
            raise AssertionError(f"eval {task.index}: wrong result {result}")


def _transfer_sink(endpoint: str, count: int) -> None:
    """Receives ``count`` messages on a PAIR socket and acknowledges each (the transfer reference)."""
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    sock.connect(endpoint)
    for _ in range(count):
        sock.recv_multipart(copy=False)
        sock.send(b"ok")
    sock.close()
    context.term()


def transfer_reference(nbytes: int, repeats: int = 10) -> float:
    """Seconds for one ``nbytes`` message over loopback TCP to another process and a 2-byte ack
    back (median of ``repeats``, after one unmeasured): raw pyzmq, no master, one receiver."""
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:0")
    process = multiprocessing.get_context("spawn").Process(
        target=_transfer_sink, args=(sock.getsockopt_string(zmq.LAST_ENDPOINT), repeats + 1), daemon=True
    )
    process.start()
    try:
        payload = np.ones(nbytes // 4, dtype=np.float32)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            sock.send_multipart([b"{}", memoryview(payload).cast("B")], copy=False)
            sock.recv()
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])
    finally:
        sock.close()
        context.term()
        stop_hosts([process])


def copy_reference(num_params: int, repeats: int = 20) -> float:
    """Seconds for the fastest of ``repeats`` in-memory copies of θ."""
    source = np.ones(num_params, dtype=np.float32)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return best


def stop_hosts(processes: list[multiprocessing.process.BaseProcess], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join()


def run(args: argparse.Namespace) -> None:
    cores = len(os.sched_getaffinity(0))
    print(
        f"machine: {platform.machine()}, {cores} core(s) available ({os.cpu_count()} in total), "
        f"python {platform.python_version()}, pyzmq {zmq.pyzmq_version()}, libzmq {zmq.zmq_version()}"
    )
    print(
        f"settings: {args.hosts} simulated hosts with credit {args.credit}, "
        f"{'one RESULT per TASKS message' if args.result_batch == 0 else f'RESULT messages of {args.result_batch} results'}, "
        f"{args.pairs:,} pairs + {args.evals} evals per generation, "
        f"{args.generations} timed generations, {args.broadcasts} broadcast generations, θ of {args.params:,} float32 "
        f"({4 * args.params / 1e6:.1f} MB), obs_dim {args.obs_dim}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (the cores are shared with other work)")
    check_result_builder(args.obs_dim)

    setup = WorkerSetup("CartPole-v1", None, PolicySettings(), args.params, args.obs_dim, args.table_size, 0)
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(args.params).astype(np.float32)
    mean, std = np.zeros(args.obs_dim, dtype=np.float32), np.ones(args.obs_dim, dtype=np.float32)
    mp = multiprocessing.get_context("spawn")
    master = Master("tcp://127.0.0.1:0", setup)
    processes: list[multiprocessing.process.BaseProcess] = []
    reports: list[multiprocessing.connection.Connection] = []
    starts: dict[int, float] = {}  # generation -> monotonic time evaluate() was called
    timed: list[dict[str, Any]] = []
    broadcasts: list[int] = []
    try:
        for index in range(args.hosts):
            receive, send = mp.Pipe(duplex=False)
            process = mp.Process(
                target=simulated_host,
                args=(index, master.endpoint, args.credit, args.result_batch, send, os.getpid(), master.probe.fingerprint),
                daemon=True,
            )
            process.start()
            send.close()
            processes.append(process)
            reports.append(receive)

        generation = 0

        def evaluate(pairs: list[PairTask], evals: list[EvalTask]) -> tuple[float, float, dict[str, Any]]:
            nonlocal generation
            theta[:] += np.float32(1e-3)  # the trainer's update, in place
            spec = GenerationSpec(generation, 0.02, mean, std, None)
            thread_cpu = time.thread_time()
            starts[generation] = start = time.monotonic()
            results = master.evaluate(theta, spec, pairs, evals)
            wall = time.monotonic() - start
            thread_cpu = time.thread_time() - thread_cpu
            check(pairs, evals, results, args.obs_dim)
            generation += 1
            return wall, thread_cpu, master.generation_stats()

        # Warm-up: until every host has joined (the first generations also wait for HELLOs).
        deadline = time.monotonic() + 120.0
        while True:
            warm_pairs, warm_evals = population(rng, args.hosts * args.credit, 0, args.params, args.table_size)
            _, _, stats = evaluate(warm_pairs, warm_evals)
            if stats["hosts_total"] >= args.hosts:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {stats['hosts_total']} of {args.hosts} hosts joined within 120 s")
        print(f"warm-up: {generation} generation(s) until all {args.hosts} hosts joined")

        # θ broadcast: two credits' worth of tasks per host, so that every host receives θ, in the
        # master's first dispatch unless its READY had not been read yet.
        for _ in range(args.broadcasts):
            pairs, evals = population(rng, 2 * args.hosts * args.credit, 0, args.params, args.table_size)
            broadcasts.append(generation)
            evaluate(pairs, evals)

        # Throughput.
        profiler = cProfile.Profile() if args.profile else None
        for _ in range(args.generations):
            pairs, evals = population(rng, args.pairs, args.evals, args.params, args.table_size)
            if profiler:
                profiler.enable()
            wall, thread_cpu, stats = evaluate(pairs, evals)
            if profiler:
                profiler.disable()
            episodes = 2 * len(pairs) + len(evals)
            timed.append({"generation": generation - 1, "wall": wall, "cpu": thread_cpu, "episodes": episodes, "stats": stats})
            print(
                f"generation {generation - 1}: {episodes:,} episodes in {wall:.3f} s = {episodes / wall:,.0f} episodes/s, "
                f"master main thread CPU {thread_cpu / wall:.0%} of wall; stats {stats}"
            )
        if profiler:
            print("\nprofile of the master over the timed generations (top 20 by own time):")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    finally:
        master.close()
        host_reports = []
        for receive in reports:
            try:
                if receive.poll(10.0):
                    host_reports.append(receive.recv())
            except (EOFError, OSError):
                pass
        stop_hosts(processes)

    # Figures.
    episodes = sum(t["episodes"] for t in timed)
    wall = sum(t["wall"] for t in timed)
    cpu = sum(t["cpu"] for t in timed)
    rate = episodes / wall
    print(
        f"\nresults absorbed: {episodes:,} episodes (2 per pair task, 1 per eval task) in {wall:.3f} s over {len(timed)} generations "
        f"= {rate:,.0f} episodes/s ({rate / 2:,.0f} pair results/s); "
        f"best generation {max(t['episodes'] / t['wall'] for t in timed):,.0f} episodes/s"
    )
    print(f"  master main thread CPU: {cpu:.3f} s = {cpu / wall:.0%} of wall -> {episodes / cpu:,.0f} episodes per master CPU second")
    host_cpu = sum(r["cpu"] for r in host_reports)
    print(f"  simulated hosts' CPU over the whole run: {host_cpu:.1f} s ({len(host_reports)} hosts reported)")
    print(
        f"  target {TARGET_EPISODES_PER_SECOND:,} episodes/s: ratio {rate / TARGET_EPISODES_PER_SECOND:.2f} "
        f"({'met' if rate >= TARGET_EPISODES_PER_SECOND else 'NOT met'})"
    )

    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    receipts: dict[int, list[float]] = {}
    nbytes = 0
    for report in host_reports:
        for gen, received, size in report["theta"]:
            receipts.setdefault(gen, []).append(received - starts[gen])
            nbytes = size
    copy = copy_reference(args.params)
    reference = transfer_reference(nbytes or 4 * (args.params + 2 * args.obs_dim))
    print(
        f"\nθ broadcast ({args.params:,} float32 + obs mean/std = {nbytes / 1e6:.2f} MB per host). References measured now: "
        f"one np.copyto of θ {copy * 1e3:.2f} ms; raw pyzmq transfer of the same bytes to one other process over loopback TCP "
        f"and a 2-byte ack back {reference * 1e3:.2f} ms (median of 10):"
    )
    for label, gens in (("broadcast generations", broadcasts), ("timed generations (under load)", [t["generation"] for t in timed])):
        rows = [sorted(receipts[g]) for g in gens if len(receipts.get(g, [])) == args.hosts]
        if not rows:
            continue
        first = statistics.median(r[0] for r in rows)
        middle = statistics.median(statistics.median(r) for r in rows)
        last = statistics.median(r[-1] for r in rows)
        per_host = statistics.median((r[-1] - r[0]) / (len(r) - 1) for r in rows) if args.hosts > 1 else first
        print(
            f"  {label} (median of {len(rows)}): evaluate() -> first host {first * 1e3:.2f} ms, median host {middle * 1e3:.2f} ms, "
            f"last of {args.hosts} hosts {last * 1e3:.2f} ms; per additional host {per_host * 1e3:.2f} ms "
            f"= {per_host / reference:.2f}x the raw transfer"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=16, help="simulated worker hosts (default 16)")
    parser.add_argument("--credit", type=int, default=36, help="tasks each host holds at once (default 36 = 18 evaluators x prefetch 2)")
    parser.add_argument(
        "--result-batch",
        type=int,
        default=0,
        help="results per RESULT message (default 0: all the tasks of a TASKS message in one RESULT); "
        "1 is what a real host sends when its evaluators finish one at a time",
    )
    parser.add_argument("--pairs", type=int, default=25_000, help="pair tasks per timed generation (default 25,000)")
    parser.add_argument("--evals", type=int, default=0, help="eval tasks per timed generation (default 0)")
    parser.add_argument("--generations", type=int, default=5, help="timed generations (default 5)")
    parser.add_argument("--broadcasts", type=int, default=5, help="θ broadcast generations (default 5)")
    parser.add_argument("--params", type=int, default=1_700_000, help="θ size in float32 (default 1,700,000)")
    parser.add_argument("--obs-dim", type=int, default=17, help="observation size (default 17)")
    parser.add_argument("--table-size", type=int, default=25_000_000, help="noise table size announced to hosts")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the master over the timed generations")
    parser.add_argument("--quick", action="store_true", help="4 hosts, 5,000 pairs, 2 generations, 2 broadcasts")
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    if args.quick:
        args.hosts, args.pairs, args.generations, args.broadcasts = 4, 5_000, 2, 2
    if (
        args.hosts < 1
        or args.credit < 1
        or args.result_batch < 0
        or args.pairs < 1
        or args.generations < 1
        or args.params > args.table_size
    ):
        parser.error("hosts, credit, pairs and generations must be >= 1, and params <= table size")
    run(args)


if __name__ == "__main__":
    main()
