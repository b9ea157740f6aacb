"""The xl-like verbs: each one a request to pvd through the client module.

Every verb takes ``--json`` for scripts. Text output follows xl/xentop
where they have an equivalent. Nothing here imports the engine or the UI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pvtui.cli import colour
from pvtui.cli.edit import add_edit_verb, cmd_edit
from pvtui.cli.events import add_events_verb, cmd_events
from pvtui.cli.exitcodes import ExitCode
from pvtui.cli.moves import MOVE_VERBS, add_move_verbs
from pvtui.cli.top import cmd_top, figure
from pvtui.client import Client, EngineError
from pvtui.client.models import HypercallInfo
from pvtui.domain.cpuset import format_cpu_list
from pvtui.domain.limits import SHUTDOWN_TIMEOUT_S
from pvtui.domain.state import xl_flags
from pvtui.domain.units import MIB
from pvtui.levels import cpu_tone

Verb = Callable[[Client, argparse.Namespace], Awaitable[int]]


def _json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=lambda o: asdict(o)))


async def cmd_list(client: Client, args: argparse.Namespace) -> int:
    domains = await client.list_domains()
    if args.json:
        _json(domains)
        return ExitCode.OK
    on = colour.wanted(sys.stdout)
    print(f"{'Name':<20} {'ID':>4} {'Mem':>7} {'VCPUs':>5} {'State':<6} {'Time(s)':>9} {'CPU%':>6} {'HCALLS/s':>9}")
    for d in domains:
        state = colour.paint(f"{'migrating' if d.migration else _state_column(d.state):<6}", d.state, on)
        cpu = colour.paint(figure(d.cpu_percent, 6, 1), cpu_tone(d.cpu_percent, d.vcpus_online), on)
        print(
            f"{d.name:<20} {d.domid:>4} {d.memory.held_bytes // MIB:>7} {d.vcpus_online:>5} {state} "
            f"{d.cpu_s:>9.1f} {cpu} {figure(d.hypercalls_per_s, 9, 1)}"
        )
        if d.crash_reason and d.state in ("crashed", "dying", "dead"):
            print(f"{'':<20} {colour.paint('crashed:', 'crashed', on)} {d.crash_reason}")
    return ExitCode.OK


def _state_column(state: str) -> str:
    """xl's flags; a state xl has no letter for (suspended, incoming) by name."""
    return state if state in ("suspended", "incoming") else xl_flags(state)


async def cmd_create(client: Client, args: argparse.Namespace) -> int:
    from pvtui.domain.loader import DomainFileError, load_domain_file

    try:
        load_domain_file(args.file)  # local check first: errors with line and column
    except DomainFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return ExitCode.INVALID
    if args.host_uri.is_local:
        domain = await client.create(args.file)
    else:  # pvd on another host cannot read our files: send the definition itself
        domain = await client.create_from_text(Path(args.file).read_text(), source=args.file)
    if args.json:
        _json(domain)
    else:
        print(f"created {domain.name} (domid {domain.domid}, monitor pid {domain.pid})")
    return ExitCode.OK


def _simple(op: str, message: str) -> Verb:
    async def verb(client: Client, args: argparse.Namespace) -> int:
        result = await getattr(client, op)(args.domain)
        if args.json:
            _json(result)
        else:
            print(message.format(name=args.domain))
        return ExitCode.OK

    return verb


async def cmd_shutdown(client: Client, args: argparse.Namespace) -> int:
    result = await client.shutdown(args.domain, wait=args.wait, timeout=args.timeout)
    if args.json:
        _json(result)
    elif args.wait:
        print(f"{args.domain}: {result.outcome}")
    else:
        print(f"asked {args.domain} to shut down (destroyed after {args.timeout:g}s if it does not)")
    return ExitCode.OK


async def cmd_vcpu_set(client: Client, args: argparse.Namespace) -> int:
    stats = await client.vcpu_set(args.domain, args.count)
    if args.json:
        _json(stats)
    else:
        print(f"{args.domain}: {stats.online_vcpus} of {stats.max_vcpus} vCPUs online")
    return ExitCode.OK


