"""The ``esfast`` command (``esfast train``, ``slurm``, ``ray``, ``play``, ``plot``, ``configs``, ``keys``) and ``esfast-master``.

``esfast train`` is a master on a loopback port plus one worker host on this machine;
``esfast-master`` is the same master on an address worker hosts of other machines connect to
(``esfast-worker``, in :mod:`esfast.distributed.host`); ``esfast ray`` is that master with one
worker host on every node of a Ray cluster (:mod:`esfast.clusters.ray`, imported only then).
Errors a user can fix (bad config, unknown environment, mismatched checkpoint, an address in use)
end the command with one line on stderr and exit status 2; Ctrl-C (or SIGTERM) during training
keeps the checkpoint of the last completed generation (every generation is checkpointed as it
ends), tells the worker hosts to stop and exits with status 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from esfast import __version__
from esfast.api import load_policy
from esfast.clusters import slurm
from esfast.config import DEFAULT_CONFIG, Config, apply_overrides, load_config, resolve_config, shipped_configs, validate
from esfast.distributed.audit import AUDIT_ACTIONS
from esfast.distributed.keys import MASTER_DIR, MasterKeys, load_master_keys, make_keys, worker_dirs
from esfast.distributed.master import Master
from esfast.distributed.protocol import check_endpoint
from esfast.env_defaults import config_for_env
from esfast.envs import make_env
from esfast.errors import CheckpointError, ConfigError, EnvError, TrainingDiverged, UserError, WorkerError
from esfast.media.plotting import DEFAULT_OUT, DEFAULT_X, DEFAULT_Y, X_FIELDS, plot_runs
from esfast.policies import make_policy
from esfast.run_directory import default_run_path
from esfast.run_options import add_run_options
from esfast.tasks import WorkerSetup
from esfast.training import Trainer, resolved_config

logger = logging.getLogger("esfast")

DEFAULT_BIND = "tcp://127.0.0.1:5555"
# Errors whose message tells the user what to change; anything else is a bug and keeps its traceback.
# OSError covers the machine's answers: no memory for the noise table, an unwritable run directory.
USER_ERRORS = (UserError, OSError)


def _budget(config: Config, args: argparse.Namespace) -> Config:
    run = config.run
    if args.generations is not None:
        run = dataclasses.replace(run, generations=args.generations, timesteps=None)
    if args.timesteps is not None:
        run = dataclasses.replace(run, timesteps=args.timesteps, generations=None)
    if args.workers is not None:
        run = dataclasses.replace(run, workers=args.workers)
    if args.tensorboard:
        run = dataclasses.replace(run, tensorboard=True)
    config = dataclasses.replace(config, run=run)
    validate(config)
    return config


def _describe(trainer: Trainer) -> str:
    policy = trainer.policy
    config = trainer.config
    network = policy.describe()
    local = isinstance(trainer.evaluator, Master) and trainer.evaluator.local is not None
    where = f"{trainer.workers} worker{'s' if trainer.workers > 1 else ''}" if local else "remote worker hosts"
    return (
        f"esfast: {config.env_id} | policy {network} "
        f"({policy.num_params:,} parameters) | {config.pop_pairs} pairs per generation | {where} | run directory {trainer.out_dir}"
    )


def exposed_without_keys(bind: str) -> str | None:
    """The warning for a master bound to ``bind`` without keys, or None if only this machine can reach it.

    Loopback addresses (127.0.0.0/8, ::1, localhost) and ``ipc://`` paths are this machine's;
    anything else (0.0.0.0, ``*``, a LAN address, a host or interface name) may be reached by others.
    """
    scheme, _, rest = bind.partition("://")
    if scheme != "tcp":
        return None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if local:
        return None
    return (
        f"warning: {bind} accepts other machines without keys: anyone who reaches this port can join the run "
        "and steer it, in plain text (make keys with: esfast keys DIR; then esfast-master --keys DIR/master)"
    )


def _master(bind: str, setup: WorkerSetup, keys: MasterKeys | None, args: argparse.Namespace) -> Master:
    """The master of ``esfast-master``, with its trust options."""
    return Master(bind, setup, keys=keys, allow_mixed_versions=args.allow_mixed_versions, audit=args.audit, audit_action=args.audit_action)


def cmd_train(args: argparse.Namespace, on_master: Callable[[Master], None] | None = None) -> int:
    """``esfast train`` and ``esfast-master`` (which has ``args.bind``); ``on_master`` is called
    with the master once it listens (``esfast ray`` starts its worker hosts there)."""
    command = getattr(args, "command_name", None) or ("esfast-master" if args.bind else "esfast train")
    keys = None
    if args.bind:
        check_endpoint(args.bind, bind=True)
        if getattr(args, "keys", None) is not None:
            keys = load_master_keys(args.keys)
        elif (warning := exposed_without_keys(args.bind)) is not None:
            logger.warning(warning)  # the first line the master prints
    if args.resume:
        out_dir = Path(args.resume)
        if not (out_dir / "checkpoints" / "latest.npz").exists():
            raise CheckpointError(f"{out_dir} holds no checkpoints/latest.npz to resume from")
        if args.config is not None or args.env is not None or args.set or args.seed is not None:
            raise ConfigError(
                "--resume continues a run with its own config; only --generations, --timesteps, --workers and --tensorboard may change"
            )
        config = _budget(resolved_config(out_dir), args)
    else:
        overrides = list(args.set)
        if args.config is None and args.env is not None:  # the env's shipped config, or its kind's defaults
            config = config_for_env(args.env, args.env_module)
        else:  # a config (default: halfcheetah), its environment replaced by --env if given
            config = resolve_config(args.config)
            if args.env is not None:
                overrides.append(f"env_id={args.env}")
        if args.env_module is not None:
            overrides.append(f"env_module={args.env_module}")
        if args.seed is not None:
            overrides.append(f"run.seed={args.seed}")
        config = _budget(apply_overrides(config, overrides), args)
        out_dir = Path(args.out) if args.out else default_run_path(config.exp_prefix)
    bind = args.bind
    latest = out_dir / "checkpoints" / "latest.npz"
    with Trainer(
        config,
        out_dir,
        resume=bool(args.resume),
        evaluator=(lambda setup, table: _master(bind, setup, keys, args)) if bind else None,
    ) as trainer:
        logger.info(_describe(trainer))
        if isinstance(trainer.evaluator, Master) and bind:  # the master, with the address it bound
            logger.info(
                "master listening at %s%s; start worker hosts with: esfast-worker --master %s%s",
                trainer.evaluator.endpoint,
                " (CURVE keys: encrypted, listed workers only)" if keys is not None else "",
                trainer.evaluator.endpoint.replace("0.0.0.0", "HOST"),
                " --keys DIR/worker-N" if keys is not None else "",
            )
        if on_master is not None and isinstance(trainer.evaluator, Master):
            on_master(trainer.evaluator)
        if config.run.generations is None and config.run.timesteps is None:
            logger.info("no budget set (--generations, --timesteps): training until Ctrl-C")
        elif trainer.done():
            logger.info(
                "the run has already spent its budget (generation %d, %s timesteps): raise --generations or --timesteps to go on",
                trainer.generation,
                f"{trainer.timesteps_total:,}",
            )
        try:
            trainer.train()
        except WorkerError as error:
            where = (
                f"the last checkpoint is {latest}\ncontinue with: {command} --resume {out_dir}"
                if latest.exists()
                else "no generation was completed, so there is no checkpoint yet"
            )
            print(f"{command}: error: {error} during generation {trainer.generation + 1}; {where}", file=sys.stderr)
            return 1
        except TrainingDiverged as error:
            print(f"{command}: error: {error} ({latest})", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                f"\ninterrupted after generation {trainer.generation}; checkpoint {latest}\ncontinue with: {command} --resume {out_dir}",
                file=sys.stderr,
            )
            return 130
        logger.info("done: %d generations, %s timesteps; checkpoint %s", trainer.generation, f"{trainer.timesteps_total:,}", latest)
    return 0


def cmd_slurm(args: argparse.Namespace) -> int:
    """``esfast slurm``: writes the batch script and submits it (with ``--dry-run``: writes and prints it)."""
    if not args.dry_run:
        slurm.require_sbatch()
    job = slurm.job_from_args(args)
    script = slurm.write_script(job)
    if args.dry_run:
        print(script.read_text(), end="")
        print(f"wrote {script} (not submitted); submit it with: sbatch {script}", file=sys.stderr)
        return 0
    job_id = slurm.submit(script)
    nodes = f"{job.nodes} node{'s' if job.nodes > 1 else ''}"
    print(f"submitted job {job_id}: {nodes}, run directory {job.out} (script {script})")
    print(f"follow it:  squeue -j {job_id}   tail -f {job.log(job_id)}   (progress: {job.out / 'log.jsonl'})")
    print(f"checkpoint and requeue it now:  scancel --batch --signal=USR1 {job_id}   checkpoint and stop it:  scancel {job_id}")
    return 0


def cmd_ray(args: argparse.Namespace) -> int:
    """``esfast ray``: the master here, one worker host per alive node of a Ray cluster (esfast.clusters.ray)."""
    from esfast.clusters.ray import check_keys_directory, connect, master_endpoint

    keys_dir = Path(args.keys) if args.keys is not None else None
    if keys_dir is not None:
        args.keys = check_keys_directory(keys_dir)  # the master's folder; the workers' come from the pool
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0 to 65535, got {args.port}")
    with connect(args.address) as cluster:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # ray.init set its own: terminate like Ctrl-C
        nodes = cluster.nodes()
        logger.info(
            "esfast ray: connected to the Ray cluster at %s: %d node%s with CPUs (%g CPUs)",
            args.address,
            len(nodes),
            "" if len(nodes) == 1 else "s",
            sum(node.cpus for node in nodes),
        )
        args.bind = master_endpoint(args.host or cluster.driver_address(), args.port)
        args.command_name = f"esfast ray --address {args.address}"

        def start_hosts(master: Master) -> None:  # once the master listens, at its bound address
            cluster.watch(master.endpoint, keys_dir)

        return cmd_train(args, on_master=start_hosts)


def _check_display() -> None:
    """Refuses --render where no window can open: GLFW would abort the process instead."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise EnvError(
            "--render needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set (run without --render, or under a desktop or Xvfb)"
        )


