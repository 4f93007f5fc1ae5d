"""`python -m rig smoke aws|azure` (make smoke CLOUD=aws|azure): a bounded first real run.

A cautious first contact with a real account, in one command, costing cents: the cheapest GPU
size of the chosen cloud in the profile's region, `max_hours` forced to 1, the smallest model of
`bench.models`, one measured request of one workload (after the bench's own warm-up), through
the same deploy, provisioning, SSH tunnel and bench code as the full journey. It prints time to
first token, the decode rate and the cost so far, then destroys and verifies.

Once the cloud may have been touched (the deploy's first creating step: `pulumi` for Azure, the
CDK change set for AWS), every way out — a failure, Ctrl-C (once or more), SIGTERM, SIGHUP from
a closed terminal (output then goes to .state/smoke-hangup.log) — goes through the cloud's own
verified destroy, which no later signal stops; a destroy that cannot verify ends in exit 1
naming what is left and the exact command that finishes it. Before that step nothing exists and
nothing is destroyed. The smoke refuses to start while `.state/` records a VM on that cloud (its
destroy removes everything the project has there) or while another smoke holds the state dir.

The smoke's profile (rig.toml with those four changes) is written to .state/smoke/rig.toml:
the CDK app and the Pulumi program read the profile from a file.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from rig.catalog import Catalog, load_catalog
from rig.catalog.schema import Cloud
from rig.clihelp import path_arg
from rig.inventory import gpu_check_model
from rig.problems import CommandError
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.state import (
    STATE_DIR,
    STATE_DIR_HELP,
    VmState,
    ensure_writable,
    path_for,
    read_all,
    utc_now,
)
from rig.version import RIG

SMOKE_MAX_HOURS = 1
SMOKE_WORKLOAD = "chat-en"  # one case, short answer (the bench's --quick)
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Choice:
    instance: str
    region: str
    usd_per_hour: float  # on-demand, the cap a spot VM pays at most
    source: str


def _azure_on_demand(location: str, size: str) -> tuple[float, str] | None:
    from rig.azure.pricing import retail_price  # the public retail API, no sign-in

    quote = retail_price(location, size)
    if quote is not None and quote.on_demand:
        return quote.on_demand, quote.source
    return None


def cheapest(
    profile: Profile,
    cloud: Cloud,
    cat: Catalog | None = None,
    live: Callable[[str, str], tuple[float, str] | None] | None = None,
) -> Choice:
    """The cheapest GPU instance of `cloud` offered in the profile's region, by on-demand $/h:
    live where the cloud publishes it without credentials (Azure's retail prices API), else the
    catalog's figure for that region. Sizes with no price there are left out (never guessed)."""
    cat = cat or load_catalog()
    region = profile.aws.region if cloud == "aws" else profile.azure.location
    if live is None and cloud == "azure":
        live = _azure_on_demand
    priced: list[Choice] = []
    unpriced: list[str] = []
    for name, inst in sorted(cat.instances.items()):
        if inst.cloud != cloud or not inst.gpu or region not in inst.regions:
            continue
        figure = live(region, name) if live is not None else None
        if figure is None and (listed := inst.price_in(region)) is not None:
            figure = (listed.usd_per_hour, f"catalog {listed.source}")
        if figure is None:
            unpriced.append(name)
        else:
            priced.append(Choice(name, region, figure[0], figure[1]))
    if not priced:
        where = "aws.region" if cloud == "aws" else "azure.location"
        raise CommandError(
            f"smoke: no GPU size of {cloud} has a known price in {region} "
            f"({', '.join(unpriced) or 'none offered there'}) — set {where} to a region the "
            "catalog prices (python -m rig catalog)"
        )
    return min(priced, key=lambda c: (c.usd_per_hour, c.instance))


def smallest_model(profile: Profile, cat: Catalog) -> str:
    model = gpu_check_model(list(profile.bench.models), cat)  # the provisioning's own choice
    if not model:
        raise CommandError("smoke: bench.models is empty — list at least one model in rig.toml")
    return model


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def smoke_profile(profile: Profile, cloud: Cloud, choice: Choice, model: str, out: Path) -> Path:
    """Write the smoke's rig.toml: the user's, with the cloud's instance list, max_hours, the
    models and the bench narrowed; the other cloud disabled. Validated like any profile."""
    data = profile.as_toml_dict()
    other: Cloud = "azure" if cloud == "aws" else "aws"
    data[other]["enabled"] = False
    data[cloud]["enabled"] = True
    data[cloud]["instance_types" if cloud == "aws" else "vm_sizes"] = [choice.instance]
    data["autostop"]["max_hours"] = SMOKE_MAX_HOURS
    data["bench"] |= {"models": [model], "workloads": [SMOKE_WORKLOAD], "repetitions": 1}
    if data["access"]["ssh_public_key"]:  # relative to the user's rig.toml, not this copy
        data["access"]["ssh_public_key"] = str(profile.access.key_path(profile.base_dir))
    lines = [
        f"# Written by `python -m rig smoke {cloud}` from {profile.path}: do not edit.",
    ]
    for section, values in data.items():
        lines.append(f"\n[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def plan_estimate(profile: Profile, cloud: Cloud, cat: Catalog, choice: Choice) -> str:
    """The spending plan's estimate (rig.estimate, the one `make plan` and the deploy
    confirmations print) for the smoke profile, shown before the deploy asks: setup, the one
    model's pull and the bench's own plan for one quick request — no idle tail, the smoke
    destroys right after. Priced offline (catalog); the deploy's own line follows at the live
    price."""
    from rig.estimate import estimate, standin

    target = choice.instance if cloud == "azure" else f"{choice.instance}@{choice.region}"
    est = estimate(profile, cat, standin(profile, cat, target), quick=True, idle=False)
    return f"smoke estimate ({est.target}, {SMOKE_WORKLOAD}, one request): {est.line()}"


@dataclass
class Measured:
    ttft_s: float | None
    decode_tok_s: float | None
    decode_source: str | None
    output_tokens: int | None
    run_dir: Path


def bench_one(
    state: VmState, state_dir: Path, profile: Profile, results_dir: Path, console: Console
) -> Measured:
    """One request through the bench's own path: the state file's target, the SSH tunnel, the
    GPU sampler, the runner (warm-up, nonce) and the result store under results/<run-id>/."""
    from bench.backends import StreamLimits, make_backend
    from bench.gpu import GpuSampler
    from bench.runner import Plan, Runner, Target
    from bench.schema import RunMeta
    from bench.store import RunStore, new_run_id
    from bench.store import utc_now as bench_now
    from bench.targets import SshTunnel, TargetError, from_state_file

    try:
        spec = from_state_file(path_for(state.name, state_dir))
    except TargetError as exc:
        raise CommandError(f"smoke: {exc}") from None
    assert spec.remote is not None
    model = profile.bench.models[0]
    plan = Plan([model], [SMOKE_WORKLOAD], 1, quick=True)
    store = RunStore.create(results_dir, new_run_id())
    tunnel = SshTunnel(spec.remote)
    sampler: GpuSampler | None = None
    try:
        try:
            spec.info.url = tunnel.open()
        except TargetError as exc:
            raise CommandError(f"smoke: {exc}") from None
        console.print(f"smoke: tunnel open ({spec.info.url} → {state.host}:11434)", markup=False)
        sampler = GpuSampler(spec.remote.ssh_argv())
        sampler.start()
        limits = StreamLimits(profile.bench.idle_timeout_s, profile.bench.request_timeout_s)
        target = Target(spec.info, make_backend("ollama", spec.info.url, limits), sampler)
        meta = RunMeta(run_id=store.dir.name, started_at=bench_now(), targets=[spec.info])
        meta.profile = {**profile.as_toml_dict(), "plan": plan.__dict__, "mode": "smoke"}
        store.write_meta(meta)
        (outcome,) = Runner(store, [target], plan).run()
        meta.finished_at = bench_now()
        store.write_meta(meta)
    finally:
        if sampler is not None:
            sampler.stop()
        tunnel.close()
    done = [r for r in store.results() if r.ok]
    if not done:
        why = outcome.lost or (outcome.errors[-1] if outcome.errors else "no result")
        raise CommandError(f"smoke: the bench request failed ({why}); kept in {store.dir}")
    r = done[0]
    return Measured(r.ttft_s, r.decode_tok_s, r.decode_source, r.output_tokens, store.dir)


def cost_so_far(state: VmState) -> str:
    """What `make status` says the VM has cost: the cloud's word, or the state file's bound."""
    from rig.status import status_rows

    (row,) = status_rows([state], utc_now())
    if row["verified"]:
        return f"${row.get('usd_total', row['usd_so_far_at_most']):.2f} (as {state.cloud} reports)"
    return f"at most ${row['usd_so_far_at_most']:.2f} (state file; {row['note']})"


@dataclass
class _Touching:
    """A CDK runner that says when the deploy reaches its first creating step."""

    inner: Any  # rig.aws.cdk_cli.CdkRunner
    touch: Callable[[], None]

    def prepare(self, stack: str, context: dict[str, str], region: str) -> int:
        self.touch()
        return int(self.inner.prepare(stack, context, region))


# What ends a run from outside: Ctrl-C, `kill` (SIGTERM) and a closed terminal (SIGHUP, whose
# default action ends the process at once — no destroy at all; signal(7), "Standard signals").
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HANGUP_LOG = "smoke-hangup.log"  # under the state dir: where the output goes once the tty is gone


def detach_output(log: Path) -> None:
    """The terminal is gone (SIGHUP): writing to it now fails (EIO), and a failed print in the
    middle of the destroy would end it. Point stdout and stderr (ours and our children's) at a
    log file instead, so the destroy finishes and its verdict is kept."""
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for target in (1, 2):
            os.dup2(fd, target)
    finally:
        os.close(fd)


class _Stops(contextlib.AbstractContextManager["_Stops"]):
    """Ctrl-C, SIGTERM and SIGHUP while the smoke runs: the first raises KeyboardInterrupt (the
    way out, through the destroy); every later one — and any one once `disarm()` was called,
    i.e. during the destroy — only says to let the destroy finish. One handler for the whole
    run, so a second Ctrl-C has no window (between catching the first and guarding the destroy)
    in which it would skip the destroy."""

    def __init__(self, console: Console, hangup_log: Path) -> None:
        self.console = console
        self.hangup_log = hangup_log
        self.armed = True
        self.hung_up = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP and not self.hung_up:
            self.hung_up = True
            detach_output(self.hangup_log)
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        with contextlib.suppress(OSError):
            self.console.print(
                "smoke: destroying — let it finish (stopping now could leave a VM billing)",
                style="yellow",
            )

    def disarm(self) -> None:
        self.armed = False

    def __enter__(self) -> _Stops:
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@dataclass
class Smoke:
    profile: Profile  # the user's
    cloud: Cloud
    console: Console
    state_dir: Path = STATE_DIR
    results_dir: Path = Path("results")
    yes: bool = False
    cat: Catalog = field(default_factory=load_catalog)
    live_price: Callable[[str, str], tuple[float, str] | None] | None = None
    # Passed on to the cloud's deploy (Azure: Deps fields; AWS: Deployer fields) and destroy
    # (Deps / Destroyer fields): the tests' fakes; empty for a real run.
    deploy_options: dict[str, Any] = field(default_factory=dict)
    destroy_options: dict[str, Any] = field(default_factory=dict)
    bench: Callable[..., Measured] | None = None  # default: bench_one
    touched: bool = False  # the deploy reached its first creating step
    interactive: Callable[[], bool] = field(default=lambda: sys.stdin.isatty())

    def _say(self, line: str, **kw: Any) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True, **kw)

    # -- the cloud steps (the same functions `make deploy-*` and `make destroy` run) ----------

    def _deploy(self, profile: Profile) -> list[VmState]:
        if self.cloud == "azure":
            from rig.azure.deploy import deploy
            from rig.azure.deps import Deps

            deps = Deps(state_dir=self.state_dir, assume_yes=self.yes, **self.deploy_options)
            pulumi = deps.pulumi

            def first_creating_step(*args: Any) -> Any:
                self.touched = True  # `pulumi up` follows: from here on, destroy
                return pulumi(*args)

            deps.pulumi = first_creating_step
            return deploy(profile, self.console, deps)
        from rig.aws.cdk_cli import CdkCli
        from rig.aws.deploy import Deployer

        options = dict(self.deploy_options)
        cdk = options.pop("cdk", None) or CdkCli()
        deployer = Deployer(
            profile=profile,
            cat=self.cat,
            console=self.console,
            cdk=_Touching(cdk, self._touch),
            state_dir=self.state_dir,
            yes=self.yes,
            **options,
        )
        return deployer.run()

    def _touch(self) -> None:
        self.touched = True  # the change set creates the stack: from here on, destroy

    def _destroy(self, profile: Profile) -> None:
        """The cloud's verified destroy; CommandError (naming what is left) if not verified."""
        if self.cloud == "azure":
            from rig.azure.deps import Deps
            from rig.azure.destroy import destroy

            destroy(profile, self.console, Deps(state_dir=self.state_dir, **self.destroy_options))
            return
        from rig.aws.destroy import Destroyer, report_lines

        destroyer = Destroyer(
            profile, self.console, state_dir=self.state_dir, **self.destroy_options
        )
        report = destroyer.run()
        lines, error = report_lines(report)
        for line in lines:
            self._say(line)
        if error is not None:
            raise error

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> int:
        ensure_writable(self.state_dir)  # its lock, profile and state files live there
        with self._exclusive():
            return self._run()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One smoke per state dir at a time. Two would deploy the same stack (one per size),
        share .state/smoke/rig.toml, and the first to finish would destroy the other's VM in
        the middle of its run. flock(2): released when the process ends, however it ends, so
        a crashed smoke never leaves a stale lock."""
        lock = self.state_dir / "smoke.lock"
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fh = lock.open("a+", encoding="utf-8")
        except OSError as exc:
            raise CommandError(
                f"--state-dir {self.state_dir}: cannot be used ({exc.strerror}) — pass a "
                "writable directory; nothing was created",
                exit_code=2,
            ) from None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CommandError(
                    f"smoke: another smoke is running with this state dir ({lock} is held) — "
                    "wait for it to end (it destroys what it made); nothing was created",
                ) from None
            yield

    def _run(self) -> int:
        deployed = [s.name for s in read_all(self.state_dir) if s.cloud == self.cloud]
        if deployed:
            raise CommandError(
                f"smoke: {', '.join(deployed)} is deployed on {self.cloud} (.state/) — the "
                "smoke's destroy would remove it too; run make destroy first, or keep using "
                "make bench on it"
            )
        choice = cheapest(self.profile, self.cloud, self.cat, self.live_price)
        model = smallest_model(self.profile, self.cat)
        path = smoke_profile(
            self.profile, self.cloud, choice, model, self.state_dir / "smoke" / "rig.toml"
        )
        profile = load_profile(path, self.cat)
        self._say(
            f"smoke: {choice.instance} in {choice.region} (the cheapest GPU size there: "
            f"${choice.usd_per_hour:.3f}/h on demand, {choice.source}), max_hours "
            f"{SMOKE_MAX_HOURS}, model {model}, one {SMOKE_WORKLOAD} request, then destroy"
        )
        self._say(plan_estimate(profile, self.cloud, self.cat, choice))
        if not self.yes and not self.interactive():
            # The deploy would refuse too, but name its own fix (make deploy-*: YES=1), which
            # deploys the whole profile for its full max_hours instead of this smoke.
            raise CommandError(
                "smoke: no terminal to ask and no --yes — nothing was created; to accept the "
                f"cost printed above run make smoke CLOUD={self.cloud} YES=1 "
                f"({RIG} smoke {self.cloud} --yes)"
            )
        failure: str | None = None
        interrupted = False
        with _Stops(self.console, self.state_dir / HANGUP_LOG) as stops:
            try:
                try:
                    self._deploy_and_bench(profile)
                finally:
                    stops.disarm()  # from here on a signal only says: let the destroy finish
            except KeyboardInterrupt:
                interrupted, failure = True, "interrupted"
            except CommandError as exc:
                failure = str(exc)
            except Exception as exc:  # a bug must not skip the destroy either
                failure = f"{exc.__class__.__name__}: {exc}"
            return self._finish(profile, path, failure, interrupted)

    def _deploy_and_bench(self, profile: Profile) -> None:
        (state,) = self._deploy(profile)
        measured = (self.bench or bench_one)(
            state, self.state_dir, profile, self.results_dir, self.console
        )
        decode = (
            f"{measured.decode_tok_s:.1f} tok/s ({measured.decode_source})"
            if measured.decode_tok_s is not None
            else "not measured"
        )
        ttft = f"{measured.ttft_s:.2f} s" if measured.ttft_s is not None else "unknown"
        self._say(
            f"smoke: {state.name}: time to first token {ttft}, decode {decode}, "
            f"{measured.output_tokens} tokens; results in {measured.run_dir}"
        )
        self._say(f"smoke: cost so far {cost_so_far(state)}")

    def _finish(self, profile: Profile, path: Path, failure: str | None, interrupted: bool) -> int:
        if not self.touched:
            if interrupted:
                self._say("smoke: interrupted before anything was created — nothing to destroy")
                return EXIT_INTERRUPTED
            if failure is not None:
                said = "" if "nothing was created" in failure else " (nothing was created)"
                raise CommandError(f"smoke: {failure.removeprefix('smoke: ')}{said}", 1)
        self._say(f"smoke: destroying what it created on {self.cloud} ...")
        try:
            self._destroy(profile)
        except Exception as exc:
            why = str(exc) if isinstance(exc, CommandError) else f"{type(exc).__name__}: {exc}"
            before = f"smoke: {failure.removeprefix('smoke: ')}; then " if failure else "smoke: "
            # The exact command: `make destroy` reads rig.toml, whose [aws]/[azure] may be
            # disabled (the smoke enables its cloud in its own profile), and then skips the
            # cloud whenever no state file was written yet (a deploy that failed mid-way).
            raise CommandError(
                f"{before}the destroy could not verify that nothing is left: {why} — once "
                f"fixed, finish it with {RIG} destroy {self.cloud} --config {path} "
                f"--state-dir {self.state_dir}",
                exit_code=1,
            ) from None
        shutil.rmtree(path.parent, ignore_errors=True)  # verified gone: the profile with it
        if interrupted:
            self._say("smoke: interrupted — everything it created was destroyed (verified)")
            return EXIT_INTERRUPTED
        if failure is not None:
            raise CommandError(
                f"smoke failed: {failure.removeprefix('smoke: ')} — since then the smoke "
                "destroyed everything it created (verified: 0 left)",
                exit_code=1,
            )
        self._say("smoke: passed — deployed, provisioned, benched, destroyed (verified)")
        return 0


def cmd_smoke(args: argparse.Namespace, console: Console) -> int:
    cat = load_catalog()
    profile = load_profile(args.config, cat)
    return Smoke(
        profile,
        args.cloud,
        console,
        state_dir=args.state_dir,
        results_dir=args.results_dir,
        yes=args.yes,
        cat=cat,
    ).run()


def add_commands(commands: Any) -> None:
    parser = commands.top.add_parser(
        "smoke",
        help="bounded first real run: cheapest VM, 1 h cap, smallest model, one request, "
        "then destroy (verified)",
    )
    parser.add_argument("cloud", choices=("aws", "azure"), help="the cloud to try")
    parser.add_argument(
        "--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)"
    )
    parser.add_argument("--state-dir", type=path_arg, default=STATE_DIR, help=STATE_DIR_HELP)
    parser.add_argument(
        "--results-dir",
        type=path_arg,
        default=Path("results"),
        help="where the smoke's request result is kept",
    )
    parser.add_argument(
        "--yes", action="store_true", help="do not ask before deploying (the cost is printed)"
    )
    parser.set_defaults(func=cmd_smoke)
