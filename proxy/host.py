"""How features plug into the gateway: the `Host` they are given and the `Feature` they are.

A feature (canary control, the compat runtime, publishing, alert intake, the parity mirror)
adds the gateway's own endpoints, admin routes, request observers and background work. It sees
the gateway only through `Host`: the config in force, the clock, metrics, the store, the data
plane's state, and typed registrations for what the request path calls back (the compat hook,
the mirror, the parity source). Features never set attributes on the gateway nor look for each
other; the composition root (`cutover.app`) lists them, in start order, by real imports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from cutover.compat.rules import Hit, RuleSet
    from cutover.core.clock import Clock
    from cutover.core.db import Database
    from cutover.core.tasks import TaskSupervisor
    from cutover.proxy.attempts import ProxyOutcome
    from cutover.proxy.config import CutoverConfig
    from cutover.proxy.forwarder import MirrorHook
    from cutover.proxy.metrics import Metrics
    from cutover.proxy.server import RuntimeState
    from cutover.routing.canary import ParityReading
    from cutover.routing.decision import Decision
    from cutover.routing.health import HealthTable


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished proxied request, as request observers (canary analysis, usage) see it."""

    route: str
    primary: str | None  # the split's choice among the available backends
    backend: str | None  # who answered in the end (None: nobody)
    status: int
    duration: float  # seconds
    failures: tuple[tuple[str, str], ...]  # (backend, kind) of attempts that failed first
    method: str
    path: str
    owner: str | None = None  # the split's choice whatever the health (`Decision.owner`)


class CompatHook(Protocol):
    """What the request path asks of the compat runtime while rules are configured."""

    ruleset: RuleSet

    def match(self, request: web.BaseRequest) -> Hit | None: ...

    def role_of(self, backend: str) -> str | None: ...

    async def answer(self, request: web.BaseRequest, hit: Hit, request_id: str) -> web.Response: ...

    async def forward(
        self,
        request: web.BaseRequest,
        hit: Hit,
        decision: Decision,
        request_id: str,
        outcome: ProxyOutcome,
    ) -> web.StreamResponse: ...


class ParitySource(Protocol):
    """Mirrored comparisons, for the canary's parity gate."""

    def parity_reading(self, route: str) -> ParityReading: ...


class Host(Protocol):
    """The gateway as a feature sees it. Read `config` each time: a reload swaps it."""

    @property
    def config(self) -> CutoverConfig: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def state(self) -> RuntimeState: ...

    @property
    def health(self) -> HealthTable: ...

    @property
    def served(self) -> Counter[str]: ...

    @property
    def compat(self) -> CompatHook | None: ...

    @property
    def parity(self) -> ParitySource | None: ...

    @property
    def draining(self) -> bool:
        """True once the gateway began to close: long-lived answers (the dashboard's event
        stream) end rather than hold the shutdown."""
        ...

    @property
    def tasks(self) -> TaskSupervisor:
        """Every background task runs under it (`core.tasks`)."""
        ...

    def database(self) -> Awaitable[Database]:
        """The one durable store, opened on first use (raises StoreUnavailable)."""
        ...

    def store_location(self) -> tuple[str | None, str]:
        """`open_database`'s arguments for that store (URL, base directory), for a helper
        process that opens its own connection (the mirror process)."""
        ...

    def add_observer(self, observe: Callable[[RequestRecord], None]) -> None:
        """Call `observe` after every proxied request (synchronous, cheap, no I/O)."""
        ...

    def require_admin(self, request: web.BaseRequest) -> None:
        """For a feature's mutating endpoint on the main listener: returns when allowed, else
        raises the answer (`core.errors.Unauthorized`/`Forbidden`, see
        `proxy.admin.require_admin_token`)."""
        ...

    def set_compat(self, hook: CompatHook | None) -> None: ...

    def set_mirror(self, hook: MirrorHook | None) -> None: ...

    def set_parity(self, source: ParitySource | None) -> None: ...

    def set_split(
        self, route: str, split: tuple[tuple[str, int], ...], first: str | None = None
    ) -> None: ...

    def record_response(self, backend: str, ok: bool) -> None: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def panels(self) -> Awaitable[dict[str, Any]]:
        """Every running feature's part of the dashboard (`Feature.dashboard`), by feature
        name; each one bounded in time and isolated (a failure shows as an `error`)."""
        ...


class Feature:
    """Base class: every hook is optional."""

    name = "feature"

    def __init__(self, gw: Host) -> None:
        self.gw = gw

    @classmethod
    def wanted(cls, config: CutoverConfig) -> bool:
        """Does `config` turn this feature on? (Features start and stop with the gateway: a
        reload that changes the answer takes effect at the next restart.)"""
        return True

    @classmethod
    def create(cls, gw: Host) -> Feature | None:
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

    def in_flight(self) -> dict[str, int]:
        """Work this feature holds in memory now, by name (a delivery being sent, a mirror job
        queued, an audit event waiting): zero once the gateway has closed — what was not done
        by then is counted and logged as given up (or left to the store, which keeps it)."""
        return {}

    async def dashboard(self) -> dict[str, Any] | None:
        """The feature's part of the dashboard's live snapshot (JSON-able; None: nothing to
        show). Built from what its admin endpoints answer, once a second while a page is
        open: read memory, or the store with a bound on the time (the caller also bounds it)."""
        return None
