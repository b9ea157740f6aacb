"""Xen's event channels (2-level ABI) and grant tables for a PV guest on a single-host engine."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pvtui.engine.xen import abi as x
from pvtui.engine.xen import machine as m
from pvtui.engine.xen.calls import GuestCalls
from pvtui.engine.xen.calls import neg as _neg

if TYPE_CHECKING:
    from pvtui.engine.vcpu import VcpuRunner


class EventCalls(GuestCalls):
    """event_channel_op: ports bound to this domain itself (there is no other domain to talk to)."""

    def event_channel_op(self, runner: VcpuRunner, cmd: int, arg: int, _a3: int, _a4: int, _a5: int) -> int:
        guest = self.guest
        if cmd == x.EVTCHNOP_init_control:
            raw = self._read(runner, arg, 16)
            if raw is None:
                return _neg(x.EFAULT)
            gfn, offset, vcpu = struct.unpack("<QII", raw)
            if offset & 7 or offset > 4096 - 8 or vcpu >= self.domain.max_vcpus or not 0 <= gfn < guest.nr_pages:
                return _neg(x.EINVAL)
            return _neg(x.EOPNOTSUPP)  # FIFO event channels: only the 2-level ABI is offered
        if cmd == x.EVTCHNOP_expand_array:
            return _neg(x.EOPNOTSUPP)
        # Where each op's IN fields end and its OUT port sits (public/event_channel.h).
        port_at = {x.EVTCHNOP_alloc_unbound: 4, x.EVTCHNOP_bind_ipi: 4, x.EVTCHNOP_bind_virq: 8}
        if cmd in port_at:
            raw = self._read(runner, arg, port_at[cmd])
            if raw is None:
                return _neg(x.EFAULT)
            if cmd == x.EVTCHNOP_alloc_unbound:
                dom, remote = struct.unpack("<HH", raw)
                if dom not in (x.DOMID_SELF, self.domain.domid):
                    return _neg(x.EPERM)
                if remote not in (x.DOMID_SELF, self.domain.domid):
                    return _neg(x.ESRCH)  # no other domain to talk to on this engine
                binding: tuple[str, int] = ("unbound", self.domain.domid)
            elif cmd == x.EVTCHNOP_bind_ipi:
                (vcpu,) = struct.unpack("<I", raw)
                if vcpu >= self.domain.max_vcpus:
                    return _neg(x.ENOENT)
                binding = ("ipi", vcpu)
            else:
                virq, vcpu = struct.unpack("<II", raw)
                if vcpu >= self.domain.max_vcpus or virq >= 24:
                    return _neg(x.EINVAL if virq >= 24 else x.ENOENT)
                if any(kind == f"virq{virq}" for kind, _ in guest.ports.values()):
                    return _neg(x.EEXIST)
                binding = (f"virq{virq}", vcpu)
            port = next((p for p in range(1, x.EVTCHN_2L_NR_CHANNELS) if p not in guest.ports), None)
            if port is None:
                return _neg(x.ENOSPC)
            if not self._write(runner, arg + port_at[cmd], struct.pack("<I", port)):
                return _neg(x.EFAULT)
            guest.ports[port] = binding
            return 0
        if cmd == x.EVTCHNOP_status:
            raw = self._read(runner, arg, 8)
            if raw is None:
                return _neg(x.EFAULT)
            dom, port = struct.unpack("<HxxI", raw)
            if dom not in (x.DOMID_SELF, self.domain.domid):
                return _neg(x.ESRCH)
            if port >= x.EVTCHN_2L_NR_CHANNELS:
                return _neg(x.EINVAL)
            kind, target = guest.ports.get(port, ("closed", 0))
            if kind == "unbound":
                status, vcpu, detail = 1, 0, target
            elif kind == "ipi":
                status, vcpu, detail = 5, target, 0
            elif kind.startswith("virq"):
                status, vcpu, detail = 4, target, int(kind[4:])
            else:
                status, vcpu, detail = 0, 0, 0
            ok = self._write(runner, arg + 8, struct.pack("<IIQ", status, vcpu, detail))
            return 0 if ok else _neg(x.EFAULT)
        if cmd in (x.EVTCHNOP_send, x.EVTCHNOP_close, x.EVTCHNOP_unmask):
            raw = self._read(runner, arg, 4)
            if raw is None:
                return _neg(x.EFAULT)
            port = struct.unpack("<I", raw)[0]
            if port not in guest.ports:
                return _neg(x.EINVAL)
            if cmd == x.EVTCHNOP_close:
                del guest.ports[port]
            elif cmd == x.EVTCHNOP_send:
                vcpu = guest.raise_port(port)
                if vcpu is not None and vcpu != runner.id:
                    self.domain.vcpus.wake(vcpu)
            return 0
        return _neg(x.ENOSYS)


class GrantCalls(GuestCalls):
    """grant_table_op: the domain's own table (setup, size, version)."""

    def grant_table_op(self, runner: VcpuRunner, cmd: int, arg: int, count: int, _a4: int, _a5: int) -> int:
        """The domain's own grant table (setup, size, version). Granting to another domain
        has no one to grant to on a single-host engine, so map/unmap/copy are ENOSYS."""
        guest = self.guest
        if cmd == x.GNTTABOP_setup_table:
            raw = self._read(runner, arg, 24)
            if raw is None:
                return _neg(x.EFAULT)
            dom, nr_frames, _status, frame_list = struct.unpack("<HxxIhxxxxxxQ", raw)
            status = 0
            if dom not in (x.DOMID_SELF, 0):
                status = -2  # GNTST_bad_domain
            elif nr_frames > m.GRANT_FRAMES:
                status = -1  # GNTST_general_error
            else:
                guest.grant_frames = max(guest.grant_frames, nr_frames)
                first = (m.PRIVATE_GPA >> 12) + m.P_GRANT
                frames = struct.pack(f"<{nr_frames}Q", *range(first, first + nr_frames))
                if nr_frames and not self._write(runner, frame_list, frames):
                    return _neg(x.EFAULT)
            return 0 if self._write(runner, arg + 8, struct.pack("<h", status)) else _neg(x.EFAULT)
        if cmd == x.GNTTABOP_query_size:
            # domid u16, nr_frames u32, max_nr_frames u32, status i16
            blob = struct.pack("<HxxIIh", x.DOMID_SELF, guest.grant_frames, m.GRANT_FRAMES, 0)
            return 0 if self._write(runner, arg, blob) else _neg(x.EFAULT)
        if cmd == x.GNTTABOP_get_version:
            return 0 if self._write(runner, arg + 4, struct.pack("<I", guest.grant_version)) else _neg(x.EFAULT)
        if cmd == x.GNTTABOP_set_version:
            raw = self._read(runner, arg, 4)
            if raw is None:
                return _neg(x.EFAULT)
            version = struct.unpack("<I", raw)[0]
            if version not in (0, 1, 2):
                return _neg(x.EINVAL)
            if version:
                guest.grant_version = version
            return 0 if self._write(runner, arg, struct.pack("<I", guest.grant_version)) else _neg(x.EFAULT)
        return _neg(x.ENOSYS)
