"""A thin, typed layer over the Linux KVM API (``/dev/kvm`` ioctls).

No maintained Python binding for KVM exists, so this package holds the ioctl
numbers (with their derivation), the ``ctypes`` mirrors of the kernel structs
we use, and small fd-owning wrappers. It knows nothing about domains or
hypercalls; :mod:`pvtui.engine` builds those on top.
"""

from pvtui.engine.kvm.system import Kvm, KvmUnavailable, Vcpu, Vm

__all__ = ["Kvm", "KvmUnavailable", "Vcpu", "Vm"]
