"""ansible-lint, production profile, on ansible/ (site.yml and the three roles)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ANSIBLE_DIR = Path(__file__).resolve().parent.parent / "ansible"


def test_ansible_lint_production_profile_is_clean() -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["NO_COLOR"] = "1"
    proc = subprocess.run(
        [str(bin_dir / "ansible-lint"), "--profile", "production", "--offline"],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out
    assert "0 failure(s), 0 warning(s)" in out, out


def test_every_role_has_the_layout_and_documents_its_variables() -> None:
    for role in ("nvidia_driver", "ollama", "autostop"):
        base = ANSIBLE_DIR / "roles" / role
        for part in (
            "defaults/main.yml",
            "tasks/main.yml",
            "handlers/main.yml",
            "meta/main.yml",
            "README.md",
        ):
            assert (base / part).is_file(), f"{role}: missing {part}"
        assert list((base / "templates").glob("*.j2")), f"{role}: no templates"
        defaults = (base / "defaults/main.yml").read_text().splitlines()
        readme = (base / "README.md").read_text()
        for i, line in enumerate(defaults):
            if line and not line.startswith(("#", "-", " ")) and ":" in line:
                name = line.split(":")[0]
                assert name.startswith(f"{role}_"), f"{role}: {name} lacks the role prefix"
                j = i - 1  # a comment may document a group of variables listed together
                while j > 0 and defaults[j] and not defaults[j].startswith("#"):
                    j -= 1
                assert defaults[j].startswith("#"), f"{role}: {name} has no comment above it"
                assert f"`{name}`" in readme, f"{role}: README does not mention {name}"
