"""The one declaration of what a domain file may say.

Keys follow Xen's ``xl.cfg`` meanings. Everything a file may contain, its
type, range, default and description lives here; the loader, ``pvtui
check``, the docs' JSON Schema (``docs/domain.schema.json``) and the engine
all read it from this module.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from pvtui.domain.cpuset import parse_cpu_list
from pvtui.domain.units import MIB, format_size, parse_size
from pvtui.engine.abi import MAX_VCPUS

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    Field(json_schema_extra={"type": "string", "pattern": r"^\d+(\.\d+)?[KMGT]?(i?B)?$"}),
]
Action = Literal["destroy", "restart", "preserve"]


class CrossFieldError(ValueError):
    """A rule across keys; ``field`` is the key the message should point at."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdleWorkload(_Strict):
    """All vCPUs block until the engine asks for something: ~0 host CPU."""

    type: Literal["idle"] = "idle"


class CpuWorkload(_Strict):
    """Every online vCPU is busy for `duty` percent of each period."""

    type: Literal["cpu"]
    duty: int = Field(100, ge=0, le=100, description="Percent of each period a vCPU spins.")
    period_ms: int = Field(100, ge=1, le=60_000, description="Length of one busy+idle cycle.")


class MemoryWorkload(_Strict):
    """vCPU 0 keeps a working set resident and rewrites it at a rate."""

    type: Literal["memory"]
    wss: Size = Field(32 << 20, description="Working-set size (shrinks to fit the balloon).")
    touch_rate: Size = Field(64 << 20, description="Bytes rewritten per second; 0 = touch once.")


class BurstyWorkload(_Strict):
    """All vCPUs burst together: busy `duty` percent of a long period, then idle."""

    type: Literal["bursty"]
    duty: int = Field(30, ge=0, le=100)
    period_ms: int = Field(5000, ge=10, le=600_000)


class ChattyWorkload(_Strict):
    """Console lines (vCPU 0) and sched_op yields (every vCPU) at set rates."""

    type: Literal["chatty"]
    lines_per_sec: int = Field(2, ge=0, le=1000)
    yields_per_sec: int = Field(50, ge=0, le=10_000)


class SelftestWorkload(_Strict):
    """Exercise every hypercall, good and bad arguments, then power off."""

    type: Literal["selftest"]


class BenchWorkload(_Strict):
    """One measurement (bench/engine.py reads its console line), then power off."""

    type: Literal["bench"]
    test: Literal["hypercall", "multicall", "cpu", "memory"]
    count: int = Field(10_000, ge=1, le=10**12)
    size: Size = Field(256 << 20)
    passes: int = Field(2, ge=1, le=100)


class VerifyWorkload(_Strict):
    """vCPU 0 keeps a working set of patterned pages, rewrites and re-checks them, and checks its
    clock and hypercall counters: any loss (after a save, restore or migration) crashes the domain."""

    type: Literal["verify"]
    wss: Size = Field(16 << 20, description="Working-set size (shrinks to fit the balloon).")
    rate: Size = Field(64 << 20, description="Bytes rewritten per second (0: write once, then only check).")
    check_rate: Size = Field(128 << 20, description="Bytes re-checked per second.")


Workload = Annotated[
    IdleWorkload
    | CpuWorkload
    | MemoryWorkload
    | BurstyWorkload
    | ChattyWorkload
    | SelftestWorkload
    | BenchWorkload
    | VerifyWorkload,
    Field(discriminator="type"),
]
WORKLOAD_TYPES = ("idle", "cpu", "memory", "bursty", "chatty", "selftest", "bench", "verify")

CpuSpec = str | int


def _check_cpus(value: object) -> object:
    if value is None:
        return None
    specs = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise ValueError("a per-vCPU list needs at least one entry")
    for spec in specs:
        if not isinstance(spec, (str, int)) or isinstance(spec, bool):
            raise ValueError(f'expected a CPU list like "0-3,^1", got {spec!r}')
        parse_cpu_list(spec)
    return value