async def cmd_vcpu_list(client: Client, args: argparse.Namespace) -> int:
    names = [args.domain] if args.domain else [d.name for d in await client.list_domains()]
    rows = {name: await client.vcpu_list(name) for name in names}
    if args.json:
        _json(rows)
        return ExitCode.OK
    domids = {d.name: d.domid for d in await client.list_domains()}
    print(f"{'Name':<20} {'ID':>4} {'VCPU':>4} {'CPU':>4} {'State':<8} {'Time(s)':>9} {'HCALLS':>9} Affinity")
    for name, vcpus in rows.items():
        for v in vcpus:
            cpu = "-" if v.host_cpu is None or not v.online else str(v.host_cpu)
            affinity = format_cpu_list(v.affinity) if v.affinity else "all"
            print(
                f"{name:<20} {domids.get(name, 0):>4} {v.id:>4} {cpu:>4} {v.state:<8} {v.cpu_time_s:>9.2f} "
                f"{v.hypercalls:>9} {affinity}"
            )
    return ExitCode.OK


async def cmd_vcpu_pin(client: Client, args: argparse.Namespace) -> int:
    stats = await client.vcpu_pin(args.domain, args.vcpu, args.cpus)
    if args.json:
        _json(stats)
    else:
        print(f"{args.domain} vCPU {args.vcpu} pinned to {args.cpus}")
    return ExitCode.OK


async def cmd_sched_credit(client: Client, args: argparse.Namespace) -> int:
    result = await client.sched_credit(args.domain, args.weight, args.cap)
    if args.json:
        _json(result)
    else:
        print(f"{'Name':<20} {'Weight':>6} {'Cap':>4}  ({result.backend})")
        print(f"{result.name:<20} {result.weight:>6} {result.cap:>4}")
    return ExitCode.OK


async def cmd_mem(client: Client, args: argparse.Namespace) -> int:
    op = client.mem_set if args.verb == "mem-set" else client.mem_max
    stats = await op(args.domain, args.size)
    memory = stats.memory
    if args.json:
        _json(stats)
    else:
        print(
            f"{args.domain}: target {memory.target_bytes // MIB} MiB, present {memory.present_bytes // MIB} MiB, "
            f"max {memory.max_bytes // MIB} MiB"
        )
    return ExitCode.OK


async def cmd_console(client: Client, args: argparse.Namespace) -> int:
    text, offset = await client.console(args.domain)
    sys.stdout.write(text)
    sys.stdout.flush()
    if args.no_follow:
        return ExitCode.OK
    await client.subscribe(["console", "state"], [args.domain])
    async for event in client.events():
        data = event.get("data") or {}
        if event.get("event") == "console" and data.get("offset", 0) > offset:
            sys.stdout.write(data["text"])
            sys.stdout.flush()
            offset = data["offset"]
        elif event.get("event") == "state" and data.get("state") == "dead":
            return ExitCode.OK
    return ExitCode.OK


def _format_record(record: HypercallInfo, start_ns: int, on: bool = False) -> str:
    """One hypercall as a line; on a terminal a failed one's result and a bounced trap's name are coloured."""
    args = " ".join(f"{a:#x}" for a in record.args)
    mc = " (mc)" if record.in_multicall else ""
    op = colour.paint(f"{record.op + mc:<22}", "bounced" if record.op.startswith("trap_") else None, on)
    result = colour.paint(f"{record.result:<8}", "failed" if record.result < 0 else None, on)
    return (
        f"{(record.time_ns - start_ns) / 1e9:>12.6f} vcpu{record.vcpu:<2} {op} {args:<60} "
        f"-> {result} {record.latency_ns / 1000:>9.1f} us"
    )


async def cmd_log(client: Client, args: argparse.Namespace) -> int:
    if args.stats:
        return await _log_stats(client, args)

    def wanted(record: HypercallInfo) -> bool:
        return (not args.op or record.op in args.op) and (args.vcpu is None or record.vcpu == args.vcpu)

    on = colour.wanted(sys.stdout)
    records = [r for r in await client.hypercalls(args.domain, limit=100_000) if wanted(r)][-args.lines :]
    start_ns = records[0].time_ns if records else time.monotonic_ns()
    for record in records:
        print(json.dumps(asdict(record)) if args.json else _format_record(record, start_ns, on))
    if not args.follow:
        return ExitCode.OK
    sys.stdout.flush()
    last = records[-1].seq if records else 0
    await client.subscribe(["hypercalls", "state"], [args.domain])
    async for event in client.events():
        if event.get("event") == "state" and (event.get("data") or {}).get("state") == "dead":
            return ExitCode.OK
        if event.get("event") != "hypercalls":
            continue
        for raw in event.get("data") or []:
            record = HypercallInfo.from_dict(raw)
            if record.seq > last and wanted(record):
                print(json.dumps(raw) if args.json else _format_record(record, start_ns, on), flush=True)
            last = max(last, record.seq)
    return ExitCode.OK


