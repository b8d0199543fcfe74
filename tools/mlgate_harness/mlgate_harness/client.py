"""HTTP/1.1 requests to a process on loopback (a gateway, Envoy's admin, a registry): one
connection per request, the headers exactly as given (no Accept-Encoding added, Host as
chosen), plain or TLS."""
from __future__ import annotations

import http.client
import ssl


def http_request(port: int, method: str, path: str, headers: dict | list | None = None, body: bytes | None = None,
                 *, host: str | None = None, tls: ssl.SSLContext | None = None,
                 timeout: float = 30.0) -> tuple[int, list[tuple[str, str]], bytes]:
    """Sends one request to 127.0.0.1:port; returns the status, the response headers as
    (lower-case name, value) pairs in order, and the body. `headers`: a dict or (name, value)
    pairs; `host`: the Host header (default 127.0.0.1:port); `tls`: HTTPS with that context
    (the certificate must name 127.0.0.1)."""
    if tls is not None:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host or f"127.0.0.1:{port}")
        for k, v in (headers.items() if isinstance(headers, dict) else headers or []):
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        data = r.read()
        return r.status, [(k.lower(), v) for k, v in r.getheaders()], data
    finally:
        c.close()


def http_get(port: int, path: str, headers: dict | list | None = None, *, timeout: float = 5.0
             ) -> tuple[int, list[tuple[str, str]], bytes]:
    """GET 127.0.0.1:port`path` (see http_request)."""
    return http_request(port, "GET", path, headers, timeout=timeout)
