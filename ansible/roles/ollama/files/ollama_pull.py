#!/usr/bin/python3
"""Pull one Ollama model through /api/pull and keep its progress in a small JSON status file.

Installed by the ollama role and started in the background (systemd-run) by the role's
ollama_pull action, which reads the status file every few seconds and prints the progress, so a
20 GB pull shows bytes and percent while it runs and survives a dropped SSH connection.

/api/pull streams one JSON object per line (ollama docs/api.md "Pull a Model"):
{"status": "pulling manifest"}, then {"status": "pulling <digest>", "digest", "total",
"completed"} per layer (completed may be missing at first), then "verifying sha256 digest",
"writing manifest", "success"; or {"error": "..."}. Pulls resume where they stopped.

Standard library only, Python 3.10 compatible.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def write(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def pull(api: str, model: str, status_path: Path) -> int:
    layers: dict[str, tuple[int, int]] = {}  # digest -> (completed, total)
    state: dict[str, object] = {"model": model, "status": "starting", "done": False}
    write(status_path, state)
    last_write = 0.0
    req = urllib.request.Request(
        f"{api}/api/pull",
        data=json.dumps({"model": model}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            for raw in resp:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if "error" in line:
                    state.update(status="error", error=str(line["error"]), done=True)
                    break
                digest = line.get("digest")
                if digest and line.get("total"):
                    layers[digest] = (int(line.get("completed") or 0), int(line["total"]))
                state.update(
                    status=str(line.get("status", "")),
                    completed=sum(c for c, _ in layers.values()),
                    total=sum(t for _, t in layers.values()),
                )
                if state["status"] == "success":
                    state["done"] = True
                    break
                if time.monotonic() - last_write >= 0.2:
                    write(status_path, state)
                    last_write = time.monotonic()
            else:
                state.update(status="error", error="the stream ended before success", done=True)
    except (OSError, urllib.error.URLError) as exc:
        state.update(status="error", error=f"{type(exc).__name__}: {exc}", done=True)
    write(status_path, state)
    return 0 if state["status"] == "success" else 1


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "run":
        print("usage: ollama_pull.py run API MODEL STATUS_FILE", file=sys.stderr)
        return 2
    _, api, model, status = argv
    return pull(api, model, Path(status))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
