// The meeting page: plain DOM code on top of the roomcast client
// (/demo/roomcast.js, built from clients/js). Room picker, chat with
// history and delete, members with roles, lobby admit/deny, raised hands,
// screen-share request/grant/stop, and a two-person WebRTC call whose
// offer, answer and ICE candidates travel through `signal`.
import { RoomcastClient, ChatLog } from "/demo/roomcast.js";

const $ = (id) => document.getElementById(id);

/** Everything the page knows about the meeting; redrawn from here. */
const state = {
  client: null,
  me: "",
  role: "",
  members: new Map(), // conn → { user, name, role }
  waiting: new Map(), // conn → { user, name }
  hands: [],
  sharers: [],
  shareRequests: new Set(),
  lobby: false,
  chat: new ChatLog(),
  gapNote: false,
};

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function button(label, onClick, attrs = {}) {
  const b = el("button", label, { type: "button", class: "secondary", ...attrs });
  b.addEventListener("click", onClick);
  return b;
}

function isHost() {
  return state.role === "host";
}

function report(error) {
  setStatus(`Request refused: ${error.code ?? ""} ${error.message ?? error}`);
}

function setStatus(text) {
  $("status").textContent = text;
}

// -- rendering ---------------------------------------------------------------

function render() {
  $("me").textContent = state.me;
  $("my-role").textContent = state.role;
  $("waiting-notice").hidden = state.role !== "waiting";
  $("lobby-panel").hidden = !isHost();
  $("lobby-enabled").checked = state.lobby;
  renderMembers();
  renderLobby();
  renderHands();
  renderShare();
  renderChat();
  renderCallPeers();
}

function renderMembers() {
  const list = $("members");
  list.replaceChildren();
  const all = [{ conn: "me", user: state.me, role: state.role }, ...[...state.members.entries()].map(([conn, m]) => ({ conn, ...m }))];
  for (const m of all) {
    if (m.role === "waiting") continue;
    const li = el("li", `${m.name ?? m.user}${m.conn === "me" ? " (you)" : ""} — ${m.role}`, { "data-user": m.user, "data-role": m.role });
    if (isHost() && m.conn !== "me" && m.user !== state.me) {
      li.append(button(`Remove ${m.user}`, () => state.client.meeting("kick", { user: m.user }).catch(report)));
    }
    list.append(li);
  }
}

function renderLobby() {
  const list = $("lobby");
  list.replaceChildren();
  for (const [conn, m] of state.waiting) {
    const li = el("li", m.name ?? m.user, { "data-user": m.user, "data-conn": conn });
    li.append(
      button(`Admit ${m.user}`, () => state.client.meeting("lobby.admit", { user: m.user }).catch(report), { "data-action": "admit" }),
      button(`Deny ${m.user}`, () => state.client.meeting("lobby.deny", { user: m.user }).catch(report), { "data-action": "deny" }),
    );
    list.append(li);
  }
  if (state.waiting.size === 0) list.append(el("li", "Nobody is waiting.", { class: "note" }));
}

function renderHands() {
  const list = $("hands");
  list.replaceChildren(...state.hands.map((user) => el("li", user, { "data-user": user })));
  if (state.hands.length === 0) list.append(el("li", "No hands raised.", { class: "note" }));
  const raised = state.hands.includes(state.me);
  $("hand").textContent = raised ? "Lower hand" : "Raise hand";
  $("hand").setAttribute("aria-pressed", String(raised));
  $("hand").disabled = state.role === "waiting";
}

function renderShare() {
  $("sharers").textContent = state.sharers.length ? state.sharers.join(", ") : "nobody";
  const sharing = state.sharers.includes(state.me);
  $("share-stop").hidden = !sharing && !(isHost() && state.sharers.length > 0);
  $("share-request").hidden = sharing || isHost();
  $("share-request").disabled = state.role === "waiting";
  const list = $("share-requests");
  list.replaceChildren();
  if (!isHost()) return;
  for (const user of state.shareRequests) {
    const li = el("li", `${user} asks to share`, { "data-user": user });
    li.append(
      button(`Grant ${user}`, () => state.client.meeting("screenshare.grant", { user }).catch(report)),
      button(`Deny ${user}`, () => state.client.meeting("screenshare.deny", { user }).catch(report)),
    );
    list.append(li);
  }
}

