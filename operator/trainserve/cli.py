"""The `trainserve` command line: validate, render and CRDs; local training and serving; the operator itself."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from .api.crd import all_crds, crd_filename
from .api.storage import DEFAULT_VOLUMES_DIR, VOLUMES_DIR_ENV, tensorboard_logdir
from .api.validation import InvalidResource, as_stored, load_documents, validate_document
from .builders.raypod import SERVE_PORT
from .localstate import DEFAULT_STATE_DIR, STATE_DIR_ENV, list_jobs, state_dir


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (a RayService's ``serveConfigV2``, entrypoints) as readable ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(document: object) -> str:
    """YAML as we write it everywhere: block style, keys sorted, no line folding."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=True, width=10_000, default_flow_style=False)


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")


def cmd_validate(args: argparse.Namespace) -> int:
    """Check each document of each file; print every problem with its field path and a fix."""
    failed = False
    for path in args.filename:
        try:
            documents = load_documents(_read(path))
        except InvalidResource as invalid:
            for problem in invalid.problems:
                print(f"{path}: {problem}")
            failed = True
            continue
        except OSError as err:
            print(f"{path}: cannot read: {err.strerror}", file=sys.stderr)
            failed = True
            continue
        for index, document in enumerate(documents):
            label = path if len(documents) == 1 else f"{path}[{index}]"
            name = document.get("metadata", {}).get("name", "?") if isinstance(document, dict) else "?"
            kind = document.get("kind", "?") if isinstance(document, dict) else "?"
            problems = validate_document(document)
            if problems:
                failed = True
                for problem in problems:
                    print(f"{label}: {kind}/{name}: {problem}")
            elif not args.quiet:
                print(f"{label}: {kind}/{name}: valid")
    return 1 if failed else 0


