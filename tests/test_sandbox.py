"""Model-written code runs only inside bubblewrap (issue #12), and the code check judges the
named function by its asserts (issue #13, item 5).

The probes in tests/sandbox_probes.py are hostile answers run through the real sandbox (bwrap
from `make test-deps`); each must be blocked. Without isolation the check must be skipped with
the reason in the results row, never run bare.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import sandbox_probes
from fake_ollama import FakeOllama

from bench import sandbox, workload
from bench.backends import OllamaBackend
from bench.runner import Plan, Runner, Target
from bench.sandbox import isolation, seccomp
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
    "keyring": lambda out: "blocked: keyctl search: Operation not permitted" in out,
    "ptrace-init": lambda out: out.count("blocked:") == 2,
    "bench-pid": lambda out: out.count("blocked:") == 4 and "PROBE pids" in out,
    "inherited-fds": lambda out: "PROBE fds {0: 'char', 1: 'pipe', 2: 'pipe'" in out,
    "threads": lambda out: "thread refused" in out,
    "memory-beside-rlimit": lambda out: out.count("blocked:") == 2,
    "memory-per-process": lambda out: "PROBE processes" in out,
    "symlink-escape": lambda out: out.count("blocked:") == 6,
    "nested-userns": lambda out: "blocked: unshare" in out,
    "bench-sigkill": lambda out: "spawned" in out,
    "clock": lambda out: out.count("blocked: clock_settime") == 2 and "timed out" in out,
    "trickle": lambda out: "note: timed out after 2 s" in out,
    "no-newline": lambda out: "printed more than 64 KiB" in out,
    "escapes": lambda out: "ValueError" in out,
}


@pytest.mark.parametrize("probe", sandbox_probes.PROBES, ids=lambda p: p.name)
def test_hostile_answer_is_blocked(probe, isolated, tmp_path):
    # Second round (keyring onwards), each with its source: the probe's docstring and
    # tests/sandbox_probes.py. keyring: keyrings(7) "the session keyring is inherited across
    # fork() and execve()", possessor permissions in security/keys/permission.c; ptrace-init:
    # bubblewrap.c drop_privs sets PR_SET_DUMPABLE, proc(5) /proc/pid/mem needs
    # PTRACE_MODE_ATTACH; bench-pid: pid_namespaces(7); threads: RLIMIT_NPROC counts threads
    # (setrlimit(2)); memory-beside-rlimit: setrlimit(2) RLIMIT_AS is the virtual address space,
    # memfd_create(2) and shmget(2) memory is not in it once unmapped; bench-sigkill: bwrap.xml
    # --die-with-parent, prctl(2) PR_SET_PDEATHSIG.
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
    names = sorted(sandbox.limits())
    result = sandbox.run_python(
        "import json, os, resource, shutil\n"
        f"names = {names!r}\n"
        "print(json.dumps({'env': dict(os.environ), 'root': sorted(os.listdir('/')),\n"
        "  'tmp': shutil.disk_usage('/tmp').total, 'shm': shutil.disk_usage('/dev/shm').total,\n"
        "  'limits': {n: resource.getrlimit(getattr(resource, n)) for n in names}}))\n"
    )
    assert result.ok, result
    seen = json.loads(result.output.splitlines()[-1])
    assert seen["limits"] == {k: [v, v] for k, v in sandbox.limits().items()}
    assert seen["tmp"] == sandbox.TMP_BYTES and seen["shm"] == sandbox.SHM_BYTES
    # nothing of the host but /usr (and its links) and the interpreter's files; no /proc, /sys
    allowed = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "dev", "tmp"}
    assert set(seen["root"]) <= allowed | {Path(b).parts[1] for b in isolated.binds}
    # Python sets LC_CTYPE itself (PEP 538 locale coercion) in an empty environment
    assert set(seen["env"]) <= {"LC_CTYPE", "PWD", "MALLOC_ARENA_MAX"}


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


def test_the_whole_reason_for_a_skip_is_kept(monkeypatch):
    """The reasons carry their fix at the end (isolation._find's hints): never cut it off."""
    reason = "bwrap failed as uid 65534 with /root/.pyenv/versions/3.11.7/bin/python3.11: " + (
        "x" * 200 + " (the sandbox runs as uid 65534 ... e.g. apt-get install python3)"
    )
    monkeypatch.setattr(sandbox, "availability", lambda: sandbox.Availability(None, reason))
    result = sandbox.check_function("def f():\n    return 1\n", "f", "assert f() == 1")
    assert result.skipped and result.note == f"skipped: no isolation — {reason}"


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
        "exits 0 inside the call": f"def {function}(*args):\n    import os\n    os._exit(0)\n",
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


def test_an_answer_that_searches_everything_and_writes_pass_everywhere_fails(isolated):
    case = CODE_CASES[0]
    wrong = f"def {case['function']}(*args):\n    return None\n"
    result = sandbox.check_function(wrong + FORGER, case["function"], case["test"])
    assert "FORGER tried" in result.output  # it searched everything it could reach
    assert not result.ok and result.note


# --- the verdict cannot be forged: the asserts run in the bench, not beside the answer ------

# Each tries to make the bench believe the asserts passed without computing the right values.
# Before the asserts moved out of the sandbox, the harness's nonce sat in the answer's own
# process (gc, sys._getframe), and the asserts ran in its namespace, under its builtins.
FORGERS = {
    "reads the harness's nonce from its frame, writes PASS and exits 0": r"""
import os, sys
frame = sys._getframe()
while frame is not None:
    nonce = frame.f_locals.get("nonce")
    if isinstance(nonce, str) and nonce:
        for fd in range(3, 64):
            try:
                os.write(fd, b"PASS " + nonce.encode() + b"\n")
            except OSError:
                pass
        os._exit(0)
    frame = frame.f_back
""",
    "walks gc for secrets, writes PASS/READY/RET lines to every fd": r"""
import gc, os, re
found = set()
for obj in gc.get_objects():
    try:
        if isinstance(obj, dict):
            for value in obj.values():
                if isinstance(value, str):
                    found.update(re.findall(r"[0-9a-f]{32}", value))
    except Exception:
        pass
lines = [b"READY\n"] + [b"PASS %s\n" % t.encode() for t in found] + [b"RET true\n"] * 50
for fd in range(3, 64):
    for line in lines:
        try:
            os.write(fd, line)
        except OSError:
            pass
""",
    "rewrites the harness through sys._getframe": r"""
import sys
frame = sys._getframe()
while frame is not None:
    g = frame.f_globals
    if "_serve" in g:
        g["encode"] = lambda value, depth=0: True
        g["_raised"] = lambda exc: "RET true"
    frame = frame.f_back
""",
    "patches builtins and the assert machinery": r"""
import builtins
class Never(Exception):
    pass
builtins.AssertionError = Never
builtins.isinstance = lambda *a: True
builtins.all = builtins.any = lambda *a: True
builtins.bool = lambda *a: True
builtins.len = lambda *a: 0
builtins.tuple = lambda *a: ()
""",
    "replaces json.dumps so every reply reads true": r"""
import json
json.dumps = lambda *a, **k: "true"
""",
    "answers every request itself": r"""
import os, sys
frame = sys._getframe()
while frame is not None:
    g = frame.f_globals
    if "_serve" in g:
        def serve(function, name, call_fd, result_fd):
            for _ in os.fdopen(call_fd, "rb"):
                os.write(result_fd, b'RET {"tuple": []}\n')
            os._exit(0)
        g["_serve"] = serve
    frame = frame.f_back
""",
}

# Returned values that would fool an in-process `==`, `not` or `tuple(x)`.
LYING_RESULTS = {
    "an object whose __eq__ is always True": r"""
class Yes:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    def __iter__(self):
        return iter([])
    __hash__ = object.__hash__
RESULT = Yes()
""",
    "a list subclass whose __eq__ is always True": r"""
class Yes(list):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = None
RESULT = Yes()
""",
    "a str subclass whose __eq__ and __bool__ lie": r"""
class Yes(str):
    def __eq__(self, other):
        return True
    def __bool__(self):
        return False
    __hash__ = str.__hash__
RESULT = Yes("")
""",
    "an int subclass that claims to be everything": r"""
class Yes(int):
    def __eq__(self, other):
        return True
    def __bool__(self):
        return False
    __hash__ = int.__hash__
RESULT = Yes(1)
""",
}


@pytest.mark.parametrize("case", CODE_CASES, ids=lambda c: c["id"])
@pytest.mark.parametrize("forger", sorted(FORGERS))
def test_a_forged_verdict_fails(case, forger, isolated):
    wrong = f"def {case['function']}(*args, **kwargs):\n    return None\n"
    result = sandbox.check_function(wrong + FORGERS[forger], case["function"], case["test"])
    assert not result.ok and result.note, f"{case['id']}: {forger!r} passed"


@pytest.mark.parametrize("case", CODE_CASES, ids=lambda c: c["id"])
@pytest.mark.parametrize("lie", sorted(LYING_RESULTS))
def test_a_returned_object_that_lies_about_equality_fails(case, lie, isolated):
    answer = LYING_RESULTS[lie] + f"def {case['function']}(*args, **kwargs):\n    return RESULT\n"
    result = sandbox.check_function(answer, case["function"], case["test"])
    assert not result.ok and result.note, f"{case['id']}: {lie!r} passed"


def test_values_cross_as_plain_data_only():
    """What the bench gets back is built by harness.decode from JSON: only builtin types."""
    from collections import OrderedDict, namedtuple
    from enum import IntEnum

    from bench.sandbox.harness import encode, loads

    point = namedtuple("point", "x y")
    level = IntEnum("level", "low high")
    values = [
        None, True, 0, -(2**200), 1.5, float("inf"), "é\udcff", b"\x00\xff", 1 + 2j,
        [1, (2, 3)], (), {frozenset({1}), 2}, {"a": [1], (1, 2): None},
    ]  # fmt: skip
    for value in values:
        assert loads(json.dumps(encode(value))) == value
    back = loads(json.dumps(encode([point(1, 2), level.high, OrderedDict(a=1)])))
    assert back == [(1, 2), 2, {"a": 1}]
    assert [type(x) for x in back] == [tuple, int, dict]
    nan = loads(json.dumps(encode(float("nan"))))
    assert nan != nan
    for bad in ('{"evil": 1}', "NaN", '{"tuple": 1}', '{"dict": [[[], 1]]}', '{"x": 1, "y": 2}'):
        with pytest.raises((ValueError, TypeError)):
            loads(bad)


def test_the_function_may_raise_into_the_test_and_must_return_plain_data(isolated):
    test = (
        "try:\n    f(-1)\nexcept ValueError as exc:\n    assert str(exc) == 'negative'\n"
        "else:\n    raise AssertionError('no ValueError')\n"
        "assert f(2) == (2, {2}, b'2', 2**70)\n"
    )
    good = (
        "def f(n):\n    if n < 0:\n        raise ValueError('negative')\n"
        "    return (n, {n}, str(n).encode(), 2**70)\n"
    )
    assert sandbox.check_function(good, "f", test).ok
    gen = sandbox.check_function("def f(n):\n    yield n\n", "f", "assert list(f(1)) == [1]")
    assert gen.note == (
        "the test raised TypeError: f() returned a generator, which is not plain data "
        "(None, bool, int, float, complex, str, bytes, list, tuple, dict, set or frozenset) "
        "at line 1: assert list(f(1)) == [1]"
    )
    # StopIteration would end the test's own loop early: it comes back as another error
    stop = sandbox.check_function(
        "def f(n):\n    raise StopIteration\n", "f", "assert list(map(f, [1])) == [1]"
    )
    assert not stop.ok and "AnswerError: StopIteration" in stop.note


def test_a_slow_function_times_out_between_calls(isolated):
    slow = "import time\ndef f(n):\n    time.sleep(n)\n    return n\n"
    result = sandbox.check_function(slow, "f", "assert f(0) == 0\nassert f(30) == 30\n", 2)
    assert not result.ok and result.note == "timed out after 2 s"


def test_a_correct_answer_that_leaves_a_process_passes_and_leaves_nothing(isolated):
    """The check ends when the asserts do: the sandbox is killed then, whatever is left."""
    case = CODE_CASES[0]
    marker = f"rehearsal-leftover-{os.getpid()}"
    answer = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}],"
        " start_new_session=True)\n" + case["reference"]
    )
    result = sandbox.check_function(answer, case["function"], case["test"])
    assert result.ok, result
    assert sandbox_probes._processes_with(marker) == []


