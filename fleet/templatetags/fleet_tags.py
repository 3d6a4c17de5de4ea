from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def age(seconds: float | None) -> str:
    """A short, human heartbeat age: "8s ago", "3m ago", "2h ago", "never"."""
    if seconds is None:
        return "never"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


@register.simple_tag
def agent_pulse(agent) -> str:
    """The heartbeat-driven part of an agent's card (see ``fleet.live.pulse``)."""
    from fleet.live import PULSE_FIELDS, pulse

    return pulse({name: getattr(agent, name, None) for name in (*PULSE_FIELDS, "budget_usd")})


LOG_SHOWN = 30_000  # characters of a log's end a page shows


@register.inclusion_tag("fleet/_log.html")
def check_log(text: str, head: int = 0) -> dict:
    """A check's or a merge's log, its end first in view with the noise folded (see
    ``fleet.logs``); ``head`` lines at the top (a reason above the log) always show."""
    from fleet.logs import fold

    text = text or ""
    if len(text) > LOG_SHOWN:  # live frames carry it to every viewer: keep the end
        top = text.splitlines()[:head]
        end = text[-LOG_SHOWN:].partition("\n")[2]
        text = "\n".join([*top, f"[… {len(text) - len(end):,} characters cut]", end])
        head += 1
    return {"parts": fold(text, head=head)}


@register.filter
def file_anchor(path: str) -> str:
    """The element id of a file in the task page's diff."""
    from fleet.workspace import file_id

    return file_id(path)
