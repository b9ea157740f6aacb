"""Hosts: named pvds in hosts.yaml, and every verb against a pvd reached as a unix:// host."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import Engine, run_pvtui, wait_until

from pvtui.client.hosts import HostError, Hosts, HostUri, parse_host_uri


def test_host_uris_parse_and_refuse_with_what_is_allowed() -> None:
    assert parse_host_uri("local") == HostUri("local")
    assert parse_host_uri("unix:///run/x/pvd.sock") == HostUri("unix", path="/run/x/pvd.sock")
    uri = parse_host_uri("ssh://ops@db1.example:2222")
    assert (uri.user, uri.host, uri.port, uri.path) == ("ops", "db1.example", 2222, "")
    assert str(parse_host_uri("ssh://h/run/pvtui/pvd.sock")) == "ssh://h/run/pvtui/pvd.sock"
    for bad in ("tcp://h", "unix://relative", "ssh://", "ssh://h:99999", "ssh://u:pw@h"):
        with pytest.raises(HostError) as caught:
            parse_host_uri(bad)
        assert "ssh://[user@]host" in caught.value.message or "port" in caught.value.message


def test_hosts_file_is_validated_with_where(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n  a: ssh://a\n  b: [1\n")
    with pytest.raises(HostError, match=r"hosts.yaml:\d+:\d+"):
        Hosts.load(path)
    path.write_text("hosts:\n  a: tcp://nope\n")
    with pytest.raises(HostError, match="host a"):
        Hosts.load(path)
    path.write_text("hosts:\n  a: ssh://a\ncurrent: b\n")
    with pytest.raises(HostError, match="current"):
        Hosts.load(path)


def test_host_add_ls_use_rm_never_contact_a_host(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert run_pvtui("host", "add", "far", "ssh://nobody@192.0.2.1", env=env).returncode == 0  # TEST-NET: unroutable
    assert run_pvtui("host", "add", "near", "unix:///tmp/none/pvd.sock", env=env).returncode == 0
    listed = run_pvtui("host", "ls", "--json", env=env, timeout=5)
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["far"]["uri"] == "ssh://nobody@192.0.2.1" and rows["local"]["current"]
    assert run_pvtui("host", "use", "near", env=env).returncode == 0
    rows = {row["name"]: row for row in json.loads(run_pvtui("host", "ls", "--json", env=env).stdout)}
    assert rows["near"]["current"] and not rows["local"]["current"]
    assert Hosts.load(tmp_path / "pvtui" / "hosts.yaml").current == "near"
    bad = run_pvtui("host", "add", "x", "ftp://h", env=env)
    assert bad.returncode != 0 and "ssh://" in bad.stderr
    assert run_pvtui("host", "rm", "near", env=env).returncode == 0
    assert Hosts.load(tmp_path / "pvtui" / "hosts.yaml").current is None
    missing = run_pvtui("host", "use", "nowhere", env=env)
    assert missing.returncode != 0 and "far" in missing.stderr


@pytest.fixture(scope="module")
def remote(kvm_available: None, tmp_path_factory: pytest.TempPathFactory):
    runtime = tmp_path_factory.mktemp("remote-run")
    eng = Engine(runtime, tmp_path_factory.mktemp("remote-domains"))
    uri = f"unix://{runtime}/pvd.sock"
    started = run_pvtui("-H", uri, "engine", "start")  # pvd started where the URI says, by request
    assert started.returncode == 0, started.stderr
    yield eng, uri
    eng.cleanup()


def test_every_verb_works_against_a_unix_host(remote, tmp_path: Path, engine: Engine) -> None:
    eng, uri = remote
    local_before = {d["name"] for d in engine.json("list")}
    folder = tmp_path / "defs"
    folder.mkdir()
    definition = folder / "far1.yaml"
    definition.write_text("name: far1\nmemory: 64M\nmaxmem: 128M\nvcpus: 1\nmaxvcpus: 2\nworkload: chatty\n")

    def cli(*args: str) -> str:
        result = run_pvtui("-H", uri, *args)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return result.stdout

    cli("create", str(definition))
    definition.unlink()  # pvd got the text, not the path
    rows = {d["name"]: d for d in json.loads(cli("list", "--json"))}
    assert "far1" in rows and rows["far1"]["definition"].startswith(str(eng.runtime))
    cli("vcpu-set", "far1", "2")

    def far1() -> dict:
        return next(d for d in json.loads(cli("list", "--json")) if d["name"] == "far1")

    assert wait_until(lambda: far1()["vcpus_online"] == 2, 5)
    cli("mem-set", "far1", "48M")
    cli("pause", "far1")
    cli("unpause", "far1")
    assert "far1" in cli("top", "-b", "-i", "1", "-d", "0.5")
    assert "chatty" in cli("console", "-n", "far1")
    assert cli("log", "far1", "-n", "5")
    assert "hypercalls" in cli("vcpu-list", "far1").lower() or cli("vcpu-list", "far1")
    cli("destroy", "far1")
    # Nothing of it reached this machine's local pvd.
    assert {d["name"] for d in engine.json("list")} == local_before


def test_the_host_reply_tells_two_pvds_apart(remote, engine: Engine) -> None:
    import asyncio

    from pvtui.client.connect import connect_host

    _, uri = remote

    async def ids() -> tuple[str, str]:
        far = await connect_host(parse_host_uri(uri))
        near = await connect_host(HostUri("local"))
        try:
            return (await far.host()).host_id, (await near.host()).host_id
        finally:
            await far.close()
            await near.close()

    far_id, near_id = asyncio.run(ids())
    assert far_id and near_id and far_id != near_id


def test_an_unreachable_host_says_so_and_starts_nothing(tmp_path: Path) -> None:
    lonely = tmp_path / "local-run"
    env = {"PVTUI_RUNTIME_DIR": str(lonely)}
    for verb in (("list",), ("create", "/nonexistent.yaml")):
        result = run_pvtui("-H", f"unix://{tmp_path}/gone/pvd.sock", *verb, env=env)
        assert result.returncode != 0
        assert "pvd is not running on unix://" in result.stderr or "nonexistent" in result.stderr, result.stderr
    assert not (lonely / "pvd.sock").exists(), "no local pvd may be started for another host"
    unknown = run_pvtui("-H", "nosuchhost", "list", env={**env, "XDG_CONFIG_HOME": str(tmp_path)})
    assert unknown.returncode != 0 and "No host named" in unknown.stderr


def test_move_between_hosts_live_then_cold(remote, engine: Engine, tmp_path: Path) -> None:
    """A live move (the client relays the stream), a cold one back, and a refused one that changes nothing."""
    _, uri = remote
    engine.ok("create", engine.define("nomad", "memory: 64M\nvcpus: 2\nworkload: {type: verify, wss: 8M}\n"))
    time.sleep(1)
    moved = run_pvtui("move", "nomad", uri, "--json")
    assert moved.returncode == 0, moved.stderr
    result = json.loads(moved.stdout)
    assert "live migration" in result["plan"] and result["rounds"] >= 1
    assert not any(d["name"] == "nomad" for d in engine.json("list"))

    def console() -> str:
        return run_pvtui("-H", uri, "console", "-n", "nomad").stdout

    reports = console().count("verify: ok")
    assert wait_until(lambda: console().count("verify: ok") > reports, 12, 0.5)
    assert "MISMATCH" not in console()
    back = run_pvtui("-H", uri, "move", "nomad", "local", "--cold")
    assert back.returncode == 0 and "cold move" in back.stderr, back.stderr
    assert any(d["name"] == "nomad" for d in engine.json("list"))
    assert not any(d["name"] == "nomad" for d in json.loads(run_pvtui("-H", uri, "list", "--json").stdout))
    # A target that refuses (the name is taken there): the domain stays, running, where it was.
    taken = tmp_path / "nomad.yaml"
    taken.write_text("name: nomad\nmemory: 32M\n")
    assert run_pvtui("-H", uri, "create", str(taken)).returncode == 0
    refused = run_pvtui("move", "nomad", uri)
    assert refused.returncode != 0 and "refused" in refused.stderr and "exists" in refused.stderr, refused.stderr
    assert next(d for d in engine.json("list") if d["name"] == "nomad")["state"] in ("running", "blocked")
    run_pvtui("-H", uri, "destroy", "nomad")
    engine.ok("destroy", "nomad")


async def test_the_tui_edits_a_definition_on_another_host(remote, tmp_path: Path) -> None:
    """e on a remote domain: its pvd hands the definition over and writes it back; applied live."""
    from test_ui import until
    from textual.widgets import TextArea

    from pvtui.ui.app import PvtuiApp
    from pvtui.ui.screens.editor import EditorScreen

    _, uri = remote
    source = tmp_path / "edited.yaml"
    source.write_text("name: edited\nmemory: 64M\nmaxmem: 64M\ncpu_weight: 256\n")
    assert run_pvtui("-H", uri, "create", str(source)).returncode == 0
    kept = Path(
        next(d for d in json.loads(run_pvtui("-H", uri, "list", "--json").stdout) if d["name"] == "edited")[
            "definition"
        ]
    )
    try:
        app = PvtuiApp(tmp_path, host=parse_host_uri(uri))
        async with app.run_test(size=(120, 30)) as pilot:
            assert await until(pilot, lambda: "edited" in app.domains)
            table = app.domains_screen.table
            assert await until(pilot, lambda: "edited" in table.row_keys)
            table.move_cursor(table.get_row_index("edited"))
            await pilot.press("e")
            assert await until(pilot, lambda: isinstance(app.screen, EditorScreen))
            editor = app.screen
            assert str(kept) in str(editor.query_one("#title").render())
            area = editor.query_one("#yaml", TextArea)
            area.text = area.text.replace("cpu_weight: 256", "cpu_weight: 512")
            await pilot.press("ctrl+s")
            assert await until(pilot, lambda: "cpu_weight: 512" in kept.read_text())
            listed = lambda: json.loads(run_pvtui("-H", uri, "list", "--json").stdout)  # noqa: E731
            assert await until(pilot, lambda: next(d for d in listed() if d["name"] == "edited")["weight"] == 512)
    finally:
        run_pvtui("-H", uri, "destroy", "edited")
