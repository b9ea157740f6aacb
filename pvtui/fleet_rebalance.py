"""Fleet rebalancing: plans that move domains between hosts so load is spread evenly.

Pure logic (no UI, no engine): the CLI's ``pvtui rebalance --fleet`` and the
fleet view use it with the client. Load is measured demand: a host's load is
the CPU its domains use (their vCPU threads, host-measured, in CPUs) over its
CPUs. A suggestion moves, one domain at a time, from the most loaded host to
the least loaded one where the domain's memory fits (admission control's
committed memory against the target's limit), choosing the domain that
brings the two closest, while that lowers the spread (most loaded minus
least loaded) by at least :data:`MIN_GAIN`; never a domain the operator
excluded, never more than ``max_moves`` moves. A plan shows every host before
and after. Applying runs the moves in order, at most ``concurrency`` at once,
and stops at the first failure; a failed live move changes nothing (the
domain keeps running where it was), so there is nothing of it to undo.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pvtui.client.models import DomainSummary, HostInfo

#: A move must lower the spread of load by at least this much (share of a host's CPUs) to be worth it.
MIN_GAIN = 0.05


@dataclass(frozen=True)
class HostState:
    name: str
    cpus: int
    #: CPUs' worth of measured demand of its domains.
    demand: float
    memory_committed: int
    memory_limit: int

    @property
    def load(self) -> float:
        return self.demand / max(1, self.cpus)

    @property
    def memory_free(self) -> int:
        return self.memory_limit - self.memory_committed

    def describe(self) -> str:
        return (
            f"{self.name}: demand {self.demand:.2f} of {self.cpus} CPUs ({100 * self.load:.0f}%), "
            f"memory {self.memory_committed >> 20}/{self.memory_limit >> 20} MiB committed"
        )


@dataclass(frozen=True)
class Move:
    domain: str
    source: str
    target: str
    demand: float
    memory: int
    reason: str

    def describe(self) -> str:
        return f"move {self.domain} {self.source} -> {self.target}: {self.reason}"


@dataclass(frozen=True)
class FleetPlan:
    moves: tuple[Move, ...]
    before: dict[str, HostState]
    after: dict[str, HostState]

    @property
    def spread_before(self) -> float:
        return _spread(self.before)

    @property
    def spread_after(self) -> float:
        return _spread(self.after)

    def describe(self) -> list[str]:
        lines = [f"spread of load: {100 * self.spread_before:.0f}% -> {100 * self.spread_after:.0f}%"]
        lines += [f"  before {state.describe()}" for state in self.before.values()]
        lines += [f"  {move.describe()}" for move in self.moves] or ["  no move lowers the spread"]
        lines += [f"  after  {state.describe()}" for state in self.after.values()]
        return lines


def _spread(hosts: dict[str, HostState]) -> float:
    loads = [h.load for h in hosts.values()]
    return max(loads) - min(loads) if loads else 0.0


def domain_demand(domain: DomainSummary) -> float:
    """CPUs' worth of what the domain's vCPUs measurably use (0 until measured)."""
    return (domain.cpu_percent or 0.0) / 100


def domain_memory(domain: DomainSummary) -> int:
    """What moving the domain commits on its target: its present memory."""
    return max(domain.memory.present_bytes, domain.memory.target_bytes)


def host_state(name: str, info: HostInfo, domains: list[DomainSummary]) -> HostState:
    limit = info.memory_commit_limit or info.memory_total
    return HostState(name, info.cpus, sum(domain_demand(d) for d in domains), info.memory_committed, limit)


def suggest(
    hosts: dict[str, tuple[HostInfo, list[DomainSummary]]],
    exclude: set[str] | None = None,
    max_moves: int = 4,
) -> FleetPlan:
    """Moves that lower the spread of load between hosts (see the module's rules)."""
    exclude = exclude or set()
    state = {name: host_state(name, info, domains) for name, (info, domains) in hosts.items()}
    before = dict(state)
    placed = {name: [d for d in domains if d.state in ("running", "blocked")] for name, (_, domains) in hosts.items()}
    moves: list[Move] = []
    while len(moves) < max_moves and len(state) > 1:
        busiest = max(state.values(), key=lambda h: h.load)
        idlest = min(state.values(), key=lambda h: h.load)
        spread = busiest.load - idlest.load
        best: tuple[float, DomainSummary] | None = None
        for domain in placed[busiest.name]:
            if domain.name in exclude or domain.migration is not None:
                continue
            demand, memory = domain_demand(domain), domain_memory(domain)
            if demand <= 0 or memory > idlest.memory_free:
                continue
            new_busy = (busiest.demand - demand) / max(1, busiest.cpus)
            new_idle = (idlest.demand + demand) / max(1, idlest.cpus)
            others = [h.load for h in state.values() if h.name not in (busiest.name, idlest.name)]
            new_spread = max([new_busy, new_idle, *others]) - min([new_busy, new_idle, *others])
            if spread - new_spread >= MIN_GAIN and (best is None or new_spread < best[0]):
                best = (new_spread, domain)
        if best is None:
            break
        new_spread, domain = best
        demand, memory = domain_demand(domain), domain_memory(domain)
        reason = (
            f"{busiest.name} at {100 * busiest.load:.0f}% of its CPUs, {idlest.name} at {100 * idlest.load:.0f}%; "
            f"{domain.name} uses {demand:.2f} CPUs and {memory >> 20} MiB fits there "
            f"({idlest.memory_free >> 20} MiB free): spread {100 * spread:.0f}% -> {100 * new_spread:.0f}%"
        )
        moves.append(Move(domain.name, busiest.name, idlest.name, demand, memory, reason))
        state[busiest.name] = HostState(
            busiest.name, busiest.cpus, busiest.demand - demand, busiest.memory_committed - memory, busiest.memory_limit
        )
        state[idlest.name] = HostState(
            idlest.name, idlest.cpus, idlest.demand + demand, idlest.memory_committed + memory, idlest.memory_limit
        )
        placed[busiest.name] = [d for d in placed[busiest.name] if d.name != domain.name]
        placed[idlest.name] = [*placed[idlest.name], domain]
    return FleetPlan(tuple(moves), before, state)


@dataclass
class Outcome:
    done: list[Move] = field(default_factory=list)
    failed: tuple[Move, str] | None = None
    skipped: list[Move] = field(default_factory=list)


async def apply(plan: FleetPlan, move: Callable[[Move], Awaitable[object]], concurrency: int = 1) -> Outcome:
    """Run the plan's moves in order, at most ``concurrency`` at a time; stop starting new ones at the
    first failure (what it was doing it left undone: a failed live move keeps the domain where it was)."""
    outcome = Outcome()
    gate = asyncio.Semaphore(max(1, concurrency))
    stop = asyncio.Event()

    async def run(step: Move) -> None:
        async with gate:
            if stop.is_set():
                outcome.skipped.append(step)
                return
            try:
                await move(step)
            except Exception as exc:  # a move's failure is reported, not raised: the others are accounted for
                if outcome.failed is None:
                    outcome.failed = (step, getattr(exc, "title", repr(exc)) + ": " + getattr(exc, "message", ""))
                stop.set()
                return
            outcome.done.append(step)

    await asyncio.gather(*(run(step) for step in plan.moves))
    return outcome