# --- the platform around the sandbox ------------------------------------------------------


def test_no_privileges_no_terminal_and_a_filter_inside(isolated):
    # capabilities(7): capget, PR_CAPBSET_READ; prctl(2): PR_GET_NO_NEW_PRIVS (39) is 1 after
    # bwrap's prctl(PR_SET_NO_NEW_PRIVS) (bubblewrap.c), PR_GET_SECCOMP (21) is 2 in filter mode;
    # bwrap.xml --new-session: setsid(), so no controlling terminal (open("/dev/tty"): ENXIO)
    code = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
data = (Data * 2)()
libc.capget(ctypes.byref(Header(0x20080522, 0)), data)
try:
    os.open("/dev/tty", os.O_RDWR)
    tty = "opened"
except OSError as exc:
    tty = exc.strerror
print(json.dumps({
    "caps": [d.effective | d.permitted | d.inheritable for d in data],
    "bounding": [c for c in range(64) if libc.prctl(23, c, 0, 0, 0) == 1],
    "no_new_privs": libc.prctl(39, 0, 0, 0, 0), "seccomp": libc.prctl(21, 0, 0, 0, 0),
    "tty": tty, "session": os.getsid(0), "dev": sorted(os.listdir("/dev")),
}))
"""
    result = sandbox.run_python(code)
    assert result.ok, result
    seen = json.loads(result.output.splitlines()[-1])
    assert seen["caps"] == [0, 0] and seen["bounding"] == []
    assert seen["no_new_privs"] == 1 and seen["seccomp"] == 2
    assert seen["tty"] == "No such device or address" and seen["session"] == 1
    # bwrap --dev: a fresh tmpfs with the harmless nodes only, no host devices
    assert set(seen["dev"]) <= {
        "console", "core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr",
        "stdin", "stdout", "tty", "urandom", "zero",
    }  # fmt: skip


def _kernel_numbers(header: str) -> dict[str, int]:
    text = Path(header).read_text()
    return {m[0]: int(m[1]) for m in re.findall(r"#define __NR_(\w+)\s+(\d+)", text)}


def test_the_filters_syscall_numbers_are_the_kernels():
    """seccomp.py's table against the installed kernel headers (linux-libc-dev, make test-deps):
    arch/x86 syscall_64.tbl as asm/unistd_64.h, and the generic table aarch64 uses."""
    generic = _kernel_numbers("/usr/include/asm-generic/unistd.h")
    x86_header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    x86 = _kernel_numbers(str(x86_header)) if x86_header.exists() else None
    if x86 is None:
        assert seccomp.machine() != "x86_64", "linux-libc-dev is missing"
    table = {**seccomp.DENIED, "clone": seccomp.CLONE, "clone3": seccomp.CLONE3}
    table["socket"] = seccomp.SOCKET
    for name, (on_x86, on_arm) in table.items():
        if on_arm is not None:
            assert generic[name] == on_arm, name
        if x86 is not None:
            assert x86[name] == on_x86, name


def test_every_filtered_call_is_refused_and_ordinary_ones_work(isolated):
    """With all-zero arguments each refused call would otherwise do nothing or fail with
    EINVAL/EFAULT; under the filter each returns EPERM (seccomp(2) SECCOMP_RET_ERRNO)."""
    col = 0 if seccomp.machine() == "x86_64" else 1
    numbers = {n: nrs[col] for n, nrs in seccomp.DENIED.items() if nrs[col] is not None}
    code = f"""
