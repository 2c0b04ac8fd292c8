"""HTTP/1.1 conformance as third-party clients see it (RFC 9110, RFC 9112), against the
built binary on loopback: h11 (a strict RFC 9112 parser) reads every status TCPie can
send, for GET and HEAD, with keep-alive on and off; httpx sends HEAD then GET on one
connection; curl uploads a chunked body, asks for HEAD and waits for 100 Continue.

h11 is told the request it would have sent (method, no body), while the socket carries
the raw request that provokes each status: h11 then judges the answer exactly as a strict
client of that method would, including whether a body follows a HEAD answer."""

import shutil
import socket
import subprocess
import threading
import time

import h11
import http_sfv
import httpx
import pytest

from conftest import Tcpie, loopback_env

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"

# The raw request that provokes each status from the "plain" server, as GET; HEAD
# replaces the method. 429 and 503 come from servers configured to refuse.
PROVOKE = {
    200: GET,
    400: b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    408: b"GET / HTTP/1.1\r\nHost",
    413: b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 999999\r\n\r\n",
    414: b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    431: b"GET / HTTP/1.1\r\nHost: t\r\nX-Fill: " + b"a" * 4000 + b"\r\n\r\n",
    501: b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    505: b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
    429: GET,
    503: GET,
}


def addr(hostport: str) -> tuple[str, int]:
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def h11_read(sock: socket.socket, conn: h11.Connection) -> list:
    """Events of one response as h11 parses them, up to its end (and the close, if any)."""
    events = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            conn.receive_data(data)
            continue
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            if conn.their_state is h11.MUST_CLOSE:
                # Whatever follows must be the close, not stray bytes of a body.
                rest = b""
                sock.settimeout(5)
                while chunk := sock.recv(65536):
                    rest += chunk
                assert rest == b"", f"bytes after the response: {rest[:80]!r}"
                conn.receive_data(b"")
                events.append(conn.next_event())
            return events


def h11_exchange(tcp: str, method: str, raw: bytes, keep_alive: bool) -> tuple[h11.Response, bytes]:
    """Sends `raw` (as `method`), parses the answer with h11; with keep-alive and a 200,
    also sends a GET on the same connection and parses that answer."""
    raw = method.encode() + raw[3:]
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
    conn.send(h11.EndOfMessage())
    with socket.create_connection(addr(tcp), timeout=10) as sock:
        sock.sendall(raw)
        events = h11_read(sock, conn)
        response = events[0]
        assert isinstance(response, h11.Response), events
        body = b"".join(e.data for e in events if isinstance(e, h11.Data))
        headers = {k.decode().lower(): v.decode() for k, v in response.headers}
        assert "date" in headers, headers
        if method == "HEAD":
            assert body == b""
        else:
            assert len(body) == int(headers["content-length"]) > 0
        if keep_alive and response.status_code == 200:
            assert headers["connection"] == "keep-alive"
            assert conn.our_state is h11.DONE and conn.their_state is h11.DONE
            conn.start_next_cycle()
            sock.sendall(conn.send(h11.Request(method="GET", target="/next", headers=[("Host", "t")])))
            conn.send(h11.EndOfMessage())
            events = h11_read(sock, conn)
            assert events[0].status_code == 200, events
            assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == b"Hello world !\n"
        else:
            assert headers["connection"] == "close", headers
            assert isinstance(events[-1], h11.ConnectionClosed), events
        return response, body


