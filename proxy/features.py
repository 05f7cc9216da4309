"""Features: parts of the gateway that come with their own config section.

A feature adds the gateway's own endpoints (e.g. `POST /webhook/proxy`), admin API routes,
request observers and background tasks. The list below is the one place that says which
features exist and in which order they start; each decides from the config whether it is on.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from cutover.proxy.config import CutoverConfig
    from cutover.proxy.server import Gateway

# "package.module:Class", in start order (stopped in reverse).
FEATURES: tuple[str, ...] = (
    "cutover.canary.feature:CanaryFeature",
    "cutover.compat.feature:CompatFeature",
    "cutover.publishing.api:PublishingFeature",
    "cutover.alerts.intake:AlertsFeature",
    "cutover.parity.shadow:ParityFeature",
)


class Feature:
    """Base class: every hook is optional."""

    name = "feature"

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    @classmethod
    def wanted(cls, config: CutoverConfig) -> bool:
        """Does `config` turn this feature on? (Features start and stop with the gateway: a
        reload that changes the answer takes effect at the next restart.)"""
        return True

    @classmethod
    def create(cls, gw: Gateway) -> Feature | None:
        """The feature for this gateway, or None when its config does not want it."""
        return cls(gw) if cls.wanted(gw.config) else None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Endpoints the gateway answers itself, on the main listener."""

    def add_admin_routes(self, router: web.UrlDispatcher) -> None:
        """Routes of the admin API (its own listener, behind the admin token)."""

    async def prepare(self) -> None:
        """Called before the main listener accepts: load state the first request must see."""

    async def start(self) -> None:
        """Called once the main listener is up."""

    async def stop(self) -> None:
        """Called while the gateway closes, after the listeners stopped."""

    async def reload(self, config: CutoverConfig) -> None:
        """Called after the gateway swapped in a new config."""

    async def before_scrape(self) -> None:
        """Called before /metrics answers: refresh gauges read from elsewhere (the store).
        Must bound its own time and never raise: a scrape must not fail or hang."""

    def readiness(self) -> dict[str, object] | None:
        """Detail shown under the feature's name in /readyz (it does not change readiness)."""
        return None


def feature_classes(specs: tuple[str, ...] | None = None) -> list[type[Feature]]:
    classes: list[type[Feature]] = []
    for spec in FEATURES if specs is None else specs:
        module, _, name = spec.partition(":")
        classes.append(getattr(importlib.import_module(module), name))
    return classes


def load_features(gw: Gateway, specs: tuple[str, ...] | None = None) -> list[Feature]:
    features: list[Feature] = []
    for cls in feature_classes(specs):
        feature = cls.create(gw)
        if feature is not None:
            features.append(feature)
    return features
