"""S3 endpoints on loopback for tests and benchmarks: moto, and a proxy in front of it
that fails on purpose.

``moto_server`` starts moto with some buckets. In ``FaultyS3``, each distinct request
(method and path with query) first gets ``transient`` failures, alternately a 503
SlowDown (S3's throttling answer) and a connection closed without an answer, then
goes through to moto. ``deny_writes`` answers every PUT, POST and
DELETE with 403 AccessDenied, as S3 does for credentials without write permission.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message></Error>")


@contextlib.contextmanager
def moto_server(*buckets: str) -> Iterator[str]:
    """A moto S3 server on a free loopback port with ``buckets`` created; yields its URL.

    moto's servers in one process share their buckets, so callers that start several
    should give each its own bucket names. Clients need ``CREDENTIALS`` (any values do).
    """
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=url, region_name=CREDENTIALS["AWS_REGION"],
                              aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield url
    finally:
        server.stop()


class FaultyS3:
    """``with FaultyS3(moto_url, transient=2) as proxy: ...`` and point AWS_ENDPOINT_URL at ``proxy.url``."""

    def __init__(self, upstream: str, transient: int = 0, deny_writes: bool = False):
        self.upstream = urlsplit(upstream)
        self.transient, self.deny_writes = transient, deny_writes
        self.seen: Counter = Counter()
        self.injected = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self._body()
                with proxy.lock:
                    proxy.seen[(self.command, self.path)] += 1
                    attempt = proxy.seen[(self.command, self.path)]
                if proxy.deny_writes and self.command in ("PUT", "POST", "DELETE"):
                    proxy.injected["denied"] += 1
                    return self._answer(403, ACCESS_DENIED)
                if attempt <= proxy.transient:
                    if attempt % 2:
                        proxy.injected["slow_down"] += 1
                        return self._answer(503, SLOW_DOWN)
                    proxy.injected["reset"] += 1
                    self.close_connection = True
                    self.connection.close()
                    return
                up = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "transfer-encoding", "content-length")}
                headers["Host"], headers["Content-Length"] = proxy.upstream.netloc, str(len(body))
                up.request(self.command, self.path, body=body, headers=headers)
                answer = up.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                head = self.command == "HEAD"  # the object's size, not the (empty) answer's
                self.send_header("Content-Length", answer.getheader("Content-Length", "0") if head else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                up.close()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return body

            def _answer(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FaultyS3":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
