"""The request being served, for log lines and the request log (a context variable).

Set by ``monitoring.middleware.ObservabilityMiddleware`` for the whole time a request is
served, the body of a stream included. Context variables are per thread and, under
gunicorn's gevent worker, per greenlet, so concurrent requests never see each other's.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usage.events import UsageRecordData


@dataclass(slots=True)
class RequestContext:
    request_id: str
    record: UsageRecordData | None = None  # the usage record, once the completion is priced


current_request: ContextVar[RequestContext | None] = ContextVar("gateway_request", default=None)
