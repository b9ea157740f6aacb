"""``pvtui edit DOM``: the definition in $VISUAL / $EDITOR, checked on return, saved, applied live.

As ``crontab -e`` and ``kubectl edit``: an invalid edit is refused with
``FILE:LINE:COLUMN`` and kept aside (never saved); on a terminal it offers to
edit again from there, and a later ``pvtui edit`` continues from it. A valid
one is written atomically where the definition lives (here, or through its
host's pvd) and its live keys are applied to the running domain (``--no-apply``:
saved only).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pvtui.cli.exitcodes import ExitCode
from pvtui.client import Client
from pvtui.client.definitions import (
    apply_live,
    aside_path,
    check_and_save,
    fetch_definition,
    parse_or_none,
    run_editor,
    start_text,
)


async def cmd_edit(client: Client, args: argparse.Namespace) -> int:
    summary = next((d for d in await client.list_domains() if d.name == args.domain), None)
    local_path = Path(summary.definition) if summary and summary.definition else None
    if summary is None:
        from pvtui.client.client import EngineError

        raise EngineError(f"No domain named {args.domain}", "pvtui list shows the domains.", "no_domain")
    definition = await fetch_definition(client, args.host_uri, args.domain, local_path)
    text, continuing = start_text(definition)
    if continuing:
        print(f"pvtui: continuing your edit kept in {aside_path(definition)}", file=sys.stderr)
    while True:
        outcome = await check_and_save(definition, run_editor(text, args.domain))
        if outcome.config is not None or not outcome.changed:
            break
        for problem in outcome.problems:
            print(problem, file=sys.stderr)
        print(f"pvtui: not saved, nothing applied; your edit is kept in {outcome.kept_at}", file=sys.stderr)
        if not (sys.stdin.isatty() and _yes("Edit again? [Y/n] ")):
            return ExitCode.INVALID
        text = outcome.kept_at.read_text() if outcome.kept_at else text
    if not outcome.changed:
        print(f"{definition.path}: no change")
        return ExitCode.OK
    assert outcome.config is not None
    print(f"saved {definition.path}")
    if args.no_apply:
        return ExitCode.OK
    done = await apply_live(client, parse_or_none(definition.text, definition.path), outcome.config,
                            summary.memory.present_bytes)  # fmt: skip
    if done.applied:
        print("applied live: " + ", ".join(done.applied))
    if done.restart:
        print("needs a restart: " + ", ".join(done.restart))
    return ExitCode.OK


def _yes(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("", "y", "yes")
    except EOFError:
        return False


def add_edit_verb(verb: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = verb(
        "edit",
        "Edit a domain's definition in $VISUAL / $EDITOR; checked on return (an invalid edit is kept aside, "
        "never saved), then saved and its live keys (vcpus, memory, weight, cap, cpus) applied.",
    )
    p.add_argument("domain")
    p.add_argument("--no-apply", action="store_true", help="save only; apply nothing to the running domain")
