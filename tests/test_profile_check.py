"""`python -m rig check`: every bad input gets one line naming the field path, the value and
the fix. Each case edits the real default rig.toml the way a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rig.problems import ProfileError
from rig.profile import Profile, load_profile

ROOT = Path(__file__).resolve().parent.parent
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7m5y0hx3vZ2z rehearsal@laptop\n"

# (id, edits, files beside rig.toml, expected field path, substrings the message must hold)
CASES = [
    (
        "unknown-gpu",
        [("pc", "gpu", '"rtx-4070"')],
        {},
        "pc.gpu",
        ["'rtx-4070' is not a known GPU", "rtx-5060-ti-16gb", ".venv/bin/rig catalog"],
    ),
    (
        "unknown-cpu",
        [("pc", "cpu", '"i9-14900k"')],
        {},
        "pc.cpu",
        ["'i9-14900k' is not a known CPU", "ryzen-7-9700x"],
    ),
    (
        "unknown-ram-kind",
        [("pc", "ram", '"ddr6-9000"')],
        {},
        "pc.ram",
        ["'ddr6-9000'", "ddr5-5600"],
    ),
    (
        "unknown-instance-type",
        [("aws", "instance_types", '["g4dn.99xlarge"]')],
        {},
        "aws.instance_types[0]",
        [
            "'g4dn.99xlarge' is not a known instance type — known: g4dn.2xlarge, g4dn.xlarge",
            "(see .venv/bin/rig catalog)",
        ],
    ),
    (
        "instance-without-gpu",
        [("aws", "instance_types", '["t3.large"]')],
        {},
        "aws.instance_types[0]",
        ["'t3.large' has no GPU", "use a GPU instance type: g4dn"],
    ),
    (
        "instance-not-offered-in-region",
        [("aws", "instance_types", '["g6.2xlarge"]')],
        {},
        "aws.instance_types[0]",
        ["'g6.2xlarge' is not offered in eu-west-1", "set aws.region to one of", "eu-north-1"],
    ),
    (
        "second-instance-bad",
        [("aws", "instance_types", '["g4dn.2xlarge", "g5.4xl"]')],
        {},
        "aws.instance_types[1]",
        ["'g5.4xl' is not a known instance type"],
    ),
    (
        "instance-listed-twice",
        [("aws", "instance_types", '["g5.xlarge", "g5.xlarge"]')],
        {},
        "aws.instance_types[1]",
        ["listed twice", "remove the duplicate"],
    ),
    (
        "no-instance-types",
        [("aws", "instance_types", "[]")],
        {},
        "aws.instance_types",
        ["is empty", "enabled = false"],
    ),
    (
        "azure-size-under-aws",
        [("aws", "instance_types", '["Standard_NC8as_T4_v3"]')],
        {},
        "aws.instance_types[0]",
        ["belongs to AZURE", "move it to [azure] vm_sizes"],
    ),
    (
        "unknown-vm-size",
        [("azure", "vm_sizes", '["Standard_NC99_T4"]')],
        {},
        "azure.vm_sizes[0]",
        ["'Standard_NC99_T4' is not a known VM size", "Standard_NC8as_T4_v3"],
    ),
    (
        "vm-size-without-gpu",
        [("azure", "vm_sizes", '["Standard_D8s_v5"]')],
        {},
        "azure.vm_sizes[0]",
        ["has no GPU", "Standard_NC4as_T4_v3"],
    ),
    (
        "unknown-aws-region",
        [("aws", "region", '"eu-west-9"')],
        {},
        "aws.region",
        ["'eu-west-9' is not an AWS region", "eu-west-1"],
    ),
    (
        "unknown-azure-location",
        [("azure", "location", '"West Europe"')],
        {},
        "azure.location",
        ["'West Europe' is not an Azure location", "westeurope"],
    ),
    (
        "unknown-model-tag",
        [("bench", "models", '["llama9:70b"]')],
        {},
        "bench.models[0]",
        ["'llama9:70b' is not a known model tag", "rig/catalog/models.toml"],
    ),
    (
        "plan-tag-rinna",
        [("bench", "models", '["llama3:8b", "rinna/youri-7b-chat"]')],
        {},
        "bench.models[1]",
        [
            "'rinna/youri-7b-chat' does not exist in Ollama",
            "use 'hf.co/elyza/Llama-3-ELYZA-JP-8B-GGUF:Q4_K_M'",
        ],
    ),
    (
        "plan-tag-phi3-small",
        [("bench", "models", '["phi3:small"]')],
        {},
        "bench.models[0]",
        ["no phi3:small", "use 'phi3:medium'"],
    ),
    (
        "unknown-workload",
        [("bench", "workloads", '["chat-en", "poetry"]')],
        {},
        "bench.workloads[1]",
        ["'poetry' is not allowed", "'chat-ja'"],
    ),
    (
        "zero-repetitions",
        [("bench", "repetitions", "0")],
        {},
        "bench.repetitions",
        ["0 must be between 1 and 20", "repetitions = 3"],
    ),
    (
        "idle-minutes-zero",
        [("autostop", "idle_minutes", "0")],
        {},
        "autostop.idle_minutes",
        ["0 must be between 5 and 1440", "idle_minutes = 30"],
    ),
    (
        "idle-minutes-negative",
        [("autostop", "idle_minutes", "-5")],
        {},
        "autostop.idle_minutes",
        ["-5 must be between", "idle_minutes = 30"],
    ),
    (
        "idle-minutes-not-a-number",
        [("autostop", "idle_minutes", '"thirty"')],
        {},
        "autostop.idle_minutes",
        ["'thirty' is not a whole number", "idle_minutes = 30"],
    ),
    (
        "max-hours-zero",
        [("autostop", "max_hours", "0")],
        {},
        "autostop.max_hours",
        ["0 must be a positive number", "max_hours = 4"],
    ),
    (
        "max-hours-negative",
        [("autostop", "max_hours", "-2.5")],
        {},
        "autostop.max_hours",
        ["-2.5 must be a positive number", "max_hours = 4"],
    ),
    (
        "max-hours-not-a-number",
        [("autostop", "max_hours", '"four"')],
        {},
        "autostop.max_hours",
        ["'four' is not a number", "max_hours = 4"],
    ),
    (
        "max-hours-over-24-without-opt-in",
        [("autostop", "max_hours", "48")],
        {},
        "autostop.max_hours",
        ["48 h is over 24 h", "autostop.allow_long_runs = true"],
    ),
    (
        "max-hours-beyond-a-week",
        [("autostop", "max_hours", "500"), ("autostop", "allow_long_runs", "true")],
        {},
        "autostop.max_hours",
        ["500 is over 168 h", "lower it"],
    ),
    (
        "bad-daily-shutdown",
        [("autostop", "daily_shutdown", '"7pm"')],
        {},
        "autostop.daily_shutdown",
        ["'7pm' is not a 24-hour time", '"HH:MM"', '"off"'],
    ),
    (
        "daily-shutdown-24h",
        [("autostop", "daily_shutdown", '"24:00"')],
        {},
        "autostop.daily_shutdown",
        ["'24:00' is not a 24-hour time"],
    ),
    (
        "bad-timezone",
        [("autostop", "timezone", '"Tokyo"')],
        {},
        "autostop.timezone",
        ["'Tokyo' is not an IANA time zone", "Asia/Tokyo"],
    ),
    (
        "open-ssh-ipv4",
        [("access", "ssh_source", '"0.0.0.0/0"')],
        {},
        "access.ssh_source",
        ["opens SSH to the whole internet", "access.allow_open_ssh = true", '"auto"'],
    ),
    (
        "open-ssh-ipv6",
        [("access", "ssh_source", '"::/0"')],
        {},
        "access.ssh_source",
        ["'::/0' opens SSH to the whole internet", "allow_open_ssh = true"],
    ),
    (
        "very-broad-ssh",
        [("access", "ssh_source", '"100.0.0.0/8"')],
        {},
        "access.ssh_source",
        ["16,777,216 addresses", "allow_open_ssh = true"],
    ),
    (
        "malformed-cidr",
        [("access", "ssh_source", '"203.0.113.300/32"')],
        {},
        "access.ssh_source",
        ["'203.0.113.300/32' is not a CIDR", '"203.0.113.7/32"'],
    ),
    (
        "cidr-host-bits",
        [("access", "ssh_source", '"203.0.113.7/24"')],
        {},
        "access.ssh_source",
        ["host bits set", '"203.0.113.0/24"', '"203.0.113.7/32"'],
    ),
    (
        "missing-public-key",
        [("access", "ssh_public_key", '"keys/nope.pub"')],
        {},
        "access.ssh_public_key",
        ["'keys/nope.pub' does not exist", "~/.ssh/id_ed25519.pub"],
    ),
    (
        "private-key-given",
        [("access", "ssh_public_key", '"id_ed25519"')],
        {"id_ed25519": PRIVATE_KEY},
        "access.ssh_public_key",
        ["is a PRIVATE key", "point to its .pub file"],
    ),
    (
        "not-a-public-key",
        [("access", "ssh_public_key", '"notes.txt"')],
        {"notes.txt": "hello\n"},
        "access.ssh_public_key",
        ["not an OpenSSH public key"],
    ),
    (
        "aws-disk-too-small",
        [("aws", "disk_gb", "100")],
        {},
        "aws.disk_gb",
        ["100 GB is too small", "need about 167 GB", "disk_gb = 170 or more"],
    ),
    (
        "azure-disk-too-small",
        [("azure", "disk_gb", "100")],
        {},
        "azure.disk_gb",
        ["100 GB is too small", "disk_gb = 140 or more"],
    ),
    (
        "spot-max-price-negative",
        [("aws", "spot_max_price", "-0.5")],
        {},
        "aws.spot_max_price",
        ["-0.5 is not a positive number", "spot_max_price = 0.5"],
    ),
    (
        "spot-max-price-text",
        [("azure", "spot_max_price", '"cheap"')],
        {},
        "azure.spot_max_price",
        ["'cheap' is not a positive number"],
    ),
    (
        "spot-max-price-without-spot",
        [("aws", "spot", "false"), ("aws", "spot_max_price", "0.5")],
        {},
        "aws.spot_max_price",
        ["0.5 is set but spot = false", "spot = true"],
    ),
    (
        "gp3-throughput-needs-iops",
        [("aws", "disk_throughput_mbs", "1000"), ("aws", "disk_iops", "3000")],
        {},
        "aws.disk_iops",
        ["3000 IOPS allow at most 750 MiB/s", "disk_iops = 4000"],
    ),
    (
        "bool-as-text",
        [("aws", "spot", '"yes"')],
        {},
        "aws.spot",
        ["'yes' is not true or false", "spot = true"],
    ),
    (
        "unknown-key-typo",
        [("aws", "instance_type", '["g4dn.xlarge"]')],
        {},
        "aws.instance_type",
        ["unknown key 'instance_type' in [aws]", "instance_types", "check the spelling"],
    ),
    (
        "unknown-azure-disk-type",
        [("azure", "disk_type", '"UltraSSD"')],
        {},
        "azure.disk_type",
        ["'UltraSSD' is not allowed", "Premium_LRS"],
    ),
]


@pytest.mark.parametrize(
    ("edits", "files", "path", "hints"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_bad_input_is_one_line_naming_field_and_fix(profile_file, edits, files, path, hints):
    rig_toml = profile_file(*edits)
    for name, content in files.items():
        (rig_toml.parent / name).write_text(content)
    with pytest.raises(ProfileError) as caught:
        load_profile(rig_toml)
    lines = caught.value.lines()
    prefix = f"{rig_toml}: {path}: "
    matching = [line for line in lines if line.startswith(prefix)]
    assert matching, f"no problem reported at {path}; got {lines}"
    assert len(matching) == 1, f"expected one line at {path}: {matching}"
    for hint in hints:
        assert hint in matching[0], f"{hint!r} missing from {matching[0]!r}"
    assert all("\n" not in line for line in lines)
    # Only the edited field is blamed: the rest of the default profile is valid.
    assert len(lines) == 1, lines


def test_at_least_25_cases_are_covered():
    assert len(CASES) >= 25


def test_unknown_section(profile_file):
    path = profile_file(
        text=(ROOT / "rig.toml").read_text(encoding="utf-8")
        + '\n[azzure]\nlocation = "westeurope"\n'
    )
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    (line,) = caught.value.lines()
    assert line.startswith(f"{path}: azzure: unknown section [azzure]")
    assert "known sections: [pc], [aws], [azure]" in line and "check the spelling" in line


def test_toml_syntax_error_names_line_and_column(profile_file):
    text = (
        (ROOT / "rig.toml")
        .read_text(encoding="utf-8")
        .replace('region = "eu-west-1"', "region = eu-west-1")
    )
    path = profile_file(text=text)
    lineno = text.splitlines().index("region = eu-west-1") + 1
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    (line,) = caught.value.lines()
    assert line.startswith(f"{path}: TOML syntax error at line {lineno}, column 10")
    assert "strings need quotes" in line


def test_missing_file_says_how_to_fix(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    (line,) = caught.value.lines()
    assert line == (
        f"{path}: no such file — run from the project root, pass --config PATH, "
        "or restore the default with `git checkout rig.toml`"
    )


def test_every_problem_is_reported_in_one_run(profile_file):
    path = profile_file(
        ("pc", "gpu", '"rtx-4070"'),
        ("aws", "disk_gb", '"big"'),
        ("aws", "instance_types", '["t3.large"]'),
        ("autostop", "idle_minutes", "0"),
        ("access", "ssh_source", '"0.0.0.0/0"'),
    )
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    paths = [line.split(": ")[1] for line in caught.value.lines()]
    assert paths == [
        "pc.gpu",
        "aws.disk_gb",
        "aws.instance_types[0]",
        "access.ssh_source",
        "autostop.idle_minutes",
    ]


def test_default_profile_is_valid_and_equals_the_built_in_defaults():
    profile = load_profile(ROOT / "rig.toml")
    assert profile.as_toml_dict() == Profile().as_toml_dict()
    assert profile.pc.gpu == "rtx-4060-ti-16gb"
    assert profile.aws.region == "eu-west-1" and profile.aws.instance_types == ["g4dn.2xlarge"]
    assert profile.azure.vm_sizes == ["Standard_NC8as_T4_v3"]
    assert profile.access.ssh_source == "auto" and profile.access.allow_open_ssh is False


def test_an_empty_file_means_all_defaults(profile_file):
    assert load_profile(profile_file(text="")).as_toml_dict() == Profile().as_toml_dict()


def test_valid_alternatives_are_accepted(profile_file):
    path = profile_file(
        ("pc", "gpu", '"rtx-5060-ti-16gb"'),
        ("aws", "region", '"eu-north-1"'),
        ("aws", "instance_types", '["g4dn.2xlarge", "g5.2xlarge", "g6.2xlarge"]'),
        ("aws", "image", '"ubuntu-24.04"'),
        ("access", "ssh_source", '"203.0.113.7"'),
        ("access", "ssh_public_key", '"me.pub"'),
        ("autostop", "max_hours", "30"),
        ("autostop", "allow_long_runs", "true"),
        ("autostop", "daily_shutdown", '"off"'),
        ("autostop", "timezone", '"Asia/Tokyo"'),
        ("aws", "spot_max_price", "0.4"),
    )
    (path.parent / "me.pub").write_text(PUBLIC_KEY)
    profile = load_profile(path)
    assert profile.pc.gpu == "rtx-5060-ti-16gb"
    assert str(profile.access.network()) == "203.0.113.7/32"
    assert profile.aws.spot_max_price == 0.4
    assert profile.access.key_path(profile.base_dir) == path.parent / "me.pub"


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rig", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_rejects_with_exit_2_and_no_traceback(profile_file):
    path = profile_file(
        ("aws", "instance_types", '["g4dn.99xlarge"]'), ("autostop", "max_hours", '"x"')
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{path}: aws.instance_types[0]: 'g4dn.99xlarge' is not a known instance type — known: "
        "g4dn.2xlarge, g4dn.xlarge, g5.2xlarge, g5.xlarge, g6.2xlarge, g6.xlarge "
        "(see .venv/bin/rig catalog)",
        f"{path}: autostop.max_hours: 'x' is not a number — write e.g. max_hours = 4",
    ]


def test_cli_syntax_error_and_missing_file_exit_2(tmp_path):
    bad = tmp_path / "rig.toml"
    bad.write_text("[aws\nregion = 1\n")
    for args in (["check", "--config", str(bad)], ["check", "--config", str(tmp_path / "x")]):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_cli_accepts_default_and_prints_resolved_profile():
    result = run_cli("check")
    assert result.returncode == 0, result.stderr
    assert "rig.toml: valid" in result.stdout
    assert "NVIDIA GeForce RTX 4060 Ti 16GB" in result.stdout
    assert "g4dn.2xlarge" in result.stdout and "$0.838/h" in result.stdout


def test_cli_check_json_resolves_prices_and_worst_case():
    result = run_cli("check", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (aws,) = data["resolved"]["aws"]
    assert aws == {
        "type": "g4dn.2xlarge",
        "gpu": "t4",
        "vram_gb": 16,
        "vcpu": 8,
        "ram_gib": 32,
        "on_demand_usd_per_hour": 0.838,
        "price_source": "vantage-2026-01-21",
        "region": "eu-west-1",
        # The one formula (rig.cost): compute at its cap (on demand, 0.838) + the gp3 disk
        # (200 GB x 0.088 + (417 - 125) MiB/s x 0.044 per month / 672 h = 0.0453; 417 MiB/s =
        # g4dn.2xlarge's 437.5 MB/s EBS burst) + one public IPv4 (0.005), for max_hours = 4
        # (catalog rates for eu-west-1, regions.toml). 672 h: AWS spreads a month's price over
        # that month's hours (re:Post Knowledge Center "ebs-volume-charges": 720 h in a 30-day
        # month), so the shortest month is the bound.
        "disk_usd_per_hour": 0.0453,
        "public_ipv4_usd_per_hour": 0.005,
        "worst_case_usd": round((0.838 + (200 * 0.088 + 292 * 0.044) / 672 + 0.005) * 4, 2),
        "price_unknown": None,
        "worst_case_floor_usd": None,
    }
    assert data["resolved"]["pc"]["ram_bandwidth_gbs"] == 89.6
    assert any("mixtral" in note for note in data["advisories"])
