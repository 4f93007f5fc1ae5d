"""`python -m rig smoke`: the choice (cheapest size, smallest model, one hour), the profile it
writes, and — for AWS, in process against moto and the documented CloudFormation / spot
behaviour of tests/aws_fakes.py — a deploy whose bench fails mid-way still ending in a verified
destroy. The Azure smoke runs end to end as a process against a booted guest in
tests/test_journey.py (happy path, failure mid-way, Ctrl-C)."""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import os
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from aws_fakes import FakeAws, FakeCdk
from aws_helpers import REGION, write_profile
from rich.console import Console

from rig import smoke
from rig.aws.names import stack_name
from rig.aws.session import Aws
from rig.catalog import load_catalog
from rig.cli import main
from rig.problems import CommandError
from rig.profile import load_profile
from rig.state import Price, VmState, read_all, write

pytest_plugins = ["aws_support"]  # fixtures: aws_env, fake, key_file
CAT = load_catalog()


def test_the_cheapest_aws_gpu_type_of_the_region_by_catalog_price(profile_file):
    # eu-west-1 on demand (REFERENCE.md, instances.vantage.sh 2026-01-21): g4dn.xlarge $0.587,
    # g4dn.2xlarge $0.838, g5.xlarge $1.123, g5.2xlarge $1.353; g6 is not offered there.
    choice = smoke.cheapest(load_profile(profile_file()), "aws", CAT)
    assert (choice.instance, choice.region, choice.usd_per_hour) == (
        "g4dn.xlarge",
        "eu-west-1",
        0.587,
    )
    assert choice.source.startswith("catalog ")


def test_azure_takes_the_live_price_and_never_guesses_one(profile_file):
    profile = load_profile(profile_file())
    # Offline, only NC8as_T4_v3 has a published westeurope figure: NC4as is left out, not guessed.
    offline = smoke.cheapest(profile, "azure", CAT, live=lambda region, size: None)
    assert (offline.instance, offline.usd_per_hour) == ("Standard_NC8as_T4_v3", 0.84)
    live = {"Standard_NC4as_T4_v3": 0.526, "Standard_NC8as_T4_v3": 0.84}
    online = smoke.cheapest(profile, "azure", CAT, live=lambda r, s: (live[s], "azure retail"))
    assert (online.instance, online.source) == ("Standard_NC4as_T4_v3", "azure retail")
    with pytest.raises(
        CommandError, match=r"no GPU size of azure has a known price in northeurope"
    ):
        smoke.cheapest(
            load_profile(profile_file(("azure", "location", '"northeurope"'))),
            "azure",
            CAT,
            live=lambda r, s: None,
        )


def test_the_smoke_profile_is_the_users_narrowed_and_validated(profile_file, tmp_path):
    key = tmp_path / "keys" / "me.pub"
    key.parent.mkdir()
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2HLkoRwWMprcPPlIrvT4OvK6fwzYU6kw11zc t\n")
    profile = load_profile(profile_file(("access", "ssh_public_key", '"keys/me.pub"')))
    model = smoke.smallest_model(profile, CAT)
    # The provisioning's own GPU-check choice: the smallest download of the list.
    assert model == min(profile.bench.models, key=lambda m: CAT.models[m].download_gb)
    choice = smoke.cheapest(profile, "aws", CAT)
    out = tmp_path / ".state" / "smoke" / "rig.toml"
    written = load_profile(smoke.smoke_profile(profile, "aws", choice, model, out), CAT)
    assert written.aws.instance_types == ["g4dn.xlarge"] and written.azure.enabled is False
    assert written.autostop.max_hours == 1
    assert (written.bench.models, written.bench.workloads, written.bench.repetitions) == (
        [model],
        ["chat-en"],
        1,
    )
    # Everything else is the user's: region, spot, disk, timeouts; the key path still resolves.
    assert written.aws.region == profile.aws.region and written.aws.disk_gb == profile.aws.disk_gb
    assert written.access.key_path(written.base_dir) == key
    assert tomllib.loads(out.read_text())["pc"] == profile.as_toml_dict()["pc"]


def test_a_vm_already_deployed_on_that_cloud_is_refused_before_anything(profile_file, tmp_path):
    state_dir = tmp_path / ".state"
    write(
        VmState(
            name="aws-g4dn.2xlarge",
            cloud="aws",
            region="eu-west-1",
            instance_type="g4dn.2xlarge",
            gpu="t4",
            host="203.0.113.10",
            ssh_user="ubuntu",
            ssh_key="k",
            spot=True,
            price=Price(0.3, "spot", "test", "2026-11-28T10:00:00+00:00"),
            deployed_at="2026-11-28T10:00:00+00:00",
            deadline="2026-11-28T14:00:00+00:00",
        ),
        state_dir,
    )
    run = smoke.Smoke(load_profile(profile_file()), "aws", Console(), state_dir=state_dir)
    with pytest.raises(CommandError, match=r"aws-g4dn.2xlarge is deployed on aws .*make destroy"):
        run.run()
    assert not (state_dir / "smoke").exists()


