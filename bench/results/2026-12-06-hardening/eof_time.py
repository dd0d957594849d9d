"""Time from the last byte a case sends to the server's EOF, for the 15
Autobahn cases of tests/it/close_behaviour.rs, against the echo listener."""
import socket, struct, sys, time

MASK = bytes([0x37, 0xfa, 0x21, 0x3d])
HELLO = b"Hello, world!"

def frame(first, payload):
    out = bytes([first])
    n = len(payload)
    out += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return out + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))

def close(code, reason=b""):
    return struct.pack("!H", code) + reason

ping = frame(0x89, b"")
cases = [
    ("3.4", [frame(0x81, HELLO), frame(0xC1, HELLO), ping], True),
    ("4.1.5", [frame(0x81, HELLO), frame(0x87, HELLO), ping], True),
    ("4.2.5", [frame(0x81, HELLO), frame(0x8F, HELLO), ping], True),
    ("7.3.2", [frame(0x88, b"a")], False),
    ("7.3.6", [frame(0x88, close(1000, b"*" * 124))], False),
    ("7.5.1", [frame(0x88, close(1000, bytes.fromhex("cebae1bdb9cf83cebcceb5eda080656469746564")))], False),
] + [("7.9.%d" % (i + 1), [frame(0x88, struct.pack("!H", c))], False)
     for i, c in enumerate([0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999])]

host, port = sys.argv[1], int(sys.argv[2])
for name, frames, octets in cases:
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    try:
        for f in frames:
            if octets:
                for b in f:
                    s.send(bytes([b]))
            else:
                s.sendall(f)
    except OSError:
        pass
    sent = time.perf_counter()
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        eof = "%.2f ms" % ((time.perf_counter() - sent) * 1000)
    except socket.timeout:
        eof = "no EOF in 10 s"
    except OSError as e:
        eof = "error %s after %.2f ms" % (e, (time.perf_counter() - sent) * 1000)
    i = got.find(b"\x88")
    code = struct.unpack("!H", got[i + 2:i + 4])[0] if i >= 0 and len(got) >= i + 4 else None
    print("%-6s close %s  EOF %s" % (name, code, eof))
    s.close()