def cmd_crds(args: argparse.Namespace) -> int:
    """Print the CRDs, or write one file each into a folder."""
    crds = all_crds()
    if args.output_dir is None:
        sys.stdout.write("---\n".join(dump_yaml(crd) for crd in crds))
        return 0
    folder = Path(args.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    header = "# Generated from the trainserve API models by `make crds`; do not edit.\n"
    for crd in crds:
        (folder / crd_filename(crd)).write_text(header + dump_yaml(crd), encoding="utf-8")
    return 0


def _load_valid(path: str, kinds: tuple[str, ...] = ("TrainingJob", "ModelService")) -> list[dict[str, Any]]:
    """The documents of ``kinds`` in a file, validated; exits with the problems printed when one is invalid."""
    documents = load_documents(_read(path))
    selected = [d for d in documents if isinstance(d, dict) and d.get("kind") in kinds]
    problems = [(d, p) for d in selected for p in validate_document(d)]
    if problems:
        for document, problem in problems:
            name = document.get("metadata", {}).get("name", "?")
            print(f"{path}: {document.get('kind')}/{name}: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return [as_stored(d) for d in selected]


def _load_kind(path: str, kind: str) -> list[dict[str, Any]]:
    """The documents of one kind in a file, validated; exits with the problems printed when invalid."""
    selected = _load_valid(path, (kind,))
    if not selected:
        raise SystemExit(f"{path}: no {kind} in this file")
    return selected


def _use_volumes_dir(folder: str | None) -> None:
    """``--volumes-dir``: where ``pvc://`` claims are for this run (the workloads read the variable)."""
    if folder:
        os.environ[VOLUMES_DIR_ENV] = os.path.abspath(folder)


def _shutdown_ray_if_started() -> None:
    """Ray's shutdown, if this command imported Ray at all (one worker trains without it)."""
    ray = sys.modules.get("ray")
    if ray is not None:
        ray.shutdown()


def cmd_local_train(args: argparse.Namespace) -> int:
    """Train each TrainingJob of a file on this machine: one worker in this process, more on a local Ray."""
    from trainserve_workloads.lifecycle import use_loopback_ray

    use_loopback_ray()  # before Ray is first imported
    from trainserve_workloads.errors import WorkloadError
    from trainserve_workloads.lifecycle import handle_stop_signals, kill_everything_started, leaves_nothing_behind
    from trainserve_workloads.local import train_locally

    _use_volumes_dir(args.volumes_dir)
    root = state_dir(args.state_dir)
    code: int = 0
    handle_stop_signals(hurry=kill_everything_started)
    with leaves_nothing_behind(_shutdown_ray_if_started):
        for document in _load_kind(args.filename, "TrainingJob"):
            try:
                result: tuple[int, str] = train_locally(
                    document,
                    root,
                    restart=args.restart,
                    progress_bar=not args.no_progress,
                    verbose=args.verbose,
                    ray=args.ray,
                )
            except WorkloadError as err:
                print(f"{args.filename}: {err.path}: {err.message}\n  fix: {err.fix}", file=sys.stderr)
                return 2
            code, outcome = result
            print(outcome)
            if code:
                return code
    return code


def cmd_local_serve(args: argparse.Namespace) -> int:
    """Serve a ModelService on a local Ray until Ctrl-C or SIGTERM."""
    from trainserve_workloads.lifecycle import use_loopback_ray

    use_loopback_ray()  # before Ray is first imported
    from trainserve.api.modelservice import ModelService
    from trainserve.api.serving import AUTH_TOKEN_ENV
    from trainserve_workloads.errors import WorkloadError
    from trainserve_workloads.lifecycle import handle_stop_signals, kill_everything_started, leaves_nothing_behind
    from trainserve_workloads.local_serve import local_args, serve_until_stopped, shutdown_local_ray, start, urls

    _use_volumes_dir(args.volumes_dir)
    documents = _load_kind(args.filename, "ModelService")
    if len(documents) != 1:
        print(f"{args.filename}: holds {len(documents)} ModelServices; serve one per command", file=sys.stderr)
        return 2
    service = ModelService.model_validate(documents[0])
    token = Path(args.token_file).read_text().strip() if args.token_file else os.environ.get(AUTH_TOKEN_ENV)
    handle_stop_signals(hurry=kill_everything_started)
    with leaves_nothing_behind(shutdown_local_ray):
        try:
            running_args = local_args(service, state_dir(args.state_dir))
            if args.grpc_port is not None:
                running_args = running_args.model_copy(update={"grpc_port": args.grpc_port or None})
            running = start(running_args, host=args.host, port=args.port, token=token)
        except WorkloadError as err:
            print(f"{args.filename}: {err.path}: {err.message}\n  fix: {err.fix}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("stopped while starting", flush=True)
            return 0
        print(f"serving {running.name} (Ctrl-C to stop)")
        for label, url in urls(running).items():
            print(f"  {label:<10} {url}")
        sys.stdout.flush()
        try:
            serve_until_stopped(service, running, running_args, state_dir(args.state_dir))
        except KeyboardInterrupt:
            print("stopping...", flush=True)
    return 0


def cmd_local_status(args: argparse.Namespace) -> int:
    """List local TrainingJobs and their state."""
    jobs = list_jobs(state_dir(args.state_dir))
    if not jobs:
        print("no local TrainingJobs yet: run `trainserve local train -f FILE`")
        return 0
    rows = [("NAME", "PHASE", "EPOCH", "LOSS", "VAL_ACCURACY", "MODEL")]
    for job in jobs:
        status = job.status
        progress = status.progress if status else None
        metrics = progress.metrics if progress else {}
        epoch = f"{progress.epoch}/{progress.total_epochs}" if progress and progress.epoch is not None else "-"
        model = status.model.uri if status and status.model and status.model.uri else "-"
        rows.append(
            (
                job.metadata.name or "?",
                (status.phase if status else None) or "Pending",
                epoch,
                f"{metrics['loss']:.4f}" if "loss" in metrics else "-",
                f"{metrics['val_accuracy']:.4f}" if "val_accuracy" in metrics else "-",
                model,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
    return 0


def _tensorboard_logdirs(jobs: list[Any]) -> dict[str, str]:
    """Each job's TensorBoard logdir as TensorBoard reads it: a local folder, or the URI (s3://) as written."""
    from trainserve_workloads.storage import locate

    logdirs = {}
    for job in jobs:
        uri = (job.status.tensorboard if job.status else None) or tensorboard_logdir(job.spec.output.uri)
        where = locate(uri)
        logdirs[job.metadata.name or "?"] = where.path if where.is_local else uri
    return logdirs


def cmd_local_tensorboard(args: argparse.Namespace) -> int:
    """Replace this process with TensorBoard on the local TrainingJobs' event files (one run folder per attempt)."""
    import importlib.util

    _use_volumes_dir(args.volumes_dir)
    jobs = [job for job in list_jobs(state_dir(args.state_dir)) if args.job in (None, job.metadata.name)]
    if not jobs:
        known = (args.job and f"no local TrainingJob named {args.job!r}") or "no local TrainingJobs yet"
        print(f"error: {known}: run `trainserve local train -f FILE` first (see `trainserve local status`)")
        return 1
    if importlib.util.find_spec("tensorboard") is None:
        print("error: TensorBoard is not installed: pip install 'trainserve[tracking]'")
        return 1
    logdirs = _tensorboard_logdirs(jobs)
    where = (
        ["--logdir", logdirs[args.job]]
        if args.job
        else ["--logdir_spec", ",".join(f"{name}:{path}" for name, path in logdirs.items())]
    )
    command = [sys.executable, "-m", "tensorboard.main", *where, "--host", args.host, "--port", str(args.port)]
    print(f"TensorBoard on http://{args.host}:{args.port}/ for {', '.join(logdirs)}", flush=True)
    os.execv(sys.executable, command)


def cmd_run(args: argparse.Namespace) -> int:
    """Start the operator (blocks)."""
    from .runner import run
    from .settings import settings_from

    settings = settings_from(
        namespaces=tuple(args.namespace) if args.namespace else None,
        all_namespaces=args.all_namespaces or None,
        standalone=args.standalone or None,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
        image=args.image,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
    )
    run(settings, verbose=args.verbose)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """Copy a TrainingJob attempt's driver output or a ModelService replica's log to stdout."""
    from .podlogs import run_logs

    return run_logs(args.target, args.namespace, args.attempt, args.worker, args.follow)


def cmd_render(args: argparse.Namespace) -> int:
    """Print the objects the operator would create for each TrainingJob and ModelService of a file."""
    from .api.modelservice import ModelService
    from .api.trainingjob import TrainingJob
    from .builders.networkpolicy import build_network_policy
    from .builders.rayjob import build_rayjob
    from .builders.rbac import build_status_access
    from .settings import settings_from

    settings = settings_from(image=args.image)
    documents = _load_valid(args.filename)  # names included: their rules are the kinds' own
    jobs = [TrainingJob.model_validate(d) for d in documents if d.get("kind") == "TrainingJob"]
    services = [ModelService.model_validate(d) for d in documents if d.get("kind") == "ModelService"]
    if not jobs and not services:
        raise SystemExit(f"{args.filename}: no TrainingJob or ModelService in this file")
    out: list[dict[str, Any]] = []
    resources: list[TrainingJob | ModelService] = [*jobs, *services]
    for resource in resources:
        resource.metadata.namespace = args.namespace or resource.metadata.namespace or "default"
    for job in jobs:
        if args.with_access:
            out.extend(build_status_access(job))
        out.append(build_rayjob(job, settings, attempt=args.attempt))
        out.append(build_network_policy(job, settings))
    for service in services:
        out.extend(_render_service(service, jobs, settings, args.filename))
    sys.stdout.write("---\n".join(dump_yaml(obj) for obj in out))
    return 0


def _render_service(service: Any, jobs: list[Any], settings: Any, filename: str) -> list[dict[str, Any]]:
    """A ModelService's RayService and NetworkPolicy; ``fromTrainingJob`` becomes that job's output folder
    (its newest version) when the job is in the same file, else a placeholder the operator fills in."""
    from .api.serving import ModelTarget, serve_args
    from .builders.networkpolicy import build_network_policy
    from .builders.rayservice import build_rayservice

    outputs = {job.metadata.name: job.spec.output.uri for job in jobs}

    def target(ref: Any, where: str) -> ModelTarget:
        if ref.uri is not None:
            return ModelTarget(uri=ref.uri)
        name = ref.from_training_job.name
        if name in outputs:
            return ModelTarget(uri=outputs[name])
        print(
            f"{filename}: ModelService/{service.metadata.name}: {where}.fromTrainingJob: TrainingJob {name!r} is not "
            "in this file; rendered with a placeholder the operator replaces with that job's model",
            file=sys.stderr,
        )
        return ModelTarget(uri=f"<status.model.uri of TrainingJob {name}>")

    canary_ref = service.spec.canary.model if service.spec.canary else None
    canary = target(canary_ref, "spec.canary.model") if canary_ref is not None else None
    args = serve_args(service, target(service.spec.model, "spec.model"), canary)
    secret = service.spec.storage_secret_ref.name if service.spec.storage_secret_ref else None
    return [build_rayservice(service, args, settings, secret), build_network_policy(service, settings)]


#: What ``add_subparsers`` returns.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    # Installed as `kubectl-trainserve` too: kubectl runs it for `kubectl trainserve ...` (a kubectl plugin).
    prog = "kubectl trainserve" if Path(sys.argv[0]).name.startswith("kubectl-") else "trainserve"
    parser = argparse.ArgumentParser(prog=prog, description="Kubernetes-native training and serving on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_file_commands(commands)
    _add_run(commands)
    _add_logs(commands)
    _add_local(commands)
    return parser


def _add_file_commands(commands: Commands) -> None:
    """validate, crds, render: commands that read or write files and need no cluster."""
    validate = commands.add_parser("validate", help="check TrainingJob/ModelService YAML against the API")
    validate.add_argument(
        "-f", "--filename", action="append", required=True, help="YAML file ('-' for stdin); repeatable"
    )
    validate.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    validate.set_defaults(func=cmd_validate)

    crds = commands.add_parser("crds", help="print the CustomResourceDefinitions")
    crds.add_argument("-o", "--output-dir", help="write one file per CRD into this folder instead")
    crds.set_defaults(func=cmd_crds)

    render = commands.add_parser(
        "render", help="print what the operator would create: RayJobs, RayServices, NetworkPolicies"
    )
    render.add_argument(
        "-f", "--filename", required=True, help="YAML file with TrainingJobs and ModelServices ('-' for stdin)"
    )
    render.add_argument("--namespace", help="namespace to render for (default: the document's, or `default`)")
    render.add_argument("--attempt", type=int, default=1, help="attempt number (default 1)")
    render.add_argument("--image", help="workload image when the spec sets none (env TRAINSERVE_IMAGE)")
    render.add_argument(
        "--with-access", action="store_true", help="also print the per-job ServiceAccount, Role and RoleBinding"
    )
    render.set_defaults(func=cmd_render)


def _add_run(commands: Commands) -> None:
    run = commands.add_parser("run", help="run the operator (Kopf) against the current cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", help="namespace to serve; repeatable (env TRAINSERVE_NAMESPACES)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    run.add_argument("--standalone", action="store_true", help="no peering/leader election (a single replica)")
    run.add_argument(
        "--peering", help="Kopf peering object for leader election; created when missing (env TRAINSERVE_PEERING_NAME)"
    )
    run.add_argument(
        "--liveness", help="health endpoint URL, e.g. http://0.0.0.0:8081/healthz (env TRAINSERVE_LIVENESS_ENDPOINT)"
    )
    run.add_argument("--image", help="default workload image of the Ray pods (env TRAINSERVE_IMAGE)")
    run.add_argument(
        "--metrics-port", type=int, help="port of /metrics, 0 disables it (env TRAINSERVE_METRICS_PORT, default 9090)"
    )
    run.add_argument(
        "--log-format", choices=["json", "text"], help="log format (env TRAINSERVE_LOG_FORMAT, default text)"
    )
    run.add_argument("--verbose", action="store_true", help="debug logs")
    run.set_defaults(func=cmd_run)


def _add_logs(commands: Commands) -> None:
    logs = commands.add_parser(
        "logs", help="print a TrainingJob's driver output (tj/NAME) or a ModelService replica's log (ms/NAME)"
    )
    logs.add_argument("target", metavar="tj/NAME|ms/NAME", help="the TrainingJob or ModelService")
    logs.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's, else `default`)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as the log grows")
    logs.add_argument("--attempt", type=int, help="a TrainingJob's attempt (default: the current one)")
    logs.add_argument("--worker", type=int, metavar="K", help="the K-th worker pod (by name, from 0) instead")
    logs.set_defaults(func=cmd_logs)


def _add_local(commands: Commands) -> None:
    local = commands.add_parser("local", help="run resources on this machine with a local Ray (no cluster)")
    local_commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    state_help = f"local state folder (default ${STATE_DIR_ENV} or ./{DEFAULT_STATE_DIR})"
    volumes_help = (
        f"where pvc://CLAIM/PATH lives locally: FOLDER/CLAIM/PATH (default ${VOLUMES_DIR_ENV} or {DEFAULT_VOLUMES_DIR})"
    )
    train = local_commands.add_parser(
        "train", help="train a TrainingJob YAML on this machine, resuming from checkpoints"
    )
    train.add_argument("-f", "--filename", required=True, help="YAML file with a TrainingJob")
    train.add_argument(
        "--restart", action="store_true", help="discard checkpoints and a finished run; train from scratch"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs and CI)")
    train.add_argument("--verbose", action="store_true", help="show Ray and TensorFlow logs")
    train.add_argument(
        "--ray",
        action="store_true",
        help="train one worker under Ray Train too, as on a cluster (by default one worker trains in this process, "
        "without Ray's start-up; several workers, runtimeEnv.pip or a remote workingDir always use Ray)",
    )
    train.add_argument("--state-dir", help=state_help)
    train.add_argument("--volumes-dir", help=volumes_help)
    train.set_defaults(func=cmd_local_train)
    serve = local_commands.add_parser("serve", help="serve a ModelService YAML on a local Ray until Ctrl-C")
    serve.add_argument("-f", "--filename", required=True, help="YAML file with a ModelService")
    serve.add_argument("--port", type=int, default=SERVE_PORT, help=f"HTTP port (default {SERVE_PORT})")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--grpc-port",
        type=int,
        help="OIP gRPC port (default: the spec's grpc.port, 9000; 0 turns gRPC off)",
    )
    serve.add_argument(
        "--token-file", help="file holding the bearer token when spec.auth is set (or $TRAINSERVE_AUTH_TOKEN)"
    )
    serve.add_argument("--state-dir", help=state_help)
    serve.add_argument("--volumes-dir", help=volumes_help)
    serve.set_defaults(func=cmd_local_serve)
    status = local_commands.add_parser("status", help="list local TrainingJobs")
    status.add_argument("--state-dir", help=state_help)
    status.set_defaults(func=cmd_local_status)
    board = local_commands.add_parser("tensorboard", help="start TensorBoard on the local TrainingJobs' curves")
    board.add_argument("job", nargs="?", help="one TrainingJob (default: all of them)")
    board.add_argument("--port", type=int, default=6006, help="HTTP port (default 6006)")
    board.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    board.add_argument("--state-dir", help=state_help)
    board.add_argument("--volumes-dir", help=volumes_help)
    board.set_defaults(func=cmd_local_tensorboard)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
