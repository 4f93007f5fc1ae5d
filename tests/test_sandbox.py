"""Model-written code runs only inside bubblewrap (issue #12), and the code check judges the
named function by its asserts (issue #13, item 5).

The probes in tests/sandbox_probes.py are hostile answers run through the real sandbox (bwrap
from `make test-deps`); each must be blocked. Without isolation the check must be skipped with
the reason in the results row, never run bare.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sandbox_probes
from fake_ollama import FakeOllama

from bench import sandbox, workload
from bench.backends import OllamaBackend
from bench.runner import Plan, Runner, Target
from bench.sandbox import isolation
from bench.schema import TargetInfo
from bench.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
CODE_CASES = workload.load("code")["cases"]


@pytest.fixture(scope="module")
def isolated() -> sandbox.Sandbox:
    found = sandbox.availability()
    if found.sandbox is None:
        pytest.skip(f"no isolation on this machine: {found.reason}")
    return found.sandbox


@pytest.fixture
def no_bwrap_on_path(tmp_path, monkeypatch):
    """PATH as on a machine without bubblewrap (a real directory of tools, minus bwrap)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "unshare", "python3"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    sandbox.forget()
    yield
    monkeypatch.undo()
    sandbox.forget()


# --- every probe of issue #12 is blocked --------------------------------------------------------

# What each hostile answer must have printed: proof that it ran and was refused, not that it
# never got to try.
TRIED = {
    "decoy-key": lambda out: out.count("blocked:") == 2,
    "write-outside": lambda out: "blocked:" in out,
    "loopback-tcp": lambda out: "blocked:" in out,
    "host-unix-socket": lambda out: "blocked:" in out and "No such file" in out,
    "fork": lambda out: "fork refused" in out,
    "leftover": lambda out: "spawned" in out,
    "leftover-timeout": lambda out: "spawned" in out and "timed out" in out,
    "dev-shm": lambda out: "No space left on device" in out,
    "stdin": lambda out: out.strip().endswith("stdin:"),
    "print-200mb": lambda out: "printed more than 64 KiB" in out,
    "proc-environ": lambda out: "PROBE environ of []" in out,
    "invalid-utf8": lambda out: "not utf-8" in out,
}


@pytest.mark.parametrize("probe", sandbox_probes.PROBES, ids=lambda p: p.name)
def test_hostile_answer_is_blocked(probe, isolated, tmp_path):
    os.chmod(tmp_path, 0o755)
    outcome = probe.check(sandbox.run_python, tmp_path)
    assert outcome.blocked, f"{probe.what}: {outcome.evidence}\n{outcome.output}"
    assert TRIED[probe.name](outcome.output), f"the answer did not get to try:\n{outcome.output}"


def test_the_task_limit_is_this_sandboxs_own(isolated):
    out = sandbox.run_python(
        "import os, time\nn = 0\ntry:\n    for _ in range(100):\n"
        "        if os.fork() == 0:\n            time.sleep(3)\n            os._exit(0)\n"
        "        n += 1\nexcept OSError as exc:\n    print(exc)\nprint('forked', n)\n"
    ).output
    # bwrap's init and the harness are tasks too; threads count the same way
    assert f"forked {sandbox.PIDS_LIMIT - 2}" in out and "Resource temporarily unavailable" in out


