"""The app's theme and the tone styles derived from it (pvtui/ui/tones.py).

``$PVTUI_THEME`` (or ``pvtui --theme NAME``) picks the theme at start; the
command palette's "Change theme" switches it live, and the tones follow.
``NO_COLOR`` is Textual's own: set, the whole UI is drawn without colour.
"""

from __future__ import annotations

import os

from rich.style import Style
from textual.app import App
from textual.theme import Theme

from pvtui.errors import PvtuiError
from pvtui.ui.tones import COLOUR_BLIND_THEME, tone_markup, tone_styles


class ThemedApp(App[None]):
    """An app whose tables and titles colour states and levels by its current theme."""

    def __init__(self, theme: str | None = None) -> None:
        super().__init__()
        self.register_theme(COLOUR_BLIND_THEME)
        chosen = theme or os.environ.get("PVTUI_THEME") or None
        if chosen is not None:
            if chosen not in self.available_themes:
                raise PvtuiError(
                    f"No theme named {chosen}",
                    f"Choose one of: {', '.join(sorted(self.available_themes))} (PVTUI_THEME or --theme).",
                )
            self.theme = chosen
        #: Each tone's style in the current theme: LiveTable and :meth:`tone` read it.
        self.tone_styles: dict[str, Style] = tone_styles(self.current_theme)

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._retone)

    def _retone(self, theme: Theme) -> None:
        self.tone_styles = tone_styles(theme)

    def tone(self, text: str, tone: str | None) -> str:
        """``text`` (escaped already) as markup in ``tone``'s style."""
        return tone_markup(self.tone_styles, text, tone)
