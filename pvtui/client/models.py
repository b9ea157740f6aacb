"""The reply shapes the client returns: declared once in :mod:`pvtui.domain.model`."""

from pvtui.domain.model import (
    Destroyed,
    DomainInfo,
    DomainStats,
    DomainSummary,
    EngineHello,
    EngineStopping,
    HostInfo,
    HypercallInfo,
    MemoryInfo,
    SchedCredit,
    ShutdownRequest,
    VcpuInfo,
)

__all__ = [
    "Destroyed",
    "DomainInfo",
    "DomainStats",
    "DomainSummary",
    "EngineHello",
    "EngineStopping",
    "HostInfo",
    "HypercallInfo",
    "MemoryInfo",
    "SchedCredit",
    "ShutdownRequest",
    "VcpuInfo",
]
