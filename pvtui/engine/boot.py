"""Building a domain's machine: the kernel's segments, pvtui's boot structures, each vCPU's start.

The Xen personality builds its own layout (``pvtui/engine/xen/machine.py``);
what is common to both (segments, vCPU creation, the clock) is here.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from pvtui.domain.units import MIB
from pvtui.engine import abi, layout
from pvtui.engine.clock import sample_time_info
from pvtui.engine.elf import KernelImage
from pvtui.engine.errors import DomainError
from pvtui.engine.vcpu import VcpuRunner
from pvtui.engine.xen import abi as xen_abi

if TYPE_CHECKING:
    from pvtui.domain.schema import DomainConfig
    from pvtui.engine.domain import Domain

#: Free RAM a kernel needs beyond its image and stacks to be worth booting.
MIN_FREE_BYTES = 1 * MIB


def _align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def memory_layout(config: DomainConfig, kernel_end: int, max_vcpus: int) -> tuple[int, int]:
    """(where the vCPU stacks start, the first free byte after them); refuses a domain too small or too big."""
    stack_base = _align_up(kernel_end, layout.PAGE_SIZE)
    first_free = _align_up(stack_base + max_vcpus * layout.VCPU_STACK_SIZE, layout.PAGE_SIZE)
    if first_free + MIN_FREE_BYTES > config.memory:
        raise DomainError(
            f"Domain {config.name} has too little memory",
            f"Its kernel and {max_vcpus} vCPU stacks need {first_free // MIB + 2} MiB; "
            f"raise memory: above {config.memory // MIB} MiB.",
        )
    if config.maxmem_or_memory > layout.MAX_IDENTITY_MAPPED:
        raise DomainError(
            f"Domain {config.name} asks for too much memory",
            f"maxmem is limited to {layout.MAX_IDENTITY_MAPPED // layout.GIB} GiB.",
        )
    return stack_base, first_free


def write_boot_structures(domain: Domain, image: KernelImage) -> None:
    """pvtui's ABI: identity page tables, GDT, the kernel, start-info and shared-info (docs/abi.md)."""
    mem = domain.memory
    for addr, table in layout.page_table_bytes(domain.config.maxmem_or_memory).items():
        mem.write(addr, table)
    mem.write(layout.GDT_ADDR, layout.gdt_bytes())
    load_segments(domain, image)
    cmdline = domain.config.kernel_cmdline().encode()
    if len(cmdline) >= abi.START_INFO_CMDLINE_SIZE:
        raise DomainError(f"Command line of {domain.name} too long", "Shorten the workload settings.")
    start_info = abi.START_INFO.pack(
        abi.START_INFO_MAGIC,
        domain.config.memory // layout.PAGE_SIZE,
        domain.max_pages,
        layout.SHARED_INFO_ADDR,
        domain.first_free // layout.PAGE_SIZE,
        domain.stack_base,
        domain.config.vcpus,
        domain.max_vcpus,
        image.end,
    )
    mem.write(layout.START_INFO_ADDR, start_info)
    mem.write(layout.START_INFO_ADDR + abi.START_INFO_CMDLINE_OFFSET, cmdline + b"\0")
    shared = struct.pack(
        "<QQQQII",
        1,
        domain.vcpus.wanted_mask,
        domain.config.memory // layout.PAGE_SIZE,
        domain.config.memory // layout.PAGE_SIZE,
        0,
        0,
    )
    mem.write(layout.SHARED_INFO_ADDR, shared)


def load_segments(domain: Domain, image: KernelImage) -> None:
    for segment in image.segments:
        if not domain.memory.write(segment.paddr, segment.data) or not domain.memory.check(
            segment.paddr, segment.memsz
        ):
            raise DomainError(
                f"Kernel of {domain.name} does not fit",
                f"A segment at {segment.paddr:#x} ({segment.memsz} bytes) lies beyond memory; raise memory:.",
            )


def create_vcpu(domain: Domain, vcpu_id: int) -> VcpuRunner:
    """A KVM vCPU with the personality's boot state, and the runner that will run it."""
    vcpu = domain.vm.create_vcpu(vcpu_id)
    vcpu.set_cpuid(domain.kvm.supported_cpuid())
    if domain.xen is None:
        sregs = vcpu.get_sregs()
        layout.apply_boot_sregs(sregs)
        vcpu.set_sregs(sregs)
    else:
        domain.xen.setup_vcpu(vcpu, domain.kernel.entry)
    if not domain._tsc_khz:
        domain._tsc_khz = vcpu.tsc_khz()
    runner = VcpuRunner(domain, vcpu)
    if domain.xen is None:
        runner.set_context(domain.kernel.entry, domain.stack_top(vcpu_id), layout.START_INFO_ADDR)
    else:  # Xen's entry: rsi = start_info (virtual), rsp at the end of the boot area
        runner.set_context(domain.kernel.entry, domain.xen.boot.stack_top, 0, rsi=domain.xen.boot.start_info)
    runner.affinity = domain.config.vcpu_affinity(vcpu_id)
    publish_clock(domain, runner)
    return runner


def publish_clock(domain: Domain, runner: VcpuRunner) -> None:
    """Pair the vCPU's TSC with the host clock in its vcpu_time_info (a seqlock: odd while written)."""
    if domain.xen is not None:  # Xen's vcpu_time_info has the same 32-byte layout
        offset = domain.xen.vcpu_info_offset(runner.id) + xen_abi.VI_TIME
    else:
        offset = abi.SI_VCPU_INFO + runner.id * abi.VCPU_INFO_SIZE + abi.VI_TIME
    view = domain.shared[offset : offset + abi.VCPU_TIME_INFO.size]
    version = struct.unpack_from("<I", view)[0]
    view[0:4] = struct.pack("<I", (version + 1) | 1)  # odd: being updated
    info = bytearray(sample_time_info(runner.vcpu, domain._tsc_khz, (version + 2) & ~1, domain.clock_offset_ns))
    view[4:] = info[4:]
    view[0:4] = info[0:4]
    runner._time_refreshed_ns = time.monotonic_ns()
