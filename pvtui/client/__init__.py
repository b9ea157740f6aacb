"""The one client of pvd, used by the CLI and the TUI."""

from pvtui.client.client import Client, EngineError, default_domains_dir
from pvtui.client.models import DomainSummary, HostInfo, HypercallInfo, MemoryInfo, VcpuInfo

__all__ = [
    "Client",
    "DomainSummary",
    "EngineError",
    "HostInfo",
    "HypercallInfo",
    "MemoryInfo",
    "VcpuInfo",
    "default_domains_dir",
]
