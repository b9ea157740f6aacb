"""Fleet rebalancing: plans that move domains between hosts so load is spread evenly, and resize them.

Pure logic (no UI, no engine): the CLI's ``pvtui rebalance --fleet`` and the
fleet rebalance screen use it with the client. A host's load is the CPU
demand of its domains (used plus waited for a CPU, host-measured, in CPUs)
over its CPUs. A suggestion moves, one domain at a time, from the most
loaded host to the least loaded one where the domain's memory fits
(admission control's committed memory against the target's limit),
choosing the domain that brings the two closest, while that lowers the
spread (most loaded minus least loaded) by at least :data:`MIN_GAIN`; never a
domain the operator excluded ("never move"), never more than ``max_moves``
moves. Then each host's domains, where they will be, are resized by the
one-host rules of :mod:`pvtui.rebalance` (every step with its reason). A
plan shows every host before and after; nothing runs until it is applied.

Applying runs the steps in a safe order: shrinks first (they free what the
others take, on the host the domain is on before it moves), then moves (at
most ``concurrency`` at once), then grows (on the host the domain ends on).
At the first failure no further step starts and what was done is undone in
reverse (a resize set back, a move moved back); a failed step itself
changes nothing: the engine refuses a resize before it changes anything, and
a failed live move keeps the domain where it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pvtui.client.models import DomainSummary, HostInfo
from pvtui.concurrency import each_at_most
from pvtui.rebalance import Allocation, Limits, Step, make_plan
from pvtui.rebalance import suggest as suggest_resizes

#: A move must lower the spread of load by at least this much (share of a host's CPUs) to be worth it.
MIN_GAIN = 0.05
#: The least memory a resize may leave a domain (as the one-host rebalance screen).
MIN_MEMORY = 16 << 20
PLACED_STATES = ("running", "blocked", "paused")


@dataclass(frozen=True)
class HostState:
    name: str
    cpus: int
    #: CPUs' worth of measured demand of its domains.
    demand: float
    memory_committed: int
    memory_limit: int
    vcpus: int = 0

    @property
    def load(self) -> float:
        return self.demand / max(1, self.cpus)

    @property
    def memory_free(self) -> int:
        return self.memory_limit - self.memory_committed

    def describe(self) -> str:
        return (
            f"{self.name}: demand {self.demand:.2f} of {self.cpus} CPUs ({100 * self.load:.0f}%), "
            f"{self.vcpus} vCPUs ({self.vcpus / max(1, self.cpus):.1f} per CPU), "
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
    vcpus: int = 0

    def describe(self) -> str:
        return f"move {self.domain} {self.source} -> {self.target}: {self.reason}"

    def reverse(self) -> Move:
        return Move(self.domain, self.target, self.source, self.demand, self.memory, "undo", self.vcpus)


@dataclass(frozen=True)
class Resize:
    """A one-host step (vCPUs or memory) on the host the domain is on when the step runs."""

    host: str
    step: Step

    @property
    def domain(self) -> str:
        return self.step.domain

    def describe(self) -> str:
        return f"on {self.host}: {self.step.explain()}"

    def reverse(self) -> Resize:
        back = Step(self.step.domain, self.step.resource, self.step.new, self.step.old, "undo")
        return Resize(self.host, back)


FleetStep = Move | Resize


@dataclass(frozen=True)
class FleetPlan:
    moves: tuple[Move, ...]
    before: dict[str, HostState]
    after: dict[str, HostState]
    resizes: tuple[Resize, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def spread_before(self) -> float:
        return _spread(self.before)

    @property
    def spread_after(self) -> float:
        return _spread(self.after)

    @property
    def shrinks(self) -> tuple[Resize, ...]:
        return tuple(r for r in self.resizes if r.step.shrinks)

    @property
    def grows(self) -> tuple[Resize, ...]:
        return tuple(r for r in self.resizes if not r.step.shrinks)

    def ordered(self) -> list[FleetStep]:
        """Every step in the order applying runs them: shrinks, moves, grows."""
        return [*self.shrinks, *self.moves, *self.grows]

    @property
    def empty(self) -> bool:
        return not self.moves and not self.resizes

    def describe(self) -> list[str]:
        lines = [f"spread of load: {100 * self.spread_before:.0f}% -> {100 * self.spread_after:.0f}%"]
        lines += [f"  before {state.describe()}" for state in self.before.values()]
        steps = self.ordered()
        lines += [f"  {i}. {step.describe()}" for i, step in enumerate(steps, 1)] or ["  nothing to change"]
        lines += [f"  after  {state.describe()}" for state in self.after.values()]
        lines += [f"  note: {note}" for note in self.notes]
        return lines


def _spread(hosts: dict[str, HostState]) -> float:
    loads = [h.load for h in hosts.values()]
    return max(loads) - min(loads) if loads else 0.0


def domain_demand(domain: DomainSummary) -> float:
    """CPUs' worth of what the domain's vCPUs measurably want: used plus waited (0 until measured)."""
    return ((domain.cpu_percent or 0.0) + (domain.cpu_wait_percent or 0.0)) / 100


def domain_memory(domain: DomainSummary) -> int:
    """What moving the domain commits on its target: its present memory."""
    return max(domain.memory.present_bytes, domain.memory.target_bytes)


def host_state(name: str, info: HostInfo, domains: list[DomainSummary]) -> HostState:
    limit = info.memory_commit_limit or info.memory_total
    placed = [d for d in domains if d.state in PLACED_STATES]
    return HostState(
        name,
        info.cpus,
        sum(domain_demand(d) for d in placed),
        info.memory_committed,
        limit,
        sum(d.vcpus_online for d in placed),
    )


def limits_of(domain: DomainSummary) -> Limits:
    """What the one-host rules need of a domain, from its summary."""
    return Limits(
        domain.vcpus_max,
        MIN_MEMORY,
        domain.memory.present_bytes,
        domain.cpu_percent,
        domain.memory.guest_used_bytes,
        domain.cpu_wait_percent,
    )


def suggest(
    hosts: dict[str, tuple[HostInfo, list[DomainSummary]]],
    exclude: set[str] | None = None,
    max_moves: int = 4,
    resize: bool = True,
) -> FleetPlan:
    """Moves that lower the spread of load between hosts, then resizes where each domain lands."""
    exclude = exclude or set()
    state = {name: host_state(name, info, domains) for name, (info, domains) in hosts.items()}
    before = dict(state)
    placed = {name: [d for d in domains if d.state in ("running", "blocked")] for name, (_, domains) in hosts.items()}
    moves: list[Move] = []
    #: Moves that would have helped but the target runs a domain of that name (said in the plan's notes).
    clashes: set[str] = set()
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
            if spread - new_spread < MIN_GAIN:
                continue
            if any(d.name == domain.name for d in placed[idlest.name]):
                clashes.add(f"{domain.name} ({busiest.name} -> {idlest.name})")
                continue  # the target already runs a domain of that name
            if best is None or new_spread < best[0]:
                best = (new_spread, domain)
        if best is None:
            break
        new_spread, domain = best
        demand, memory = domain_demand(domain), domain_memory(domain)
        reason = (
            f"{busiest.name} at {100 * busiest.load:.0f}% of its CPUs, {idlest.name} at {100 * idlest.load:.0f}%; "
            f"{domain.name} wants {demand:.2f} CPUs and {memory >> 20} MiB fits there "
            f"({idlest.memory_free >> 20} MiB free): spread {100 * spread:.0f}% -> {100 * new_spread:.0f}%"
        )
        moves.append(Move(domain.name, busiest.name, idlest.name, demand, memory, reason, domain.vcpus_online))
        state[busiest.name] = _shifted(busiest, -demand, -memory, -domain.vcpus_online)
        state[idlest.name] = _shifted(idlest, demand, memory, domain.vcpus_online)
        placed[busiest.name] = [d for d in placed[busiest.name] if d.name != domain.name]
        placed[idlest.name] = [*placed[idlest.name], domain]
    resizes: list[Resize] = []
    notes = [
        f"moving {clash} would lower the spread, but a domain of that name runs there already"
        for clash in sorted(clashes)
    ]
    if resize:
        moved_from = {(m.domain, m.target): m.source for m in moves}
        for host, domains in placed.items():
            host_resizes, host_notes, vcpus_after = _resizes_on(host, state[host], domains, moved_from)
            resizes += host_resizes
            notes += [f"{host}: {note}" for note in host_notes]
            state[host] = _shifted(state[host], 0.0, 0, vcpus_after - state[host].vcpus)
    return FleetPlan(tuple(moves), before, state, tuple(resizes), tuple(notes))


def _shifted(host: HostState, demand: float, memory: int, vcpus: int) -> HostState:
    return HostState(
        host.name,
        host.cpus,
        host.demand + demand,
        host.memory_committed + memory,
        host.memory_limit,
        host.vcpus + vcpus,
    )


def _resizes_on(
    host: str,
    figures: HostState,
    domains: list[DomainSummary],
    moved_from: dict[tuple[str, str], str],
) -> tuple[list[Resize], list[str], int]:
    """One host's resizes by the one-host rules, for the domains that will be on it."""
    current = {d.name: Allocation(d.vcpus_online, d.memory.target_bytes) for d in domains}
    limits = {d.name: limits_of(d) for d in domains}
    suggestion = suggest_resizes(current, limits, figures.cpus, figures.memory_free)
    plan = make_plan(current, suggestion.wanted, limits, figures.memory_free, figures.cpus, suggestion.reasons)
    resizes = []
    for step in plan.steps:
        # A shrink runs before the moves: on the host the domain is on then.
        where = moved_from.get((step.domain, host), host) if step.shrinks else host
        resizes.append(Resize(where, step))
    return resizes, list(suggestion.notes), plan.vcpus_after


