"""Round-trip time of a neighbour's `ping` request while another member of
the same room (so the same shard) floods WebSocket Pings without reading.
Bounded: the flood lasts at most FLOOD_S seconds; everything goes to 127.0.0.1.
Usage: flood_latency.py PORT  (server started with --auth-mode none)."""
import json, os, socket, struct, sys, threading, time

PORT = int(sys.argv[1])
FLOOD_S = 3.0
MASK = bytes([0x37, 0xfa, 0x21, 0x3d])

def frame(first, payload):
    n = len(payload)
    head = bytes([first, 0x80 | n]) if n < 126 else bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))

def connect(user):
    s = socket.create_connection(("127.0.0.1", PORT))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(("GET /ws/flood?user=%s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % user).encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    assert b" 101 " in head, head
    return s

class Reader:
    def __init__(self, s):
        self.s, self.buf = s, b""
    def frame(self):
        while True:
            if len(self.buf) >= 2:
                n, h = self.buf[1] & 0x7f, 2
                if n == 126:
                    n, h = (struct.unpack("!H", self.buf[2:4])[0], 4) if len(self.buf) >= 4 else (None, 4)
                elif n == 127:
                    n, h = (struct.unpack("!Q", self.buf[2:10])[0], 10) if len(self.buf) >= 10 else (None, 10)
                if n is not None and len(self.buf) >= h + n:
                    op, payload, self.buf = self.buf[0] & 0x0f, self.buf[h:h + n], self.buf[h + n:]
                    return op, payload
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

def flood(s, stats):
    burst = frame(0x89, b"") * 10000
    start = time.perf_counter()
    sent = 0
    try:
        while time.perf_counter() - start < FLOOD_S:
            s.sendall(burst)
            sent += 10000
    except OSError as e:
        stats["error"] = str(e)
    stats["pings"] = sent
    stats["secs"] = time.perf_counter() - start

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")

neighbour = connect("neighbour")
reader = Reader(neighbour)
flooder = connect("flooder")
phases = {"before": [], "during": [], "after": []}
stats = {}
ref = 0
thread = None
t0 = time.perf_counter()
while True:
    elapsed = time.perf_counter() - t0
    if elapsed > 1.0 + FLOOD_S + 1.0:
        break
    # "during": the FLOOD_S seconds from the flood's start, however soon it ends.
    phase = "before" if elapsed < 1.0 else ("during" if elapsed < 1.0 + FLOOD_S else "after")
    if elapsed >= 1.0 and thread is None:
        thread = threading.Thread(target=flood, args=(flooder, stats))
        thread.start()
        phase = "during"
    ref += 1
    sent = time.perf_counter()
    neighbour.sendall(frame(0x81, json.dumps({"type": "ping", "ref": ref}).encode()))
    while True:
        op, payload = reader.frame()
        if op == 1 and b'"pong"' in payload and json.loads(payload).get("ref") == ref:
            break
    phases[phase].append((time.perf_counter() - sent) * 1000)
    time.sleep(0.025)  # 40 requests/s, under the default message rate
thread.join()
flooder.settimeout(5)
close = None
try:
    fr = Reader(flooder)
    while True:
        op, payload = fr.frame()
        if op == 8:
            close = (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
            break
except Exception as e:
    close = "no Close (%s)" % type(e).__name__
print("flood: %d pings written in %.2f s%s; flooder got %s" % (
    stats.get("pings", 0), stats.get("secs", 0), (" (%s)" % stats["error"]) if "error" in stats else "", close))
for name, xs in phases.items():
    print("%-6s n=%3d  p50 %.2f ms  p99 %.2f ms  max %.2f ms" % (name, len(xs), pct(xs, .5), pct(xs, .99), max(xs) if xs else float("nan")))
