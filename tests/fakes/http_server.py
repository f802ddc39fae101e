"""A scripted HTTP server on loopback, base of the fake providers.

Each fake provider speaks its provider's real wire format. Tests queue ``Reply`` objects
(status, JSON body or a list of SSE events, delays); unscripted requests get the
fake's default reply. Every request received is kept for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    events: list[bytes] | None = None  # raw SSE frames, sent one by one
    delay: float = 0.0  # before the headers
    event_delay: float = 0.0  # between SSE frames
    headers: dict[str, str] = field(default_factory=dict)
    close_after_events: int | None = None  # drop the connection after N events


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                received = Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with outer._lock:
                    outer.received.append(received)
                    reply = outer.replies.popleft() if outer.replies else None
                if reply is None:
                    reply = outer.default_reply(received)
                outer.send(self, reply)

            do_GET = do_POST  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ScriptedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def default_reply(self, received: Received) -> Reply:
        return Reply(status=404, json={"error": {"message": "not scripted"}})

    def send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        if reply.events is None:
            payload = json.dumps(reply.json).encode()
            handler.send_response(reply.status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(payload)))
            for k, v in reply.headers.items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(payload)
            return
        handler.send_response(reply.status)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("transfer-encoding", "chunked")
        for k, v in reply.headers.items():
            handler.send_header(k, v)
        handler.end_headers()
        for index, frame in enumerate(reply.events):
            if reply.close_after_events is not None and index >= reply.close_after_events:
                handler.wfile.flush()
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            if reply.event_delay:
                time.sleep(reply.event_delay)
            handler.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()


def sse(data: Any, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


class CheckedServer(ScriptedServer):
    """A fake that checks every request the way its provider does.

    ``rejection`` is the provider's answer to a request it would refuse (None when it
    would take it). Scripted good replies get it too: a malformed request never gets a
    good answer, so a test cannot pass on a request the real provider would refuse.
    """

    def rejection(self, received: Received) -> Reply | None:
        return None

    def send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        received = self.received[-1] if self.received else None
        if reply.status == 200 and received is not None:
            reply = self.rejection(received) or reply
        super().send(handler, reply)
