"""pvtui: a terminal UI and engine for paravirtual domains on KVM."""

__version__ = "0.1.0"
