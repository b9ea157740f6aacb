"""Colour that carries meaning: a tone per domain state, per load level, per log outcome.

A tone is a name, never a colour. Each theme's own colours are given to the
tones when the theme is chosen (:func:`tone_colours`): every state takes the
first of its preferred theme colours that no other state has taken, so the
six states stay apart in every theme (several built-in themes give two of
their roles one colour), and each state also has a text style of its own
(crashed bold, dying italic...) for a terminal or an eye that merges two
colours. The levels' thresholds are in :mod:`pvtui.levels` (docs/ui.md).
"""

from __future__ import annotations

from rich.style import Style
from textual.color import Color
from textual.theme import Theme

from pvtui.levels import HIGH_AT, MEM_HIGH_AT, MEM_WARN_AT, WARN_AT, cpu_tone, level_tone, mem_tone

STATES = ("running", "blocked", "paused", "suspended", "shutdown", "dying", "crashed")
#: Theme roles each state would like, best first; "muted" is the foreground at half strength.
STATE_PREFERENCES: dict[str, tuple[str, ...]] = {
    "crashed": ("error",),
    "running": ("success",),
    "paused": ("warning", "accent", "secondary"),
    "blocked": ("primary", "secondary", "accent"),
    "dying": ("accent", "secondary", "warning", "primary"),
    "suspended": ("secondary", "primary", "accent", "warning"),
    "shutdown": ("muted",),
}
STATE_STYLES = {"crashed": "bold", "dying": "italic", "suspended": "italic", "paused": "bold"}
#: Tones that are not states: a level, a failed hypercall, a bounced trap.
OTHER_TONES: dict[str, tuple[str, str]] = {
    "warn": ("warning", ""),
    "high": ("error", "bold"),
    "failed": ("error", ""),
    "bounced": ("accent", ""),
}
TONES = (*STATES, *OTHER_TONES)
__all__ = ["HIGH_AT", "MEM_HIGH_AT", "MEM_WARN_AT", "WARN_AT", "cpu_tone", "level_tone", "mem_tone"]


class Toned(str):
    """A table cell with a tone: it compares, pads and sorts as its text."""

    tone: str

    def __new__(cls, text: str, tone: str) -> Toned:
        cell = super().__new__(cls, text)
        cell.tone = tone
        return cell


def toned(text: str, tone: str | None) -> str:
    return Toned(text, tone) if tone else text


def state_tone(state: str) -> str | None:
    return state if state in STATE_PREFERENCES else None


def _role_colour(theme: Theme, role: str) -> Color:
    if role == "muted":
        foreground = Color.parse(theme.foreground or ("#e0e0e0" if theme.dark else "#202020"))
        background = Color.parse(theme.background or ("#121212" if theme.dark else "#efefef"))
        return background.blend(foreground, 0.55)
    value = getattr(theme, role, None) or theme.primary
    return Color.parse(value)


def _same(a: Color, b: Color) -> bool:
    if a.ansi is not None or b.ansi is not None:
        return a.ansi == b.ansi and a.rgb == b.rgb
    return sum((x - y) ** 2 for x, y in zip(a.rgb, b.rgb, strict=True)) < 40**2


def tone_colours(theme: Theme) -> dict[str, Color]:
    """Each tone's colour in ``theme``; the states' colours are distinct where the theme allows."""
    colours: dict[str, Color] = {}
    taken: list[Color] = []
    for state, roles in STATE_PREFERENCES.items():
        candidates = [_role_colour(theme, role) for role in roles]
        free = next((c for c in candidates if not any(_same(c, t) for t in taken)), None)
        if free is None:  # every preference taken: an unused role of the theme, else a shade of the first
            others = ("primary", "secondary", "accent", "warning", "success", "error")
            spare = [_role_colour(theme, role) for role in others]
            first = candidates[0]
            spare += [first.lighten(0.25), first.darken(0.25), first.lighten(0.45), first.darken(0.45)]
            free = next((c for c in spare if not any(_same(c, t) for t in taken)), first)
        colours[state] = free
        taken.append(free)
    for tone, (role, _style) in OTHER_TONES.items():
        colours[tone] = _role_colour(theme, role)
    return colours


def tone_styles(theme: Theme) -> dict[str, Style]:
    """Rich styles for the table: each tone's colour and text style."""
    styles = {}
    for tone, colour in tone_colours(theme).items():
        extra = STATE_STYLES.get(tone, "") or OTHER_TONES.get(tone, ("", ""))[1]
        styles[tone] = Style(color=colour.rich_color) + Style.parse(extra or "none")
    return styles


def tone_markup(styles: dict[str, Style], text: str, tone: str | None) -> str:
    """``text`` (already escaped) in markup with ``tone``'s style; plain without one."""
    style = styles.get(tone or "")
    return f"[{style}]{text}[/]" if style else text


#: Okabe and Ito's palette, chosen so the common colour-vision deficiencies still tell all of it apart.
COLOUR_BLIND_THEME = Theme(
    name="pvtui-colour-blind",
    primary="#0072B2",
    secondary="#56B4E9",
    accent="#CC79A7",
    warning="#E69F00",
    error="#D55E00",
    success="#009E73",
    foreground="#E8E8E8",
    background="#161616",
    surface="#202020",
    panel="#2C2C2C",
    dark=True,
)
