"""A private sshd for the tests: its own host key, one throwaway client key, 127.0.0.1 only.

Nothing touches the machine's own ssh setup: the client side is a config file
of its own, passed to pvtui as ``$PVTUI_SSH_CONFIG`` (``ssh -F``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@dataclass
class PrivateSshd:
    folder: Path
    address: str
    port: int
    alias: str
    process: subprocess.Popen[bytes] | None = None
    netns: str | None = None

    @property
    def client_config(self) -> Path:
        return self.folder / "ssh_config"

    def start(self) -> None:
        folder = self.folder
        keygen(folder / "host_key")
        if not (folder / "id").exists():
            keygen(folder / "id")
        (folder / "authorized_keys").write_text((folder / "id.pub").read_text())
        (folder / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress {self.address}\nHostKey {folder / 'host_key'}\n"
            f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "UsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nAllowStreamLocalForwarding yes\nAllowTcpForwarding yes\n"
            "PermitUserEnvironment no\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        command = [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")]
        if self.netns:  # nsenter, not ip netns exec: that one remounts /sys (cgroups would look different)
            command = ["nsenter", f"--net=/run/netns/{self.netns}", *command]
        self.process = subprocess.Popen(command, stderr=open(folder / "sshd.log", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.answers():
            time.sleep(0.05)
        self.trust(folder / "host_key.pub")

    def answers(self) -> bool:
        probe = ["ssh-keyscan", "-T", "1", "-p", str(self.port), self.address]
        return bool(subprocess.run(probe, capture_output=True, text=True).stdout.strip())

    def trust(self, host_key_pub: Path) -> None:
        """Write the client config, believing ``host_key_pub`` is this host's key."""
        key = " ".join(host_key_pub.read_text().split()[:2])
        pattern = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        (self.folder / "known_hosts").write_text(f"{pattern} {key}\n")
        self.client_config.write_text(
            f"Host {self.alias}\n  HostName {self.address}\n  Port {self.port}\n  User root\n"
            f"  IdentityFile {self.folder / 'id'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.folder / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
            "  GlobalKnownHostsFile /dev/null\n"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            self.process = None


def can_run_sshd() -> str | None:
    """Why a private sshd cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (CI runs as root): sshd checks the user it logs in"
    if not os.path.exists(SSHD):
        return "needs openssh-server (apt-get install -y openssh-server; .ci/run does)"
    return None


@contextlib.contextmanager
def network_namespace(name: str, subnet: int):
    """A namespace joined to this one by a veth pair: 10.213.SUBNET.1 here, .2 inside.

    Only addresses the test gave itself; removed (with the pair) afterwards."""
    outside, inside = f"pv{subnet}o", f"pv{subnet}i"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
        ["ip", "link", "set", inside, "netns", name],
        ["ip", "addr", "add", f"10.213.{subnet}.1/24", "dev", outside],
        ["ip", "link", "set", outside, "up"],
        ["ip", "-n", name, "addr", "add", f"10.213.{subnet}.2/24", "dev", inside],
        ["ip", "-n", name, "link", "set", inside, "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield f"10.213.{subnet}.2"
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
