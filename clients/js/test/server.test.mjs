// The client against a real roomcast server (dev mode), over Node's
// WebSocket (`node --experimental-websocket`): chat both ways, a dropped
// socket resumed with since (no gap, no repeat), a server restart (the
// resume fails, chat comes back from the store), refresh in dev mode.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { RoomcastClient, ChatLog } from "../dist/roomcast.js";
import { Server, serverBinary } from "./server.mjs";

const skip = typeof WebSocket === "undefined"
  ? "no global WebSocket (run node with --experimental-websocket)"
  : serverBinary() === null ? "no roomcast binary (cargo build, or set ROOMCAST_BIN)" : false;

let server;
before(async () => {
  if (!skip) server = await Server.start();
});
after(async () => {
  await server?.close();
});

function client(user, room = "js") {
  return new RoomcastClient({ url: server.ws, room, user, reconnect: { minDelayMs: 50, maxDelayMs: 500 } });
}

test("requests, chat both ways, refresh is unsupported in dev mode", { skip, timeout: 15000 }, async () => {
  const a = client("ana");
  const b = client("bo");
  const wa = await a.connect();
  assert.equal(wa.role, "host");
  const joined = a.next("member_joined");
  const wb = await b.connect();
  assert.equal(wb.role, "participant");
  assert.equal((await joined).member.user, "bo");
  const toB = b.next("chat");
  const toA = a.next("chat", (c) => c.from === "bo");
  await a.chat("hello bo");
  await b.chat("hello ana");
  assert.equal((await toB).text, "hello bo");
  assert.equal((await toA).text, "hello ana");
  await assert.rejects(a.meeting("kick", { user: "ana" }), (e) => e.code === "bad_request");
  await assert.rejects(a.request({ type: "refresh", token: "x" }), (e) => e.code === "unsupported");
  assert.equal((await a.ping()).type, "pong");
  a.close();
  b.close();
});

test("a dropped socket resumes with since: every message once", { skip, timeout: 15000 }, async () => {
  const a = client("ana", "resume");
  const b = client("bo", "resume");
  await a.connect();
  await b.connect();
  const seen = [];
  b.on("message", (m) => seen.push(m.data));
  const first = b.next("message", (m) => m.data === 1);
  await a.publish(1);
  await first;
  // Drop b's socket under it; publish while it is away.
  const reopened = b.next("welcome");
  b["socket"].close();
  await b.next("state", (s) => s.state === "reconnecting");
  for (const n of [2, 3, 4]) await a.publish(n);
  const welcome = await reopened;
  assert.equal(welcome.recovered, true);
  const last = b.next("message", (m) => m.data === 5);
  await a.publish(5);
  await last;
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  a.close();
  b.close();
});

test("a server restart: both reconnect, the resume is reported lost, chat comes back once", { skip, timeout: 15000 }, async () => {
  const a = client("ana", "restart");
  const b = client("bo", "restart");
  const logs = [new ChatLog(), new ChatLog()];
  for (const [i, c] of [a, b].entries()) {
    c.on("welcome", (w) => w.history && logs[i].history(w.history, !w.history_loading));
    c.on("chat_history", (h) => logs[i].history(h.messages, !h.loading));
    c.on("chat", (m) => logs[i].add(m));
  }
  await a.connect();
  await b.connect();
  await a.chat("before 1");
  await b.chat("before 2");
  const gap = b.next("gap");
  const back = [a.next("state", (s) => s.state === "open"), b.next("state", (s) => s.state === "open")];
  await server.restart();
  await Promise.all(back);
  assert.equal((await gap).welcome.recovered, false);
  const seen = a.next("chat", (m) => m.text === "after 3");
  await b.chat("after 3");
  await seen;
  for (const log of logs) assert.deepEqual(log.messages.map((m) => m.text), ["before 1", "before 2", "after 3"]);
  a.close();
  b.close();
});
