"""pytest plugin: under CI=true a skipped test fails the run.

A test may skip on a laptop (no root, not Linux, no built engine), but CI must run them all:
a green CI that skipped the real checks would prove nothing.
"""

from __future__ import annotations

import os

import pytest


def ci_is_strict() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not ci_is_strict():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        names = ", ".join(getattr(r, "nodeid", "?") for r in skipped[:10])
        if reporter is not None:
            reporter.write_line(
                f"CI=true: {len(skipped)} test(s) skipped, which CI forbids: {names}", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
