"""The CI rule: a skip is fine on a laptop, a failure under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)  # where the plugin module lives
SKIPPING = """
import pytest

def test_needs_root():
    pytest.skip("needs root")

def test_passes():
    assert True
"""


def test_skip_passes_on_a_laptop(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PYTHONPATH", HERE)
    pytester.makepyfile(SKIPPING)
    result = pytester.runpytest_subprocess("-p", "ci_no_skips")
    assert result.ret == 0
    result.assert_outcomes(passed=1, skipped=1)


def test_skip_fails_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTHONPATH", HERE)
    pytester.makepyfile(SKIPPING)
    result = pytester.runpytest_subprocess("-p", "ci_no_skips")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*CI=true: 1 test(s) skipped, which CI forbids*"])
