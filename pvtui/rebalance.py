"""Rebalancing vCPUs and memory between domains: plans, suggestions that explain themselves, safe application.

Pure logic (no UI, no engine import): the TUI's rebalance view, the fleet
rebalancer and tests use it with the client. A plan lists every change,
shrinks first so donors free resources before receivers take them, shows
the host before and after, and checks that the host can hold the result.
Applying stops at the first refusal and rolls back what was done.

The suggestion's rules (``docs/rebalance.md`` states them for operators):

- **Demand** is measured on the host: the CPU a domain's vCPU threads used
  plus the time they waited, runnable, for a host CPU (Xen's *runnable*
  time). Used alone cannot tell a starved domain from a content one.
- **vCPUs**: a domain needs enough vCPUs to run each at most
  :data:`TARGET_VCPU_BUSY` % busy. One with more gives the rest back. One
  whose demand reaches :data:`STARVED_SHARE` of its online vCPUs is
  *starved* and is given what it needs, most starved first, while the host
  has room: idle CPU left (at least :data:`MIN_IDLE_CPU` % of a CPU after
  what domains use) and planned vCPUs at most :data:`MAX_VCPUS_PER_CPU` per
  host CPU. A domain not measured yet keeps its vCPUs.
- **Memory** never goes below what the guest reports using plus headroom
  (:data:`HEADROOM_SHARE` of it, at least :data:`HEADROOM_MIN`), rounded up
  to :data:`MEMORY_STEP`. A domain holding more than that by at least
  :data:`SHRINK_MIN` gives the surplus back; one using
  :data:`MEMORY_STARVED_SHARE` of its target or more is given its floor
  when the host has uncommitted memory. A guest that reports no use (a Xen
  PV kernel) keeps its memory: there is nothing to base a floor on.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pvtui.domain.units import MIB

MEMORY_STEP = 16 * MIB
#: A vCPU is planned to be at most this busy (% of a host CPU, host-measured).
TARGET_VCPU_BUSY = 70.0
#: Starved: demand at or above this share of its online vCPUs (each can give 100 %).
STARVED_SHARE = 0.9
#: vCPUs are added only while the host keeps at least this much of a CPU idle (%).
MIN_IDLE_CPU = 50.0
#: A suggestion never plans more vCPUs than this per host CPU.
MAX_VCPUS_PER_CPU = 2.0
#: Headroom above the guest's reported use: this share of it...
HEADROOM_SHARE = 0.25
#: ...and never less than this.
HEADROOM_MIN = 64 * MIB
#: Memory is shrunk only when that frees at least this much (smaller savings are churn).
SHRINK_MIN = 64 * MIB
#: A guest using this share of its target or more is short of memory.
MEMORY_STARVED_SHARE = 0.9


@dataclass(frozen=True)
class Allocation:
    vcpus: int
    memory: int  # balloon target, bytes


@dataclass(frozen=True)
class Limits:
    """What a domain may be given, and what it measurably uses."""

    max_vcpus: int
    min_memory: int
    max_memory: int  # present memory (grow with mem-max first)
    #: Host-measured CPU of its vCPU threads, summed (``None``: not measured yet).
    cpu_percent: float | None
    #: Bytes the guest reports using: the guest's own word, not a host measurement.
    guest_used: int
    #: Host-measured time its runnable vCPUs waited for a CPU (``None``: not measured).
    cpu_wait_percent: float | None = None

    @property
    def demand(self) -> float | None:
        """Used plus waited: what the domain would have used with CPUs to itself."""
        if self.cpu_percent is None:
            return None
        return self.cpu_percent + (self.cpu_wait_percent or 0.0)


@dataclass(frozen=True)
class Step:
    domain: str
    resource: str  # "vcpus" | "memory"
    old: int
    new: int
    #: Why, from measured figures (a suggestion's rule, or "your edit").
    reason: str = ""

    @property
    def shrinks(self) -> bool:
        return self.new < self.old

    def describe(self) -> str:
        if self.resource == "vcpus":
            return f"{self.domain}: vCPUs {self.old} -> {self.new}"
        return f"{self.domain}: memory {self.old // MIB} MiB -> {self.new // MIB} MiB"

    def explain(self) -> str:
        return f"{self.describe()}: {self.reason}" if self.reason else self.describe()


@dataclass(frozen=True)
class HostFigures:
    """One host at a glance, before or after a plan."""

    cpus: int
    vcpus: int
    #: CPU demand of its domains (% of one CPU; capacity is ``cpus * 100``).
    cpu_demand: float
    #: Memory still uncommitted (what admission control would grant).
    memory_free: int

    @property
    def vcpus_per_cpu(self) -> float:
        return self.vcpus / max(1, self.cpus)

    def describe(self) -> str:
        return (
            f"{self.vcpus} vCPUs on {self.cpus} CPUs ({self.vcpus_per_cpu:.1f} per CPU), "
            f"CPU demand {self.cpu_demand:.0f}% of {100 * self.cpus}%, {max(0, self.memory_free) // MIB} MiB free"
        )


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    problems: tuple[str, ...]
    memory_free_after: int
    vcpus_after: int
    before: HostFigures | None = None
    after: HostFigures | None = None
    #: What the suggestion saw and did not act on (a starved domain without room, an unreported guest).
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def givers(self) -> list[str]:
        return sorted({s.domain for s in self.steps if s.shrinks})

    def takers(self) -> list[str]:
        return sorted({s.domain for s in self.steps if not s.shrinks})


def make_plan(
    current: dict[str, Allocation],
    wanted: dict[str, Allocation],
    limits: dict[str, Limits],
    host_free_memory: int,
    host_cpus: int,
    reasons: dict[tuple[str, str], str] | None = None,
    notes: tuple[str, ...] = (),
) -> Plan:
    """Steps from ``current`` to ``wanted``: donors first (shrinks), then receivers.

    ``reasons`` explains suggested changes by (domain, resource); any other
    change is the operator's own ("your edit").
    """
    reasons = reasons or {}
    steps: list[Step] = []
    problems: list[str] = []
    for name in sorted(wanted):
        now, want, limit = current[name], wanted[name], limits[name]
        if not 1 <= want.vcpus <= limit.max_vcpus:
            problems.append(f"{name}: vCPUs must be 1-{limit.max_vcpus}, not {want.vcpus}")
        if not limit.min_memory <= want.memory <= limit.max_memory:
            problems.append(
                f"{name}: memory must be {limit.min_memory // MIB}-{limit.max_memory // MIB} MiB, not {want.memory // MIB}"
            )
        if want.vcpus != now.vcpus:
            steps.append(Step(name, "vcpus", now.vcpus, want.vcpus, reasons.get((name, "vcpus"), "your edit")))
        if want.memory != now.memory:
            steps.append(Step(name, "memory", now.memory, want.memory, reasons.get((name, "memory"), "your edit")))
    growth = sum(s.new - s.old for s in steps if s.resource == "memory")
    free_after = host_free_memory - growth
    if free_after < 0:
        problems.append(f"the host lacks {-free_after // MIB} MiB for this plan")
    vcpus_after = sum(w.vcpus for w in wanted.values())
    demand = sum(limit.demand or 0.0 for limit in limits.values())
    before = HostFigures(host_cpus, sum(a.vcpus for a in current.values()), demand, host_free_memory)
    after = HostFigures(host_cpus, vcpus_after, demand, free_after)
    ordered = sorted(steps, key=lambda s: (not s.shrinks, s.domain, s.resource))
    return Plan(tuple(ordered), tuple(problems), free_after, vcpus_after, before, after, notes)


@dataclass
class Suggestion:
    """Allocations from measured demand, each change with its reason."""

    wanted: dict[str, Allocation]
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def memory_floor(limit: Limits) -> int:
    """What the guest reports using plus headroom, in whole steps, inside its limits."""
    headroom = max(int(limit.guest_used * HEADROOM_SHARE), HEADROOM_MIN)
    floor = -(-(limit.guest_used + headroom) // MEMORY_STEP) * MEMORY_STEP
    return max(limit.min_memory, min(limit.max_memory, floor))


def suggest(
    current: dict[str, Allocation], limits: dict[str, Limits], host_cpus: int, host_free_memory: int
) -> Suggestion:
    """Allocations from demand by the module's rules; every change carries its reason."""
    wanted = dict(current)
    suggestion = Suggestion(wanted)
    _suggest_vcpus(suggestion, current, limits, host_cpus)
    _suggest_memory(suggestion, current, limits, host_free_memory)
    return suggestion