class DomainConfig(_Strict):
    """A paravirtual domain: its resources, kernel, workload and lifecycle actions."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Unique domain name.")
    vcpus: int = Field(1, ge=1, le=MAX_VCPUS, description="vCPUs online at boot.")
    maxvcpus: int | None = Field(None, ge=1, le=MAX_VCPUS, description="Most vCPUs it may hot-plug (default: vcpus).")
    memory: Size = Field(64 << 20, description="RAM at boot; a bare number is MiB.")
    maxmem: Size | None = Field(None, description="Most RAM it may grow to (default: memory).")
    cpu_weight: int = Field(256, ge=1, le=65535, description="Credit-scheduler weight.")
    cpu_cap: int = Field(0, ge=0, le=100 * MAX_VCPUS, description="Percent of one host CPU; 0 = no cap.")
    cpus: Annotated[CpuSpec | list[CpuSpec] | None, BeforeValidator(_check_cpus)] = Field(
        None, description='Pinning: "0-3,^1" for every vCPU, or a list with one entry per vCPU.'
    )
    kernel: str | None = Field(None, description="ELF PV kernel path (relative to this file); default: bundled.")
    cmdline: str | None = Field(
        None,
        max_length=1023,
        description="Kernel command line, as xl.cfg's cmdline (Xen PV kernels; the bundled kernel takes workload:).",
    )
    workload: Workload = Field(default_factory=IdleWorkload, description="What the bundled kernel runs.")
    on_poweroff: Action = "destroy"
    on_reboot: Action = "restart"
    on_crash: Action = "destroy"
    autostart: bool = Field(False, description="Start with the engine.")

    @model_validator(mode="before")
    @classmethod
    def _workload_shorthand(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("workload"), str):
            data = {**data, "workload": {"type": data["workload"]}}
        return data

    @model_validator(mode="after")
    def _cross_field(self) -> DomainConfig:
        if self.maxvcpus is not None and self.vcpus > self.maxvcpus:
            raise CrossFieldError("vcpus", f"vcpus ({self.vcpus}) is more than maxvcpus ({self.maxvcpus})")
        if self.maxmem is not None and self.memory > self.maxmem:
            raise CrossFieldError(
                "memory", f"memory ({format_size(self.memory)}) is more than maxmem ({format_size(self.maxmem)})"
            )
        if self.memory % MIB:
            raise CrossFieldError("memory", "memory must be a whole number of MiB")
        if self.maxmem is not None and self.maxmem % MIB:
            raise CrossFieldError("maxmem", "maxmem must be a whole number of MiB")
        if isinstance(self.cpus, list) and len(self.cpus) > self.maxvcpus_or_vcpus:
            raise CrossFieldError("cpus", f"cpus lists {len(self.cpus)} vCPUs but maxvcpus is {self.maxvcpus_or_vcpus}")
        return self

    # Resolved views the engine uses --------------------------------------------
    @property
    def maxvcpus_or_vcpus(self) -> int:
        return self.maxvcpus if self.maxvcpus is not None else self.vcpus

    @property
    def maxmem_or_memory(self) -> int:
        return self.maxmem if self.maxmem is not None else self.memory

    def vcpu_affinity(self, vcpu_id: int) -> set[int] | None:
        """Host CPUs vCPU ``vcpu_id`` is pinned to, or None for no pinning."""
        if self.cpus is None:
            return None
        if isinstance(self.cpus, list):
            if vcpu_id >= len(self.cpus):
                return None
            spec = self.cpus[vcpu_id]
        else:
            spec = self.cpus
        cpus = parse_cpu_list(spec)
        return set(cpus) or None

    def kernel_cmdline(self) -> str:
        """The workload as the ``key=value`` command line the bundled kernel reads (``cmdline:`` after it)."""
        fields = self.workload.model_dump(mode="json")
        parts = [f"workload={fields.pop('type')}"]
        # Sizes serialize as 64M / 2G, which the guest's parser reads directly.
        parts.extend(f"{key}={value}" for key, value in fields.items())
        if self.cmdline:
            parts.append(self.cmdline)
        return " ".join(parts)


def json_schema() -> dict[str, object]:
    schema = DomainConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pvtui domain definition"
    return schema