async def _log_stats(client: Client, args: argparse.Namespace) -> int:
    info = await client.info(args.domain)
    stats = info.stats
    per_op = stats.hypercalls_per_op if stats else {}
    uptime = max(stats.uptime_s if stats else 0.0, 1e-9)
    rates = info.op_rates
    if args.json:
        _json(
            {op: {"count": n, "per_s_uptime": n / uptime, "per_s_now": rates.get(op, 0.0)} for op, n in per_op.items()}
        )
        return ExitCode.OK
    total = sum(per_op.values())
    print(f"{args.domain}: {total} hypercalls in {uptime:.1f}s")
    print(f"{'op':<20} {'count':>12} {'%':>6} {'avg/s':>10} {'now/s':>10}")
    for op, n in sorted(per_op.items(), key=lambda item: -item[1]):
        share = 100 * n / total if total else 0
        print(f"{op:<20} {n:>12} {share:>6.1f} {n / uptime:>10.1f} {rates.get(op, 0.0):>10.1f}")
    per_vcpu = stats.hypercalls_per_vcpu if stats else {}
    if per_vcpu:
        print("per vCPU: " + ", ".join(f"vcpu{v}={n}" for v, n in per_vcpu.items()))
    return ExitCode.OK


async def cmd_engine(client: Client | None, args: argparse.Namespace) -> int:
    """engine start|stop|status (takes no client: it decides whether to start pvd)."""
    from pvtui.client.client import default_domains_dir

    uri = args.host_uri
    if not uri.is_local and args.action == "start":
        from pvtui.client.connect import start_engine_on

        print(start_engine_on(uri) or f"pvd started on {uri}")
        return ExitCode.OK
    if not uri.is_local:
        from pvtui.client.connect import connect_host

        try:
            client = await connect_host(uri)
        except EngineError as exc:
            if exc.code != "down":
                raise
            print(f"pvd is not running on {uri}")
            return ExitCode.OK if args.action == "stop" else ExitCode.ENGINE
    elif args.action == "start":
        if args.overcommit is not None:
            from pvtui.daemon.admission import OVERCOMMIT_ENV, parse_overcommit

            os.environ[OVERCOMMIT_ENV] = str(parse_overcommit(args.overcommit))  # the pvd started inherits it
        client = await Client.connect(start=True, domains_dir=default_domains_dir())
    else:
        try:
            client = await Client.connect(start=False)
        except EngineError as exc:
            if exc.code != "down":
                raise
            print("pvd is not running")
            return ExitCode.OK if args.action == "stop" else ExitCode.ENGINE
    try:
        if args.action == "stop":
            result = await client.engine_stop(destroy_domains=args.destroy_domains)
            if args.json:
                _json(result)
            else:
                print(f"pvd stopping; {result.domains_left} domains keep running")
            return ExitCode.OK
        hello = await client.hello()
        host = await client.host()
        if args.json:
            _json(hello)
        else:
            print(
                f"pvd {hello.version} running, pid {hello.pid}, {hello.domains} domains, "
                f"runtime {hello.runtime_dir}, domains from {hello.domains_dir}, cpu control {hello.cpu_control}\n"
                f"memory: {host.memory_committed // MIB} MiB committed of {host.memory_commit_limit // MIB} MiB "
                f"(overcommit x{host.overcommit:g})"
            )
        asked = getattr(args, "overcommit", None)
        if asked is not None and float(asked) != host.overcommit:
            print(
                f"pvtui: pvd was already running with overcommit x{host.overcommit:g}; "
                "stop it (pvtui engine stop) and start it again to change that",
                file=sys.stderr,
            )
            return ExitCode.INVALID
        return ExitCode.OK
    finally:
        await client.close()


#: The verbs that start pvd when it is not running (besides ``engine start``).
#: Every other verb says pvd is not running and how to start it: reading
#: (``list``, ``top``, ``log``) or changing a domain that cannot exist without
#: pvd must never bring back an engine the operator stopped.
STARTS_PVD = frozenset({"create", "restore"})