def test_limits_inside_are_the_documented_ones(isolated):
    result = sandbox.run_python(
        "import json, os, resource, shutil\n"
        "names = ('RLIMIT_NPROC', 'RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE')\n"
        "print(json.dumps({'env': dict(os.environ), 'root': sorted(os.listdir('/')),\n"
        "  'tmp': shutil.disk_usage('/tmp').total, 'shm': shutil.disk_usage('/dev/shm').total,\n"
        "  'limits': {n: resource.getrlimit(getattr(resource, n)) for n in names}}))\n"
    )
    assert result.ok, result
    seen = json.loads(result.output.splitlines()[-1])
    assert seen["limits"] == {k: [v, v] for k, v in sandbox.limits().items() if k != "RLIMIT_CORE"}
    assert seen["tmp"] == sandbox.TMP_BYTES and seen["shm"] == sandbox.SHM_BYTES
    # nothing of the host but /usr (and its links) and the interpreter's prefix
    allowed = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "dev", "proc", "tmp"}
    assert set(seen["root"]) <= allowed | {Path(b).parts[1] for b in isolated.binds}
    # Python sets LC_CTYPE itself (PEP 538 locale coercion) in an empty environment
    assert set(seen["env"]) <= {"LC_CTYPE", "PWD"}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root is exempt from RLIMIT_NPROC")
def test_as_root_bwrap_runs_as_nobody_because_the_limit_would_not_hold_for_root(isolated):
    # kernel/fork.c copy_process(): the RLIMIT_NPROC check is skipped for INIT_USER (root)
    assert isolated.run_as == isolation.NOBODY
    as_root = isolation.Sandbox(isolated.bwrap, isolated.python, isolated.binds, run_as=None)
    assert "the process limit does not hold when bwrap runs as root" in isolation.probe(as_root)


def _unprivileged_python() -> str | None:
    """An interpreter uid 65534 can run that is new enough for bench/sandbox (>= 3.9)."""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(path):
            ok = subprocess.run(
                [path, "-c", "import sys; assert sys.version_info >= (3, 9)"],
                capture_output=True,
                user=isolation.NOBODY,
                group=isolation.NOBODY,
                extra_groups=[],
                cwd="/",
                check=False,
            )
            if ok.returncode == 0:
                return path
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become an unprivileged user")
def test_a_normal_user_gets_the_same_sandbox(isolated):
    """The bench run by a normal user (here uid 65534): bwrap through an unprivileged user
    namespace, the task limit holds, a correct answer passes and a wrong one fails."""
    python = _unprivileged_python()
    if python is None:
        pytest.skip("no Python >= 3.9 that uid 65534 can run (make test-deps installs python3)")
    case = CODE_CASES[0]
    driver = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from bench import sandbox
found = sandbox.availability()
good = sandbox.check_function({case["reference"]!r}, {case["function"]!r}, {case["test"]!r})
bad = sandbox.check_function("def {case["function"]}(*a):\\n    return None\\n",
                             {case["function"]!r}, {case["test"]!r})
print(json.dumps({{"run_as": found.sandbox and found.sandbox.run_as, "reason": found.reason,
                  "good": good.ok, "bad": bad.ok, "note": bad.note}}))
"""
    proc = subprocess.run(
        [python, "-I", "-c", driver],
        capture_output=True,
        text=True,
        user=isolation.NOBODY,
        group=isolation.NOBODY,
        extra_groups=[],
        cwd="/",
        env={"PATH": os.environ["PATH"]},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["run_as"] is None, seen  # no uid change: the user's own unprivileged bwrap
    assert seen["good"] is True and seen["bad"] is False, seen


# --- no isolation: skipped with the reason, never run bare --------------------------------------


def test_without_bwrap_nothing_runs_and_the_reason_is_given(no_bwrap_on_path, tmp_path):
    marker = tmp_path / "ran-bare"
    result = sandbox.run_python(f"open({str(marker)!r}, 'w').write('x')")
    assert result.skipped and not result.ok and result.returncode is None
    assert "bwrap not found on PATH" in result.note and "bubblewrap" in result.note
    assert not marker.exists()
    code = workload.requests("code")[0]
    verdict = workload.judge(code, "```python\n" + CODE_CASES[0]["reference"] + "```")
    assert verdict.correct is None
    assert verdict.note.startswith("code check skipped: no isolation — bwrap not found")


def test_bwrap_that_cannot_create_namespaces_means_no_isolation(isolated, tmp_path):
    """As where unprivileged user namespaces are refused (Ubuntu 24.04's AppArmor default,
    REFERENCE.md): here a user namespace whose user.max_user_namespaces is 0, so bwrap's own
    unshare(CLONE_NEWUSER) fails for real (user_namespaces(7): the limit is per namespace)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare not found")
    marker = tmp_path / "ran-bare"
    os.chmod(tmp_path, 0o777)
    driver = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from bench import sandbox
