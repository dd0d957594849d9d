/**
 * roomcast client: one WebSocket connection to a roomcast room, with
 * automatic reconnect (exponential backoff with jitter), resume with
 * `since`/`epoch` so that no `message` is missed or repeated across a
 * reconnect, token refresh before expiry, requests answered by `ack`/`error`
 * as promises (matched by `ref`, with timeouts), typed events for every
 * server frame of docs/protocol.md, and a bounded send queue while
 * disconnected. No runtime dependencies: it needs a WebSocket implementation
 * (the browser's, Node's `--experimental-websocket`, or one passed in).
 */
/** A request refused by the server (`error` frame), or by the client. */
export class RoomcastError extends Error {
    /** The server's `code` (docs/protocol.md §6), or `timeout`, `disconnected`, `queue_full`, `closed`. */
    code;
    frame;
    constructor(code, message, frame) {
        super(message);
        this.name = "RoomcastError";
        this.code = code;
        this.frame = frame;
    }
}
// ---------------------------------------------------------------------------
// Pure helpers (exported for tests)
/**
 * Delay before reconnect attempt `attempt` (0 = first): exponential, capped,
 * with the `jitter` share of it random so that many clients dropped at once
 * do not come back at once.
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
    const min = options.minDelayMs ?? 250;
    const max = options.maxDelayMs ?? 10000;
    const factor = options.factor ?? 2;
    const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
    const base = Math.min(max, min * Math.pow(factor, Math.max(0, attempt)));
    return Math.round(base * (1 - jitter) + base * jitter * random());
}
/** The `exp` claim of a JWT, in ms, or null when it cannot be read. */
export function tokenExpiryMs(token) {
    const part = token.split(".")[1];
    if (!part)
        return null;
    try {
        const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
        const padded = base64 + "===".slice((base64.length + 3) % 4);
        const json = JSON.parse(atob(padded));
        return typeof json.exp === "number" ? json.exp * 1000 : null;
    }
    catch {
        return null;
    }
}
/**
 * The `message` bookkeeping of one room: the last `seq` seen, and the
 * numbers of this connection's own publishes (it never receives those live,
 * but a recovery replays them).
 */
export class Cursor {
    position = null;
    own = new Set();
    /** A full welcome: returns whether a resume (asked with `since`) failed. */
    welcome(frame) {
        if (frame.seq === undefined || frame.epoch === undefined)
            return false;
        const asked = this.position;
        // recovered: false says messages after `since` may be missing (another
        // epoch, or too old); the client cannot tell whether any existed.
        const lost = frame.recovered === false && asked !== null;
        if (frame.recovered !== true || asked === null || asked.epoch !== frame.epoch) {
            // Nothing is replayed: the stream starts after welcome.seq.
            this.position = { seq: frame.seq, epoch: frame.epoch };
            this.own.clear();
        }
        return lost;
    }
    /** A numbered frame (`message` or `chat`): false when it was seen already (or is our own, replayed). */
    accept(seq, epoch) {
        const position = this.position;
        if (position === null)
            return true;
        if (epoch !== undefined && epoch !== position.epoch)
            return true; // older epoch in history; not ours to number
        if (seq <= position.seq)
            return false;
        position.seq = seq;
        const own = this.own.has(seq);
        for (const n of this.own)
            if (n <= seq)
                this.own.delete(n);
        return !own;
    }
    /** Our own publish got `seq`. */
    published(seq) {
        if (this.position !== null && seq > this.position.seq)
            this.own.add(seq);
    }
}
/**
 * A room's chat as the page shows it: merged by id from `welcome.history`,
 * `chat`, `chat_history` and `chat_deleted`, ordered by server time, never
 * showing a message twice. A complete history (not `loading`) replaces
 * what it covers, so deletions made while disconnected disappear too.
 */