@dataclass
class Outcome:
    done: list[FleetStep] = field(default_factory=list)
    failed: tuple[FleetStep, str] | None = None
    skipped: list[FleetStep] = field(default_factory=list)
    #: What was undone after the failure, in the order it was undone.
    undone: list[FleetStep] = field(default_factory=list)
    #: A step whose undo failed too (the operator must look), with why.
    undo_failed: tuple[FleetStep, str] | None = None


MoveRunner = Callable[[Move], Awaitable[object]]
ResizeRunner = Callable[[Resize], Awaitable[object]]


def _why(exc: BaseException) -> str:
    return getattr(exc, "title", repr(exc)) + ": " + getattr(exc, "message", "")


async def apply(
    plan: FleetPlan,
    move: MoveRunner,
    resize: ResizeRunner | None = None,
    concurrency: int = 1,
    on_step: Callable[[FleetStep, str], None] | None = None,
    rollback: bool = True,
) -> Outcome:
    """Run the plan (shrinks, moves at most ``concurrency`` at a time, grows); at the first failure
    start nothing more and, with ``rollback``, undo what was done in reverse.

    ``on_step(step, what)`` hears each step start ("start"), end ("done"),
    fail ("failed") and be undone ("undone").
    """
    outcome = Outcome()
    stop = asyncio.Event()
    report = on_step or (lambda step, what: None)

    async def run(step: FleetStep) -> None:
        if stop.is_set():
            outcome.skipped.append(step)
            return
        report(step, "start")
        try:
            if isinstance(step, Move):
                await move(step)
            elif resize is not None:
                await resize(step)
        except Exception as exc:  # a step's failure is reported, not raised: the others are accounted for
            if outcome.failed is None:
                outcome.failed = (step, _why(exc))
            stop.set()
            report(step, "failed")
            return
        outcome.done.append(step)
        report(step, "done")

    for resize_step in plan.shrinks:
        await run(resize_step)
    await each_at_most(max(1, concurrency), plan.moves, run)
    for resize_step in plan.grows:
        await run(resize_step)
    if outcome.failed is not None and rollback:
        await _undo(outcome, move, resize, report)
    return outcome


async def _undo(
    outcome: Outcome, move: MoveRunner, resize: ResizeRunner | None, report: Callable[[FleetStep, str], None]
) -> None:
    for step in reversed(outcome.done):
        try:
            if isinstance(step, Move):
                await move(step.reverse())
            elif resize is not None:
                await resize(step.reverse())
        except Exception as exc:  # stop undoing: what is left is said, not guessed at
            outcome.undo_failed = (step, _why(exc))
            return
        outcome.undone.append(step)
        report(step, "undone")
