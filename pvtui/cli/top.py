"""``pvtui top -b``: xentop's batch output, each frame's rates over its own delay."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, replace

from pvtui.cli.exitcodes import ExitCode
from pvtui.client import Client, DomainSummary
from pvtui.domain.state import xl_flags
from pvtui.domain.units import KIB


def figure(value: float | None, width: int, digits: int) -> str:
    """A measured figure, or ``-`` where nothing was measured yet (never a made-up 0)."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _rates_between(then: DomainSummary | None, now: DomainSummary) -> DomainSummary:
    """``now`` with CPU % and hypercalls/s taken over the two samples' own interval (xentop -d).

    ``None`` where the interval is unknown: the domain is new, or it restarted.
    """
    cpu: float | None = None
    calls: float | None = None
    if then is not None and then.sampled_s is not None and now.sampled_s is not None:
        elapsed = now.sampled_s - then.sampled_s
        if elapsed > 0 and now.cpu_s >= then.cpu_s and now.hypercalls_total >= then.hypercalls_total:
            cpu = 100 * (now.cpu_s - then.cpu_s) / elapsed
            calls = (now.hypercalls_total - then.hypercalls_total) / elapsed
    return replace(now, cpu_percent=cpu, hypercalls_per_s=calls)


def _top_rows(domains: list[DomainSummary], memory_total: int) -> list[str]:
    header = (
        f"{'NAME':>18} {'STATE':>6} {'CPU(sec)':>9} {'CPU(%)':>6} {'MEM(k)':>10} {'MEM(%)':>6} "
        f"{'MAXMEM(k)':>10} {'MAXMEM(%)':>9} {'VCPUS':>5} {'HCALLS/s':>9}"
    )
    rows = [header]
    for d in domains:
        mem, maxmem = d.memory.held_bytes, d.memory.max_bytes
        rows.append(
            f"{d.name:>18} {xl_flags(d.state):>6} {d.cpu_s:>9.0f} {figure(d.cpu_percent, 6, 1)} {mem // KIB:>10} "
            f"{100 * mem / memory_total:>6.1f} {maxmem // KIB:>10} {100 * maxmem / memory_total:>9.1f} "
            f"{d.vcpus_online:>5} {figure(d.hypercalls_per_s, 9, 1)}"
        )
    return rows


async def cmd_top(client: Client, args: argparse.Namespace) -> int:
    """Each frame's rates are measured over its own ``-d`` delay, so the first frame comes after one delay."""
    if not args.batch:
        print("pvtui top without -b is the TUI's domains view; use -b for batch output.", file=sys.stderr)
        return ExitCode.INVALID
    if args.delay <= 0:
        print("pvtui top: -d must be more than 0 seconds.", file=sys.stderr)
        return ExitCode.INVALID
    previous = {d.name: d for d in await client.list_domains(fresh=True)}
    host_then = await client.host()
    for _ in range(args.iterations):
        await asyncio.sleep(args.delay)
        host = await client.host()
        total = host.cpu_total_s - host_then.cpu_total_s
        host_cpu = 100 * (host.cpu_busy_s - host_then.cpu_busy_s) / total if total > 0 else None
        host, host_then = replace(host, cpu_percent=host_cpu), host
        fresh = await client.list_domains(fresh=True)
        domains = [_rates_between(previous.get(d.name), d) for d in fresh]
        previous = {d.name: d for d in fresh}
        if args.json:
            print(json.dumps({"host": asdict(host), "domains": [asdict(d) for d in domains]}), flush=True)
            continue
        states = ", ".join(f"{n} {s}" for s, n in sorted(host.domains_by_state.items())) or "none"
        print(
            f"pvtui top - {time.strftime('%H:%M:%S')}   {host.domains} domains: {states}   (rates over {args.delay:g}s)\n"
            f"Mem: {host.memory_total // KIB}k total, {host.memory_given // KIB}k given to domains, "
            f"{host.memory_committed // KIB}k of {host.memory_commit_limit // KIB}k committed, "
            f"{host.memory_available // KIB}k free    CPUs: {host.cpus} @{figure(host.cpu_percent, 5, 1)}%"
        )
        print("\n".join(_top_rows(domains, host.memory_total)), flush=True)
    return ExitCode.OK
