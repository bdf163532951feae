"""The fleet gateway: the only door of the server machine that participants can reach.

Flower 1.42 serves every SuperLink API on one HTTPS port: the Fleet API (``/v1/fleet/*``: what SuperNodes call) and
the Control API (``/v1/control/*``: register a SuperNode's key, start a run with any app), which the open-source
build leaves unauthenticated unless OIDC is on. Opened to the participants' machines as it is, anyone holding the CA
certificate could register a node of their own and start their own ClientApp on every node (run as the node's user,
with its key and data). So the SuperLink listens on 127.0.0.1 only (``superlink.control_port``: the operator's
``flwr`` CLI connects there, on the server machine or through an SSH tunnel), and this gateway listens on the public
address with the same TLS certificate and forwards to the SuperLink only requests whose path is a Fleet API path.
Every other request gets 403 and is logged; nothing of it reaches Flower.

Standard library only: a threading HTTP/1.1 server over TLS, one upstream HTTPS connection per client connection,
request and response bodies streamed (Content-Length or chunked) so large model messages never sit in memory twice.
"""
from __future__ import annotations

import http.client
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)

#: the path prefixes a SuperNode needs (flwr/supernode/fleet_http_client.py); everything else is refused
ALLOWED_PREFIXES = ("/v1/fleet/",)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}
CHUNK = 1 << 16


def allowed(path: str) -> bool:
    """Only Fleet API paths pass, spelled plainly: no dot segments, empty segments or percent-escapes (Fleet paths
    need none), which a server behind might decode or normalise into another route."""
    route = path.split("?", 1)[0]
    return route.startswith(ALLOWED_PREFIXES) and "%" not in route and "/../" not in route \
        and "/./" not in route and "//" not in route and not route.endswith(("/..", "/."))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FleetGateway"

    def log_message(self, fmt: str, *args) -> None:  # quiet: the refusals are logged on their own
        pass

    def _refuse(self) -> None:
        log.warning("gateway: refused %s %s from %s", self.command, self.path[:200], self.client_address[0])
        body = b'{"detail": "only the Fleet API is reachable here"}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            block = self.rfile.read(min(CHUNK, remaining))
            if not block:
                return
            remaining -= len(block)
            yield block

    def _forward(self) -> None:
        if not allowed(self.path):
            for _ in self._body():  # drain, so the connection stays usable
                pass
            self._refuse()
            return
        upstream = self.server.upstream()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = f"{self.server.target[0]}:{self.server.target[1]}"
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                upstream.putheader(k, v)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            for block in self._body():
                upstream.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            if chunked:
                upstream.send(b"0\r\n\r\n")
            response = upstream.getresponse()
        except (OSError, http.client.HTTPException) as err:
            self.server.drop_upstream()
            log.warning("gateway: SuperLink unreachable for %s: %s", self.path, err)
            self.send_error(502, "SuperLink unreachable")
            return
        self.send_response(response.status, response.reason)
        length = response.getheader("Content-Length")
        for k, v in response.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-length", "date", "server"):
                self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while block := response.read1(CHUNK):  # as it arrives: some Fleet responses are streams of frames
            self.wfile.write(block if length is not None else b"%x\r\n%s\r\n" % (len(block), block))
            self.wfile.flush()
        if length is None:
            self.wfile.write(b"0\r\n\r\n")
        response.close()  # read1 leaves a fully read response open, which would block the connection's next request
        if response.will_close:
            self.server.drop_upstream()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _forward


class FleetGateway(ThreadingHTTPServer):
    """``FleetGateway((bind, port), (upstream_host, upstream_port), cert, key, ca).serve_forever()``."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], cert: Path, key: Path, ca: Path):
        super().__init__(listen, _Handler)
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.minimum_version = ssl.TLSVersion.TLSv1_2
        server_tls.load_cert_chain(str(cert), str(key))
        # the handshake happens in the connection's own thread (first read), never in the accept loop
        self.socket = server_tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.target = target
        self._client_tls = ssl.create_default_context(cafile=str(ca))
        self._local = threading.local()

    def upstream(self) -> http.client.HTTPSConnection:
        """This thread's (= this client connection's) connection to the SuperLink, verified against our CA."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(*self.target, context=self._client_tls, timeout=600)
            self._local.conn = conn
        return conn

    def drop_upstream(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def main(argv: list[str] | None = None) -> int:
    """``python -m fedface.deploy.gateway BIND PORT UPSTREAM_HOST UPSTREAM_PORT CERT KEY CA`` (what ``fedface
    deploy`` starts next to the SuperLink)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 7:
        print(main.__doc__, file=sys.stderr)
        return 2
    bind, port, host, upstream_port, cert, key, ca = args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gateway = FleetGateway((bind, int(port)), (host, int(upstream_port)), Path(cert), Path(key), Path(ca))
    log.info("fleet gateway on %s:%s -> SuperLink %s:%s (only %s)", bind, port, host, upstream_port,
             ", ".join(ALLOWED_PREFIXES))
    gateway.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