export class ChatLog {
    messages = [];
    add(chat) {
        if (this.messages.some((m) => m.id === chat.id))
            return false;
        let i = this.messages.length;
        while (i > 0 && this.messages[i - 1].ts > chat.ts)
            i--;
        this.messages.splice(i, 0, chat);
        return true;
    }
    remove(id) {
        const before = this.messages.length;
        this.messages = this.messages.filter((m) => m.id !== id);
        return this.messages.length !== before;
    }
    /** The room's last messages, oldest first, as the server holds them now. */
    history(messages, complete) {
        if (complete && messages.length > 0) {
            const ids = new Set(messages.map((m) => m.id));
            const from = messages[0].ts;
            this.messages = this.messages.filter((m) => ids.has(m.id) || m.ts < from);
        }
        for (const m of messages)
            this.add(m);
    }
}
/** Close codes after which reconnecting would only be refused again. */
const FINAL_CLOSE_CODES = new Set([1008, 4003, 4004, 4005]);
const CONNECTING = 0;
const OPEN = 1;
export class RoomcastClient {
    room;
    state = "idle";
    /** The latest full welcome of the URL room (or the waiting one while in the lobby). */
    welcome = null;
    /** The URL room's `message` position, sent as `since`/`epoch` on reconnect. */
    cursor = new Cursor();
    options;
    socket = null;
    listeners = new Map();
    pending = new Map();
    queue = [];
    nextRef = 1;
    attempt = 0;
    retryTimer = null;
    refreshTimer = null;
    token = null;
    closedByUser = false;
    /** Rooms joined with `join()`, joined again (with `since`) after a reconnect. */
    joined = new Map();
    constructor(options) {
        this.options = options;
        this.room = options.room;
    }
    // -- events --------------------------------------------------------------
    on(type, listener) {
        let set = this.listeners.get(type);
        if (!set)
            this.listeners.set(type, (set = new Set()));
        set.add(listener);
        return () => set.delete(listener);
    }
    /** Resolves with the next event of `type` that `filter` accepts. */
    next(type, filter = () => true) {
        return new Promise((resolve) => {
            const off = this.on(type, (event) => {
                if (filter(event)) {
                    off();
                    resolve(event);
                }
            });
        });
    }
    emit(type, event) {
        const set = this.listeners.get(type);
        if (!set)
            return;
        for (const listener of [...set]) {
            try {
                listener(event);
            }
            catch (e) {
                // A listener's bug must not break the connection.
                console.error("roomcast listener failed", e);
            }
        }
    }
    setState(state) {
        if (state === this.state)
            return;
        const previous = this.state;
        this.state = state;
        this.emit("state", { state, previous });
    }
    // -- connecting ------------------------------------------------------------
    /** Connects (and keeps reconnecting until `close()`). Resolves at the first welcome. */
    connect() {
        this.closedByUser = false;
        const first = this.next("welcome");
        if (this.state === "idle" || this.state === "closed") {
            this.setState("connecting");
            void this.open();
        }
        return first;
    }
    /** Closes for good: no reconnect; waiting requests are refused with `closed`. */
    close(code = 1000, reason = "") {
        this.closedByUser = true;
        this.clearTimer("retryTimer");
        this.clearTimer("refreshTimer");
        this.failPending("closed", "the client was closed", () => true);
        this.queue = [];
        const socket = this.socket;
        this.socket = null;
        if (socket) {
            detach(socket);
            try {
                socket.close(code, reason);
            }
            catch {
                /* already closing */
            }
        }
        this.setState("closed");
    }
    async currentToken() {
        const source = this.options.token;
        if (source === undefined)
            return null;
        if (typeof source === "string")
            return source;
        return await source();
    }
    baseUrl() {
        if (this.options.url)
            return this.options.url.replace(/\/+$/, "");
        const location = globalThis.location;
        if (!location)
            throw new Error("roomcast: options.url is required outside a browser");
        return (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
    }
    /** The URL of the next connect: token or user, and `since`/`epoch` to resume. */
    url() {
        const query = [];
        if (this.token !== null)
            query.push("token=" + encodeURIComponent(this.token));
        if (this.options.user !== undefined)
            query.push("user=" + encodeURIComponent(this.options.user));
        const position = this.cursor.position;
        if (position !== null)
            query.push("since=" + position.seq, "epoch=" + encodeURIComponent(position.epoch));
        return `${this.baseUrl()}/ws/${this.room}` + (query.length ? "?" + query.join("&") : "");
    }
    async open() {
        try {
            this.token = await this.currentToken();
        }
        catch (error) {
            // Fetching the token failed: count it as a failed attempt.
            this.onSocketClose(1006, "token source failed: " + String(error));
            return;
        }
        if (this.closedByUser)
            return;
        let socket;
        try {
            const factory = this.options.socket ?? ((url) => new WebSocket(url));
            socket = factory(this.url());
        }
        catch (error) {
            this.onSocketClose(1006, String(error));
            return;
        }
        this.socket = socket;
        socket.binaryType = "arraybuffer";
        socket.onmessage = (ev) => this.onData(ev.data);
        socket.onclose = (ev) => {
            if (this.socket === socket)
                this.onSocketClose(ev.code, ev.reason);
        };
        socket.onerror = () => {
            // Browsers follow an error with a close event; some implementations
            // (Node 20's) do not when the connection itself fails. Either way the
            // socket is done: the later close, if any, is ignored.
            if (this.socket === socket && socket.readyState === CONNECTING) {
                detach(socket);
                this.socket = null;
                try {
                    socket.close();
                }
                catch {
                    /* not open yet */
                }
                this.onSocketClose(1006, "connection failed");
            }
        };
    }
    onSocketClose(code, reason) {
        if (this.socket)
            detach(this.socket);
        this.socket = null;
        this.clearTimer("refreshTimer");
        // What was sent is in doubt: idempotent requests go again, the others fail.
        this.failPending("disconnected", "the connection closed before the answer", (p) => p.sent && !p.resend);
        for (const p of this.pending.values())
            p.sent = false;
        const backoff = this.options.reconnect;
        const maxAttempts = backoff === false ? 0 : (backoff?.maxAttempts ?? Infinity);
        const final = this.closedByUser || FINAL_CLOSE_CODES.has(code) || this.attempt >= maxAttempts;
        if (final) {
            this.emit("close", { code, reason, reconnectInMs: null });
            if (!this.closedByUser)
                this.close(code, reason);
            return;
        }
        const delay = backoffDelay(this.attempt, backoff || {}, this.options.random ?? Math.random);
        this.attempt++;
        this.setState("reconnecting");
        this.emit("close", { code, reason, reconnectInMs: delay });
        this.retryTimer = this.timeout(() => {
            this.retryTimer = null;
            void this.open();
        }, delay);
    }
    onData(data) {
        if (typeof data !== "string") {
            if (data instanceof ArrayBuffer)
                this.emit("binary", { data });
            return;
        }
        let frame;
        try {
            frame = JSON.parse(data);
        }
        catch {
            this.emit("unknown", { data });
            return;
        }
        this.dispatch(frame, data);
    }
    dispatch(frame, raw) {
        switch (frame.type) {
            case "welcome":
                return this.onWelcome(frame);
            case "message": {
                const cursor = this.cursorOf(frame.room);
                if (cursor && !cursor.accept(frame.seq))
                    return; // seen before the reconnect
                return this.emit("message", frame);
            }
            case "chat": {
                this.cursorOf(frame.room)?.accept(frame.seq, frame.epoch);
                return this.emit("chat", frame);
            }
            case "ack":
            case "error":
            case "pong":
                return this.onReply(frame);
            default:
                if (KNOWN_TYPES.has(frame.type))
                    return this.emit(frame.type, frame);
                this.emit("unknown", { data: raw });
        }
    }
    cursorOf(room) {
        return room === this.room ? this.cursor : this.joined.get(room);
    }
    onWelcome(frame) {
        const cursor = this.cursorOf(frame.room);
        if (frame.room === this.room) {
            const asked = this.cursor.position;
            this.welcome = frame;
            if (this.state !== "open") {
                this.attempt = 0;
                this.setState("open");
                this.flush();
                this.scheduleRefresh();
                this.rejoin();
            }
            if (cursor?.welcome(frame) && asked)
                this.emit("gap", { room: frame.room, since: asked.seq, epoch: asked.epoch, welcome: frame });
        }
        else if (cursor?.welcome(frame)) {
            this.emit("gap", { room: frame.room, since: 0, epoch: "", welcome: frame });
        }
        this.emit("welcome", frame);
    }
    onReply(frame) {
        const key = frame.ref === undefined ? undefined : refKey(frame.ref);
        const pending = key === undefined ? undefined : this.pending.get(key);
        if (pending) {
            this.pending.delete(key);
            this.clearHandle(pending.timer);
            if (frame.type === "error") {
                // A resent message that the server had stored already: it arrived once.
                if (pending.resend && frame.code === "duplicate_id")
                    pending.resolve({ type: "ack", ref: frame.ref });
                else
                    pending.reject(new RoomcastError(frame.code, frame.message, frame));
            }
            else {
                if (frame.type === "ack" && frame.seq !== undefined && pending.frame.type === "publish") {
                    const room = typeof pending.frame.room === "string" ? pending.frame.room : this.room;
                    this.cursorOf(room)?.published(frame.seq);
                }
                pending.resolve(frame);
            }
        }
        this.emit(frame.type, frame);
    }
    // -- sending ---------------------------------------------------------------
    /** Sends a frame without waiting for an answer; queued while disconnected. False when the queue is full. */
    send(frame) {
        return this.sendText(JSON.stringify(frame));
    }
    /** Sends binary data to the URL room (§5); dropped while disconnected. */
    sendBinary(data) {
        if (!this.socket || this.socket.readyState !== OPEN || this.state !== "open")
            return false;
        this.socket.send(data);
        return true;
    }
    sendText(text) {
        if (this.socket && this.socket.readyState === OPEN && this.state === "open") {
            this.socket.send(text);
            return true;
        }
        if (this.held() >= (this.options.sendQueueMax ?? 256))
            return false;
        this.queue.push(text);
        return true;
    }
    flush() {
        const queued = this.queue;
        this.queue = [];
        for (const p of this.pending.values()) {
            if (!p.sent) {
                p.sent = true;
                this.socket?.send(JSON.stringify(p.frame));
            }
        }
        for (const text of queued)
            this.socket?.send(text);
    }
    /**
     * Sends a request with a fresh `ref`; resolves with its `ack` (or `pong`),
     * rejects with a {@link RoomcastError} for its `error`, a timeout, a full
     * queue, or a disconnect before the answer.
     */
    request(frame, options = {}) {
        const ref = this.nextRef++;
        const full = { ...frame, ref };
        return new Promise((resolve, reject) => {
            const key = refKey(ref);
            const online = this.socket !== null && this.socket.readyState === OPEN && this.state === "open";
            if (!online && this.held() >= (this.options.sendQueueMax ?? 256)) {
                reject(new RoomcastError("queue_full", "the send queue is full while disconnected"));
                return;
            }
            const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs ?? 10000;
            const timer = this.timeout(() => {
                if (this.pending.delete(key))
                    reject(new RoomcastError("timeout", `no answer within ${timeoutMs} ms`));
            }, timeoutMs);
            const pending = { resolve, reject, timer, frame: full, resend: options.resend ?? false, sent: online };
            this.pending.set(key, pending);
            if (online)
                this.socket?.send(JSON.stringify(full));
        });
    }
    /** Frames held for the next connection: plain sends and unsent requests. */
    held() {
        let unsent = 0;
        for (const p of this.pending.values())
            if (!p.sent)
                unsent++;
        return this.queue.length + unsent;
    }
    /** Requests waiting for an answer (sent or queued). */
    get pendingCount() {
        return this.pending.size;
    }
    /** Frames queued while disconnected (requests not counted). */
    get queuedCount() {
        return this.queue.length;
    }
    // -- protocol requests ----------------------------------------------------------
    publish(data, room) {
        return this.request(room === undefined ? { type: "publish", data } : { type: "publish", room, data });
    }
    ping() {
        return this.request({ type: "ping" });
    }
    direct(to, data) {
        return this.request({ type: "direct", to, data });
    }
    /** Joins another room; after a reconnect it is joined again, resuming with `since`. */
    async join(room) {
        const cursor = new Cursor();
        this.joined.set(room, cursor);
        try {
            return await this.request({ type: "join", room });
        }
        catch (error) {
            this.joined.delete(room);
            throw error;
        }
    }
    async leave(room) {
        this.joined.delete(room);
        return await this.request({ type: "leave", room });
    }
    rejoin() {
        for (const [room, cursor] of this.joined) {
            const p = cursor.position;
            const frame = p ? { type: "join", room, since: p.seq, epoch: p.epoch } : { type: "join", room };
            this.request(frame).catch(() => this.joined.delete(room));
        }
    }
    /**
     * Sends a chat message with a client id, so that a send interrupted by a
     * disconnect is sent again after the reconnect and stored once
     * (`duplicate_id` counts as success).
     */
    chat(text, options = {}) {
        const id = options.id ?? newId(this.options.random ?? Math.random);
        const frame = { type: "chat.send", text, id };
        if (options.room !== undefined)
            frame.room = options.room;
        return this.request(frame, { resend: true });
    }
    /** A meeting request (§14.3), e.g. `meeting("hand.raise")`, `meeting("lobby.admit", { user })`. */
    meeting(type, fields = {}) {
        return this.request({ ...fields, type });
    }
    /** Sends WebRTC (or any) signaling data to user `to` in the URL room. */
    signal(to, data) {
        return this.request({ type: "signal", to, data });
    }
    // -- token refresh ------------------------------------------------------------
    scheduleRefresh() {
        this.clearTimer("refreshTimer");
        if (typeof this.options.token !== "function" || this.token === null)
            return;
        const exp = tokenExpiryMs(this.token);
        if (exp === null)
            return;
        const now = (this.options.now ?? Date.now)();
        const delay = Math.max(1000, exp - now - (this.options.refreshBeforeMs ?? 60000));
        this.refreshTimer = this.timeout(() => {
            this.refreshTimer = null;
            void this.refresh();
        }, delay);
    }
    /** Fetches a new token and sends `refresh`; the next reconnect uses it too. */
    async refresh() {
        try {
            const token = await this.currentToken();
            if (token === null)
                return;
            await this.request({ type: "refresh", token });
            this.token = token;
            this.scheduleRefresh();
        }
        catch (error) {
            this.emit("refresh_failed", { error });
            if (!(error instanceof RoomcastError && (error.code === "unsupported" || error.code === "closed"))) {
                // Try again later; the connection lives until the old token expires.
                this.refreshTimer = this.timeout(() => void this.refresh(), 5000);
            }
        }
    }
    // -- timers ------------------------------------------------------------------
    timeout(fn, ms) {
        return (this.options.setTimeout ?? ((f, m) => setTimeout(f, m)))(fn, ms);
    }
    clearHandle(handle) {
        if (handle !== null && handle !== undefined)
            (this.options.clearTimeout ?? ((h) => clearTimeout(h)))(handle);
    }
    clearTimer(which) {
        this.clearHandle(this[which]);
        this[which] = null;
    }
    failPending(code, message, which) {
        for (const [key, p] of [...this.pending]) {
            if (!which(p))
                continue;
            this.pending.delete(key);
            this.clearHandle(p.timer);
            p.reject(new RoomcastError(code, message));
        }
    }
}
const KNOWN_TYPES = new Set([
    "member_joined",
    "member_left",
    "direct",
    "broadcast",
    "chat_deleted",
    "chat_history",
    "hands",
    "screenshare",
    "role",
    "lobby",
    "lobby_state",
    "signal",
]);
function refKey(ref) {
    return JSON.stringify(ref);
}
function newId(random) {
    let id = "c-";
    for (let i = 0; i < 12; i++)
        id += Math.floor(random() * 36).toString(36);
    return id;
}
function detach(socket) {
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
}
