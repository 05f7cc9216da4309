"""The composition root: which features the gateway runs, in which order, by real imports.

Each feature decides from the config whether it is on (`Feature.wanted`); they start in this
order and stop in reverse. The gateway (`cutover.proxy.server.Gateway`) knows them only as
`Feature`s, and they know it only as a `Host` (`cutover.proxy.host`).
"""

from __future__ import annotations

from typing import Any

from cutover.alerts.intake import AlertsFeature
from cutover.canary.feature import CanaryFeature
from cutover.compat.feature import CompatFeature
from cutover.core.clock import Clock
from cutover.parity.shadow import ParityFeature
from cutover.proxy.config import CutoverConfig
from cutover.proxy.dashboard import DashboardFeature
from cutover.proxy.host import Feature
from cutover.proxy.server import Gateway
from cutover.publishing.api import PublishingFeature

FEATURES: tuple[type[Feature], ...] = (
    CanaryFeature,
    CompatFeature,
    PublishingFeature,
    AlertsFeature,
    ParityFeature,
    DashboardFeature,  # last: its panels read the others (through the host, never directly)
)


def gateway(config: CutoverConfig, clock: Clock | None = None) -> Gateway:
    """A gateway with every feature, not started."""
    return Gateway(config, clock, FEATURES)


async def start_gateway(
    config: CutoverConfig, clock: Clock | None = None, sock: Any = None, admin_sock: Any = None
) -> Gateway:
    """Start a gateway with every feature for `config` in this event loop; return it serving."""
    gw = gateway(config, clock)
    await gw.start(sock, admin_sock)
    return gw
