"""Stand-in for a STAC API with its assets on an HTTP server with Range support (127.0.0.1).

It speaks the parts of the STAC API 1.0 a client uses to find Sentinel-2 items: the landing page
(``conformsTo``, ``search`` links), ``/conformance``, and ``/search`` by GET and POST with
``collections``, ``bbox``, ``intersects``, ``datetime``, ``query`` (``eo:cloud_cover`` lte/lt/gte/
gt) and ``limit``, paged by ``next`` links. Under ``/files/`` it serves a folder's files as a
cloud bucket does: HEAD, GET and ``Range: bytes=a-b`` (206, ``Content-Range``), which GDAL's
``/vsicurl/`` needs to read a COG window by window, with an ``ETag`` and ``Last-Modified``. It
counts the bytes it sends.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import shapely

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
]


@dataclass
class StacState:
    """The items served, the folder under ``/files/``, and what was asked."""

    items: list[dict[str, Any]] = field(default_factory=list)
    files: Path | None = None
    page_size: int = 2
    bytes_sent: int = 0
    #: Answer this many ranged GETs of files with 503 first, as a throttling bucket does.
    unavailable: int = 0
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _matches(item: dict[str, Any], p: dict[str, Any]) -> bool:
    if p.get("collections") and item.get("collection") not in p["collections"]:
        return False
    area = None
    if p.get("bbox"):
        area = shapely.box(*[float(v) for v in p["bbox"]])
    elif p.get("intersects"):
        area = shapely.geometry.shape(p["intersects"])
    if area is not None and not shapely.geometry.shape(item["geometry"]).intersects(area):
        return False
    if p.get("datetime"):
        start, _, end = str(p["datetime"]).partition("/")
        when = item["properties"]["datetime"][:10]
        if (
            start not in ("", "..")
            and when < start[:10]
            or end not in ("", "..")
            and when > end[:10]
        ):
            return False
    ops = {"lte": float.__le__, "lt": float.__lt__, "gte": float.__ge__, "gt": float.__gt__}
    for prop, tests in (p.get("query") or {}).items():
        value = item["properties"].get(prop)
        for op, bound in tests.items():
            if value is None or not ops[op](float(value), float(bound)):
                return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: StacServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    @property
    def state(self) -> StacState:
        return self.server.state

    def _json(self, doc: Any, status: int = 200, kind: str = "application/json") -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self._file(head=True)

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        with self.state.lock:
            self.state.requests.append(f"GET {self.path}")
        if url.path.startswith("/files/"):
            return self._file(head=False)
        base = self.server.base
        if url.path in ("", "/"):
            return self._json(
                {
                    "type": "Catalog",
                    "id": "stand-in",
                    "stac_version": "1.0.0",
                    "description": "STAC API stand-in",
                    "conformsTo": CONFORMS,
                    "links": [
                        {"rel": "self", "href": f"{base}/", "type": "application/json"},
                        {"rel": "root", "href": f"{base}/", "type": "application/json"},
                        {"rel": "conformance", "href": f"{base}/conformance"},
                        {
                            "rel": "search",
                            "href": f"{base}/search",
                            "method": "GET",
                            "type": "application/geo+json",
                        },
                        {
                            "rel": "search",
                            "href": f"{base}/search",
                            "method": "POST",
                            "type": "application/geo+json",
                        },
                    ],
                }
            )
        if url.path == "/conformance":
            return self._json({"conformsTo": CONFORMS})
        if url.path == "/search":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            params: dict[str, Any] = dict(q)
            for key in ("collections", "bbox"):
                if key in q:
                    params[key] = q[key].split(",")
            for key in ("intersects", "query"):
                if key in q:
                    params[key] = json.loads(q[key])
            return self._search(params, "GET")
        self._json({"code": "NotFound"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        with self.state.lock:
            self.state.requests.append(f"POST {self.path}")
        if urlparse(self.path).path != "/search":
            return self._json({"code": "NotFound"}, 404)
        n = int(self.headers.get("Content-Length", 0))
        self._search(json.loads(self.rfile.read(n) or b"{}"), "POST")

    def _search(self, params: dict[str, Any], method: str) -> None:
        hits = [i for i in self.state.items if _matches(i, params)]
        limit = min(int(params.get("limit", self.state.page_size)), self.state.page_size)
        start = int(params.get("token", 0))
        page = hits[start : start + limit]
        links = []
        if start + limit < len(hits):
            nxt = {**params, "token": str(start + limit)}
            if method == "POST":
                links.append(
                    {
                        "rel": "next",
                        "href": f"{self.server.base}/search",
                        "method": "POST",
                        "body": nxt,
                    }
                )
            else:
                query = "&".join(
                    f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in nxt.items()
                    if not isinstance(v, dict)
                )
                links.append({"rel": "next", "href": f"{self.server.base}/search?{query}"})
        self._json(
            {"type": "FeatureCollection", "features": page, "links": links},
            kind="application/geo+json",
        )

    def _file(self, head: bool) -> None:
        root = self.state.files
        rel = urlparse(self.path).path.removeprefix("/files/")
        path = (root / rel).resolve() if root is not None else None
        if (
            path is None
            or root is None
            or not path.is_relative_to(root.resolve())
            or not path.is_file()
        ):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not head and "Range" in self.headers:
            with self.state.lock:
                busy, self.state.unavailable = (
                    self.state.unavailable > 0,
                    self.state.unavailable - 1,
                )
            if busy:
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        st = path.stat()
        size = st.st_size
        first, last = 0, size - 1
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            first = int(m[1])
            last = min(int(m[2]) if m[2] else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{st.st_mtime_ns:x}-{size:x}"')  # as nginx makes them
        self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        if head:
            return
        with open(path, "rb") as fh:
            fh.seek(first)
            data = fh.read(last - first + 1)
        with self.state.lock:
            self.state.bytes_sent += len(data)
        self.wfile.write(data)


class StacServer(ThreadingHTTPServer):
    """The stand-in on 127.0.0.1 (a free port), in a thread: ``with StacServer(state) as s:``."""

    daemon_threads = True

    def __init__(self, state: StacState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> StacServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