VERBS: dict[str, Verb] = {
    "list": cmd_list,
    "create": cmd_create,
    "shutdown": cmd_shutdown,
    "destroy": _simple("destroy", "{name} destroyed"),
    "pause": _simple("pause", "{name} paused"),
    "unpause": _simple("unpause", "{name} unpaused"),
    "reboot": _simple("reboot", "asked {name} to reboot"),
    "vcpu-set": cmd_vcpu_set,
    "vcpu-list": cmd_vcpu_list,
    "vcpu-pin": cmd_vcpu_pin,
    "sched-credit": cmd_sched_credit,
    "mem-set": cmd_mem,
    "mem-max": cmd_mem,
    "console": cmd_console,
    "log": cmd_log,
    "top": cmd_top,  # pvtui/cli/top.py
    **MOVE_VERBS,  # pvtui/cli/moves.py
    "events": cmd_events,  # pvtui/cli/events.py
    "edit": cmd_edit,  # pvtui/cli/edit.py
}


def add_verbs(verbs: argparse._SubParsersAction, run: Callable[[argparse.Namespace], int]) -> None:
    """Register every engine verb on the CLI's subparsers."""

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=run, verb=name)
        return sub

    verb("list", "List domains (xl list).")
    verb("create", "Create a domain from a definition.").add_argument("file")
    p = verb("shutdown", "Ask a domain to shut down; destroyed after --timeout if it does not.")
    p.add_argument("domain")
    p.add_argument("-w", "--wait", action="store_true", help="wait until it is gone (or restarted)")
    p.add_argument("--timeout", type=float, default=SHUTDOWN_TIMEOUT_S)
    for name, text in (
        ("destroy", "Destroy a domain at once."),
        ("pause", "Pause a domain's vCPUs."),
        ("unpause", "Resume a paused domain."),
        ("reboot", "Ask a domain to reboot."),
    ):
        verb(name, text).add_argument("domain")
    p = verb("vcpu-set", "Set how many vCPUs are online (hot-plug up to maxvcpus).")
    p.add_argument("domain")
    p.add_argument("count", type=int)
    verb("vcpu-list", "List vCPUs: host CPU, state, time, affinity.").add_argument("domain", nargs="?")
    p = verb("vcpu-pin", "Pin a vCPU to host CPUs (Xen syntax: 0-3,^1 or all).")
    p.add_argument("domain")
    p.add_argument("vcpu", type=int)
    p.add_argument("cpus")
    p = verb("sched-credit", "Show or set credit-scheduler weight and cap.")
    p.add_argument("domain")
    p.add_argument("-w", "--weight", type=int)
    p.add_argument("-c", "--cap", type=int, help="percent of one host CPU, 0 = none")
    for name, text in (
        ("mem-set", "Set the balloon target (64M, 1G)."),
        ("mem-max", "Grow memory past boot size, up to maxmem."),
    ):
        p = verb(name, text)
        p.add_argument("domain")
        p.add_argument("size")
    p = verb("console", "Show a domain's console and follow it.")
    p.add_argument("domain")
    p.add_argument("-n", "--no-follow", action="store_true", help="print what is there and exit")
    p = verb("log", "Hypercall records of a domain (xentrace-like).")
    p.add_argument("domain")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--op", action="append", help="only this op (repeatable)")
    p.add_argument("--vcpu", type=int)
    p.add_argument("-n", "--lines", type=int, default=50)
    p.add_argument("--stats", action="store_true", help="per-op counts and rates (xenalyze summary)")
    p = verb("top", "xentop: per-domain CPU, memory, vCPUs, hypercalls.")
    p.add_argument("-b", "--batch", action="store_true", help="batch output")
    p.add_argument("-i", "--iterations", type=int, default=1)
    p.add_argument("-d", "--delay", type=float, default=1.0)
    add_move_verbs(verb)
    add_events_verb(verb)
    add_edit_verb(verb)
    p = verb("engine", "Start, stop or show pvd.")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--destroy-domains", action="store_true", help="with stop: destroy every domain first")
    p.add_argument(
        "--overcommit",
        metavar="RATIO",
        help="with start: let domains commit RATIO x the memory the host can back (default 1.0: never more)",
    )


async def run_verb(args: argparse.Namespace) -> int:
    from pvtui.client.client import default_domains_dir
    from pvtui.client.connect import connect_host
    from pvtui.client.hosts import Hosts

    _, args.host_uri = Hosts.load().resolve(args.host)
    if args.verb == "engine":
        return await cmd_engine(None, args)
    # Only this machine's pvd is ever started by a verb; another host's must be started there.
    client = await connect_host(args.host_uri, start=args.verb in STARTS_PVD, domains_dir=default_domains_dir())
    try:
        return await VERBS[args.verb](client, args)
    finally:
        await client.close()
