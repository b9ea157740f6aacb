"""ssh:// hosts through a real OpenSSH: a private sshd on 127.0.0.1 with a throwaway key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_pvtui, wait_until
from sshd_helpers import PrivateSshd, can_run_sshd, free_port, keygen

from pvtui.client.hosts import parse_host_uri
from pvtui.client.ssh import control_path

pytestmark = pytest.mark.skipif(bool(can_run_sshd()), reason=can_run_sshd() or "")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSshd]:
    server = PrivateSshd(tmp_path_factory.mktemp("sshd"), "127.0.0.1", free_port(), "pvtuitest")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def far(kvm_available: None, sshd: PrivateSshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A pvd 'on the far host', started through ssh; the env every command needs."""
    runtime = tmp_path_factory.mktemp("far-run")
    import sys

    env = {
        "PVTUI_SSH_CONFIG": str(sshd.client_config),
        "PVTUI_REMOTE_PYTHON": sys.executable,
        "PVTUI_RUNTIME_DIR": str(tmp_path_factory.mktemp("near-run")),  # this machine's own: must stay unused
    }
    uri = f"ssh://{sshd.alias}{runtime}/pvd.sock"
    started = run_pvtui("-H", uri, "engine", "start", env=env)
    assert started.returncode == 0, started.stderr
    yield {"env": env, "uri": uri, "runtime": runtime}
    run_pvtui("-H", uri, "engine", "stop", "--destroy-domains", env=env)
    from pvtui.client.ssh import close_tunnel

    os.environ["PVTUI_SSH_CONFIG"] = env["PVTUI_SSH_CONFIG"]
    try:
        close_tunnel(parse_host_uri(uri))
    finally:
        del os.environ["PVTUI_SSH_CONFIG"]


def cli(far: dict, *args: str) -> str:
    result = run_pvtui("-H", far["uri"], *args, env=far["env"])
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


def test_list_create_hotplug_and_events_through_the_tunnel(far: dict, tmp_path: Path) -> None:
    definition = tmp_path / "remote1.yaml"
    definition.write_text("name: remote1\nmemory: 64M\nvcpus: 1\nmaxvcpus: 2\nworkload: chatty\n")
    cli(far, "create", str(definition))
    rows = {d["name"]: d for d in json.loads(cli(far, "list", "--json"))}
    assert "remote1" in rows
    cli(far, "vcpu-set", "remote1", "2")
    assert wait_until(
        lambda: next(d for d in json.loads(cli(far, "list", "--json")) if d["name"] == "remote1")["vcpus_online"] == 2,
        5,
    )
    assert "chatty" in cli(far, "console", "-n", "remote1")  # console over the tunnel
    top = cli(far, "top", "-b", "-i", "2", "-d", "0.5")  # stats events over the tunnel
    assert top.count("remote1") >= 2
    assert not (Path(far["env"]["PVTUI_RUNTIME_DIR"]) / "pvd.sock").exists(), "no local pvd"
    cli(far, "destroy", "remote1")


def test_the_tunnel_killed_mid_session_comes_back(far: dict) -> None:
    cli(far, "list")
    os.environ["PVTUI_SSH_CONFIG"] = far["env"]["PVTUI_SSH_CONFIG"]
    try:
        control = control_path(parse_host_uri(far["uri"]))
    finally:
        del os.environ["PVTUI_SSH_CONFIG"]
    master = subprocess.run(["fuser", str(control)], capture_output=True, text=True).stdout.split()
    pids = [int(p) for p in master if p.strip().isdigit()]
    if not pids:  # fuser missing: find the master by its control path
        ps = subprocess.run(["pgrep", "-f", str(control)], capture_output=True, text=True).stdout.split()
        pids = [int(p) for p in ps]
    assert pids, "the ssh master should be running"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    again = run_pvtui("-H", far["uri"], "list", env=far["env"])
    assert again.returncode == 0, again.stderr  # re-established, no error to the operator
    assert not (Path(far["env"]["PVTUI_RUNTIME_DIR"]) / "pvd.sock").exists()


def test_an_unreachable_ssh_host_is_a_clear_error(far: dict, sshd: PrivateSshd) -> None:
    env = far["env"]
    uri = f"ssh://nobody@127.0.0.1:{sshd.port + 1 if sshd.port < 65535 else 1}/x/pvd.sock"
    result = run_pvtui("-H", uri, "list", env=env, timeout=60)
    assert result.returncode != 0
    assert "Cannot reach host ssh://" in result.stderr and "No pvd was started" in result.stderr, result.stderr
    assert not (Path(env["PVTUI_RUNTIME_DIR"]) / "pvd.sock").exists()


