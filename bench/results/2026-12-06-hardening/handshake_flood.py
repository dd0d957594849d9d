# Slow-handshake flood from 127.0.0.1 while probing /healthz from 127.0.0.2.
# usage: flood.py PUBLIC_PORT ADMIN_PORT N
import socket, sys, time, subprocess, statistics, threading
pub, adm, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def opened():
    s = socket.socket(); s.setblocking(False)
    try: s.connect(("127.0.0.1", pub))
    except BlockingIOError: pass
    return s
socks = [opened() for _ in range(n)]
sent = [0] * n
time.sleep(0.5)
head = b"GET /ws/room?user=x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000
stop = False
def dribble():
    # Each socket sends one more byte every 0.5 s; one closed by the server is reopened at once.
    while not stop:
        for k, s in enumerate(socks):
            try:
                s.recv(1024, socket.MSG_PEEK); raise OSError  # any answer (408, 429) or EOF ends it
            except BlockingIOError: pass
            except OSError:
                s.close(); socks[k] = opened(); sent[k] = 0; continue
            try: s.send(head[sent[k]:sent[k]+1]); sent[k] += 1
            except BlockingIOError: pass
            except OSError: pass
        time.sleep(0.5)
t = threading.Thread(target=dribble); t.start()
time.sleep(1)
def probe(port):
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "--interface", "127.0.0.2", "-m", "20", "-w", "%{http_code} %{time_total}",
                          f"http://127.0.0.1:{port}/healthz"], capture_output=True, text=True).stdout.split()
    return out[0], float(out[1])
res = {"public": [], "admin": []}
for _ in range(12):
    for name, port in (("admin", adm), ("public", pub)):
        res[name].append(probe(port))
    time.sleep(0.3)
stop = True; t.join()
for name, r in res.items():
    ts = sorted(x[1] for x in r)
    print(name, "codes", sorted(set(x[0] for x in r)), "p50 %.3fs max %.3fs" % (statistics.median(ts), ts[-1]))
