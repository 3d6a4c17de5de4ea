"""HTML views for people, by area."""

from __future__ import annotations

from fleet.views.fleet import activity, healthz, navigation, overview

__all__ = ["activity", "healthz", "navigation", "overview"]
