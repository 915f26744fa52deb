"""The REST handlers, one module per resource, and their routes under ``{base_url}burstlab/api/``."""

from __future__ import annotations

import re

from .base import NotFoundHandler
from .budgets import BudgetHandler, BudgetsHandler
from .files import FilesHandler
from .hosts import HostsHandler
from .maps import MapHandler, MapsHandler
from .sandboxes import (SandboxesHandler, SandboxExecHandler, SandboxExecuteHandler, SandboxHandler,
                        SandboxInterruptHandler, SandboxMetricsHandler, SandboxSnapshotHandler, SandboxWatchHandler,
                        SnapshotHandler, SnapshotsHandler)
from .sessions import SessionExecuteHandler, SessionHandler, SessionsHandler
from .spec import OpenApiHandler
from .templates import TemplateHandler, TemplatesHandler
from .usage import UsageHandler
from .workspace import WorkspaceHandler

_ID = r"(?P<id>[^/]+)"

ROUTES = [
    (r"workspace", WorkspaceHandler),
    (r"hosts", HostsHandler),
    (r"sessions", SessionsHandler),
    (rf"sessions/{_ID}", SessionHandler),
    (rf"sessions/{_ID}/execute", SessionExecuteHandler),
    (r"sandboxes", SandboxesHandler),
    (rf"sandboxes/{_ID}", SandboxHandler),
    (rf"sandboxes/{_ID}/execute", SandboxExecuteHandler),
    (rf"sandboxes/{_ID}/interrupt", SandboxInterruptHandler),
    (rf"sandboxes/{_ID}/exec", SandboxExecHandler),
    (rf"sandboxes/{_ID}/metrics", SandboxMetricsHandler),
    (rf"sandboxes/{_ID}/snapshot", SandboxSnapshotHandler),
    (r"snapshots", SnapshotsHandler),
    (r"templates", TemplatesHandler),
    (rf"templates/{_ID}", TemplateHandler),
    (rf"snapshots/{_ID}", SnapshotHandler),
    (rf"sandboxes/{_ID}/files/watch", SandboxWatchHandler),  # the file named "watch" without ?path=
    (rf"sandboxes/{_ID}/files(?:/(?P<path>.*))?", FilesHandler),
    (r"maps", MapsHandler),
    (rf"maps/{_ID}", MapHandler),
    (r"usage", UsageHandler),
    (r"budgets", BudgetsHandler),
    (r"budgets/(?P<scope>[^/]+)/(?P<name>[^/]+)", BudgetHandler),
    (r"openapi\.json", OpenApiHandler),
]
# Anything else under burstlab/api/ is a JSON 404 (not the server's HTML page).
FALLBACK = (r".*", NotFoundHandler)


def routes(base_url: str) -> list[tuple[str, type]]:
    """Tornado routes under ``base_url`` (taken literally: it may hold regex characters)."""
    prefix = re.escape(base_url.rstrip("/") + "/burstlab/api/")
    return [(prefix + pattern + "/?$", handler) for pattern, handler in (*ROUTES, FALLBACK)]


__all__ = ["ROUTES", "routes"]
