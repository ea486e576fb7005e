"""An HTTP proxy in front of a local cluster's API server that answers some writes itself with the
errors a busy or contended API server sends: 409 Conflict and 429 Too Many Requests with Retry-After.

The operator under test talks plain HTTP to the proxy (its kubeconfig, `write_kubeconfig`, names no
credentials); the proxy forwards every request to the real API server over TLS with the cluster's admin
client certificate, streaming the answers (watches stay open through it). While `inject()` is on, a
chosen fraction of the matching requests (PATCH and POST by default) is answered by the proxy instead of
forwarded, spread evenly (every second one at 0.5) so a test knows a retry meets a real answer.

    proxy = FaultProxy(upstream="https://127.0.0.1:6443", pki=cluster.state_dir / "pki")
    proxy.start(); proxy.write_kubeconfig(path)
    proxy.inject(fraction=0.5, statuses=(409, 429), retry_after=1)
    ... proxy.clear(); proxy.injected  # [(method, path, status), ...]
    proxy.stop()

aiohttp (already a dependency of kopf) serves and forwards; it runs on its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

# Hop-by-hop headers (RFC 9110 7.6.1), those aiohttp sets itself for the re-framed answer, and
# Accept-Encoding: the API server then answers uncompressed, so bodies pass through as they are.
NOT_FORWARDED = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
                 "host", "content-length", "content-encoding", "accept-encoding"}
REASONS = {409: ("Conflict", "the object has been modified; please apply your changes to the latest version "
                             "and try again (injected by faultproxy)"),
           429: ("TooManyRequests", "too many requests, please try again later (injected by faultproxy)")}


@dataclass
class Injection:
    fraction: float
    statuses: tuple[int, ...]
    retry_after: int
    methods: frozenset[str]
    path: re.Pattern
    seen: int = 0  # matching requests so far

    def answer(self, method: str, path: str) -> int | None:
        """The status to inject for this request, or None to forward it."""
        if method not in self.methods or not self.path.search(path):
            return None
        self.seen += 1
        # Evenly spread: inject when the running count of injections due grows by one.
        if int(self.seen * self.fraction) == int((self.seen - 1) * self.fraction):
            return None
        return self.statuses[int(self.seen * self.fraction) % len(self.statuses)]


@dataclass
class FaultProxy:
    upstream: str  # https://127.0.0.1:<port> of the real API server
    pki: Path  # the cluster's ca.crt, admin.crt, admin.key
    port: int = 0
    injected: list[tuple[str, str, int]] = field(default_factory=list)
    forwarded: int = 0
    _injection: Injection | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, fraction: float, statuses: tuple[int, ...] = (409, 429), retry_after: int = 1,
               methods: tuple[str, ...] = ("PATCH", "POST"), path: str = "") -> None:
        """Answer `fraction` of the requests whose method is in `methods` and whose path matches the regex
        `path` with the `statuses` in turn (429 carries `Retry-After: retry_after`), until clear()."""
        if not 0 < fraction <= 1 or not statuses or any(s not in REASONS for s in statuses):
            raise ValueError(f"fraction must be in (0, 1] and statuses among {sorted(REASONS)}")
        with self._lock:
            self._injection = Injection(fraction, tuple(statuses), retry_after, frozenset(methods), re.compile(path))

    def clear(self) -> None:
        with self._lock:
            self._injection = None

    def write_kubeconfig(self, path: Path) -> None:
        """A kubeconfig that points at the proxy (plain HTTP on loopback, no credentials of its own)."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "faultproxy",
            "clusters": [{"name": "faultproxy", "cluster": {"server": self.url}}],
            "users": [{"name": "faultproxy", "user": {}}],
            "contexts": [{"name": "faultproxy", "context": {"cluster": "faultproxy", "user": "faultproxy"}}]}))

    # --- serving -----------------------------------------------------------------------------------------

    def start(self) -> None:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(started,), name="faultproxy", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("faultproxy did not start within 30 s")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        started.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        tls = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        tls.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        # No total timeout: watches stay open for minutes.
        self._session = ClientSession(connector=TCPConnector(ssl=tls), timeout=ClientTimeout(total=None))
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{path:.*}", self._handle)
        # Open watches would hold a graceful shutdown for its default minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        await self._runner.cleanup()
        await self._session.close()
        # Relays of watches still open upstream: end them here rather than leave them to a stopped loop.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            status = self._injection.answer(request.method, request.path) if self._injection else None
            retry_after = self._injection.retry_after if self._injection else 0
            if status:
                self.injected.append((request.method, request.path, status))
            else:
                self.forwarded += 1
        if status:
            await request.read()
            reason, message = REASONS[status]
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                    "reason": reason, "code": status}
            if status == 429:
                body["details"] = {"retryAfterSeconds": retry_after}
            return web.json_response(body, status=status,
                                     headers={"Retry-After": str(retry_after)} if status == 429 else None)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        # No body, no data: aiohttp would label an empty one application/octet-stream (the API server: 415).
        body = await request.read() or None
        try:
            async with self._session.request(request.method, self.upstream + request.rel_url.raw_path_qs,
                                             headers=headers, data=body) as upstream:
                return await self._relay(request, upstream)
        except ClientError as e:  # the API server is down: say so, as a gateway does
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 502,
                                      "message": f"faultproxy: {self.upstream} unreachable: {e}"}, status=502)

    async def _relay(self, request: web.Request, upstream) -> web.StreamResponse:
        answer = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers={
            k: v for k, v in upstream.headers.items() if k.lower() not in NOT_FORWARDED})
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():  # a watch's events as they come
                await answer.write(chunk)
        except (ConnectionResetError, ClientError):
            pass  # the client went away, or the API server (restarting) closed the watch
        await answer.write_eof()
        return answer
