"""One fake model hub for every download test: a real HTTP server on 127.0.0.1 with injectable faults.

It serves ``files`` (URL path -> body) with HTTP ranges (206, and 416 past the end), HEAD, and
optionally a Hugging Face tree listing (``listings``: URL path -> the repo prefix whose files it
lists). Faults: ``fail_status`` (statuses to answer first, per path), ``drop_once`` (cut the body
half-way, once), ``drop_after`` (cut after N bytes, once), ``gates`` (send one block, then wait
for the event), ``ignore_range`` (answer 200 with the whole body). Every request is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GATE_BLOCK_BYTES = 1 << 20  # what a gated response sends before it waits
GATE_TIMEOUT_S = 20.0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FakeHub:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    listings: dict[str, str] = field(default_factory=dict)  # URL path -> repo prefix it lists (HF tree API)
    oids: dict[str, str] = field(default_factory=dict)  # repo path -> sha256 the listing announces
    fail_status: dict[str, list[int]] = field(default_factory=dict)  # URL path -> statuses to answer first
    drop_once: set[str] = field(default_factory=set)  # URL paths cut after half the body, once
    drop_after: dict[str, int] = field(default_factory=dict)  # URL path -> bytes sent before a drop, once
    gates: dict[str, threading.Event] = field(default_factory=dict)  # URL path -> pause after one block
    ignore_range: bool = False
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    base: str = ""  # http://127.0.0.1:PORT once serving

    def listing(self, prefix: str) -> list[dict[str, object]]:
        """A Hugging Face ``/api/models/<repo>/tree/main`` answer for the files under ``prefix``."""
        entries: list[dict[str, object]] = [{"type": "directory", "path": "images"}]
        for url_path, body in self.files.items():
            if url_path.startswith(prefix):
                path = url_path[len(prefix) :]
                entry: dict[str, object] = {"type": "file", "path": path, "size": len(body)}
                if path.endswith(".safetensors"):
                    entry["lfs"] = {"oid": self.oids.get(path, sha256_hex(body)), "size": len(body)}
                entries.append(entry)
        entries.append({"type": "file", "path": "trainer_state.json", "size": 10})  # not wanted
        return entries


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
            self._serve(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(head=False)

        def _send_body(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self, head: bool) -> None:
            path = self.path.split("?")[0]
            hub.requests.append((self.command, path, self.headers.get("Range")))
            if hub.fail_status.get(path):
                self.send_error(hub.fail_status[path].pop(0))
                return
            if path in hub.listings:
                self._send_body(json.dumps(hub.listing(hub.listings[path])).encode())
                return
            if path not in hub.files:
                self.send_error(404)
                return
            body = hub.files[path]
            start = 0
            range_header = self.headers.get("Range")
            if range_header and range_header.startswith("bytes=") and not hub.ignore_range:
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            if head:
                return
            cut = hub.drop_after.pop(path, None)
            if cut is None and path in hub.drop_once:
                hub.drop_once.discard(path)
                cut = len(rest) // 2
            if cut is not None:
                self.wfile.write(rest[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            gate = hub.gates.pop(path, None)
            if gate is not None:
                self.wfile.write(rest[:GATE_BLOCK_BYTES])
                self.wfile.flush()
                gate.wait(GATE_TIMEOUT_S)
                rest = rest[GATE_BLOCK_BYTES:]
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client cancelled
                self.wfile.write(rest)

    return Handler


@contextlib.contextmanager
def serving(hub: FakeHub) -> Iterator[FakeHub]:
    """Serve ``hub`` on a free port of 127.0.0.1 (``hub.base``) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        for gate in hub.gates.values():
            gate.set()
        server.shutdown()
        server.server_close()