def test_nothing_created_means_nothing_to_destroy(profile_file, tmp_path):
    """A deploy that stops in its preflight (no credentials) never reaches `pulumi`: the smoke
    says so and runs no destroy (which would need the missing credentials)."""
    run = smoke.Smoke(
        load_profile(profile_file()),
        "azure",
        Console(record=True, width=200),
        state_dir=tmp_path / ".state",
        yes=True,
        live_price=lambda r, s: None,
        deploy_options={"tools_missing": lambda: None, "credentials": lambda sub: None},
        destroy_options={"credentials": lambda sub: pytest.fail("destroy was attempted")},
    )
    with pytest.raises(CommandError) as err:
        run.run()
    assert "no Azure credentials" in str(err.value) and "nothing was created" in str(err.value)
    assert run.touched is False


def live_instances() -> list[dict]:
    ec2 = boto3.client("ec2", region_name=REGION)
    return [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


def offline_deploy(fake: FakeAws) -> dict:
    return dict(
        aws_for=Aws,
        cdk=FakeCdk(fake),
        ip_lookup=lambda: "203.0.113.9",
        ssh_wait=lambda host: None,  # moto's instance has no sshd: the journey covers SSH
        provision=None,
        poll_s=0.01,
        stack_wait_s=5,
    )


def aws_smoke(
    fake: FakeAws,
    tmp_path: Path,
    key_file: Path,
    bench,
    console: Console | None = None,
    aws: str = 'instance_types = ["g5.2xlarge"]',
) -> smoke.Smoke:
    config = write_profile(tmp_path, aws, key_file)
    return smoke.Smoke(
        load_profile(config),
        "aws",
        console or Console(record=True, width=250),
        state_dir=tmp_path / ".state",
        results_dir=tmp_path / "results",
        yes=True,
        deploy_options=offline_deploy(fake),
        destroy_options=dict(poll_s=0.01, wait_s=5),
        bench=bench,
    )


def test_aws_smoke_deploys_the_cheapest_type_for_one_hour_and_destroys_after_a_failure(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    seen: list[VmState] = []

    def bench_fails(state, state_dir, profile, results_dir, console):
        # What the bench meets when the tunnel cannot open (the VM's sshd is not up).
        seen.append(state)
        assert live_instances() and read_all(state_dir) == [state]
        raise CommandError("smoke: SSH tunnel to ubuntu@203.0.113.9 did not open: timeout")

    run = aws_smoke(fake, tmp_path, key_file, bench_fails)
    with pytest.raises(CommandError) as err:
        run.run()
    msg = str(err.value)
    assert err.value.exit_code == 1 and "\n" not in msg
    assert msg.startswith("smoke failed: SSH tunnel to ubuntu@203.0.113.9 did not open")
    assert "destroyed everything it created (verified: 0 left)" in msg
    (state,) = seen
    # The cheapest type of the region, not the profile's g5.2xlarge; the 1 h deadline.
    assert state.instance_type == "g4dn.xlarge" and state.extra["worst_case_usd"] > 0
    until = dt.datetime.fromisoformat(state.deadline) - dt.datetime.fromisoformat(state.deployed_at)
    hours = until.total_seconds() / 3600
    assert hours == smoke.SMOKE_MAX_HOURS
    # Verified gone: no instance, no open spot request, no stack, no state file.
    assert live_instances() == []
    requests = fake.requests.get(REGION, {}).values()
    assert requests and all(r.state == "cancelled" for r in requests)
    assert all(s.status == "DELETE_COMPLETE" for s in fake.stacks.values())
    assert read_all(tmp_path / ".state") == []
    text = run.console.export_text()
    assert "smoke: g4dn.xlarge in eu-west-1" in text and "max_hours 1" in text
    # rig plan's estimate for the smoke (catalog-priced), before the deploy even reads prices.
    assert "smoke estimate (aws-g4dn.xlarge, chat-en, one request): estimated " in text
    assert "worst case 1 h, $" in text
    assert text.index("smoke estimate") < text.index("preflight in eu-west-1")
    assert "orphan scan in eu-west-1: 0 left" in text


def test_aws_smoke_that_passes_prints_the_figures_and_destroys(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    def bench_ok(state, state_dir, profile, results_dir, console):
        run_dir = results_dir / "20261128T100000Z"
        run_dir.mkdir(parents=True)
        return smoke.Measured(0.42, 35.5, "server", 64, run_dir)

    run = aws_smoke(fake, tmp_path, key_file, bench_ok)
    assert run.run() == 0
    text = run.console.export_text()
    assert "time to first token 0.42 s, decode 35.5 tok/s (server), 64 tokens" in text
    assert "smoke: cost so far " in text and "smoke: passed" in text
    assert live_instances() == [] and read_all(tmp_path / ".state") == []


def test_aws_smoke_whose_destroy_cannot_verify_exits_1_naming_what_is_left(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """#16.3: "any failure on the way still ends in a verified destroy (or an exit 1 that names
    what is left)". The bench fails, then CloudFormation cannot delete the stack (DELETE_FAILED,
    as tests/aws_fakes.py answers for a stack in fail_delete): the VM is still terminated (no
    compute bills), the message carries both failures and says the destroy did not verify, and
    the state file and the smoke's profile stay so `make destroy` can finish the job."""
    seen: list[VmState] = []

    def bench_fails(state, state_dir, profile, results_dir, console):
        seen.append(state)
        fake.fail_delete = {state.ids["stack"]}
        raise CommandError("smoke: the bench request failed (model not found)")

    run = aws_smoke(fake, tmp_path, key_file, bench_fails)
    with pytest.raises(CommandError) as err:
        run.run()
    msg = str(err.value)
    assert err.value.exit_code == 1
    assert msg.startswith("smoke: the bench request failed (model not found); then the destroy")
    assert "could not verify that nothing is left" in msg and "0 left" not in msg
    (state,) = seen
    assert live_instances() == []  # compute stopped whatever CloudFormation did
    text = run.console.export_text()
    assert (
        f"aws cloudformation delete-stack --region eu-west-1 --stack-name {state.ids['stack']}"
        in text
    )
    assert [s.name for s in read_all(tmp_path / ".state")] == [state.name]
    assert (tmp_path / ".state" / "smoke" / "rig.toml").exists()


# --- review findings (#smoke-review) ---------------------------------------------------------


class SignalsWhen(Console):
    """A terminal whose user sends `signals` to the smoke as soon as `cue` is printed: a second
    Ctrl-C (or kill, or a closed terminal) at a moment chosen by the test, not by a timer."""

    def __init__(self, cue: str, signals: list[signal.Signals]) -> None:
        super().__init__(record=True, width=250)
        self.cue, self.signals = cue, list(signals)

    def print(self, *objects, **kw) -> None:  # type: ignore[override]
        super().print(*objects, **kw)
        if self.signals and any(self.cue in str(o) for o in objects):
            pending, self.signals = self.signals, []
            for signum in pending:
                os.kill(os.getpid(), signum)


@pytest.fixture
def hangup_safe() -> Iterator[list[int]]:
    """SIGHUP's default action ends the process (signal(7), "Standard signals": Term): without
    the smoke's own handler it would end pytest. Record it instead, and give back stdout/stderr
    afterwards (the smoke points them at its log once the terminal is gone)."""
    seen: list[int] = []
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: seen.append(signum))
    try:
        yield seen
    finally:
        signal.signal(signal.SIGHUP, previous)
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def interrupted_by(signum: signal.Signals):
    def bench(state, state_dir, profile, results_dir, console):
        assert live_instances()  # the VM exists and bills: from here on only a destroy helps
        os.kill(os.getpid(), signum)
        return smoke.Measured(0.4, 30.0, "server", 8, results_dir)

    return bench


def test_ctrl_c_twice_and_kill_during_the_destroy_still_end_in_a_verified_destroy(
    fake: FakeAws, tmp_path: Path, key_file: Path, hangup_safe: list[int]
) -> None:
    """A user who presses Ctrl-C, then again (and then closes the terminal, or `kill`s it)
    while the smoke says it is destroying: the destroy must still run to its verified end.
    Before, the second SIGINT arrived after the first was caught and before the destroy's
    guard was installed, and KeyboardInterrupt left run() with the VM still billing."""
    console = SignalsWhen(
        "destroying what it created", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    )
    run = aws_smoke(fake, tmp_path, key_file, interrupted_by(signal.SIGINT), console)
    try:
        rc = run.run()
    except KeyboardInterrupt:
        pytest.fail("a second Ctrl-C skipped the destroy: the VM is left billing")
    assert rc == smoke.EXIT_INTERRUPTED
    assert live_instances() == [] and read_all(tmp_path / ".state") == []
    assert all(s.status == "DELETE_COMPLETE" for s in fake.stacks.values())
    text = console.export_text()
    assert "orphan scan in eu-west-1: 0 left" in text
    assert "let it finish" in text and "everything it created was destroyed (verified)" in text
    # The smoke's handlers are gone again once it returns.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_closed_terminal_sighup_takes_the_destroy_way_out(
    fake: FakeAws, tmp_path: Path, key_file: Path, hangup_safe: list[int]
) -> None:
    """Closing the terminal sends SIGHUP (default action: terminate, signal(7)), which the
    smoke did not handle: the process ended at once, no destroy, the VM billing until its
    max_hours stop. Now SIGHUP is taken like Ctrl-C, and the output, which the dead terminal
    can no longer show, goes to .state/smoke-hangup.log."""
    run = aws_smoke(fake, tmp_path, key_file, interrupted_by(signal.SIGHUP))
    rc = run.run()
    assert hangup_safe == []  # the smoke's own handler took it, not the default one
    assert rc == smoke.EXIT_INTERRUPTED
    assert live_instances() == [] and read_all(tmp_path / ".state") == []
    assert "orphan scan in eu-west-1: 0 left" in run.console.export_text()
    assert (tmp_path / ".state" / smoke.HANGUP_LOG).is_file()


def test_after_a_hangup_output_and_child_output_go_to_the_log(tmp_path: Path) -> None:
    """What the smoke does on SIGHUP, in a process of its own (it re-points fds 1 and 2): its
    prints and its children's (pulumi destroy, ssh) reach the log, not the closed terminal."""
    log = tmp_path / "state" / smoke.HANGUP_LOG
    code = (
        "import subprocess, sys; from pathlib import Path; from rig.smoke import detach_output; "
        f"detach_output(Path({str(log)!r})); print('parent line', flush=True); "
        "subprocess.run(['sh', '-c', 'echo child line; echo child error >&2'], check=True)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert log.read_text().splitlines() == ["parent line", "child line", "child error"]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_a_destroy_that_cannot_verify_names_the_command_that_finishes_it(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """The user's rig.toml has aws.enabled = false (the smoke enables it in its own profile).
    The deploy fails mid-way — no capacity in any AZ, each attempt a stack that rolled back —
    before any state file is written, and CloudFormation cannot delete the stack (DELETE_FAILED,
    tests/aws_fakes.py). `make destroy` would then skip AWS altogether ("aws.enabled = false and
    no AWS state"), so the exit 1 must name the command that does finish it: the smoke's kept
    profile and state dir."""
    fake.no_capacity_azs = {f"{REGION}{z}" for z in "abc"}
    fake.fail_delete = {stack_name("g4dn.xlarge")}
    run = aws_smoke(
        fake,
        tmp_path,
        key_file,
        lambda *a: pytest.fail("no VM: nothing to bench"),
        aws='enabled = false\ninstance_types = ["g5.2xlarge"]',
    )
    with pytest.raises(CommandError) as err:
        run.run()
    msg, state_dir = str(err.value), tmp_path / ".state"
    kept = state_dir / "smoke" / "rig.toml"
    assert err.value.exit_code == 1 and "\n" not in msg
    assert "no capacity in any AZ" in msg and "could not verify that nothing is left" in msg
    command = f"destroy aws --config {kept} --state-dir {state_dir}"
    assert msg.endswith(f"finish it with .venv/bin/rig {command}")
    assert read_all(state_dir) == []  # no state file: `make destroy` would not look
    assert (
        main(
            [
                "destroy",
                "aws",
                "--config",
                str(tmp_path / "rig.toml"),
                "--state-dir",
                str(state_dir),
            ]
        )
        == 0
    )  # the trap: "nothing to destroy", the stack still there
    assert any(s.status == "DELETE_FAILED" for s in fake.stacks.values())
    fake.fail_delete = set()  # the cause fixed (e.g. a dependency removed by hand)
    assert main(command.split()) == 0
    assert all(s.status == "DELETE_COMPLETE" for s in fake.stacks.values())


def test_a_state_dir_that_is_a_file_is_one_line_exit_2(
    fake: FakeAws, profile_file, tmp_path: Path
) -> None:
    """Before: NotADirectoryError with a traceback from writing .state/smoke/rig.toml."""
    state = tmp_path / "state"
    state.write_text("not a directory\n")
    run = smoke.Smoke(load_profile(profile_file()), "aws", Console(), state_dir=state, yes=True)
    with pytest.raises(CommandError) as err:
        run.run()
    assert err.value.exit_code == 2
    assert str(err.value).startswith(f"--state-dir {state}: is a file, not a directory — ")
    assert state.read_text() == "not a directory\n"


def test_a_second_smoke_on_the_same_state_dir_is_refused_before_anything(
    fake: FakeAws, profile_file, tmp_path: Path
) -> None:
    """Two smokes at once deployed the same stack (one per size) and shared .state/smoke/:
    the first to finish destroyed the other's VM mid-run, and removed its profile. The state
    check does not catch it: the first has written no state file until its stack exists."""
    state = tmp_path / ".state"
    state.mkdir()
    with (state / "smoke.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first smoke, still running
        run = smoke.Smoke(
            load_profile(profile_file()),
            "aws",
            Console(),
            state_dir=state,
            yes=True,
            deploy_options=offline_deploy(fake),
            destroy_options=dict(poll_s=0.01, wait_s=5),
            bench=lambda *a: pytest.fail("refused before the deploy"),
        )
        with pytest.raises(CommandError, match=r"another smoke is running with this state dir"):
            run.run()
    assert not (state / "smoke").exists()


def test_no_terminal_and_no_yes_names_the_smokes_own_fix(
    fake: FakeAws, profile_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the deploy's refusal named `make deploy-aws YES=1` — a user following it
    deploys the whole profile (its sizes, its max_hours) instead of the one-hour smoke."""
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # `make smoke ... < /dev/null`, cron, CI
    run = smoke.Smoke(
        load_profile(profile_file()),
        "aws",
        Console(record=True, width=250),
        state_dir=tmp_path / ".state",
        deploy_options=offline_deploy(fake),
        destroy_options=dict(poll_s=0.01, wait_s=5),
        bench=lambda *a: pytest.fail("refused before the deploy"),
    )
    with pytest.raises(CommandError) as err:
        run.run()
    msg = str(err.value)
    assert "make smoke CLOUD=aws YES=1" in msg and "deploy-aws" not in msg
    assert "nothing was created" in msg and run.touched is False
    assert "smoke estimate (aws-g4dn.xlarge" in run.console.export_text()  # the cost, first


FAKE_PULUMI = """\
import os, signal, sys, time
from pathlib import Path
here = Path(sys.argv[0]).parent
def cancel(signum, frame):
    # What Pulumi does on its first SIGINT/SIGTERM (pulumi/pulumi#17463: "We already handle
    # SIGINT to cancel operations"): finish the operation in flight, save the state, exit.
    print("cancelling: waiting for the operation in flight", flush=True)
    time.sleep(0.5)
    (here / "cancelled").write_text(str(os.getpid()))
    sys.exit(255)
signal.signal(signal.SIGINT, cancel)
signal.signal(signal.SIGTERM, cancel)
(here / "pid").write_text(str(os.getpid()))
print("+ creating azure-native:resources:ResourceGroup", flush=True)
time.sleep(30)
(here / "created-after-we-returned").write_text("")
"""


def test_an_interrupted_pulumi_up_is_cancelled_and_waited_for_before_the_destroy(
    tmp_path: Path,
) -> None:
    """The smoke turns SIGTERM/SIGHUP into KeyboardInterrupt in our process only; `pulumi up`
    (streamed through rig.azure.pulumi_cli) kept running after the runner raised, so the
    destroy that followed raced a `pulumi up` still creating. Now the runner cancels it (one
    SIGINT) and waits until it has exited before the interrupt goes on."""
    from rig.azure.pulumi_cli import subprocess_runner

    exe = tmp_path / "pulumi"
    exe.write_text(f"#!{sys.executable}\n{FAKE_PULUMI}")
    exe.chmod(0o755)
    run = subprocess_runner(str(exe), tmp_path)

    def as_interrupt(signum, frame):
        raise KeyboardInterrupt

    def kill_when_started() -> None:
        for _ in range(200):
            if (tmp_path / "pid").exists():
                break
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # `kill` of the smoke: its process only

    previous = signal.signal(signal.SIGTERM, as_interrupt)
    killer = threading.Thread(target=kill_when_started)
    try:
        killer.start()
        with pytest.raises(KeyboardInterrupt):
            run(["up", "--yes"], {}, False)
    finally:
        signal.signal(signal.SIGTERM, previous)
        killer.join()
        pid = int((tmp_path / "pid").read_text())
        alive = subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode == 0
        if alive:
            os.kill(pid, signal.SIGKILL)
    assert not alive, "pulumi up was still running when the runner gave up control"
    assert (tmp_path / "cancelled").read_text() == str(pid)
    assert not (tmp_path / "created-after-we-returned").exists()
