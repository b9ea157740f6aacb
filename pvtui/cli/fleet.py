"""``pvtui rebalance --fleet``: a plan that moves domains between hosts (a dry run unless --apply)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable

from pvtui.cli.exitcodes import ExitCode
from pvtui.client import Client, EngineError
from pvtui.client.connect import connect_host
from pvtui.client.hosts import Hosts, HostUri
from pvtui.client.moves import Endpoint, move_domain
from pvtui.fleet_rebalance import FleetPlan, FleetStep, Move, Resize, apply, suggest


def _hosts(args: argparse.Namespace) -> list[tuple[str, HostUri]]:
    hosts = Hosts.load()
    if args.host:
        return hosts.resolve_many(args.host if "," in args.host else f"{args.host},local")
    return [("local", HostUri("local")), *sorted(hosts.hosts.items())]


async def _run(args: argparse.Namespace) -> int:
    chosen = _hosts(args)
    clients: dict[str, Client] = {}
    unreachable: list[str] = []
    try:
        for name, uri in chosen:
            try:
                clients[name] = await asyncio.wait_for(connect_host(uri), 15)
            except (TimeoutError, EngineError) as exc:
                unreachable.append(f"{name}: {getattr(exc, 'title', 'no answer')}")
        if len(clients) < 2:
            raise EngineError("Fewer than two hosts answer", "; ".join(unreachable) or "Name two hosts: -H a,b.")
        figures = {name: (await c.host(), await c.list_domains(fresh=True)) for name, c in clients.items()}
        plan = suggest(figures, set(args.exclude or []), args.max_moves, resize=not args.moves_only)
        if args.json:
            print(json.dumps(_plan_json(plan, unreachable), indent=2))
        else:
            for line in plan.describe():
                print(line)
            for line in unreachable:
                print(f"  not in the plan (unreachable): {line}")
        if not args.apply:
            if not args.json:
                print("dry run: nothing was moved (--apply runs the plan)")
            return ExitCode.OK
        uris = dict(chosen)

        async def move(step: Move) -> object:
            source = Endpoint(uris[step.source], clients[step.source])
            return await move_domain(source, Endpoint(uris[step.target], clients[step.target]), step.domain)

        out = sys.stderr if args.json else sys.stdout  # beside --json the plan owns stdout

        def progress(step: FleetStep, what: str) -> None:
            if what != "start":
                print(f"{what}: {step.describe()}", flush=True, file=out)

        outcome = await apply(plan, move, resize_runner(clients), args.concurrency, progress, not args.no_rollback)
        for step in outcome.skipped:
            print(f"not started: {step.describe()}", file=out)
        if outcome.failed is not None:
            step, why = outcome.failed
            print(f"failed: {step.describe()}: {why} ({step.domain} stays {_where(step)})", file=out)
            if outcome.undo_failed is not None:
                undo, undo_why = outcome.undo_failed
                print(f"could not undo: {undo.describe()}: {undo_why}: check it by hand", file=out)
            elif outcome.undone:
                print(f"rolled back: {len(outcome.undone)} done steps undone", file=out)
            return ExitCode.ENGINE
        return ExitCode.OK
    finally:
        for client in clients.values():
            await client.close()


def _where(step: FleetStep) -> str:
    return f"on {step.source}" if isinstance(step, Move) else f"as it was on {step.host}"


def resize_runner(clients: dict[str, Client]) -> Callable[[Resize], Awaitable[object]]:
    """Resizes through each host's own client (vcpu-set / mem-set)."""

    async def resize(step: Resize) -> object:
        client = clients[step.host]
        if step.step.resource == "vcpus":
            return await client.vcpu_set(step.domain, step.step.new)
        return await client.mem_set(step.domain, step.step.new)

    return resize


def _plan_json(plan: FleetPlan, unreachable: list[str]) -> dict[str, object]:
    return {
        "spread_before": plan.spread_before,
        "spread_after": plan.spread_after,
        "moves": [m.__dict__ for m in plan.moves],
        "resizes": [{"host": r.host, **r.step.__dict__} for r in plan.resizes],
        "order": [step.describe() for step in plan.ordered()],
        "notes": list(plan.notes),
        "before": {n: {**h.__dict__, "load": h.load} for n, h in plan.before.items()},
        "after": {n: {**h.__dict__, "load": h.load} for n, h in plan.after.items()},
        "unreachable": unreachable,
    }


def cmd_rebalance(args: argparse.Namespace) -> int:
    if not args.fleet:
        raise EngineError("pvtui rebalance needs --fleet", "Within one host, use the TUI's rebalance screen (b).")
    return asyncio.run(_run(args))


def add_rebalance_verb(verbs: argparse._SubParsersAction, handler: Callable[[argparse.Namespace], int]) -> None:
    text = (
        "Plan moves of domains between hosts that lower the spread of CPU load, and resizes of vCPUs and memory "
        "from measured demand (-H a,b,c; default: local and every host of pvtui host ls). A dry run unless "
        "--apply; applied, it runs shrinks, then moves, then grows, and undoes what it did if a step fails. "
        "The rules: docs/rebalance.md."
    )
    sub = verbs.add_parser("rebalance", help="Fleet rebalancing: a plan of moves between hosts.", description=text)
    sub.add_argument("--fleet", action="store_true", help="between hosts (required)")
    sub.add_argument("--apply", action="store_true", help="run the plan (default: show it only)")
    sub.add_argument("--exclude", action="append", metavar="DOMAIN", help="never move this domain (repeatable)")
    sub.add_argument("--max-moves", type=int, default=4)
    sub.add_argument("--concurrency", type=int, default=1, help="moves at once (default 1)")
    sub.add_argument("--moves-only", action="store_true", help="plan moves only, no resizes")
    sub.add_argument("--no-rollback", action="store_true", help="keep what was done when a step fails")
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(handler=handler, verb="rebalance")