function renderChat() {
  const list = $("chat-log");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.replaceChildren();
  for (const m of state.chat.messages) {
    const li = el("li", undefined, { "data-id": m.id, "data-seq": String(m.seq) });
    li.append(el("strong", m.name ?? m.from), document.createTextNode(": "), el("span", m.text, { class: "text" }));
    if (m.from === state.me || isHost()) {
      li.append(button("Delete", () => state.client.meeting("chat.delete", { id: m.id }).catch(report), { "aria-label": `Delete message: ${m.text}` }));
    }
    list.append(li);
  }
  $("chat-note").hidden = !state.gapNote;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderCallPeers() {
  const select = $("call-peer");
  const current = select.value;
  const users = [...new Set([...state.members.values()].filter((m) => m.role !== "waiting" && m.user !== state.me).map((m) => m.user))];
  select.replaceChildren(...users.map((u) => el("option", u, { value: u })));
  if (users.includes(current)) select.value = current;
  $("call").disabled = users.length === 0 || call.pc !== null;
}

// -- connection ----------------------------------------------------------------

function join(room, user, token) {
  const client = new RoomcastClient(token ? { room, token } : { room, user });
  state.client = client;
  state.me = user || "";
  client.on("state", ({ state: s }) => {
    const text = { connecting: "Connecting…", open: "Connected", reconnecting: "Reconnecting…", closed: "Disconnected" }[s] ?? s;
    setStatus(text);
    document.body.dataset.connection = s;
  });
  client.on("close", ({ code, reason, reconnectInMs }) => {
    if (reconnectInMs === null) {
      setStatus(`Disconnected (${code}${reason ? ": " + reason : ""})`);
      hangUp(false);
    }
  });
  client.on("welcome", (w) => {
    if (w.room !== room) return;
    state.me = w.user;
    state.role = w.role;
    state.lobby = w.lobby;
    state.members = new Map((w.members ?? []).map((m) => [m.conn, { user: m.user, name: m.name, role: m.role }]));
    state.waiting = new Map((w.waiting ?? []).map((m) => [m.conn, { user: m.user, name: m.name }]));
    state.hands = w.hands ?? [];
    state.sharers = w.sharers ?? [];
    if (w.history) state.chat.history(w.history, !w.history_loading);
    document.body.dataset.role = w.role;
    render();
  });
  client.on("gap", () => {
    // Published messages after `since` may be lost; chat is durable and
    // came back in the welcome's history, so only a note is shown.
    state.gapNote = true;
    render();
  });
  client.on("member_joined", ({ member }) => {
    state.members.set(member.conn, { user: member.user, name: member.name, role: "participant" });
    render();
  });
  client.on("member_left", ({ member }) => {
    state.members.delete(member.conn);
    if (call.peer === member.user && ![...state.members.values()].some((m) => m.user === member.user)) hangUp(false);
    render();
  });
  client.on("role", ({ user, role }) => {
    if (user === state.me) state.role = role;
    for (const m of state.members.values()) if (m.user === user) m.role = role;
    document.body.dataset.role = state.role;
    render();
  });
  client.on("lobby", ({ event, member }) => {
    if (event === "waiting") state.waiting.set(member.conn, { user: member.user, name: member.name });
    else state.waiting.delete(member.conn);
    render();
  });
  client.on("lobby_state", ({ enabled }) => {
    state.lobby = enabled;
    render();
  });
  client.on("chat", (m) => {
    state.chat.add(m);
    renderChat();
  });
  client.on("chat_history", ({ messages, loading }) => {
    state.chat.history(messages, !loading);
    renderChat();
  });
  client.on("chat_deleted", ({ id }) => {
    state.chat.remove(id);
    renderChat();
  });
  client.on("hands", ({ queue }) => {
    state.hands = queue;
    renderHands();
  });
  client.on("screenshare", ({ user, state: s }) => {
    if (s === "requested") state.shareRequests.add(user);
    else state.shareRequests.delete(user);
    if (s === "started" && !state.sharers.includes(user)) state.sharers = [...state.sharers, user];
    if (s === "stopped") state.sharers = state.sharers.filter((u) => u !== user);
    if (s === "denied" && user === state.me) setStatus("Your screen share request was denied");
    render();
  });
  client.on("signal", ({ from, data }) => onSignal(from, data).catch((e) => setCallState(`failed: ${e.message ?? e}`)));
  $("room-name").textContent = room;
  $("picker").hidden = true;
  $("meeting").hidden = false;
  return client.connect();
}

// -- WebRTC call (media peer to peer; offers, answers, candidates via `signal`) --------

const call = { pc: null, peer: null, local: null };

function setCallState(text) {
  $("call-state").textContent = text;
}

async function localMedia() {
  if (!call.local) {
    call.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    $("local-video").srcObject = call.local;
  }
  return call.local;
}

function newPeer(peer) {
  // No STUN/TURN server: this works between hosts that can reach each other
  // directly (the same machine or network); a deployment adds iceServers.
  const pc = new RTCPeerConnection({ iceServers: [] });
  call.pc = pc;
  call.peer = peer;
  pc.onicecandidate = (e) => {
    if (e.candidate) state.client.signal(peer, { kind: "candidate", candidate: e.candidate.toJSON() }).catch(report);
  };
  pc.ontrack = (e) => {
    $("remote-video").srcObject = e.streams[0];
  };
  pc.onconnectionstatechange = () => setCallState(pc.connectionState);
  $("hangup").disabled = false;
  renderCallPeers();
  return pc;
}

async function startCall(peer) {
  const pc = newPeer(peer);
  setCallState("calling " + peer);
  for (const track of (await localMedia()).getTracks()) pc.addTrack(track, call.local);
  await pc.setLocalDescription(await pc.createOffer());
  await state.client.signal(peer, { kind: "offer", sdp: pc.localDescription.sdp });
}

async function onSignal(from, data) {
  if (!data || typeof data !== "object") return;
  if (data.kind === "offer") {
    if (call.pc && call.peer !== from) {
      await state.client.signal(from, { kind: "busy" });
      return;
    }
    const pc = call.pc ?? newPeer(from);
    setCallState("answering " + from);
    await pc.setRemoteDescription({ type: "offer", sdp: data.sdp });
    for (const track of (await localMedia()).getTracks()) pc.addTrack(track, call.local);
    await pc.setLocalDescription(await pc.createAnswer());
    await state.client.signal(from, { kind: "answer", sdp: pc.localDescription.sdp });
  } else if (from !== call.peer || !call.pc) {
    return;
  } else if (data.kind === "answer") {
    await call.pc.setRemoteDescription({ type: "answer", sdp: data.sdp });
  } else if (data.kind === "candidate") {
    await call.pc.addIceCandidate(data.candidate);
  } else if (data.kind === "bye" || data.kind === "busy") {
    hangUp(false);
    setCallState(data.kind === "busy" ? `${from} is busy` : "ended");
  }
}

function hangUp(tell) {
  if (call.pc && tell) state.client.signal(call.peer, { kind: "bye" }).catch(() => {});
  call.pc?.close();
  call.pc = null;
  call.peer = null;
  for (const t of call.local?.getTracks() ?? []) t.stop();
  call.local = null;
  $("local-video").srcObject = null;
  $("remote-video").srcObject = null;
  $("hangup").disabled = true;
  setCallState("idle");
  if (state.client) renderCallPeers();
}

// -- controls ----------------------------------------------------------------

function init() {
  const params = new URLSearchParams(location.search);
  if (params.get("room")) $("room").value = params.get("room");
  if (params.get("user")) $("user").value = params.get("user");

  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const room = $("room").value.trim();
    const user = $("user").value.trim();
    const token = $("token").value.trim();
    if (!user && !token) {
      $("join-error").textContent = "Give a display name (dev mode) or a token.";
      $("user").focus();
      return;
    }
    $("join-error").textContent = "";
    join(room, user, token).then(() => $("chat-text").focus());
  });

  $("leave").addEventListener("click", () => {
    hangUp(true);
    state.client?.close();
    location.reload();
  });

  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("chat-text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    state.client.chat(text).catch((error) => {
      report(error);
      input.value = text;
    });
  });

  $("hand").addEventListener("click", () => {
    const type = state.hands.includes(state.me) ? "hand.lower" : "hand.raise";
    state.client.meeting(type).catch(report);
  });

  $("lobby-enabled").addEventListener("change", (e) => {
    state.client.meeting("lobby.set", { enabled: e.target.checked }).catch(report);
  });

  $("share-request").addEventListener("click", () => {
    state.client.meeting("screenshare.request").then(() => setStatus("Screen share requested"), report);
  });

  $("share-stop").addEventListener("click", () => {
    const user = state.sharers.includes(state.me) ? state.me : state.sharers[0];
    state.client.meeting("screenshare.stop", user === state.me ? {} : { user }).catch(report);
  });

  $("call-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const peer = $("call-peer").value;
    if (peer) startCall(peer).catch((error) => setCallState(`failed: ${error.message ?? error}`));
  });

  $("hangup").addEventListener("click", () => hangUp(true));
}

init();
