"""The SSH tunnel and the GPU sampler over SSH, against a real sshd on 127.0.0.1.

The sshd is OpenSSH's own binary (Debian's openssh-server, installed by `make test-deps`), run
by the test on a free loopback port with throwaway keys; the far end is the loopback Ollama
stand-in. This is the path a deployed VM takes: Ollama bound to the VM's 127.0.0.1, reached
only through the tunnel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fake_ollama import FakeOllama

from bench.backends import OllamaBackend
from bench.gpu import GpuSampler
from bench.targets import Remote, SshTunnel, TargetError, free_port, wait_for_port

SSHD = "/usr/sbin/sshd"


@pytest.fixture
def sshd(tmp_path: Path):
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server not installed (Debian: openssh-server; make test-deps)")
    if os.geteuid() != 0:
        pytest.skip("needs root to run sshd for the current user with its privilege separation")
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    (tmp_path / "authorized_keys").write_text((tmp_path / "client.pub").read_text())
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
        f"StrictModes no\nAllowTcpForwarding local\nPidFile {tmp_path / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    assert wait_for_port(port, 15, proc), proc.stderr.read() if proc.stderr else ""
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout
    yield Remote(
        "127.0.0.1",
        user.strip(),
        str(tmp_path / "client"),
        port=port,
        known_hosts=str(tmp_path / "known_hosts"),
    )
    proc.terminate()
    proc.wait(timeout=10)


def test_tunnel_reaches_a_loopback_only_server_and_closes(sshd):
    with FakeOllama() as fake:
        far_port = int(fake.url.rsplit(":", 1)[1])
        tunnel = SshTunnel(sshd, remote_port=far_port)
        url = tunnel.open(timeout_s=20)
        try:
            assert url != fake.url and url.startswith("http://127.0.0.1:")
            assert OllamaBackend(url).version() == "0.5.1"
            assert OllamaBackend(url).loaded("mistral:latest").size_vram == 5137025024
        finally:
            tunnel.close()
        time.sleep(0.2)
        assert OllamaBackend(url).alive() is False  # the tunnel is gone with the bench
    host_key = (Path(sshd.key).parent / "host.pub").read_text().split()[1]
    assert host_key in Path(sshd.known_hosts).read_text()  # ours, not ~/.ssh/known_hosts


def test_a_tunnel_that_cannot_open_says_what_to_check(sshd):
    wrong = Remote(sshd.host, "nobody-here", sshd.key, port=sshd.port, known_hosts=sshd.known_hosts)
    with pytest.raises(
        TargetError, match=r"did not open: .*Permission denied.* — is the VM running"
    ):
        SshTunnel(wrong, remote_port=9).open(timeout_s=10)


def test_gpu_sampler_runs_nvidia_smi_through_ssh(sshd, tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    # Stands in for the VM's nvidia-smi in its -lms loop mode: the documented CSV, one line per
    # sample, "[N/A]" where the board reports no power.
    smi.write_text(
        "#!/bin/sh\nfor i in 1 2 3 4 5 6; do\n"
        '  echo "0, Tesla T4, $((5000 + i * 100)), 15360, 9$i, [N/A]"\n'
        "  sleep 0.2\ndone\n"
    )
    smi.chmod(0o755)
    sampler = GpuSampler(
        [*sshd.ssh_argv(), "env", f"PATH={fake_bin}:/usr/bin:/bin"], interval_ms=200
    )
    mark = sampler.mark()
    sampler.start()
    time.sleep(2.5)
    stats = sampler.stats_since(mark)
    sampler.stop()
    assert stats.vram_used_mib == 5600 and stats.power_w is None
    assert 91 <= stats.gpu_util_pct <= 96