@pytest.fixture(scope="module", params=[False, True], ids=["close", "keep-alive"])
def servers(request):
    """The three servers that provoke every status, with keep-alive on or off, shared by
    the module's tests (and killed at its end: the busy worker would hold a drain)."""
    ka = "true" if request.param else "false"
    common = {"TCPIE_KEEP_ALIVE": ka, "TCPIE_READ_TIMEOUT_MS": "400", "TCPIE_MAX_HEADER_BYTES": "1024"}
    started = []
    try:
        plain = Tcpie(loopback_env(TCPIE_BURST="0", **common))
        started.append(plain)
        limited = Tcpie(loopback_env(TCPIE_BURST="1", TCPIE_RATE_PER_SECOND="0.001", **common))
        started.append(limited)
        full = Tcpie(loopback_env(
            TCPIE_BURST="0", TCPIE_WORKERS="1", TCPIE_QUEUE_SIZE="0", TCPIE_SIMULATED_WORK_MS="600000", **common
        ))
        started.append(full)
        # Spend the one token, and occupy the one worker for the rest of the module.
        assert limited.get() == 200
        busy = socket.create_connection(addr(full.tcp))
        busy.sendall(GET)
        deadline = time.monotonic() + 5
        while '"workers_busy":1' not in full.probe("/livez"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield {"plain": plain, "limited": limited, "full": full}, request.param
        busy.close()
    finally:
        for t in started:
            t.proc.kill()
            t.proc.wait()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("status", sorted(PROVOKE))
def test_h11_parses_every_answer(servers, method, status):
    by_role, keep_alive = servers
    server = by_role["limited" if status == 429 else "full" if status == 503 else "plain"]
    response, _ = h11_exchange(server.tcp, method, PROVOKE[status], keep_alive)
    assert response.status_code == status
    # A refusal of the moment must not be kept by a cache (RFC 9111 §5.2.2.5).
    cache_control = dict(response.headers).get(b"cache-control")
    assert cache_control == (b"no-store" if status in (429, 503) else None), response.headers


def test_httpx_head_then_get_on_one_connection(start_tcpie):
    tcpie = start_tcpie(loopback_env(TCPIE_BURST="0", TCPIE_KEEP_ALIVE="true"))
    with httpx.Client(base_url=f"http://{tcpie.tcp}", limits=httpx.Limits(max_connections=1)) as client:
        for _ in range(3):
            head = client.head("/")
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == "14"
            get = client.get("/")
            assert get.status_code == 200 and get.text == "Hello world !\n"
    metrics = tcpie.metrics()
    assert "tcpie_connections_accepted_total 1\n" in metrics, "the requests did not share one connection"
    assert 'tcpie_requests_total{outcome="processed"} 6\n' in metrics


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module", autouse=True)
def have_curl():
    assert shutil.which("curl"), "curl is missing (scripts/setup.sh installs it)"


def test_curl_uploads_a_chunked_body(start_tcpie, tmp_path):
    tcpie = start_tcpie(loopback_env(TCPIE_BURST="0", TCPIE_KEEP_ALIVE="true"))
    upload = tmp_path / "upload"
    upload.write_bytes(b"x" * 50_000)
    r = curl(
        "-o", "/dev/null", "-w", "%{http_code} %{size_upload}", "-H", "Transfer-Encoding: chunked",
        "--data-binary", f"@{upload}", f"http://{tcpie.tcp}/upload",
    )
    assert r.returncode == 0, r.stderr
    status, uploaded = r.stdout.split()
    # curl counts the chunk framing as uploaded too.
    assert status == "200" and int(uploaded) > 50_000, r.stdout
    # Over the 64 KiB limit: 413, and curl sees an answer rather than a reset.
    upload.write_bytes(b"x" * 200_000)
    r = curl(
        "-o", "/dev/null", "-w", "%{http_code}", "-H", "Transfer-Encoding: chunked",
        "--data-binary", f"@{upload}", f"http://{tcpie.tcp}/upload",
    )
    assert r.stdout == "413", (r.stdout, r.stderr)


def test_curl_head_finds_no_excess(start_tcpie):
    tcpie = start_tcpie(loopback_env(TCPIE_BURST="1", TCPIE_RATE_PER_SECOND="0.001"))
    for expected in ("200", "429"):
        r = curl("-v", "-I", "-o", "/dev/null", "-w", "%{http_code}", f"http://{tcpie.tcp}/")
        assert r.stdout == expected, r.stderr
        assert "Excess" not in r.stderr, r.stderr


def test_curl_is_refused_before_it_uploads(start_tcpie, tmp_path):
    """A request that will be refused gets its status instead of 100 Continue: curl sends
    no body (it would after waiting a second for the 100)."""
    tcpie = start_tcpie(loopback_env(TCPIE_BURST="1", TCPIE_RATE_PER_SECOND="0.001"))
    upload = tmp_path / "upload"
    upload.write_bytes(b"x" * 60_000)
    args = ["-o", "/dev/null", "-w", "%{http_code} %{size_upload} %{time_total}", "-H", "Expect: 100-continue",
            "--expect100-timeout", "3", "--data-binary", f"@{upload}", f"http://{tcpie.tcp}/"]
    status, uploaded, _ = curl(*args).stdout.split()
    assert (status, uploaded) == ("200", "60000"), "the first request, admitted, uploads its body"
    status, uploaded, took = curl(*args).stdout.split()
    assert (status, uploaded) == ("429", "0")
    assert float(took) < 2.0, took


# --- RateLimit fields --------------------------------------------------------------------


def sf_list(value: str) -> list:
    """A structured-field List (RFC 9651), parsed strictly by http-sfv: a malformed
    field raises."""
    parsed = http_sfv.List()
    parsed.parse(value.encode())
    return [(item.value, dict(item.params)) for item in parsed]


def test_ratelimit_fields_parse_as_the_draft_says(start_tcpie):
    # draft-ietf-httpapi-ratelimit-headers-09: RateLimit-Policy is a List of quota
    # policies (a String id with q and w), RateLimit a List of the current state (r, t).
    tcpie = start_tcpie(loopback_env(
        TCPIE_BURST="0",
        TCPIE_CLIENT_KEY="peer",
        TCPIE_CLIENT_RATE_PER_SECOND="0.5",
        TCPIE_CLIENT_BURST="2",
        TCPIE_RATE_LIMIT_HEADERS="true",
    ))
    with httpx.Client() as client:
        answers = [client.get(f"http://{tcpie.tcp}/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    for answer, remaining in zip(answers, (1, 0, 0)):
        policy = sf_list(answer.headers["ratelimit-policy"])
        state = sf_list(answer.headers["ratelimit"])
        assert policy == [("client", {"q": 2, "w": 4})]
        assert len(state) == 1 and state[0][0] == "client"
        assert state[0][1]["r"] == remaining
        assert 0 < state[0][1]["t"] <= 4
    assert answers[2].headers["retry-after"] == "2"
    assert answers[2].text == "rate limited: this client's own limit\n"
