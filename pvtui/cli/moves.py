"""Verbs that move a domain: save, restore, suspend, resume, migrate (xl save / restore / migrate).

``migrate`` draws a progress bar from pvd's ``migration`` events (round,
pages left, dirty rate, expected downtime) while the request runs; Ctrl-C
cancels the migration and the domain stays where it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pvtui.cli.exitcodes import ExitCode
from pvtui.client import Client, EngineError
from pvtui.client.connect import connect_host
from pvtui.client.hosts import HostUri, host_target
from pvtui.client.moves import Endpoint, MovePlan, move_domain

Verb = Callable[[Client, argparse.Namespace], Awaitable[int]]
MIB = 1 << 20


def _print(args: argparse.Namespace, result: Any, text: str) -> None:
    print(json.dumps(result, indent=2) if args.json else text)


async def cmd_save(client: Client, args: argparse.Namespace) -> int:
    path = str(Path(args.file).expanduser().resolve())
    result = await client.call("save", name=args.domain, path=path, keep=args.keep)
    what = "checkpointed (still running)" if args.keep else "saved and destroyed"
    _print(
        args,
        result,
        f"{args.domain} {what}: {path} ({result['memory_bytes'] / MIB:.1f} MiB of memory in {result['seconds'] * 1000:.0f} ms)",
    )
    return ExitCode.OK


async def cmd_restore(client: Client, args: argparse.Namespace) -> int:
    path = str(Path(args.file).expanduser().resolve())
    call: dict[str, Any] = {"path": path, "paused": args.paused}
    if args.name:
        call["name"] = args.name
    result = await client.call("restore", **call)
    _print(args, result, f"restored {result['name']} (domid {result['domid']}, monitor pid {result['pid']})")
    return ExitCode.OK


async def cmd_suspend(client: Client, args: argparse.Namespace) -> int:
    result = await client.call("suspend", name=args.domain)
    _print(args, result, f"{args.domain} suspended ({result['path']}); pvtui resume {args.domain} brings it back")
    return ExitCode.OK


async def cmd_resume(client: Client, args: argparse.Namespace) -> int:
    result = await client.call("resume", name=args.domain, paused=args.paused)
    _print(args, result, f"{result['name']} resumed (domid {result['domid']})")
    return ExitCode.OK


def progress_line(progress: dict[str, Any], width: int = 30) -> str:
    """``[#####.....] round 2  1234 pages left  dirty 800/s  downtime ~3.1 ms``"""
    total = max(1, int(progress.get("total_bytes") or 1))
    sent = int(progress.get("sent_bytes") or 0)
    done = min(1.0, sent / total)
    bar = "#" * int(done * width) + "." * (width - int(done * width))
    expected = progress.get("expected_downtime_ms")
    parts = [
        f"[{bar}] {progress.get('stage', '')}",
        f"round {progress.get('round', 0)}",
        f"{progress.get('pages_left', 0)} pages left",
        f"dirty {progress.get('dirty_pages_per_s', 0):.0f}/s",
        f"downtime ~{expected:.1f} ms" if expected is not None else "downtime ?",
    ]
    return "  ".join(parts)


async def cmd_migrate(client: Client, args: argparse.Namespace) -> int:
    if args.cancel:
        result = await client.call("migrate_cancel", name=args.domain)
        _print(args, result, f"cancel {'requested' if result.get('cancelled') else 'not needed: nothing to cancel'}")
        return ExitCode.OK
    if not args.target:
        raise EngineError(
            "No target given", "pvtui migrate DOMAIN TARGET (a pvd's runtime directory or socket, or a host)."
        )
    host = host_target(args.target)
    if host is not None:  # another host: the client relays the stream between the two pvds
        return await _move(client, args, host, cold=False)
    watcher = await Client.connect(start=False)
    await watcher.subscribe(["migration"], [args.domain])
    show = sys.stderr.isatty() and not args.json

    async def follow() -> None:
        async for event in watcher.events():
            if event.get("event") == "migration" and show:
                print("\r" + progress_line(event.get("data") or {}), end="", file=sys.stderr, flush=True)

    follower = asyncio.create_task(follow())
    request = asyncio.ensure_future(client.call("migrate", name=args.domain, target=args.target))
    try:
        result = await asyncio.shield(request)
    except asyncio.CancelledError:  # Ctrl-C: ask pvd to stop, then report what it says
        with contextlib.suppress(EngineError):
            await watcher.call("migrate_cancel", name=args.domain)
        result = await request
    finally:
        follower.cancel()
        await watcher.close()
        if show:
            print(file=sys.stderr)
    _print(
        args,
        result,
        f"{args.domain} migrated to {result['target']}: {result['rounds']} rounds, {result['total_s']:.2f} s, "
        f"downtime {result['downtime_ms']:.1f} ms, {result['sent_bytes'] / MIB:.1f} MiB sent",
    )
    return ExitCode.OK


async def cmd_move(client: Client, args: argparse.Namespace) -> int:
    target = host_target(args.host_to)
    if target is None:
        raise EngineError(f"No host named {args.host_to!r}", "Name a host from pvtui host ls, or give its URI.")
    return await _move(client, args, target, cold=args.cold)


async def _move(client: Client, args: argparse.Namespace, target_uri: HostUri, cold: bool) -> int:
    target = await connect_host(target_uri)
    show = sys.stderr.isatty() and not args.json

    def said(plan: MovePlan) -> None:
        if not args.json:
            print(f"plan: {plan.describe()}", file=sys.stderr)

    def progress(data: dict[str, Any]) -> None:
        if show:
            print("\r" + progress_line(data), end="", file=sys.stderr, flush=True)

    try:
        source = Endpoint(args.host_uri, client)
        plan, result = await move_domain(source, Endpoint(target_uri, target), args.domain, cold, said, progress)
        if show:
            print(file=sys.stderr)
    finally:
        await target.close()
    if plan.live:
        text = (
            f"{args.domain} moved live to {target_uri}: {result['rounds']} rounds, {result['total_s']:.2f} s, "
            f"downtime {result['downtime_ms']:.1f} ms"
        )
    else:
        text = f"{args.domain} moved cold to {target_uri} (shut down here, started there)"
    _print(args, {"plan": plan.describe(), **result}, text)
    return ExitCode.OK


MOVE_VERBS: dict[str, Verb] = {
    "save": cmd_save,
    "restore": cmd_restore,
    "suspend": cmd_suspend,
    "resume": cmd_resume,
    "migrate": cmd_migrate,
    "move": cmd_move,
}


def add_move_verbs(verb: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = verb("save", "Save a domain to a snapshot file, then destroy it (--keep: leave it running).")
    p.add_argument("domain")
    p.add_argument("file")
    p.add_argument("--keep", action="store_true", help="a checkpoint: the domain runs on")
    p = verb("restore", "Bring a saved domain back from its snapshot file.")
    p.add_argument("file")
    p.add_argument("--name", help="restore under another name")
    p.add_argument("--paused", action="store_true", help="leave it paused")
    verb("suspend", "Save a domain to the runtime directory and stop it (pvtui resume brings it back).").add_argument(
        "domain"
    )
    p = verb("resume", "Bring back a suspended domain.")
    p.add_argument("domain")
    p.add_argument("--paused", action="store_true", help="leave it paused")
    p = verb("migrate", "Move a running domain live to another pvd (its runtime directory or socket).")
    p.add_argument("domain")
    p.add_argument("target", nargs="?")
    p.add_argument("--cancel", action="store_true", help="stop a migration of DOMAIN that is under way")
    p = verb("move", "Move a domain to another host: live when both engines can, else cold (the plan says which).")
    p.add_argument("domain")
    p.add_argument("host_to", metavar="HOST", help="a name from pvtui host ls, or a host URI")
    p.add_argument("--cold", action="store_true", help="shut it down here and start it there, even if live is possible")
