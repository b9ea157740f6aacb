"""pvd's requests that move a domain out of or into a monitor: save, restore, suspend, resume, migrate.

A save writes the snapshot through a file pvd opens (a monitor without root
could not) into a temporary name beside the target, syncs it, renames it
into place and syncs the folder; only then is the domain destroyed (unless
``keep``). A restore checks the file's header and sections and admits its
memory before a monitor is started, and the monitor checks the memory's
checksum before any vCPU runs. A migration hands a connection to the target
pvd to the domain's monitor; the target pvd hands its end to the monitor it
starts for the arriving domain (docs/snapshot.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import zlib
from pathlib import Path
from typing import Any

from pvtui.daemon import paths, protocol
from pvtui.daemon.jobs import run_job
from pvtui.daemon.monitors import PvdMonitors
from pvtui.daemon.ops import PVD_OPS
from pvtui.daemon.protocol import ProtocolError
from pvtui.daemon.records import ClientConn, DomainRecord
from pvtui.domain.loader import DomainFileError, parse_domain_text
from pvtui.domain.schema import DomainConfig
from pvtui.engine.snapshot.fileformat import SnapshotError, read_snapshot_meta
from pvtui.engine.snapshot.migration import FRAME
from pvtui.errors import PvtuiError

log = logging.getLogger("pvd")
NUM = (int, float)


def suspended_dir() -> Path:
    return paths.runtime_dir() / "suspended"


def suspended_path(name: str) -> Path:
    return suspended_dir() / f"{name}.snap"


def resolve_target(target: str) -> Path:
    """A pvd named by its runtime directory (``DIR/pvd.sock``) or its socket's path."""
    path = Path(target).expanduser()
    if path.is_dir():
        path = path / "pvd.sock"
    if not path.exists():
        raise PvtuiError(
            f"No pvd at {target}",
            "Name the target by its runtime directory (PVTUI_RUNTIME_DIR of that pvd) or its pvd.sock.",
        )
    return path


def _config_from_meta(meta: dict[str, Any], where: str, name: str | None) -> DomainConfig:
    """The domain a snapshot's (or a migration's) meta describes, checked like a domain file."""
    try:
        config = DomainConfig.model_validate(meta["config"])
        if name:
            config = DomainConfig.model_validate({**config.model_dump(mode="json"), "name": name})
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"Snapshot {where} has a bad definition", f"{exc}".splitlines()[0]) from None
    present = meta.get("present_bytes", config.memory)
    definition = meta.get("definition")
    if not isinstance(present, int) or isinstance(present, bool) or not 0 <= present <= config.maxmem_or_memory:
        raise SnapshotError(f"Snapshot {where} is corrupt", f"Its present memory {present!r} does not fit its maxmem.")
    if definition is not None and not isinstance(definition, str):
        raise SnapshotError(f"Snapshot {where} is corrupt", "Its definition path is not text.")
    return config