import ctypes, errno, json, os, socket, threading
libc = ctypes.CDLL(None, use_errno=True)
def err(*args):
    ctypes.set_errno(0)
    libc.syscall(*[ctypes.c_long(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())
seen = {{name: err(nr, 0, 0, 0, 0, 0, 0) for name, nr in {numbers!r}.items()}}
seen["clone3"] = err({seccomp.CLONE3[col]}, 0, 0)
seen["clone NEWUSER"] = err({seccomp.CLONE[col]}, 0x10000000 | 17, 0, 0, 0, 0)
if {col} == 0:
    seen["x32 getpid"] = err(0x40000000 | 39)
for family in (40, 17):  # AF_VSOCK, AF_PACKET
    try:
        socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        seen[f"socket {{family}}"] = errno.errorcode[exc.errno]
socket.socket(socket.AF_UNIX).close()
pid = os.fork()
if pid == 0:
    os._exit(7)
seen["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
box = []
thread = threading.Thread(target=box.append, args=(1,))
thread.start()
thread.join()
seen["thread"] = box
print(json.dumps(seen))
"""
    result = sandbox.run_python(code)
    assert result.ok, result
    seen = json.loads(result.output.splitlines()[-1])
    assert {n: seen.pop(n) for n in numbers} == dict.fromkeys(numbers, "EPERM")
    assert seen.pop("clone3") == "ENOSYS" and seen.pop("clone NEWUSER") == "EPERM"
    assert seen.pop("x32 getpid", "EPERM") == "EPERM"
    assert seen == {"socket 40": "EAFNOSUPPORT", "socket 17": "EAFNOSUPPORT", "fork": 7,
                    "thread": [1]}  # fmt: skip


def test_without_seccomp_support_for_the_cpu_nothing_runs(monkeypatch):
    monkeypatch.setattr(seccomp, "machine", lambda: "riscv64")
    sandbox.forget()
    try:
        result = sandbox.run_python("print('must not run')")
    finally:
        monkeypatch.undo()
        sandbox.forget()
    assert result.skipped and "no seccomp filter for this CPU (riscv64" in result.note


def _old_bwrap(tmp_path: Path, real: str) -> str:
    """bwrap as Ubuntu 22.04 ships it (0.6.1): no --size (0.7.0), no --disable-userns (0.8.0).
    Its option parser dies on an option it does not know (bubblewrap.c v0.6.2 line 2431:
    die ("Unknown option %s", arg)), and --help lists only what it parses; the rest is the real
    bwrap of this machine."""
    stub = tmp_path / "bwrap"
    stub.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --help ]; then {real} --help | grep -v -e --size -e userns; exit 0; fi\n'
        'for arg in "$@"; do case "$arg" in\n'
        "  --size|--disable-userns|--assert-userns-disabled)\n"
        '    echo "bwrap: Unknown option $arg" >&2; exit 1;;\n'
        "  --) break;;\n"
        "esac; done\n"
        f'exec {real} "$@"\n'
    )
    stub.chmod(0o755)
    tmp_path.chmod(0o755)
    return str(stub)


def test_an_older_bubblewrap_still_isolates(isolated, monkeypatch):
    with tempfile.TemporaryDirectory(dir="/tmp") as where:
        old = _old_bwrap(Path(where), isolated.bwrap)
        monkeypatch.setenv("PATH", f"{where}:{os.environ['PATH']}")
        sandbox.forget()
        try:
            found = sandbox.availability()
            assert found.sandbox is not None, found.reason
            assert found.sandbox.bwrap == old
            assert found.sandbox.features == isolation.Features(True, False, False)
            result = sandbox.run_python(
                "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
                "try:\n    open('/tmp/x', 'w')\nexcept OSError as exc:\n    print(exc)\n"
            )
            case = CODE_CASES[0]
            good = sandbox.check_function(case["reference"], case["function"], case["test"])
        finally:
            monkeypatch.undo()
            sandbox.forget()
    assert result.ok, result
    assert "unshare -1 1" in result.output  # EPERM from the filter, without --disable-userns
    assert "Read-only file system" in result.output  # no --size: no writable tmpfs at all
    assert good.ok, good


def test_a_python_installed_in_home_does_not_show_home(isolated, monkeypatch):
    """A Python built with --prefix=$HOME: binding its prefix (as the first version did) binds
    all of $HOME, the decoy key with it; only the executable and $HOME/lib are bound. (Under
    /var/tmp: the sandbox's own /tmp would hide a bind under /tmp.)"""
    token = os.urandom(8).hex()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as where:
        home = Path(where)
        home.chmod(0o755)
        (home / ".ssh").mkdir()
        key = home / ".ssh" / "id_ed25519"
        key.write_text(f"DECOY-{token}\n")
        key.chmod(0o644)
        (home / "bin").mkdir()
        python = home / "bin" / "python3"
        shutil.copy2(os.path.realpath(isolated.python), python)
        stdlib = Path(
            subprocess.run(
                [str(python), "-I", "-S", "-c", "import os; print(os.path.dirname(os.__file__))"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        )  # fmt: skip
        (home / "lib").mkdir()
        (home / "lib" / stdlib.name).symlink_to(stdlib)
        monkeypatch.setenv("HOME", str(home))
        binds = isolation.binds_for(str(python), str(home), None)
        assert binds == (str(python), str(home / "lib"))
        assert isolation.exposes_home(str(home)) and isolation.exposes_home("/")
        assert not isolation.exposes_home(str(home / "lib"))
        mine = isolation.Sandbox(isolated.bwrap, str(python), binds, isolated.run_as)
        monkeypatch.setattr(sandbox, "availability", lambda: sandbox.Availability(mine))
        result = sandbox.run_python(
            f"import sys\nprint('RAN', sys.executable)\nprint(open({str(key)!r}).read())\n"
        )
    assert f"RAN {python}" in result.output, result  # that interpreter ran, from $HOME
    assert "FileNotFoundError" in result.output and token not in result.output


def test_a_uid_without_a_passwd_entry_works_as_well_as_nobody(isolated):
    """subprocess's user= takes a number and does no lookup (CPython Lib/subprocess.py: an int
    is used as is; Modules/_posixsubprocess.c: setgroups, setregid, setreuid in the child), and
    bwrap needs no passwd entry: nobody missing from /etc/passwd changes nothing."""
    if os.geteuid() != 0:
        pytest.skip("only root starts bwrap as another uid")
    free = next(u for u in range(64000, 65000) if not _has_passwd_entry(u))
    other = isolation.Sandbox(
        isolated.bwrap, isolated.python, isolated.binds, free, isolated.features
    )
    assert isolation.probe(other) == ""


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


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
