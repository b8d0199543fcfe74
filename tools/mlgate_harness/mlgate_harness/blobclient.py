"""A minimal Azure Blob client (Shared Key) for tests: the client side of BES, which uploads
its input CSV before submitting a job."""
import base64
import hashlib
import hmac
import http.client
import urllib.parse
from email.utils import formatdate

DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
VERSION = "2019-12-12"


def connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};")


def _request(port: int, method: str, path: str, query: dict, body: bytes = b"", extra: dict | None = None):
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": VERSION, **(extra or {})}
    ctype = headers.get("content-type", "")
    canon_headers = "".join(f"{k}:{v}\n" for k, v in sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-ms-")))
    full_path = f"/{DEV_ACCOUNT}{path}"
    canon_res = f"/{DEV_ACCOUNT}{full_path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    length = str(len(body)) if body else ""
    sts = f"{method}\n\n\n{length}\n\n{ctype}\n\n\n\n\n\n\n{canon_headers}{canon_res}"
    sig = base64.b64encode(hmac.new(base64.b64decode(DEV_KEY), sts.encode(), hashlib.sha256).digest()).decode()
    headers["Authorization"] = f"SharedKey {DEV_ACCOUNT}:{sig}"
    headers["Content-Length"] = str(len(body))
    qs = ("?" + urllib.parse.urlencode(query)) if query else ""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, full_path + qs, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def put_blob(port: int, container: str, blob: str, data: bytes) -> None:
    status, body = _request(port, "PUT", f"/{container}", {"restype": "container"})
    assert status in (201, 409), (status, body)
    status, body = _request(port, "PUT", f"/{container}/{blob}", {}, data,
                            {"x-ms-blob-type": "BlockBlob", "content-type": "text/csv"})
    assert status == 201, (status, body)


def get_url(url: str) -> tuple[int, bytes]:
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", u.path + ("?" + u.query if u.query else ""))
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data