def _suggest_vcpus(
    suggestion: Suggestion, current: dict[str, Allocation], limits: dict[str, Limits], cpus: int
) -> None:
    wanted, reasons = suggestion.wanted, suggestion.reasons
    starved: list[tuple[float, str, int]] = []
    for name, now in current.items():
        limit = limits[name]
        demand = limit.demand
        if demand is None:
            continue
        needed = max(1, min(limit.max_vcpus, math.ceil(demand / TARGET_VCPU_BUSY)))
        measured = _measured(limit)
        if needed < now.vcpus:
            wanted[name] = Allocation(needed, now.memory)
            reasons[(name, "vcpus")] = (
                f"{measured} on {now.vcpus} vCPUs: {needed} run it below {TARGET_VCPU_BUSY:.0f}% each"
            )
        elif demand >= STARVED_SHARE * 100 * now.vcpus:
            if now.vcpus >= limit.max_vcpus:
                suggestion.notes.append(
                    f"{name} is starved ({measured} on {now.vcpus} vCPUs) but at its maxvcpus {limit.max_vcpus}: "
                    "raise maxvcpus in its definition (applies at its next boot)"
                )
                continue
            starved.append((demand / now.vcpus, name, max(needed, now.vcpus + 1)))
    idle = 100 * cpus - sum((limits[n].cpu_percent or 0.0) for n in current)
    for _share, name, target in sorted(starved, reverse=True):
        now, limit = current[name], limits[name]
        planned = sum(a.vcpus for a in wanted.values())
        room = min(target - now.vcpus, int(MAX_VCPUS_PER_CPU * cpus) - planned)
        measured = _measured(limit)
        if idle < MIN_IDLE_CPU or room < 1:
            why = (
                f"the host has only {max(0.0, idle) / 100:.2f} CPUs idle"
                if idle < MIN_IDLE_CPU
                else f"{planned} vCPUs are already planned on {cpus} CPUs (at most {MAX_VCPUS_PER_CPU:.0f} per CPU)"
            )
            suggestion.notes.append(f"{name} is starved ({measured} on {now.vcpus} vCPUs) but {why}")
            continue
        wanted[name] = Allocation(now.vcpus + room, wanted[name].memory)
        reasons[(name, "vcpus")] = (
            f"starved: {measured} on {now.vcpus} vCPUs (≥{100 * STARVED_SHARE:.0f}% of them); "
            f"the host has {idle / 100:.2f} CPUs idle"
        )
        idle -= min(100.0 * room, limit.cpu_wait_percent or 0.0)  # what it waited for, it will now use


