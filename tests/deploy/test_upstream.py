"""Upstream mode with real peers: the built tcpie binary in front of a real upstream started
as its own process (upstream_server.py: it echoes, streams in every framing, is slow, dies
mid-body, sends garbage, and counts the concurrency it sees), and real clients in front
(curl, httpx, h11, raw sockets). Loopback only; every process is stopped by the fixture
that started it."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h11
import httpx
import pytest

from conftest import Tcpie, free_port, http, loopback_env

SERVER = Path(__file__).parent / "upstream_server.py"
PATTERN = bytes(range(256)) * 256


def pattern(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


@pytest.fixture(scope="module")
def upstream():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=subprocess.PIPE, text=True)
    assert "listening" in proc.stdout.readline()
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def stats(port: int) -> dict:
    return json.loads(http(f"http://127.0.0.1:{port}/stats")[1])


@pytest.fixture
def proxy(upstream):
    started = []

    def start(**env: str) -> Tcpie:
        t = Tcpie(loopback_env(TCPIE_UPSTREAM=f"http://127.0.0.1:{upstream}", TCPIE_BURST="0", **env))
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def metric(tcpie: Tcpie, sample: str) -> float:
    for line in tcpie.metrics().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {sample}")


# --- bodies, both ways ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 10 * 1024 * 1024 - 1], ids=["0B", "1B", "64KiB", "10MiB"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_request_bodies_reach_the_upstream_whole_and_reframed(proxy, size, framing):
    tcpie = proxy(TCPIE_KEEP_ALIVE="true")
    body = pattern(size)
    if framing == "length":
        content = body
    else:
        def pieces():
            for i in range(0, max(size, 1), 65536):
                yield body[i:i + 65536]
        content = pieces()
    with httpx.Client(timeout=30) as client:
        r = client.post(f"http://{tcpie.tcp}/echo", content=content)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["length"] == size
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()
    # Re-framed from what TCPie parsed: a known length as Content-Length, chunked as chunked.
    expected = "chunked" if framing == "chunked" else ("length" if size else "none")
    assert seen["framing"] in (expected, "length" if size == 0 else expected), seen["framing"]


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 10 * 1024 * 1024])
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_response_bodies_reach_the_client_whole_in_correct_framing(proxy, size, framing):
    tcpie = proxy()
    url = f"http://{tcpie.tcp}/stream?size={size}&framing={framing}"
    out = subprocess.run(["curl", "-sS", "-D", "-", "-o", "-", "--raw", "--http1.1", url], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    head, _, raw = out.stdout.partition(b"\r\n\r\n")
    head = head.decode().lower()
    # curl without --raw decoding would hide chunking: decode here, strictly, with h11.
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "t")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(out.stdout)
    conn.receive_data(b"")
    data = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            data += event.data
        if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) or event is h11.NEED_DATA:
            break
    assert isinstance(event, h11.EndOfMessage), (event, head)
    assert hashlib.sha256(data).digest() == hashlib.sha256(pattern(size)).digest()
    if framing == "length":
        assert f"content-length: {size}" in head
    else:
        # Unknown length to an HTTP/1.1 client: chunked, never close-delimited.
        assert "transfer-encoding: chunked" in head, head
    assert head.count("date:") == 1


def test_head_204_and_304_have_no_body_and_5xx_passes_through(proxy):
    tcpie = proxy(TCPIE_KEEP_ALIVE="true")
    with socket.create_connection(tuple_addr(tcpie.tcp), timeout=10) as s:
        conn = h11.Connection(our_role=h11.CLIENT)
        for method, target, status in [
            ("HEAD", "/echo", 200),
            ("GET", "/status?code=204", 204),
            ("GET", "/status?code=304", 304),
            ("GET", "/status?code=503", 503),
            ("GET", "/status?code=500", 500),
        ]:
            s.sendall(conn.send(h11.Request(method=method, target=target, headers=[("Host", "t")])))
            s.sendall(conn.send(h11.EndOfMessage()))
            events = []
            while not events or not isinstance(events[-1], h11.EndOfMessage):
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(s.recv(65536))
                    continue
                events.append(event)
            response = events[0]
            assert response.status_code == status, (target, response)
            body = b"".join(e.data for e in events if isinstance(e, h11.Data))
            if method == "HEAD" or status in (204, 304):
                assert body == b""
            if method == "HEAD":
                # The GET answer's length, said without the body.
                assert int(dict(response.headers)[b"content-length"]) > 0
            conn.start_next_cycle()
    assert metric(tcpie, 'tcpie_upstream_requests_total{class="5xx"}') == 2


# --- what a careful proxy changes ----------------------------------------------------------


def tuple_addr(hostport: str) -> tuple[str, int]:
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def raw(addr: str, payload: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(tuple_addr(addr), timeout=timeout) as s:
        s.sendall(payload)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_hop_by_hop_fields_go_and_forwarded_fields_are_set(proxy):
    tcpie = proxy()
    answer = raw(tcpie.tcp, b"GET /echo HTTP/1.1\r\nHost: app.example:8080\r\nConnection: close, X-Secret\r\n"
                 b"X-Secret: s\r\nKeep-Alive: timeout=1\r\nTE: trailers\r\nProxy-Connection: close\r\n"
                 b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Kept: yes\r\n\r\n")
    seen = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    names = [n.lower() for n, _ in seen["headers"]]
    for gone in ("connection", "x-secret", "keep-alive", "te", "proxy-connection", "transfer-encoding"):
        assert gone not in names, seen["headers"]
    fields = {n.lower(): v for n, v in seen["headers"]}
    assert fields["host"] == "app.example:8080"
    assert fields["x-kept"] == "yes"
    assert fields["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert fields["x-forwarded-proto"] == "http"
    # Origin form on the wire, as many servers require (busybox httpd answers 400 to the
    # absolute form), also when the client sent the absolute form.
    assert seen["raw_target"] == "/echo"
    answer = raw(tcpie.tcp, b"GET http://app.example/echo?a=1 HTTP/1.1\r\nHost: app.example\r\n"
                 b"Connection: close\r\n\r\n")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["raw_target"] == "/echo?a=1"


def test_smuggling_attempts_never_become_two_upstream_requests(proxy, upstream):
    tcpie = proxy(TCPIE_KEEP_ALIVE="true")
    smuggled = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    attempts = [
        # CL.TE and TE.CL: both framings at once.
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n" + smuggled + b"\r\n0\r\n\r\n",
        # Two different lengths; chunked not last; a bare LF in chunk framing.
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + smuggled,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n" + smuggled,
    ]
    http(f"http://127.0.0.1:{upstream}/reset-stats")
    for attempt in attempts:
        answer = raw(tcpie.tcp, attempt)
        assert answer.startswith(b"HTTP/1.1 400 ") or answer.startswith(b"HTTP/1.1 501 "), answer[:80]
        assert answer.count(b"HTTP/1.1 ") == 1, answer
    # The upstream saw none of them, and so not the request hidden in any.
    assert stats(upstream)["requests"] == 1  # the /stats request itself


def test_expect_continue_is_decided_before_anything_is_forwarded(proxy, upstream):
    tcpie = proxy(TCPIE_WORKERS="1", TCPIE_QUEUE_SIZE="0")
    out = subprocess.run(
        ["curl", "-sS", "-H", "Expect: 100-continue", "--data-binary", "x" * 100_000, "-w", "\n%{http_code}",
         f"http://{tcpie.tcp}/echo"], capture_output=True, text=True, timeout=30)
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200" and json.loads(body)["length"] == 100_000
    # The upstream never sees the Expect TCPie answered itself.
    assert "expect" not in [n.lower() for n, _ in json.loads(body)["headers"]]


def test_bodies_over_the_limit_are_413_or_cut_off(proxy, upstream):
    tcpie = proxy(TCPIE_MAX_BODY_BYTES="100000")
    http(f"http://127.0.0.1:{upstream}/reset-stats")
    answer = raw(tcpie.tcp, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100001\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:60]
    assert stats(upstream)["requests"] == 1, "a 413 by length reached the upstream"
    # A chunked body that grows past the limit: the upstream request is aborted, the
    # client gets 413, and the connection closes.
    chunk = b"%x\r\n" % 50_000 + b"y" * 50_000 + b"\r\n"
    answer = raw(tcpie.tcp, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:60]
    assert b"Connection: close" in answer


# --- failures -------------------------------------------------------------------------------


def test_failures_before_the_head_are_502_or_504_and_never_panic(proxy):
    tcpie = proxy(TCPIE_UPSTREAM_TIMEOUT_MS="300")
    for path, status in [("/garbage", 502), ("/close-before-head", 502), ("/slow?ms=2000", 504)]:
        started = time.monotonic()
        code, body = http(f"http://{tcpie.tcp}{path}")
        assert code == status, (path, code, body)
        if status == 504:
            assert time.monotonic() - started < 1.5
    assert metric(tcpie, 'tcpie_requests_total{outcome="upstream_error"}') == 2
    assert metric(tcpie, 'tcpie_requests_total{outcome="upstream_timeout"}') == 1
    assert metric(tcpie, "tcpie_workers_busy") == 0, "a permit leaked"


def test_a_dead_upstream_is_502_with_a_failed_connection_counted(upstream):
    dead = free_port()
    tcpie = Tcpie(loopback_env(TCPIE_UPSTREAM=f"http://127.0.0.1:{dead}", TCPIE_BURST="0"))
    try:
        code, body = http(f"http://{tcpie.tcp}/")
        assert code == 502 and b"upstream" in body
        assert metric(tcpie, 'tcpie_upstream_connections_total{event="failed"}') >= 1
        # A name that does not resolve: 502 too, not a hang.
    finally:
        tcpie.stop()
    tcpie = Tcpie(loopback_env(TCPIE_UPSTREAM="http://no-such-host.invalid:80", TCPIE_BURST="0"))
    try:
        assert http(f"http://{tcpie.tcp}/", timeout=10)[0] == 502
    finally:
        tcpie.stop()


@pytest.mark.parametrize("path", ["/die-mid-body?size=200000", "/die-mid-chunk"])
def test_an_upstream_dying_mid_body_shows_as_a_truncation(proxy, path):
    tcpie = proxy()
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{tcpie.tcp}{path}"],
                         capture_output=True, text=True, timeout=30)
    # curl sees the head, then a body that ends early: an error, never a clean end.
    assert out.stdout == "200"
    assert out.returncode in (18, 56), (out.returncode, out.stderr)
    assert metric(tcpie, "tcpie_upstream_responses_truncated_total") == 1
    assert metric(tcpie, 'tcpie_requests_total{outcome="upstream_error"}') == 1
    assert metric(tcpie, "tcpie_workers_busy") == 0


def test_connections_the_upstream_closed_while_idle_are_not_used(proxy, upstream):
    """An upstream that closes kept-alive connections sooner than TCPie's idle timeout (as
    Node.js does after 5 s): the next request gets a fresh connection, never a 502; one
    that went out as the upstream closed is sent again (a GET: idempotent, no body)."""
    tcpie = proxy(TCPIE_KEEP_ALIVE="true", TCPIE_WORKERS="2", TCPIE_UPSTREAM_IDLE_TIMEOUT_MS="60000")
    statuses = []
    for _ in range(20):
        statuses.append(http(f"http://127.0.0.1:{tcpie.port}/close-after?ms=5")[0])
        time.sleep(0.03)
    # Back to back, so some requests race the upstream's close.
    for _ in range(150):
        statuses.append(http(f"http://127.0.0.1:{tcpie.port}/close-after?ms=0")[0])
    assert statuses == [200] * 170
    assert metric(tcpie, 'tcpie_upstream_requests_total{class="error"}') == 0
    assert metric(tcpie, 'tcpie_upstream_connections_total{event="opened"}') >= 20


def test_refusals_never_reach_the_upstream(upstream):
    tcpie = Tcpie(loopback_env(TCPIE_UPSTREAM=f"http://127.0.0.1:{upstream}", TCPIE_BURST="2", TCPIE_RATE_PER_SECOND="0.001"))
    try:
        http(f"http://127.0.0.1:{upstream}/reset-stats")
        codes = [http(f"http://{tcpie.tcp}/echo")[0] for _ in range(5)]
        assert codes == [200, 200, 429, 429, 429]
        assert stats(upstream)["requests"] == 3  # two forwarded, and /stats
    finally:
        tcpie.stop()


# --- concurrency, reuse, tracing ------------------------------------------------------------


def test_the_upstream_never_sees_more_than_the_workers_and_connections_are_reused(proxy, upstream):
    tcpie = proxy(TCPIE_WORKERS="3", TCPIE_QUEUE_SIZE="100", TCPIE_KEEP_ALIVE="true")
    http(f"http://127.0.0.1:{upstream}/reset-stats")
    results = []

    def client():
        with httpx.Client(timeout=30) as c:
            for _ in range(5):
                results.append(c.get(f"http://{tcpie.tcp}/hold?ms=50").status_code)

    threads = [threading.Thread(target=client) for _ in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results.count(200) == 60
    seen = stats(upstream)
    assert seen["max_in_flight"] <= 3 + 1, seen  # the /stats request itself may overlap
    assert seen["max_in_flight"] >= 3, "the permits were never all used: the test proves nothing"
    opened = metric(tcpie, 'tcpie_upstream_connections_total{event="opened"}')
    reused = metric(tcpie, 'tcpie_upstream_connections_total{event="reused"}')
    assert opened <= 4 and reused >= 55, (opened, reused)


def test_a_client_span_is_propagated_as_traceparent(proxy):
    # An exporter that goes nowhere: spans are made (and dropped), so a context exists.
    tcpie = proxy(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    code, body = http_headers(f"http://{tcpie.tcp}/echo", {"traceparent": parent})
    fields = {n.lower(): v for n, v in json.loads(body)["headers"]}
    version, trace_id, span_id, flags = fields["traceparent"].split("-")
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span_id != "00f067aa0ba902b7", "the upstream must see TCPie's client span, not the caller's"
    # Without an exporter, the caller's context passes as it came.
    plain = proxy()
    _, body = http_headers(f"http://{plain.tcp}/echo", {"traceparent": parent})
    assert {n.lower(): v for n, v in json.loads(body)["headers"]}["traceparent"] == parent


def http_headers(url: str, headers: dict) -> tuple[int, bytes]:
    r = httpx.get(url, headers=headers, timeout=10)
    return r.status_code, r.content


def test_an_upgrade_is_refused_501(proxy):
    tcpie = proxy()
    answer = raw(tcpie.tcp, b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 "), answer[:60]


def test_https_upstreams_are_refused_at_start_naming_the_variable():
    out = subprocess.run([str(Path(__file__).resolve().parents[2] / "target" / "debug" / "tcpie")],
                         env={"PATH": os.environ["PATH"], "TCPIE_UPSTREAM": "https://app:443"},
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 64
    assert 'TCPIE_UPSTREAM="https://app:443" is invalid' in out.stderr
    assert "https:// is not supported" in out.stderr