class PvdMoves(PvdMonitors):
    """The save/restore/migrate requests (a layer of :class:`~pvtui.daemon.server.Pvd`)."""

    # --- save and suspend ---------------------------------------------------------------
    @PVD_OPS.op("save", {"name": str, "path": str, "keep?": bool}, changes=True)
    async def op_save(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return await self._save(args["name"], Path(args["path"]), bool(args.get("keep")))

    @PVD_OPS.op("suspend", {"name": str}, changes=True)
    async def op_suspend(self, client: ClientConn, args: dict[str, Any]) -> Any:
        paths.ensure_private_dir(suspended_dir())
        target = suspended_path(args["name"])
        if target.exists():
            raise PvtuiError(f"{args['name']} is already suspended", "Resume it first (pvtui resume NAME).")
        return await self._save(args["name"], target, keep=False)

    async def _save(self, name: str, target: Path, keep: bool) -> dict[str, Any]:
        record, link = self._live(name)
        if not target.is_absolute():
            raise ProtocolError(
                "bad_args", "The snapshot path must be absolute", "The CLI makes it so; pass a full path."
            )
        if not target.parent.is_dir():
            raise PvtuiError(f"Cannot save {name} to {target}", f"{target.parent} is not a folder; create it first.")
        temp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise PvtuiError(f"Cannot save {name} to {target}", f"{exc.strerror}; choose another place.") from None
        figures: dict[str, Any] | None = None
        try:
            figures = await run_job(name, record.pid, {"job": "save", "keep": keep}, os.dup(fd))
            os.fsync(fd)
            os.replace(temp, target)
            _sync_folder(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            if figures is not None and not keep and not figures.get("was_paused"):
                # The monitor left it paused for a destroy that will not come now.
                with contextlib.suppress(PvtuiError, ProtocolError):
                    await link.request("unpause")
            raise
        finally:
            os.close(fd)
        if not keep:
            await self._destroy(record)
        log.info("saved %s to %s (%d bytes of memory)", name, target, figures["memory_bytes"])
        return {"name": name, "path": str(target), "kept": keep, **figures}

    # --- restore and resume ---------------------------------------------------------------
    @PVD_OPS.op("restore", {"path": str, "name?": str, "paused?": bool}, changes=True)
    async def op_restore(self, client: ClientConn, args: dict[str, Any]) -> Any:
        return (await self._restore(Path(args["path"]), args.get("name"), bool(args.get("paused")))).summary()

    @PVD_OPS.op("resume", {"name": str, "paused?": bool}, changes=True)
    async def op_resume(self, client: ClientConn, args: dict[str, Any]) -> Any:
        path = suspended_path(args["name"])
        if not path.exists():
            raise PvtuiError(f"{args['name']} is not suspended", "See pvtui list: suspended domains say so.")
        record = await self._restore(path, None, bool(args.get("paused")))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return record.summary()

    async def _restore(self, path: Path, name: str | None, paused: bool) -> DomainRecord:
        if not path.is_absolute():
            raise ProtocolError(
                "bad_args", "The snapshot path must be absolute", "The CLI makes it so; pass a full path."
            )
        where = str(path)
        meta = await asyncio.get_running_loop().run_in_executor(None, read_snapshot_meta, where)
        config = _config_from_meta(meta, where, name)
        if config.name in self.records:
            raise PvtuiError(
                f"A domain named {config.name} exists",
                "Destroy it first, or restore under another name (pvtui restore FILE --name NEW).",
            )
        return await self._create(
            config,
            meta.get("definition"),
            memory_bytes=int(meta.get("present_bytes", 0)),
            restore=str(path.resolve()),
            paused=paused,
            kernel=meta.get("kernel_path") or None,
        )

    def suspended(self) -> list[dict[str, Any]]:
        """Suspended domains (snapshots in the runtime dir), as rows for ``list``."""
        rows = []
        for path in sorted(suspended_dir().glob("*.snap")) if suspended_dir().is_dir() else []:
            try:
                meta = read_snapshot_meta(str(path))
            except PvtuiError as exc:
                log.warning("ignoring %s: %s", path, exc.message)
                continue
            config = meta.get("config") or {}
            rows.append(
                {
                    "name": path.stem,
                    "domid": 0,
                    "state": "suspended",
                    "vcpus_max": config.get("maxvcpus") or config.get("vcpus", 0),
                    "memory": {"present_bytes": meta.get("present_bytes", 0)},
                    "definition": meta.get("definition"),
                    "personality": meta.get("personality", "pvtui"),
                    "suspended_at": meta.get("saved_at"),
                }
            )
        return rows

    # --- live migration: the source ----------------------------------------------------------
    @PVD_OPS.op("migrate", {"name": str, "target": str, "downtime_ms?": NUM}, changes=True)
    async def op_migrate(self, client: ClientConn, args: dict[str, Any]) -> Any:
        name = args["name"]
        record, link = self._live(name)
        if record.migration is not None:
            raise PvtuiError(f"{name} is already migrating", "Wait for it, or cancel it: pvtui migrate --cancel NAME.")
        target = resolve_target(args["target"])
        if target.resolve() == paths.socket_path().resolve():
            raise PvtuiError(f"{args['target']} is this engine", "Name another pvd as the target.")
        meta = await link.request("snapshot_meta")
        try:
            reader, writer = await asyncio.open_unix_connection(str(target), limit=protocol.MAX_MESSAGE_BYTES + 1)
        except OSError as exc:
            raise PvtuiError(f"Cannot reach the pvd at {target}", f"{exc.strerror or exc}; is it running?") from None
        try:
            reply = await protocol.request_on(reader, writer, "migrate_incoming", meta=meta)
            if "error" in reply:
                error = reply["error"]
                raise PvtuiError(f"The target refused {name}: {error.get('title', '')}", error.get("message", ""))
        except (ValueError, ConnectionError) as exc:
            writer.close()
            raise PvtuiError(
                "Migration failed", f"The target broke the exchange ({exc}); {name} keeps running here."
            ) from None
        figures = await self._send_over(record, writer, float(args.get("downtime_ms", 20.0)), str(target))
        return {"name": name, "target": str(target), **figures}

    async def _send_over(
        self, record: DomainRecord, writer: asyncio.StreamWriter, downtime_ms: float, target: str
    ) -> dict[str, Any]:
        """Send the domain over a connection whose far end is a pvd that accepted ``migrate_incoming``
        (directly, or through a client relaying it): the kernel, then the monitor's stream. The domain
        is destroyed here only once the target runs it."""
        name = record.name
        record.migration = {"stage": "connecting", "target": target}
        try:
            kernel = await asyncio.get_running_loop().run_in_executor(None, Path(record.spec.kernel).read_bytes)
            writer.write(FRAME.pack(ord("K"), zlib.crc32(kernel), len(kernel)) + kernel)
            await writer.drain()
            _pause_reading(writer)
            sock: socket.socket = writer.get_extra_info("socket")
            job = {"job": "migrate_send", "downtime_ms": downtime_ms}
            figures: dict[str, Any] = await run_job(name, record.pid, job, os.dup(sock.fileno()))
        except (OSError, ConnectionError) as exc:
            raise PvtuiError(
                "Migration failed", f"The target broke the exchange ({exc}); {name} keeps running here."
            ) from None
        finally:
            record.migration = None
            writer.close()
        await self._destroy(record)
        log.info("migrated %s to %s: %s", name, target, figures)
        return figures

    @PVD_OPS.op("migrate_out", {"name": str, "downtime_ms?": NUM}, takes_over=True, changes=True)
    async def op_migrate_out(self, client: ClientConn, args: dict[str, Any]) -> Any:
        """Migrate over this connection: a client relays it to the target pvd (another host, over ssh).

        The reply carries the meta the client gives the target's ``migrate_incoming``;
        then the connection carries the stream. The outcome is a ``migration`` event
        (stage ``done`` with the figures, or ``failed`` with the reason)."""
        name = args["name"]
        record, link = self._live(name)
        if record.migration is not None:
            raise PvtuiError(f"{name} is already migrating", "Wait for it, or cancel it: pvtui migrate --cancel NAME.")
        meta = await link.request("snapshot_meta")
        downtime_ms = float(args.get("downtime_ms", 20.0))

        async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                figures = await self._send_over(record, writer, downtime_ms, "a relayed pvd")
            except PvtuiError as exc:
                self._broadcast("migration", name, {"stage": "failed", "title": exc.title, "message": exc.message})
                return
            self._broadcast("migration", name, {"stage": "done", **figures})

        client.takeover = send
        return {"meta": meta}

    @PVD_OPS.op("definition_put", {"name": str, "text": str}, changes=True)
    async def op_definition_put(self, client: ClientConn, args: dict[str, Any]) -> Any:
        """Replace a domain's definition file (an editor on another host): checked first, written
        atomically; the domain's name may not change. Applying it live is the editor's next step."""
        record = self._record(args["name"])
        path = record.spec.definition
        if path is None:
            raise PvtuiError(f"{record.name} has no definition file", "It was created without one.")
        try:
            config = parse_domain_text(args["text"], path)
        except DomainFileError as exc:
            raise ProtocolError("invalid", exc.title, exc.message) from None
        if config.name != record.name:
            raise PvtuiError(
                f"The definition names {config.name}, not {record.name}",
                "A domain keeps its name; create a new one from a new file instead.",
            )
        paths.write_atomic(Path(path), args["text"])
        return {"path": path}

    @PVD_OPS.op("definition", {"name": str})
    async def op_definition(self, client: ClientConn, args: dict[str, Any]) -> Any:
        """The text of a domain's definition (a cold move recreates it elsewhere from this)."""
        record = self._record(args["name"])
        path = record.spec.definition
        if path is None:
            raise PvtuiError(f"{record.name} has no definition file", "It was created without one.")
        try:
            text = await asyncio.get_running_loop().run_in_executor(None, Path(path).read_text)
        except OSError as exc:
            raise PvtuiError(
                f"Cannot read {path}", f"{exc.strerror}; the definition of {record.name} is gone."
            ) from None
        return {"path": path, "text": text}

    @PVD_OPS.op("migrate_cancel", {"name": str}, changes=True)
    async def op_migrate_cancel(self, client: ClientConn, args: dict[str, Any]) -> Any:
        _, link = self._live(args["name"])
        return await link.request("migrate_cancel")

    # --- live migration: the target ------------------------------------------------------------
    @PVD_OPS.op("migrate_incoming", {"meta": dict}, takes_over=True)
    async def op_migrate_incoming(self, client: ClientConn, args: dict[str, Any]) -> Any:
        meta = args["meta"]
        config = _config_from_meta(meta, "stream", None)
        if config.name in self.records:
            raise PvtuiError(f"A domain named {config.name} exists here", "Destroy or rename it on the target first.")
        present = int(meta.get("present_bytes", config.memory))  # checked by _config_from_meta
        # Checked now, so a refusal reaches the source before it sends anything.
        self.admit_memory(max(present, config.memory), f"arriving domain {config.name}")

        async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._receive(config, meta, present, reader, writer)

        client.takeover = receive
        return {"ready": True}

    async def _receive(
        self,
        config: DomainConfig,
        meta: dict[str, Any],
        present: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        try:
            kind, crc, length = FRAME.unpack(await reader.readexactly(FRAME.size))
            if kind != ord("K") or length > 64 << 20:
                raise PvtuiError("Bad migration stream", "It did not start with the kernel.")
            kernel = await reader.readexactly(length)
            if zlib.crc32(kernel) != crc:
                raise PvtuiError("Bad migration stream", "The kernel failed its checksum.")
            _pause_reading(writer)
            kernel_path = _store_kernel(config.name, kernel)
            record = await self._create(
                config,
                meta.get("definition"),
                memory_bytes=present,
                incoming=True,
                paused=False,
                kernel=str(kernel_path),
            )
        except (PvtuiError, asyncio.IncompleteReadError, OSError) as exc:
            title, message = (exc.title, exc.message) if isinstance(exc, PvtuiError) else ("Stream closed", str(exc))
            body = json.dumps({"error": title, "message": message}).encode()
            with contextlib.suppress(OSError):
                writer.write(FRAME.pack(ord("A"), zlib.crc32(body), len(body)) + body)
                await writer.drain()
            return
        fd = os.dup(sock.fileno())
        writer.transport.abort()  # pvd's copy goes; the monitor holds the connection now
        try:
            await run_job(config.name, record.pid, {"job": "migrate_receive"}, fd)
            await self._refresh(record)
            self._broadcast("state", config.name, {"state": record.state, "detail": "arrived by migration"})
            log.info("%s arrived by migration", config.name)
        except PvtuiError as exc:
            log.warning("incoming migration of %s failed: %s: %s", config.name, exc.title, exc.message)


def _store_kernel(name: str, kernel: bytes) -> Path:
    """An arriving domain's kernel, kept where its monitor (and a later reboot) can read it."""
    folder = paths.runtime_dir() / "kernels"
    paths.ensure_private_dir(folder)
    path = folder / f"{name}-{hashlib.sha256(kernel).hexdigest()[:16]}.elf"
    if not path.exists():
        temp = path.with_suffix(".partial")
        temp.write_bytes(kernel)
        os.chmod(temp, 0o644)  # a monitor that gave up root reads it on reboot
        os.replace(temp, path)
    return path


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause_reading(writer: asyncio.StreamWriter) -> None:
    """Stop asyncio reading the socket: its bytes are for the monitor the connection goes to."""
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()