def _measured(limit: Limits) -> str:
    used, waited = limit.cpu_percent or 0.0, limit.cpu_wait_percent or 0.0
    return f"uses {used:.0f}% CPU" + (f" and waits {waited:.0f}% for one" if waited >= 1 else "")


def _suggest_memory(
    suggestion: Suggestion, current: dict[str, Allocation], limits: dict[str, Limits], free: int
) -> None:
    wanted, reasons = suggestion.wanted, suggestion.reasons
    short: list[tuple[float, str]] = []
    for name, now in current.items():
        limit = limits[name]
        if limit.guest_used <= 0:
            suggestion.notes.append(f"{name} reports no memory use (its guest does not say): its memory is kept")
            continue
        floor = memory_floor(limit)
        used = f"the guest reports {limit.guest_used // MIB} MiB used"
        if now.memory - floor >= SHRINK_MIN:
            wanted[name] = Allocation(wanted[name].vcpus, floor)
            free += now.memory - floor
            reasons[(name, "memory")] = (
                f"{used}; {floor // MIB} MiB keeps {(floor - limit.guest_used) // MIB} MiB headroom "
                f"(≥{100 * HEADROOM_SHARE:.0f}%, ≥{HEADROOM_MIN // MIB} MiB) and frees {(now.memory - floor) // MIB} MiB"
            )
        elif limit.guest_used >= MEMORY_STARVED_SHARE * now.memory and floor > now.memory:
            short.append((limit.guest_used / max(1, now.memory), name))
    for _share, name in sorted(short, reverse=True):
        now, limit = current[name], limits[name]
        floor = memory_floor(limit)
        grow = floor - now.memory
        used = f"the guest uses {limit.guest_used // MIB} of its {now.memory // MIB} MiB"
        if grow > free:
            suggestion.notes.append(
                f"{name} is short of memory ({used}) but the host has {max(0, free) // MIB} MiB free"
            )
            continue
        free -= grow
        wanted[name] = Allocation(wanted[name].vcpus, floor)
        reasons[(name, "memory")] = (
            f"short: {used} (≥{100 * MEMORY_STARVED_SHARE:.0f}%); {floor // MIB} MiB gives it its headroom"
        )


Apply = Callable[[Step, int], Awaitable[object]]


@dataclass(frozen=True)
class Outcome:
    done: tuple[Step, ...]
    failed: Step | None
    error: str | None
    rolled_back: bool


async def apply_plan(plan: Plan, apply: Apply) -> Outcome:
    """Run the steps in order; on a refusal undo the done ones in reverse.

    ``apply(step, value)`` sets ``step.resource`` of ``step.domain`` to ``value``.
    """
    done: list[Step] = []
    for step in plan.steps:
        try:
            await apply(step, step.new)
        except Exception as exc:  # the engine's refusal, whatever its type
            for undo in reversed(done):
                try:
                    await apply(undo, undo.old)
                except Exception:
                    return Outcome(tuple(done), step, f"{exc}; rollback of {undo.describe()} failed too", False)
            return Outcome(tuple(done), step, str(exc), True)
        done.append(step)
    return Outcome(tuple(done), None, None, False)
