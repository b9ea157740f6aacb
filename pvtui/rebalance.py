"""Rebalancing vCPUs and memory between domains: plans, suggestions, safe application.

Pure logic (no UI, no engine import): the TUI's rebalance view and tests use
it with the client. A plan lists every change, shrinks first so donors free
resources before receivers take them, and checks that the host can hold the
result. Applying stops at the first refusal and rolls back what was done.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pvtui.domain.units import MIB

MEMORY_STEP = 16 * MIB


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


@dataclass(frozen=True)
class Step:
    domain: str
    resource: str  # "vcpus" | "memory"
    old: int
    new: int

    @property
    def shrinks(self) -> bool:
        return self.new < self.old

    def describe(self) -> str:
        if self.resource == "vcpus":
            return f"{self.domain}: vCPUs {self.old} -> {self.new}"
        return f"{self.domain}: memory {self.old // MIB} MiB -> {self.new // MIB} MiB"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    problems: tuple[str, ...]
    memory_free_after: int
    vcpus_after: int

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
) -> Plan:
    """Steps from ``current`` to ``wanted``: donors first (shrinks), then receivers."""
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
            steps.append(Step(name, "vcpus", now.vcpus, want.vcpus))
        if want.memory != now.memory:
            steps.append(Step(name, "memory", now.memory, want.memory))
    growth = sum(s.new - s.old for s in steps if s.resource == "memory")
    free_after = host_free_memory - growth
    if free_after < 0:
        problems.append(f"the host lacks {-free_after // MIB} MiB for this plan")
    vcpus_after = sum(w.vcpus for w in wanted.values())
    ordered = sorted(steps, key=lambda s: (not s.shrinks, s.domain, s.resource))
    return Plan(tuple(ordered), tuple(problems), free_after, vcpus_after)


def suggest(
    current: dict[str, Allocation], limits: dict[str, Limits], target_cpu_per_vcpu: float = 70.0
) -> dict[str, Allocation]:
    """Allocations from demand: enough vCPUs to run each below ``target_cpu_per_vcpu`` % busy
    (host-measured), and memory = what the guest reports using + 25 % + 16 MiB (the
    guest's own report). A domain whose CPU was not measured yet keeps its vCPUs."""
    wanted = {}
    for name in current:
        limit = limits[name]
        if limit.cpu_percent is None:
            vcpus = current[name].vcpus
        else:
            vcpus = max(1, min(limit.max_vcpus, math.ceil(limit.cpu_percent / target_cpu_per_vcpu) or 1))
        memory = int(limit.guest_used * 1.25) + MEMORY_STEP
        memory = -(-memory // MEMORY_STEP) * MEMORY_STEP
        memory = max(limit.min_memory, min(limit.max_memory, memory))
        wanted[name] = Allocation(vcpus, memory)
    return wanted


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
