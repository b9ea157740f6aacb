"""Saving a paused domain to a snapshot file, and building a domain from one.

Both directions go through the same pieces as live migration
(:mod:`pvtui.engine.snapshot.state` for vCPU and engine state, the memory's
backed runs), so a snapshot and a migration stream carry the same thing.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pvtui import __version__
from pvtui.engine import layout
from pvtui.engine.domain import Domain
from pvtui.engine.snapshot import state
from pvtui.engine.snapshot.fileformat import FORMAT_VERSION, SnapshotError, SnapshotReader, SnapshotWriter

if TYPE_CHECKING:
    from pvtui.domain.schema import DomainConfig
    from pvtui.engine.kvm import Kvm


@dataclass(frozen=True)
class SaveFigures:
    memory_bytes: int
    file_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"memory_bytes": self.memory_bytes, "file_bytes": self.file_bytes, "seconds": self.seconds}


def snapshot_meta(domain: Domain, definition: str | None) -> dict[str, Any]:
    """What a snapshot (or a migration) says about its domain before any state: enough to admit it."""
    return {
        "format": FORMAT_VERSION,
        "name": domain.name,
        "personality": domain.personality,
        "config": domain.config.model_dump(mode="json"),
        "definition": definition,
        "kernel_path": domain.kernel_path,
        "present_bytes": domain.memory.size,
        "max_vcpus": domain.max_vcpus,
        "saved_at": time.time(),
        "host": socket.gethostname(),
        "pvtui_version": __version__,
    }


def capture(
    domain: Domain, was_paused: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any] | None]:
    """vCPU, engine and personality state of a paused domain; ``was_paused``: paused by its operator
    (not only for the snapshot), so it comes back paused."""
    vcpus = [state.capture_vcpu(domain, runner) for runner in sorted(domain.vcpus.all(), key=lambda r: r.id)]
    engine = state.capture_engine(domain)
    engine["paused"] = was_paused
    return vcpus, engine, state.capture_xen(domain)


def save_domain(domain: Domain, fd: int, definition: str | None, was_paused: bool = False) -> SaveFigures:
    """Write a paused domain to ``fd`` (the caller syncs and renames the file)."""
    started = time.perf_counter()
    vcpus, engine, xen = capture(domain, was_paused)
    names = ["meta", "kernel", "vcpus", "engine"] + (["xen"] if xen is not None else []) + ["memory"]
    writer = SnapshotWriter(fd, names)
    writer.add_json("meta", snapshot_meta(domain, definition))
    writer.add("kernel", domain.kernel_image)
    writer.add_json("vcpus", vcpus)
    writer.add_json("engine", engine)
    if xen is not None:
        writer.add_json("xen", xen)
    runs = domain.memory.split_runs(domain.memory.backed_runs())
    memory_bytes = writer.add_memory(runs, domain.memory.frame_view, layout.PAGE_SIZE)
    writer.finish()
    return SaveFigures(memory_bytes, writer.position, time.perf_counter() - started)


def build_for_restore(
    config: DomainConfig, kernel_path: str, kernel_image: bytes, kvm: Kvm | None, domid: int
) -> Domain:
    """A domain of the saved definition, built but not started: its state is loaded next."""
    if not kernel_image:
        raise SnapshotError("Snapshot carries no kernel", "The file is corrupt; save the domain again.")
    return Domain(config, kernel_path, kvm=kvm, domid=domid, kernel_image=kernel_image)


def load_state(
    domain: Domain, vcpus: list[dict[str, Any]], engine: dict[str, Any], xen: dict[str, Any] | None
) -> set[int]:
    """Engine, personality and vCPU state into a built domain whose memory is loaded; the started vCPUs."""
    state.apply_engine(domain, engine)
    state.apply_xen(domain, xen)
    started = set()
    for data in vcpus:
        runner = state.apply_vcpu(domain, data)
        if data["started"]:
            started.add(runner.id)
    return started


def restore_domain(
    reader: SnapshotReader, config: DomainConfig, kvm: Kvm | None, domid: int, paused: bool = False
) -> Domain:
    """Build the saved domain, load memory and state (checksums first), then run it."""
    domain = build_for_restore(config, str(reader.meta.get("kernel_path", "")), reader.kernel, kvm, domid)
    try:
        state.apply_memory_layout(domain, reader.engine)
        reader.load_memory(domain.memory.frame_view, layout.PAGE_SIZE, domain.memory.pages)
        started = load_state(domain, reader.vcpus, reader.engine, reader.xen)
        domain.resume_restored(started, paused or bool(reader.engine.get("paused")))
    except BaseException:
        domain.destroy()
        raise
    return domain


__all__ = [
    "SaveFigures",
    "build_for_restore",
    "capture",
    "load_state",
    "restore_domain",
    "save_domain",
    "snapshot_meta",
]
