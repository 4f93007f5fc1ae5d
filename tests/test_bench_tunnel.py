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
from bench.workload import requests

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
            # /api/ps lists what is loaded: load it through the tunnel first
            stream = OllamaBackend(url).chat("mistral:latest", requests("chat-en", quick=True)[0])
            assert stream.text == "The sky is blue."
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
    # Stands in for the VM's nvidia-smi in its -lms loop mode: the documented CSV with its own
    # `timestamp` ("YYYY/MM/DD HH:MM:SS.msec", the VM's local time: here UTC+9), one line per
    # sample, "[N/A]" where the board reports no power. The first line comes at once, the rest
    # in one burst at the end, as a buffered pipe over SSH delivers them.
    smi.write_text(
        "#!/bin/sh\nout=''\nfor i in 1 2 3 4 5 6; do\n"
        "  line=\"$(TZ=JST-9 date +'%Y/%m/%d %H:%M:%S.%3N'), 0, Tesla T4, $((5000 + i * 100)),"
        ' 15360, 9$i, [N/A]"\n'
        '  if [ $i = 1 ]; then echo "$line"; else out="$out$line\n"; fi\n'
        '  sleep 0.5\ndone\nprintf "$out"\n'
    )
    smi.chmod(0o755)
    sampler = GpuSampler(
        [*sshd.ssh_argv(), "env", f"PATH={fake_bin}:/usr/bin:/bin"], interval_ms=500
    )
    sampler.start()
    deadline = time.monotonic() + 15
    while not sampler._samples and time.monotonic() < deadline:
        time.sleep(0.01)
    first = time.time()  # sample 1 was taken just before this, sample i (i - 1) x 0.5 s later
    try:
        # The window holds samples 3 and 4 (taken ~1.0 s and ~1.5 s after the first), which
        # only arrive ~3 s after the first: placed by arrival, none would be in it.
        stats = sampler.window(first + 0.75, first + 1.75, wait_s=10)
    finally:
        sampler.stop()
    assert stats.vram_used_mib == 5400 and stats.power_w is None
    assert stats.gpu_util_pct == pytest.approx(93.5)
