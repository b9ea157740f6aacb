"""protocol.Channel against a scripted peer: replies reach the request they answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import pytest

from pvtui.daemon import protocol


class Refused(Exception):
    pass


async def channel_and_peer() -> tuple[protocol.Channel, asyncio.StreamReader, asyncio.StreamWriter]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    peer_reader, peer_writer = await asyncio.open_unix_connection(sock=theirs)
    channel = protocol.Channel(
        reader,
        writer,
        on_event=lambda _event: None,
        on_closed=lambda: None,
        error=lambda error: Refused(error.get("message")),
        lost=lambda: ConnectionError("lost"),
    )
    return channel, peer_reader, peer_writer


async def test_a_late_reply_to_a_cancelled_request_reaches_no_one():
    channel, peer_reader, peer_writer = await channel_and_peer()
    first = asyncio.create_task(channel.request("info", {"name": "beta"}))
    first_id = json.loads(await peer_reader.readline())["id"]
    first.cancel()  # the caller gives up (an exclusive worker replaced, say)
    with contextlib.suppress(asyncio.CancelledError):
        await first
    second = asyncio.create_task(channel.request("host", {}))
    second_id = json.loads(await peer_reader.readline())["id"]
    # The peer answers the abandoned request first, with an error, then the live one.
    peer_writer.write(protocol.reply_error(first_id, protocol.ProtocolError("refused", "No domain named beta", "gone")))
    peer_writer.write(protocol.reply_ok(second_id, {"cpus": 2}))
    await peer_writer.drain()
    assert await asyncio.wait_for(second, 5) == {"cpus": 2}
    peer_writer.close()


async def test_a_reply_without_an_id_answers_every_waiter():
    channel, peer_reader, peer_writer = await channel_and_peer()
    waiters = [asyncio.create_task(channel.request("list", {})) for _ in range(2)]
    for _ in waiters:
        await peer_reader.readline()
    peer_writer.write(protocol.reply_error(None, protocol.ProtocolError("too_large", "Request too large", "")))
    await peer_writer.drain()
    for waiter in waiters:
        try:
            await asyncio.wait_for(waiter, 5)
        except Refused:
            continue
        raise AssertionError("a waiter got no answer")
    peer_writer.close()


async def test_a_list_of_thousands_of_domains_reaches_the_client(tmp_path):
    """pvd's list reply may pass the 1 MiB message limit (~650 bytes a domain); the client reads it."""
    from pvtui.client import Client

    rows = [{"name": f"d{i:05d}", "domid": i, "state": "blocked", "definition": "/x" * 300} for i in range(3000)]
    raw = protocol.RawJson(json.dumps(rows).encode())

    async def fake_pvd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            request = json.loads(line)
            result = raw if request["op"] == "list" else {"version": "test", "pid": 1}
            writer.write(protocol.reply_ok(request["id"], result))
            await writer.drain()

    server = await asyncio.start_unix_server(fake_pvd, path=str(tmp_path / "pvd.sock"))
    try:
        reply = protocol.reply_ok(1, raw)
        assert protocol.MAX_MESSAGE_BYTES < len(reply) <= protocol.MAX_REPLY_BYTES
        client = await Client._open(tmp_path / "pvd.sock")
        domains = await client.list_domains()
        assert [d.name for d in domains] == [r["name"] for r in rows]
        await client.close()
    finally:
        server.close()


def test_numbers_json_cannot_hold_exactly_are_refused_not_guessed():
    """Integers past 64 bits read as floats (refused where an integer is expected); past a double: malformed."""
    schema = {"vcpu_set": {"name": str, "count": int}}
    line = b'{"v":1,"id":1,"op":"vcpu_set","args":{"name":"a","count":18446744073709551616}}'
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_request(protocol.decode(line), schema)
    assert refused.value.code == "bad_args" and "wrong type" in refused.value.message
    exact = b'{"v":1,"id":1,"op":"vcpu_set","args":{"name":"a","count":18446744073709551615}}'
    assert protocol.parse_request(protocol.decode(exact), schema).args["count"] == 2**64 - 1
    with pytest.raises(protocol.ProtocolError) as malformed:
        protocol.decode(b'{"v":1,"id":1e400}')
    assert malformed.value.code == "malformed"
    with pytest.raises(protocol.ProtocolError) as nested:
        protocol.decode(b"[" * 5000)
    assert nested.value.code == "malformed"


class Gone(Exception):
    pass


async def test_a_request_to_a_peer_that_just_went_raises_the_channels_loss_not_a_socket_error():
    """pvd destroying a monitor that died a moment before must hear "gone", as from any other request."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    channel = protocol.Channel(
        reader, writer, lambda _event: None, lambda: None, lambda error: Refused(error), lost=lambda: Gone()
    )
    theirs.close()  # gone before the channel has read its end of file
    with pytest.raises(Gone):
        await asyncio.wait_for(channel.request("destroy", {}), 5)
