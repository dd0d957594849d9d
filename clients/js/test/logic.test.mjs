// Unit tests of the client's logic against a fake socket and fake timers:
// backoff, the bounded queue, ref/ack promises and their timeouts, the
// since/epoch bookkeeping, resend across a reconnect, and the chat log.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, tokenExpiryMs, Cursor, ChatLog, RoomcastClient, RoomcastError } from "../dist/roomcast.js";

/** Timers that run only when the test says so. */
function fakeTimers() {
  let now = 0;
  let id = 0;
  const timers = new Map();
  return {
    setTimeout: (fn, ms) => (timers.set(++id, { at: now + ms, fn }), id),
    clearTimeout: (h) => timers.delete(h),
    advance(ms) {
      now += ms;
      for (const [h, t] of [...timers].sort((a, b) => a[1].at - b[1].at)) {
        if (t.at <= now && timers.delete(h)) t.fn();
      }
    },
    get count() {
      return timers.size;
    },
  };
}

/** A socket the test drives: `server(frame)` delivers a frame, `drop()` closes it. */
class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.binaryType = "blob";
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(text));
  }
  server(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  close() {
    this.readyState = 3;
  }
}

function setup(extra = {}) {
  const timers = fakeTimers();
  const sockets = [];
  const client = new RoomcastClient({
    url: "ws://test",
    room: "demo",
    user: "ana",
    socket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    random: () => 0.5,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    ...extra,
  });
  return { client, timers, sockets };
}

const welcome = (seq, epoch = "1.0.1", extra = {}) => ({
  type: "welcome", conn: "0.1.1", room: "demo", shard: 0, user: "ana", role: "host", lobby: false,
  seq, epoch, member_count: 1, members: [], hands: [], sharers: [], history: [], ...extra,
});

const tick = () => new Promise((r) => setImmediate(r));

test("backoff grows, is capped, and is jittered within bounds", () => {
  const opts = { minDelayMs: 100, maxDelayMs: 1000, jitter: 0.5 };
  assert.equal(backoffDelay(0, opts, () => 0), 50);
  assert.equal(backoffDelay(0, opts, () => 1), 100);
  assert.equal(backoffDelay(3, opts, () => 1), 800);
  assert.equal(backoffDelay(10, opts, () => 1), 1000);
  assert.equal(backoffDelay(10, opts, () => 0), 500);
  assert.equal(backoffDelay(2, { ...opts, jitter: 0 }, () => 0.9), 400);
});

test("token expiry is read from the JWT payload", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "a", exp: 1700000000 })).toString("base64url");
  assert.equal(tokenExpiryMs(`x.${payload}.y`), 1700000000 * 1000);
  assert.equal(tokenExpiryMs("not-a-jwt"), null);
});

test("cursor drops repeats and own replayed publishes, and resets on a new epoch", () => {
  const c = new Cursor();
  assert.equal(c.welcome(welcome(5)), false);
  assert.equal(c.accept(6), true);
  assert.equal(c.accept(6), false, "a repeat");
  c.published(7);
  assert.equal(c.accept(7), false, "our own publish, replayed by a recovery");
  assert.equal(c.accept(8), true);
  // Resume in the same epoch: position kept.
  assert.equal(c.welcome(welcome(10, "1.0.1", { recovered: true })), false);
  assert.deepEqual(c.position, { seq: 8, epoch: "1.0.1" });
  // A restart: another epoch, recovered false, messages lost.
  assert.equal(c.welcome(welcome(2, "2.0.1", { recovered: false })), true);
  assert.deepEqual(c.position, { seq: 2, epoch: "2.0.1" });
});

test("chat log merges by id, orders by time and applies a complete history", () => {
  const chat = (id, ts) => ({ type: "chat", room: "demo", id, from: "a", text: id, ts, seq: ts, epoch: "e" });
  const log = new ChatLog();
  log.add(chat("a", 1));
  log.add(chat("c", 3));
  assert.equal(log.add(chat("c", 3)), false);
  log.add(chat("b", 2));
  assert.deepEqual(log.messages.map((m) => m.id), ["a", "b", "c"]);
  // A partial history (still loading) only adds.
  log.history([chat("c", 3), chat("d", 4)], false);
  assert.deepEqual(log.messages.map((m) => m.id), ["a", "b", "c", "d"]);
  // A complete one from ts 2 on: "b" was deleted while we were away; "a" is older than it covers.
  log.history([chat("c", 3), chat("d", 4)].map((m) => ({ ...m, ts: m.ts })), true);
  assert.deepEqual(log.messages.map((m) => m.id), ["a", "b", "c", "d"], "b is older than the history's first");
  log.history([chat("x", 2), chat("c", 3), chat("d", 4)], true);
  assert.deepEqual(log.messages.map((m) => m.id), ["a", "x", "c", "d"]);
  assert.equal(log.remove("a"), true);
});