result = sandbox.run_python("open({str(marker)!r}, 'w').write('x')")
print(json.dumps({{"skipped": result.skipped, "note": result.note}}))
"""
    script = (
        "echo 0 > /proc/sys/user/max_user_namespaces && "
        f"exec {shlex.quote(sys.executable)} -c {shlex.quote(driver)}"
    )
    proc = subprocess.run(
        [unshare, "--user", "--map-root-user", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0 and "max_user_namespaces" in proc.stderr:
        pytest.skip(f"cannot set up the refusing namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["skipped"] is True, seen
    assert "no isolation" in seen["note"] and "bwrap failed" in seen["note"], seen
    assert "user namespaces are refused" in seen["note"], seen
    assert not marker.exists()


def test_ubuntus_apparmor_refusal_is_recognised_and_explained(tmp_path, monkeypatch):
    """bwrap under Ubuntu 24.04's default AppArmor policy prints this line and exits 1
    (akitaonrails/ai-jail#34, DevToys-app/DevToys#1373 — audit log: apparmor="DENIED"
    operation="capable" profile="unprivileged_userns"); a stand-in does the same here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "bwrap"
    stub.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    sandbox.forget()
    try:
        result = sandbox.run_python("print('must not run')")
    finally:
        monkeypatch.undo()
        sandbox.forget()
    assert result.skipped and result.output == ""
    assert "setting up uid map: Permission denied" in result.note
    assert "user namespaces are refused here" in result.note and "README" in result.note


def test_a_sandbox_that_fails_to_start_does_not_judge_the_answer(isolated, monkeypatch):
    """bwrap failing at run time (here: an interpreter that is gone) is not a wrong answer."""
    broken = isolation.Sandbox(isolated.bwrap, "/nonexistent/python3", (), isolated.run_as)
    monkeypatch.setattr(sandbox, "availability", lambda: sandbox.Availability(broken))
    case = CODE_CASES[0]
    result = sandbox.check_function(case["reference"], case["function"], case["test"])
    assert result.skipped and not result.ok
    assert result.note.startswith("skipped: the sandbox did not start: bwrap: execvp")


def test_a_skipped_check_is_in_the_results_row(no_bwrap_on_path, tmp_path):
    answer = "```python\n" + CODE_CASES[0]["reference"] + "```"
    rows = _bench_code_workload(tmp_path, answer)
    assert [r["correct"] for r in rows] == [None]
    assert rows[0]["ok"] is True  # the request itself was measured
    assert rows[0]["judge_note"].startswith("code check skipped: no isolation — bwrap not found")


# --- judging: the named function against the asserts, and a sentinel the answer cannot forge ---


def _wrong_answers(function: str) -> dict[str, str]:
    """Known-wrong answers that fit any case; the check must fail every one."""
    wrong = f"def {function}(*args, **kwargs):\n    return None\n"
    return {
        "missing function": "def something_else():\n    return 1\n",
        "not callable": f"{function} = 42\n",
        "wrong, then sys.exit(0)": wrong + "import sys\nsys.exit(0)\n",
        "wrong, then os._exit(0)": wrong + "import os\nos._exit(0)\n",
        "wrong, then raise SystemExit": wrong + "raise SystemExit\n",
        "wrong, prints a made-up sentinel": wrong + FAKE_SENTINEL,
        "wrong, hunts for the nonce and forges it": wrong + FORGER,
        "raises at import": "raise RuntimeError('no idea')\n",
        "reads stdin at import": "input()\n",
        # the process that started the harness exits 0; a forked copy carries on with it
        "forks, the parent exits 0": "import os\nif os.fork():\n    os._exit(0)\n" + wrong,
    }