def cmd_play(args: argparse.Namespace) -> int:
    """``esfast play``: a checkpoint's policy as in evaluation episodes, its returns, and with ``--video`` a video of it."""
    from esfast.media.offscreen import requested_backend
    from esfast.media.video import FrameRecorder, VideoWriter, check_video_path, frame_rate, screen_reader

    size = {name: getattr(args, name) for name in ("width", "height") if getattr(args, name) is not None}
    for name, value in [*size.items(), ("fps", args.fps)]:
        if value is not None and value <= 0:
            raise UserError(f"--{name} must be positive, got {value}")
    if (size or args.fps is not None) and not args.video:
        raise UserError("--width, --height and --fps are options of --video")
    if args.video:
        check_video_path(args.video)  # PyAV installed, a known suffix, an existing folder: before any work
        logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's note on loading ("No OpenGL_accelerate module")
    if args.render:
        _check_display()
    policy = load_policy(args.checkpoint)
    atari = policy.config.atari is not None
    if size and atari:
        raise EnvError("--width and --height size MuJoCo renderings; an Atari video is the 210x160 ALE screen")
    if args.render and atari:
        raise EnvError("--render is not supported for Atari runs yet (the preprocessed environment has no window)")
    if args.video and not atari:
        requested_backend()  # a MUJOCO_GL that MuJoCo would fail on at import
    render_mode = {"render_mode": "human"} if args.render else {"render_mode": "rgb_array"} if args.video and not atari else {}
    try:
        env = policy.make_env(**render_mode, **size)
    except TypeError as error:  # an environment that takes no width or height
        raise EnvError(f"cannot make {policy.config.env_id!r} with --width/--height: {error}") from None
    video = None
    try:
        if args.video:
            read_screen, source = screen_reader(env)
            frame_skip = policy.config.atari.frame_skip if policy.config.atari is not None else None
            video = VideoWriter(args.video, frame_rate(env, frame_skip, fps=args.fps))
            env = FrameRecorder(env, video, read_screen)
        returns = []
        for episode in range(args.episodes):
            result = policy.run_episode(env, seed=args.seed + episode)
            returns.append(result.ret)
            print(f"episode {episode + 1}: return {result.ret:.2f}, length {result.length}")
        print(f"mean return over {len(returns)} episodes: {np.mean(returns):.2f} (std {np.std(returns):.2f})")
    finally:
        if video is not None:
            video.close()  # flushed before the environment (and its renderer) goes
        env.close()
    if video is not None:
        height, width = video.size or (0, 0)
        print(f"video: {video.path} ({video.frames} frames, {width}x{height}, {float(video.fps):g} fps, from {source})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``esfast plot``: writes the figure and says where."""
    out = plot_runs([Path(run) for run in args.runs], x=args.x, y=args.y, out=Path(args.out))
    print(f"plot written to {out}")
    return 0


def _add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    """The master's options for whom it trusts with what (``esfast-master``, ``esfast ray``)."""
    parser.add_argument(
        "--audit",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="have this fraction of finished tasks repeated by another worker host and compared bit for bit, e.g. 0.02 (default: 0)",
    )
    parser.add_argument(
        "--audit-action",
        choices=AUDIT_ACTIONS,
        default="log",
        help="on a mismatch: log it (default), or evict the host a third host contradicts and run its results again",
    )
    parser.add_argument(
        "--allow-mixed-versions",
        action="store_true",
        help="admit, with a warning, worker hosts whose esfast, numpy, gymnasium, mujoco or ale-py versions or whose "
        "environment's fingerprint differ from this machine's (by default they are refused)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``esfast train`` and ``esfast-master`` share."""
    parser.add_argument(
        "config",
        nargs="?",
        help=f"config file, or the name of a shipped config (default: with --env, that environment's shipped config or its kind's"
        f" defaults; without, {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--env",
        help="gymnasium environment id: with CONFIG, replaces its environment; alone, runs the environment's shipped config"
        " or the defaults for its kind (docs/configs.md)",
    )
    add_run_options(parser, env_module_help="module to import before making the environment (registers custom envs)")
    parser.add_argument("--out", help="run directory (default: runs/<exp_prefix>-<time>)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    parser.set_defaults(handler=cmd_train)


def _parameters(config: Config) -> str:
    """The number of parameters of a config's policy on its environment (made here and closed), or
    ``?`` when the environment cannot be made here (a missing package or ROM)."""
    try:
        env = make_env(config.env_id, config.env_module, atari=config.atari, env_kwargs=config.env_kwargs)
    except UserError:
        return "?"
    try:
        # The Atari network's size does not depend on its reference batch: two blank observations do.
        shape = env.observation_space.shape or ()
        batch = None if config.atari is None else np.zeros((2, *shape), dtype=np.uint8)
        policy = make_policy(env.observation_space, env.action_space, config.policy, batch)
    except UserError:
        return "?"
    finally:
        env.close()
    return f"{policy.num_params:,}"


def cmd_keys(args: argparse.Namespace) -> int:
    """``esfast keys DIR``: CURVE key pairs for a master and its workers (see esfast.distributed.keys)."""
    directory = Path(args.directory)
    made_master, made = make_keys(directory, args.workers)
    master = directory / MASTER_DIR
    print(f"{'made' if made_master else 'kept'} the master's keys: {master}")
    for folder in worker_dirs(directory):
        print(f"{'made' if folder in made else 'kept'} worker keys: {folder}")
    print(f"copy {master} to the master's machine only:  esfast-master --keys {master} --bind tcp://0.0.0.0:5555 ...")
    print(f"copy each worker-N folder to one worker's machine:  esfast-worker --keys {directory / 'worker-N'} --master tcp://HOST:5555")
    print("the .key_secret files are secret: keep each on its own machine")
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    """``esfast configs``: the shipped configs, one line each (each environment is made, one at a time,
    for its policy's parameter count)."""
    rows = [("name", "task", "policy", "parameters", "pairs", "budget")]
    config_logger = logging.getLogger("esfast.config")
    level = config_logger.level
    config_logger.setLevel(logging.ERROR)  # a listing, not a run: no notes about what a run would ignore
    try:
        configs = {name: load_config(path) for name, path in shipped_configs().items()}
    finally:
        config_logger.setLevel(level)
    for name, config in configs.items():
        run = config.run
        budget = (
            f"{run.timesteps:,} timesteps"
            if run.timesteps is not None
            else f"{run.generations:,} generations"
            if run.generations is not None
            else "none"
        )
        network = f"{config.policy.type} {'x'.join(map(str, config.policy.hidden_dims))} {config.policy.nonlin_type}"
        rows.append((name, config.env_id, network, _parameters(config), str(config.pop_pairs), budget))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esfast", description="Evolution strategies (OpenAI-ES) for gymnasium environments.")
    parser.add_argument("--version", action="version", version=f"esfast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    configs = commands.add_parser(
        "configs",
        help="list the shipped configs",
        description="List the configs that ship with esfast: task, policy, its parameter count, pairs per generation, budget.",
    )
    configs.set_defaults(handler=cmd_configs)

    train = commands.add_parser("train", help="train a policy", description="Train a policy with OpenAI-ES on this machine.")
    _add_run_arguments(train)
    train.add_argument("--workers", type=int, help="local evaluator processes (default: one per core)")
    train.set_defaults(bind=None)

    play = commands.add_parser(
        "play",
        help="run a saved policy",
        description="Run a checkpoint's policy as in the run's evaluation episodes (no action noise, the run's episode cutoff) "
        "and print its returns.",
    )
    play.add_argument("checkpoint", help="a checkpoint file (.npz), or a run directory (its latest checkpoint)")
    play.add_argument("--episodes", type=int, default=5, help="episodes to run (default: 5)")
    play.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    shown = play.add_mutually_exclusive_group()
    shown.add_argument("--render", action="store_true", help="show the environment in a window")
    shown.add_argument(
        "--video", metavar="FILE.mp4", help="record the episodes into one video (.mp4, .mkv or .mov), no display needed (esfast[video])"
    )
    play.add_argument("--width", type=int, help="video width in pixels, MuJoCo (default: the environment's, 480)")
    play.add_argument("--height", type=int, help="video height in pixels, MuJoCo (default: the environment's, 480)")
    play.add_argument("--fps", type=float, help="video frames per second (default: the environment's speed; Atari: 60 / frame_skip)")
    play.set_defaults(handler=cmd_play)

    keys = commands.add_parser(
        "keys",
        help="make CURVE keys for a cluster",
        description="Make key pairs for esfast-master --keys and esfast-worker --keys: DIR/master for the master's machine, "
        "DIR/worker-N for each worker's. Existing keys are kept; a larger --workers adds workers.",
    )
    keys.add_argument("directory", metavar="DIR", help="the keys folder (created if missing)")
    keys.add_argument("--workers", type=int, default=1, help="worker key pairs the folder should hold (default: 1)")
    keys.set_defaults(handler=cmd_keys)

    ray = commands.add_parser(
        "ray",
        help="train on a Ray cluster: the master here, one worker host per node",
        description="Train on a Ray cluster (needs esfast[ray]): the master runs in this driver, and every alive Ray node with a "
        "CPU runs one esfast-worker holding all of its CPUs, placed again as nodes join and leave (docs/clusters.md).",
    )
    _add_run_arguments(ray)
    ray.add_argument("--address", required=True, help="the Ray cluster: HOST:PORT of its head (ray start --head prints it), or auto")
    ray.add_argument("--keys", metavar="DIR", help="the keys folder of esfast keys DIR: DIR/master for the master, a DIR/worker-K per node")
    ray.add_argument("--port", type=int, default=5555, help="the master's port, which every node must reach (default: 5555; 0: any)")
    ray.add_argument("--host", metavar="IP", help="the address the nodes reach the master at (default: this driver's node address in Ray)")
    _add_trust_arguments(ray)
    ray.set_defaults(handler=cmd_ray, workers=None)

    plot = commands.add_parser(
        "plot",
        help="draw learning curves of run directories",
        description=(
            "Draw learning curves of run directories into an image (needs esfast[plot]). Runs that differ only in their seed "
            "are drawn as one median line with a band from their minimum to their maximum."
        ),
    )
    plot.add_argument("runs", nargs="+", metavar="RUN", help="a run directory (config.json and log.jsonl)")
    plot.add_argument("--x", choices=tuple(X_FIELDS), default=DEFAULT_X, help=f"the x axis (default: {DEFAULT_X})")
    plot.add_argument(
        "--y", default=DEFAULT_Y, metavar="FIELD", help=f"the log field to draw, e.g. return_mean, return_max (default: {DEFAULT_Y})"
    )
    plot.add_argument("--out", default=DEFAULT_OUT, metavar="FILE", help=f"the image to write (default: {DEFAULT_OUT} here)")
    plot.set_defaults(handler=cmd_plot)

    slurm_job = commands.add_parser(
        "slurm",
        help="run on a Slurm cluster: one batch job, the master on its first node, a worker on every node",
        description="Write DIR/esfast.sbatch and submit it with sbatch (docs/clusters.md, Slurm): esfast-master on the job's "
        "first node, one esfast-worker per node; before the time limit the master checkpoints and the job requeues itself.",
    )
    slurm.add_arguments(slurm_job)
    slurm_job.set_defaults(handler=cmd_slurm)
    return parser


def build_master_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esfast-master",
        description="Train a policy with OpenAI-ES; episodes run on worker hosts that connect with esfast-worker.",
    )
    _add_run_arguments(parser)
    parser.add_argument(
        "--bind", default=DEFAULT_BIND, help=f"address to listen on (default: {DEFAULT_BIND}; tcp://0.0.0.0:5555 accepts other machines)"
    )
    parser.add_argument(
        "--keys",
        metavar="DIR",
        help="the master's key folder (DIR/master of esfast keys DIR): accept only listed workers, over encrypted connections",
    )
    _add_trust_arguments(parser)
    parser.set_defaults(workers=None)
    return parser


def _run(args: argparse.Namespace) -> int:
    for name in ("generations", "timesteps", "workers", "episodes"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            print(f"{args.prog}: error: --{name} must be at least 1, got {value}", file=sys.stderr)
            return 2
    audit = getattr(args, "audit", None)
    if audit is not None and not 0.0 <= audit <= 1.0:
        print(f"{args.prog}: error: --audit must be a fraction in [0, 1], got {audit}", file=sys.stderr)
        return 2
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed < 2**63:
        print(f"{args.prog}: error: --seed must be in [0, 2**63), got {seed}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # terminate like Ctrl-C: checkpoint, stop the workers
    try:
        status: int = args.handler(args)
        return status
    except USER_ERRORS as error:
        print(f"{args.prog}: error: {error}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """``esfast``."""
    args = build_parser().parse_args(argv)
    args.prog = "esfast"
    return _run(args)


def master_main(argv: list[str] | None = None) -> int:
    """``esfast-master``."""
    args = build_master_parser().parse_args(argv)
    args.prog = "esfast-master"
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
