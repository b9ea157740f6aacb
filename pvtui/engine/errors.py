"""The engine's refusals."""

from __future__ import annotations

from pvtui.errors import PvtuiError


class DomainError(PvtuiError):
    """A request the domain refuses; nothing was changed."""