FAKE_SENTINEL = """
import os
print("PASS " + "0" * 32)
print("All tests passed")
for fd in range(3, 64):
    try:
        os.write(fd, b"PASS " + b"0" * 32 + b"\\n")
    except OSError:
        pass
"""

# Reads everything it can reach for a 32-hex-digit token (argv, environment, every open
# descriptor, the files of /proc/self and /proc/1, /tmp) and writes "PASS <token>" for each to
# every descriptor and to stdout. It must not find the nonce.
FORGER = r"""
import os, re, sys
seen = set()
def scan(data):
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    seen.update(re.findall(rb"[0-9a-f]{32}", data))
def grab(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        scan(os.read(fd, 1 << 16))
    except OSError:
        pass
    finally:
        os.close(fd)
for pid in ("self", "1"):
    for name in ("cmdline", "environ"):
        grab(f"/proc/{pid}/{name}")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        fds = []
    for fd in fds:
        grab(f"/proc/{pid}/fd/{fd}")
for fd in range(64):
    try:
        os.set_blocking(fd, False)
        scan(os.read(fd, 1 << 16))
    except OSError:
        pass
for top, _, files in os.walk("/tmp"):
    for f in files:
        grab(os.path.join(top, f))
scan(repr(globals()) + repr(sys.argv))
for token in seen:
    line = b"PASS " + token + b"\n"
    print(line.decode().strip())
    for fd in range(1, 64):
        try:
            os.write(fd, line)
        except OSError:
            pass
print("FORGER tried", len(seen), flush=True)
"""


# Known-wrong answers for one case each: plausible mistakes a model makes.
CASE_WRONG = {
    "is-palindrome": {
        "ignores case and punctuation rules": "def is_palindrome(s):\n    return s == s[::-1]\n",
        "always true": "def is_palindrome(s):\n    return True\n",
        "keeps punctuation": (
            "def is_palindrome(s):\n    t = s.lower().replace(' ', '')\n    return t == t[::-1]\n"
        ),
    },
    "merge-intervals": {
        "does not merge touching intervals": (
            "def merge_intervals(intervals):\n    out = []\n"
            "    for s, e in sorted(intervals):\n"
            "        if out and s < out[-1][1]:\n"
            "            out[-1] = (out[-1][0], max(out[-1][1], e))\n"
            "        else:\n            out.append((s, e))\n    return out\n"
        ),
        "returns the input": "def merge_intervals(intervals):\n    return list(intervals)\n",
    },
}


def test_every_code_case_has_a_function_a_test_a_reference_and_known_wrong_answers():
    assert CODE_CASES
    for case in CODE_CASES:
        assert case["function"] and case["test"].strip() and case["reference"].strip(), case["id"]
        assert f"def {case['function']}(" in case["reference"], case["id"]
        assert case["id"] in CASE_WRONG, f"add known-wrong answers for {case['id']}"


@pytest.mark.parametrize("case", CODE_CASES, ids=lambda c: c["id"])
def test_the_reference_answer_passes(case, isolated):
    answer = f"Here you go:\n\n```python\n{case['reference']}```\n"
    verdict = workload.judge(_request(case["id"]), answer)
    assert verdict == workload.Verdict(correct=True), verdict


@pytest.mark.parametrize("case", CODE_CASES, ids=lambda c: c["id"])
def test_known_wrong_answers_fail_with_a_reason(case, isolated):
    request = _request(case["id"])
    wrong = {**_wrong_answers(case["function"]), **CASE_WRONG[case["id"]]}
    for label, code in wrong.items():
        verdict = workload.judge(request, f"```python\n{code}```")
        assert verdict.correct is False, f"{case['id']}: {label!r} passed"
        assert verdict.note, label
    # the notes say what went wrong, from the workload's own `function` field
    notes = {
        label: workload.judge(request, f"```python\n{wrong[label]}```").note
        for label in ("missing function", "not callable", "wrong, then sys.exit(0)")
    }
    assert notes["missing function"] == f"the answer defines no function {case['function']}()"
    assert notes["not callable"] == f"the answer defines no function {case['function']}()"
    assert notes["wrong, then sys.exit(0)"] == "the answer called exit(0) before the check finished"


