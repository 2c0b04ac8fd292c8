"""An upstream for TCPie's upstream-mode tests, run as its own process: a small HTTP/1.1
server on asyncio that can echo, be slow, stream in every framing, count the concurrency it
sees, and misbehave on request. It shares no code with TCPie.

    python3 upstream_server.py PORT

Every request is answered according to its path:

- `/echo`: reads the body (Content-Length or chunked), answers JSON with its length, its
  sha256, the method, the target (and the raw request-target as sent), the headers as received, and the framing it came in.
- `/stream?size=N&framing=length|chunked|close&chunk=K`: N bytes (a repeating pattern whose
  sha256 the client can compute) in that framing.
- `/slow?ms=M`: waits M ms before the head.
- `/hold?ms=M`: waits M ms, for the concurrency count (answers like /echo).
- `/die-mid-body?size=N`: announces N bytes, sends half, closes.
- `/die-mid-chunk`: sends two chunks, closes without the last chunk.
- `/garbage`: answers bytes that are not HTTP.
- `/close-before-head`: reads the request, closes without a byte.
- `/close-after?ms=M`: answers 200 with keep-alive, then closes the connection M ms later
  without a word (an upstream whose keep-alive timeout is shorter than TCPie's).
- `/status?code=C`: answers that status (HEAD and 204/304 without a body).
- `/stats`: JSON with the requests seen, the most seen at once, and the connections.
- `/reset-stats`: zeroes the counters.

Keep-alive is honoured (HTTP/1.1 unless `Connection: close`), so connection reuse shows in
`/stats` (`connections` against `requests`).
"""

import asyncio
import hashlib
import json
import sys
import urllib.parse

STATS = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "connections": 0}
# Bumped by /reset-stats: a request still held from before the reset (an earlier test's
# slow request, abandoned by its proxy) must not count out of the new tally when it ends,
# or the next test would see one request fewer in flight than there are.
RESETS = [0]
PATTERN = bytes(range(256)) * 256


def pattern(size: int) -> bytes:
    out = PATTERN * (size // len(PATTERN) + 1)
    return out[:size]


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return method, target, version, headers


def header(headers, name):
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


async def read_body(reader, headers) -> tuple[bytes, str]:
    te = header(headers, "transfer-encoding")
    if te is not None:
        assert te.lower() == "chunked", te
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return body, "chunked"
            body += await reader.readexactly(size)
            assert await reader.readexactly(2) == b"\r\n"
    length = header(headers, "content-length")
    if length is not None:
        return await reader.readexactly(int(length)), "length"
    return b"", "none"


def response(status: int, body: bytes, keep: bool, ctype: str = "application/json", extra: str = "") -> bytes:
    reason = {200: "OK", 204: "No Content", 304: "Not Modified", 500: "Internal Server Error"}.get(status, "Status")
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
    head += "Connection: keep-alive\r\n" if keep else "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    STATS["connections"] += 1
    try:
        while True:
            head = await read_head(reader)
            if head is None:
                return
            method, target, version, headers = head
            url = urllib.parse.urlsplit(target)
            query = dict(urllib.parse.parse_qsl(url.query))
            keep = version == "HTTP/1.1" and (header(headers, "connection") or "").lower() != "close"
            STATS["requests"] += 1
            STATS["in_flight"] += 1
            STATS["max_in_flight"] = max(STATS["max_in_flight"], STATS["in_flight"])
            counted_in = RESETS[0]
            try:
                body, framing = await read_body(reader, headers)
                keep = await answer(writer, method, url.path, query, headers, body, framing, keep, target)
            finally:
                if counted_in == RESETS[0]:
                    STATS["in_flight"] -= 1
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def answer(writer, method, path, query, headers, body, framing, keep, target) -> bool:
    if path in ("/echo", "/hold"):
        if path == "/hold":
            await asyncio.sleep(int(query.get("ms", "100")) / 1000)
        doc = {
            "method": method, "target": path + ("?" + urllib.parse.urlencode(query) if query else ""),
            "raw_target": target,
            "length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "framing": framing,
            "headers": headers,
        }
        out = json.dumps(doc).encode()
        whole = response(200, out, keep)
        # A HEAD answer: the GET answer's head, with its length, and no body.
        writer.write(whole[: len(whole) - len(out)] if method == "HEAD" else whole)
    elif path == "/stream":
        size, how = int(query.get("size", "0")), query.get("framing", "length")
        chunk = int(query.get("chunk", "16384"))
        data = pattern(size)
        if how == "length":
            writer.write(response(200, data, keep, "application/octet-stream"))
        elif how == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
                         + (b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n"))
            for i in range(0, size, chunk):
                part = data[i:i + chunk]
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
            for i in range(0, size, chunk):
                writer.write(data[i:i + chunk])
                await writer.drain()
            await writer.drain()
            return False
    elif path == "/slow":
        await asyncio.sleep(int(query.get("ms", "1000")) / 1000)
        writer.write(response(200, b"slow\n", keep, "text/plain"))
    elif path == "/die-mid-body":
        size = int(query.get("size", "100000"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     + f"Content-Length: {size}\r\n\r\n".encode() + pattern(size // 2))
        await writer.drain()
        return False
    elif path == "/die-mid-chunk":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n")
        await writer.drain()
        return False
    elif path == "/garbage":
        writer.write(b"\x00\x01 this is not HTTP \xff\xfe\r\n\r\n")
        await writer.drain()
        return False
    elif path == "/close-before-head":
        return False
    elif path == "/close-after":
        writer.write(response(200, b"closing soon\n", True, "text/plain"))
        await writer.drain()
        await asyncio.sleep(int(query.get("ms", "20")) / 1000)
        return False
    elif path == "/status":
        code = int(query.get("code", "200"))
        no_body = method == "HEAD" or code in (204, 304)
        if code in (204, 304):
            writer.write(f"HTTP/1.1 {code} Status\r\n".encode() + (b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n"))
        else:
            writer.write(response(code, b"" if no_body else f"status {code}\n".encode(), keep, "text/plain"))
    elif path == "/stats":
        writer.write(response(200, json.dumps(STATS).encode(), keep))
    elif path == "/reset-stats":
        RESETS[0] += 1
        # This request belongs to the old tally: the new one starts empty.
        STATS.update(requests=0, in_flight=0, max_in_flight=0, connections=1)
        writer.write(response(200, b"{}", keep))
    else:
        writer.write(response(404, b"", keep, "text/plain"))
    await writer.drain()
    return keep


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20, backlog=1024)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