def test_a_host_key_mismatch_is_refused(sshd: PrivateSshd, far: dict, tmp_path: Path) -> None:
    impostor = tmp_path / "other_key"
    keygen(impostor)
    liar = PrivateSshd(sshd.folder, sshd.address, sshd.port, "liar")
    saved = sshd.client_config.read_text(), (sshd.folder / "known_hosts").read_text()
    liar.trust(impostor.with_suffix(".pub"))  # the client now expects another key
    try:
        env = {**far["env"]}
        result = run_pvtui("-H", f"ssh://liar{far['runtime']}/pvd.sock", "list", env=env, timeout=60)
        assert result.returncode != 0
        assert "Cannot reach host" in result.stderr and "verification failed" in result.stderr.lower(), result.stderr
    finally:
        sshd.client_config.write_text(saved[0])
        (sshd.folder / "known_hosts").write_text(saved[1])


def test_a_second_host_in_a_network_namespace(far: dict, sshd: PrivateSshd, tmp_path_factory) -> None:
    """Two ssh:// hosts at once, the second across a veth pair in its own network namespace."""
    import asyncio
    import sys

    from sshd_helpers import network_namespace

    from pvtui.client.connect import connect_host

    name = f"pvtui-test-{os.getpid()}"
    try:
        context = network_namespace(name, os.getpid() % 200 + 20)
        address = context.__enter__()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    folder = tmp_path_factory.mktemp("sshd-ns")
    (folder / "id").write_bytes((sshd.folder / "id").read_bytes())
    (folder / "id.pub").write_bytes((sshd.folder / "id.pub").read_bytes())
    (folder / "id").chmod(0o600)
    second = PrivateSshd(folder, address, 22, "nshost", netns=name)
    runtime = tmp_path_factory.mktemp("ns-run")
    env = {**far["env"], "PVTUI_SSH_CONFIG": str(folder / "ssh_config"), "PVTUI_REMOTE_PYTHON": sys.executable}
    uri = f"ssh://nshost{runtime}/pvd.sock"
    try:
        second.start()
        started = run_pvtui("-H", uri, "engine", "start", env=env)
        assert started.returncode == 0, started.stderr
        definition = tmp_path_factory.mktemp("ns-def") / "inns.yaml"
        definition.write_text("name: inns\nmemory: 32M\n")
        assert run_pvtui("-H", uri, "create", str(definition), env=env).returncode == 0
        listed = json.loads(run_pvtui("-H", uri, "list", "--json", env=env).stdout)
        assert [d["name"] for d in listed] == ["inns"]
        os.environ["PVTUI_SSH_CONFIG"] = env["PVTUI_SSH_CONFIG"]

        async def host_id(text: str, config: str) -> str:
            os.environ["PVTUI_SSH_CONFIG"] = config
            client = await connect_host(parse_host_uri(text))
            try:
                return (await client.host()).host_id
            finally:
                await client.close()

        ns_id = asyncio.run(host_id(uri, env["PVTUI_SSH_CONFIG"]))
        far_id = asyncio.run(host_id(far["uri"], far["env"]["PVTUI_SSH_CONFIG"]))
        assert ns_id and far_id and ns_id != far_id
    finally:
        run_pvtui("-H", uri, "engine", "stop", "--destroy-domains", env=env)
        os.environ.pop("PVTUI_SSH_CONFIG", None)
        second.stop()
        context.__exit__(None, None, None)


def test_a_live_move_to_an_ssh_host(far: dict, engine) -> None:
    """From this machine's pvd to the far one, the stream relayed through the ssh tunnel."""
    engine.ok("create", engine.define("traveller", "memory: 64M\nworkload: {type: verify, wss: 8M}\n"))
    env = {k: v for k, v in far["env"].items() if k != "PVTUI_RUNTIME_DIR"}  # the source: the engine fixture's pvd
    moved = run_pvtui("move", "traveller", far["uri"], "--json", env=env, timeout=120)
    assert moved.returncode == 0, moved.stderr
    assert "live migration" in json.loads(moved.stdout)["plan"]
    assert not any(d["name"] == "traveller" for d in engine.json("list"))
    listed = json.loads(cli(far, "list", "--json"))
    assert any(d["name"] == "traveller" and d["state"] in ("running", "blocked") for d in listed)
    assert wait_until(lambda: "verify: ok" in cli(far, "console", "-n", "traveller"), 12, 0.5)
    assert "MISMATCH" not in cli(far, "console", "-n", "traveller")
    cli(far, "destroy", "traveller")