def test_a_failed_assert_is_named_and_a_correct_answer_may_print_and_use_main(isolated):
    is_pal = next(c for c in CODE_CASES if c["id"] == "is-palindrome")
    always_true = CASE_WRONG["is-palindrome"]["always true"]
    wrong = sandbox.check_function(always_true, "is_palindrome", is_pal["test"])
    failed = 'assert not is_palindrome("hello")'
    assert (
        wrong.note == f"the test raised AssertionError at line 3: {failed}"
    )  # TOML drops the first newline
    chatty = (
        is_pal["reference"] + "print(is_palindrome('abba'))\n"
        "if __name__ == '__main__':\n    print(input())\n"  # a demo block must stay off
    )
    assert sandbox.check_function(chatty, "is_palindrome", is_pal["test"]).ok


def test_the_nonce_is_nowhere_the_answer_can_read(isolated):
    case = CODE_CASES[0]
    wrong = f"def {case['function']}(*args):\n    return None\n"
    result = sandbox.check_function(wrong + FORGER, case["function"], case["test"])
    assert "FORGER tried" in result.output  # it searched everything it could reach
    assert not result.ok and result.note.startswith("the test raised AssertionError")


def test_a_hung_answer_times_out(isolated):
    result = sandbox.check_function(
        "def f():\n    while True:\n        pass\n", "f", "assert f()", timeout_s=2
    )
    assert not result.ok and result.returncode is None and result.note == "timed out after 2 s"


def test_checks_from_many_threads_at_once_are_judged_right(isolated):
    """The bench runs targets in threads; each check must get its own answer's verdict."""
    case = CODE_CASES[0]
    answers = [case["reference"], "def is_palindrome(s):\n    return True\n"] * 4
    verdicts: list[bool | None] = [None] * len(answers)

    def check(i: int) -> None:
        verdicts[i] = sandbox.check_function(answers[i], case["function"], case["test"]).ok

    threads = [threading.Thread(target=check, args=(i,)) for i in range(len(answers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verdicts == [True, False] * 4


def test_the_runner_records_the_verdict_and_the_reason(isolated, tmp_path):
    case = CODE_CASES[0]
    good = _bench_code_workload(tmp_path / "good", "```python\n" + case["reference"] + "```")
    assert [(r["correct"], r["judge_note"]) for r in good] == [(True, None)]
    bad = _bench_code_workload(
        tmp_path / "bad",
        "```python\ndef is_palindrome(s):\n    return True\nimport sys\nsys.exit(0)\n```",
    )
    assert [(r["correct"], r["judge_note"]) for r in bad] == [
        (False, "the answer called exit(0) before the check finished")
    ]


def _request(case_id: str) -> workload.Request:
    return next(r for r in workload.requests("code") if r.case == case_id)


def _bench_code_workload(tmp_path: Path, answer: str) -> list[dict]:
    """One measured code request through the real runner against the documented-payload fake
    Ollama, which streams `answer` in small chunks."""
    tokens = [answer[i : i + 7] for i in range(0, len(answer), 7)]
    with FakeOllama(tokens=tokens, token_delay_s=0) as fake:
        store = RunStore.create(tmp_path, "run")
        info = TargetInfo(name="fake", url=fake.url, backend="ollama")
        plan = Plan(models=["mistral:latest"], workloads=["code"], repetitions=1, quick=True)
        Runner(store, [Target(info, OllamaBackend(fake.url))], plan).run()
    return [json.loads(x) for x in store.results_path.read_text().splitlines()]
