"""Docker's human units for output (go-units), pure."""

from __future__ import annotations


def human_duration(ns: int) -> str:
    """go-units HumanDuration, as `docker ps` prints it: "Less than a second", "3 minutes", "About an hour"."""
    seconds = ns / 1e9
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{int(seconds)} seconds" if int(seconds) != 1 else "1 second"
    minutes = seconds / 60
    if minutes < 60:
        return "About a minute" if int(minutes) == 1 else f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 48:
        return "About an hour" if int(hours) == 1 else f"{int(hours)} hours"
    return f"{int(hours / 24)} days"
