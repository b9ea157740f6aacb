"""``pvtui events [DOM] [-f] [--since T] [--json]``: pvd's journal of what happened, and when."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from pvtui.cli import colour
from pvtui.cli.exitcodes import ExitCode
from pvtui.client import Client, EngineError
from pvtui.client.journal import JournalEntry

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``10m``, ``2h``, ``1d`` ago, or a time ``YYYY-MM-DD HH:MM[:SS]`` / ``HH:MM`` today (local)."""
    match = _AGO.match(text.strip())
    if match:
        return time.time() - float(match.group(1)) * _UNITS[match.group(2)]
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return time.mktime(time.strptime(text.strip(), fmt))
        except ValueError:
            pass
    for fmt in ("%H:%M:%S", "%H:%M"):
        try:
            clock = time.strptime(text.strip(), fmt)
        except ValueError:
            continue
        today = time.localtime()
        return time.mktime(
            (today.tm_year, today.tm_mon, today.tm_mday, clock.tm_hour, clock.tm_min, clock.tm_sec, 0, 0, -1)
        )
    raise EngineError(f"Bad --since {text!r}", "Give 10m, 2h, 1d (ago), HH:MM, or YYYY-MM-DD HH:MM[:SS].", "bad_args")


def format_entry(entry: dict[str, Any], on: bool = False) -> str:
    """One journal entry as a line; on a terminal a crash or a refusal is coloured."""
    parsed = JournalEntry.from_dict(entry)
    return colour.paint(parsed.line(), parsed.tone, on)


async def cmd_events(client: Client, args: argparse.Namespace) -> int:
    call: dict[str, Any] = {"limit": args.lines}
    if args.domain:
        call["domain"] = args.domain
    if args.since:
        call["since"] = parse_since(args.since)
    if args.follow:
        await client.subscribe(["journal"], [args.domain] if args.domain else None)
    on = colour.wanted(sys.stdout)
    for entry in await client.call("events", **call):
        print(json.dumps(entry) if args.json else format_entry(entry, on), flush=True)
    if not args.follow:
        return ExitCode.OK
    async for event in client.events():
        if event.get("event") == "journal":
            entry = event.get("data") or {}
            print(json.dumps(entry) if args.json else format_entry(entry, on), flush=True)
    return ExitCode.OK


def add_events_verb(verb: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = verb("events", "What happened to domains and the host, with times (pvd's journal; survives restarts).")
    p.add_argument("domain", nargs="?")
    p.add_argument("-f", "--follow", action="store_true", help="then follow new entries")
    p.add_argument("--since", help="10m, 2h, 1d ago; HH:MM today; or YYYY-MM-DD HH:MM[:SS]")
    p.add_argument("-n", "--lines", type=int, default=1000, help="at most this many past entries (default 1000)")
