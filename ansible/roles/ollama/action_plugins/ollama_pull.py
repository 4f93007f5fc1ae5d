"""Action `ollama_pull`: pull one model on the VM and show its progress while it runs.

Ansible prints a task's output only when the task ends; a 26 GB pull would be minutes of
silence. This action starts files/ollama_pull.py in the background on the VM (systemd-run, so
the pull survives a dropped SSH connection), reads its status file every `interval` seconds and
prints "<model>: 2.10 of 4.66 GB (45 %)" lines as it goes. A failed pull is started again up to
`retries` times (Ollama resumes pulls).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("model", "api", "helper", "interval", "retries", "timeout", "label"))

    def _remote(self, argv: list[str], task_vars: dict[str, Any]) -> dict[str, Any]:
        return self._execute_module(
            module_name="ansible.legacy.command",
            module_args={"argv": argv},
            task_vars=task_vars,
        )

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        model = str(args["model"])
        label = str(args.get("label") or model)
        if self._task.check_mode:
            result.update(changed=True, msg=f"check mode: would pull {model}")
            return result
        api = str(args.get("api", "http://127.0.0.1:11434"))
        helper = str(args["helper"])
        interval = float(args.get("interval", 5))
        retries = int(args.get("retries", 3))
        deadline = time.monotonic() + float(args.get("timeout", 7200))
        key = hashlib.sha256(model.encode()).hexdigest()[:12]
        status_file = f"/run/rehearsal-pull-{key}.json"
        errors: list[str] = []
        for attempt in range(1, retries + 1):
            start = self._remote(
                [
                    "systemd-run", "--quiet", "--collect", f"--unit=rehearsal-pull-{key}-{attempt}",
                    "/usr/bin/python3", helper, "run", api, model, status_file,
                ],
                task_vars,
            )  # fmt: skip
            if start.get("rc") != 0:
                why = start.get("stderr") or start.get("msg")
                errors.append(f"could not start the pull: {why}")
                continue
            state = self._follow(label, status_file, interval, deadline, task_vars)
            if state.get("status") == "success":
                result.update(changed=True, msg=f"{model}: pulled", attempts=attempt, **state)
                return result
            errors.append(str(state.get("error") or state.get("status")))
            display.display(f"  {label}: attempt {attempt} of {retries} failed: {errors[-1]}")
            if time.monotonic() >= deadline:
                break
        result.update(
            failed=True,
            msg=f"ollama: pulling {model} failed ({'; '.join(errors)}) — check the name on "
            "ollama.com/library and the disk space, then rerun (pulls resume)",
        )
        return result

    def _follow(
        self, label: str, status_file: str, interval: float, deadline: float, task_vars: dict
    ) -> dict[str, Any]:
        shown = (-1, "")
        last_line = 0.0
        while time.monotonic() < deadline:
            read = self._remote(["cat", status_file], task_vars)
            try:
                state = json.loads(read.get("stdout") or "{}")
            except ValueError:
                state = {}
            total, done = int(state.get("total") or 0), int(state.get("completed") or 0)
            pct = int(done * 100 / total) if total else 0
            status = str(state.get("status", "waiting"))
            phase = status if not status.startswith("pulling ") else "pulling"
            # A line per 5 % step or phase change, and one at least every minute.
            if (pct // 5, phase) != shown or time.monotonic() - last_line > 60:
                gb = f"{done / 1e9:.2f} of {total / 1e9:.2f} GB ({pct} %)" if total else ""
                display.display(f"  ollama pull {label}: {gb} {phase}".rstrip())
                shown, last_line = (pct // 5, phase), time.monotonic()
            if state.get("done"):
                return state
            time.sleep(interval)
        return {"status": "error", "error": "timed out"}
