"""Applying an edited definition to a running domain: what changes live, what needs a restart.

Pure (no UI, no engine): the editor's save and ``pvtui`` scripts share it.
:func:`diff_configs` sorts the changed keys; :func:`live_steps` turns the live
ones into the engine requests that apply them, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvtui.domain.schema import DomainConfig

#: Keys the engine changes on a running domain; anything else needs a restart.
LIVE_KEYS = ("vcpus", "memory", "cpu_weight", "cpu_cap", "cpus")
#: Keys that matter to no running domain (only to pvd at its start).
IGNORED_KEYS = ("autostart",)


@dataclass(frozen=True)
class LiveChange:
    key: str
    old: object
    new: object


@dataclass(frozen=True)
class LiveStep:
    """One request to the engine: ``op`` (a :class:`~pvtui.client.Client` method) with ``args``."""

    key: str
    op: str
    args: tuple[object, ...]


def diff_configs(old: DomainConfig, new: DomainConfig) -> tuple[list[LiveChange], list[str]]:
    """(changes applied live, keys that need a restart)."""
    live, restart = [], []
    old_data, new_data = old.model_dump(), new.model_dump()
    for key, value in new_data.items():
        if old_data.get(key) == value or key in IGNORED_KEYS:
            continue
        if key in LIVE_KEYS:
            live.append(LiveChange(key, old_data.get(key), value))
        else:
            restart.append(key)
    return live, restart


def live_steps(new: DomainConfig, changes: list[LiveChange], present_bytes: int) -> list[LiveStep]:
    """The requests that apply ``changes`` to the running domain ``new.name``.

    Memory above what is present grows first (``mem_max``), then takes the
    target; weight and cap go together; pinning is re-applied per vCPU
    (``all`` for a vCPU the new definition leaves unpinned).
    """
    name, steps = new.name, []
    for change in changes:
        if change.key == "vcpus":
            steps.append(LiveStep("vcpus", "vcpu_set", (name, new.vcpus)))
        elif change.key == "memory":
            if new.memory > present_bytes:
                steps.append(LiveStep("memory", "mem_max", (name, new.memory)))
            steps.append(LiveStep("memory", "mem_set", (name, new.memory)))
        elif change.key in ("cpu_weight", "cpu_cap"):
            if not any(step.op == "sched_credit" for step in steps):
                steps.append(LiveStep(change.key, "sched_credit", (name, new.cpu_weight, new.cpu_cap)))
        elif change.key == "cpus":
            for vcpu in range(new.maxvcpus_or_vcpus):
                cpus = new.vcpu_affinity(vcpu)
                spec = ",".join(map(str, sorted(cpus))) if cpus else "all"
                steps.append(LiveStep("cpus", "vcpu_pin", (name, vcpu, spec)))
    return steps