test("requests resolve on ack, reject on error and time out", async () => {
  const { client, timers, sockets } = setup({ requestTimeoutMs: 1000 });
  const first = client.connect();
  await tick();
  sockets[0].open();
  sockets[0].server(welcome(0));
  await first;
  const ok = client.publish({ x: 1 });
  const bad = client.meeting("kick", { user: "ana" });
  const slow = client.ping();
  const [p, k] = sockets[0].sent;
  sockets[0].server({ type: "ack", ref: p.ref, seq: 1 });
  sockets[0].server({ type: "error", ref: k.ref, code: "bad_request", message: "own user" });
  assert.deepEqual(await ok, { type: "ack", ref: p.ref, seq: 1 });
  await assert.rejects(bad, (e) => e instanceof RoomcastError && e.code === "bad_request");
  timers.advance(1000);
  await assert.rejects(slow, (e) => e.code === "timeout");
  assert.equal(client.pendingCount, 0);
  client.close();
});

test("while disconnected sends are queued up to the bound, then flushed after the welcome", async () => {
  const { client, sockets } = setup({ sendQueueMax: 3 });
  client.connect();
  await tick();
  assert.equal(client.send({ type: "publish", data: 1 }), true);
  const r = client.publish(2);
  assert.equal(client.send({ type: "publish", data: 3 }), true);
  assert.equal(client.send({ type: "publish", data: 4 }), false, "the fourth is refused");
  await assert.rejects(client.publish(5), (e) => e.code === "queue_full");
  sockets[0].open();
  assert.equal(sockets[0].sent.length, 0, "nothing before the welcome");
  sockets[0].server(welcome(0));
  assert.deepEqual(sockets[0].sent.map((f) => f.data), [2, 1, 3]);
  sockets[0].server({ type: "ack", ref: sockets[0].sent[0].ref, seq: 1 });
  await r;
  client.close();
});

test("reconnect resumes with since/epoch, drops repeats, resends chat and fails other sent requests", async () => {
  const { client, timers, sockets } = setup();
  const seen = [];
  const closes = [];
  client.on("message", (m) => seen.push(m.seq));
  client.on("close", (c) => closes.push(c.reconnectInMs));
  client.connect();
  await tick();
  sockets[0].open();
  sockets[0].server(welcome(3));
  sockets[0].server({ type: "message", room: "demo", from: "bo", seq: 4, data: 4 });
  const chat = client.chat("hi");
  const publish = client.publish("lost?");
  sockets[0].drop();
  await assert.rejects(publish, (e) => e.code === "disconnected");
  assert.equal(client.state, "reconnecting");
  assert.equal(closes[0], 188, "base 250: 125 fixed + 125 × jitter 0.5");
  timers.advance(188);
  await tick();
  assert.equal(sockets.length, 2);
  assert.match(sockets[1].url, /^ws:\/\/test\/ws\/demo\?user=ana&since=4&epoch=1\.0\.1$/);
  sockets[1].open();
  sockets[1].server(welcome(6, "1.0.1", { recovered: true }));
  // The chat.send went again with the same id; the server had stored it.
  const again = sockets[1].sent.find((f) => f.type === "chat.send");
  assert.ok(again, "chat.send resent");
  sockets[1].server({ type: "message", room: "demo", from: "bo", seq: 4, data: 4 });
  sockets[1].server({ type: "message", room: "demo", from: "bo", seq: 5, data: 5 });
  sockets[1].server({ type: "error", ref: again.ref, code: "duplicate_id", message: "stored" });
  await chat;
  assert.deepEqual(seen, [4, 5]);
  client.close();
  assert.equal(timers.count, 0, "no timer left behind");
});

test("a final close code stops reconnecting; a lost resume is reported as a gap", async () => {
  const { client, timers, sockets } = setup();
  const gaps = [];
  client.on("gap", (g) => gaps.push(g));
  client.connect();
  await tick();
  sockets[0].open();
  sockets[0].server(welcome(3));
  sockets[0].drop(1001);
  timers.advance(1000);
  await tick();
  sockets[1].open();
  sockets[1].server(welcome(0, "2.0.1", { recovered: false }));
  assert.deepEqual(gaps.map((g) => [g.since, g.epoch]), [[3, "1.0.1"]]);
  sockets[1].drop(4003);
  assert.equal(client.state, "closed");
  timers.advance(60000);
  assert.equal(sockets.length, 2);
});

test("a token function is refreshed before expiry and used on the next connect", async () => {
  const jwt = (exp) => `h.${Buffer.from(JSON.stringify({ sub: "ana", exp })).toString("base64url")}.s`;
  let minted = 0;
  const nowS = 1_000_000;
  const { client, timers, sockets } = setup({
    user: undefined,
    token: async () => jwt(nowS + 120 + 100 * minted++),
    now: () => nowS * 1000,
    refreshBeforeMs: 60_000,
  });
  client.connect();
  await tick();
  assert.match(sockets[0].url, /token=h\./);
  sockets[0].open();
  sockets[0].server(welcome(0));
  timers.advance(59_999);
  await tick();
  assert.equal(sockets[0].sent.length, 0, "not before exp - 60 s");
  timers.advance(1);
  await tick();
  const refresh = sockets[0].sent[0];
  assert.equal(refresh.type, "refresh");
  assert.equal(refresh.token, jwt(nowS + 220));
  sockets[0].server({ type: "ack", ref: refresh.ref });
  await tick();
  sockets[0].drop();
  timers.advance(1000);
  await tick();
  assert.ok(sockets[1].url.includes("token=" + encodeURIComponent(jwt(nowS + 320))), "a fresh token on reconnect");
  client.close();
});
