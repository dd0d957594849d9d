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
/** A member object (§4); `role` only in `welcome.members`. */
export interface Member {
    conn: string;
    user: string;
    name?: string;
    role?: Role;
}
export type Role = "waiting" | "participant" | "screenshare" | "host";
export interface ChatFrame {
    type: "chat";
    room: string;
    id: string;
    from: string;
    name?: string;
    text: string;
    ts: number;
    seq: number;
    epoch: string;
}
/** The full welcome of an admitted member, or the short waiting one (§4.1, §14.4). */
export interface WelcomeFrame {
    type: "welcome";
    conn: string;
    room: string;
    shard: number;
    user: string;
    role: Role;
    lobby: boolean;
    seq?: number;
    epoch?: string;
    member_count?: number;
    members?: Member[];
    hands?: string[];
    sharers?: string[];
    history?: ChatFrame[];
    recovered?: boolean;
    history_loading?: boolean;
    waiting?: Member[];
}
export interface MemberJoinedFrame {
    type: "member_joined";
    room: string;
    member: Member;
    member_count: number;
}
export interface MemberLeftFrame {
    type: "member_left";
    room: string;
    member: Member;
    member_count: number;
}
export interface MessageFrame {
    type: "message";
    room: string;
    from: string;
    seq: number;
    data: unknown;
}
export interface DirectFrame {
    type: "direct";
    from: string;
    data: unknown;
}
export interface BroadcastFrame {
    type: "broadcast";
    to: "room" | "user" | "connection" | "all";
    room?: string;
    data: unknown;
}
export interface AckFrame {
    type: "ack";
    ref?: unknown;
    seq?: number;
}
export interface ErrorFrame {
    type: "error";
    ref?: unknown;
    code: string;
    message: string;
}
export interface PongFrame {
    type: "pong";
    ref?: unknown;
}
export interface ChatDeletedFrame {
    type: "chat_deleted";
    room: string;
    id: string;
    by: string;
}
export interface ChatHistoryFrame {
    type: "chat_history";
    room: string;
    messages: ChatFrame[];
    loading?: boolean;
}
export interface HandsFrame {
    type: "hands";
    room: string;
    queue: string[];
}
export interface ScreenshareFrame {
    type: "screenshare";
    room: string;
    user: string;
    state: "requested" | "started" | "stopped" | "denied";
}
export interface RoleFrame {
    type: "role";
    room: string;
    user: string;
    role: Role;
}
export interface LobbyFrame {
    type: "lobby";
    room: string;
    event: "waiting" | "admitted" | "left";
    member: Member;
}
export interface LobbyStateFrame {
    type: "lobby_state";
    room: string;
    enabled: boolean;
}
export interface SignalFrame {
    type: "signal";
    room: string;
    from: string;
    data: unknown;
}
/** Every frame the server sends, by `type`. */
export interface ServerFrames {
    welcome: WelcomeFrame;
    member_joined: MemberJoinedFrame;
    member_left: MemberLeftFrame;
    message: MessageFrame;
    direct: DirectFrame;
    broadcast: BroadcastFrame;
    ack: AckFrame;
    error: ErrorFrame;
    pong: PongFrame;
    chat: ChatFrame;
    chat_deleted: ChatDeletedFrame;
    chat_history: ChatHistoryFrame;
    hands: HandsFrame;
    screenshare: ScreenshareFrame;
    role: RoleFrame;
    lobby: LobbyFrame;
    lobby_state: LobbyStateFrame;
    signal: SignalFrame;
}
export type ServerFrame = ServerFrames[keyof ServerFrames];
export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";
/** Connection lifecycle events, beside the server frames. */
export interface LifecycleEvents {
    /** Every change of `client.state`. */
    state: {
        state: State;
        previous: State;
    };
    /** The socket closed. `reconnectInMs` is null when the client gives up. */
    close: {
        code: number;
        reason: string;
        reconnectInMs: number | null;
    };
    /**
     * A reconnect could not resume the URL room's `message` stream
     * (`welcome.recovered: false`: restart, room recreated, too old):
     * messages between `since` and `welcome.seq` may be lost. Chat is not
     * affected (it comes back in `welcome.history`).
     */
    gap: {
        room: string;
        since: number;
        epoch: string;
        welcome: WelcomeFrame;
    };
    /** A text frame that is not JSON, or a frame of a type this client does not know. */
    unknown: {
        data: string;
    };
    /** A binary message from the URL room (§5). */
    binary: {
        data: ArrayBuffer;
    };
    /** A token refresh failed; the connection lives until the old token expires. */
    refresh_failed: {
        error: unknown;
    };
}
export type Events = ServerFrames & LifecycleEvents;
/** The subset of the WebSocket API this client uses. */
export interface SocketLike {
    readyState: number;
    binaryType: string;
    send(data: string | ArrayBufferLike | ArrayBufferView): void;
    close(code?: number, reason?: string): void;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: unknown) => void) | null;
}
export type SocketFactory = (url: string) => SocketLike;
/** A token, or a function that fetches one (called before every connect and refresh). */
export type TokenSource = string | (() => string | Promise<string>);
export interface BackoffOptions {
    /** First delay, ms [250]. */
    minDelayMs?: number;
    /** Largest delay, ms [10000]. */
    maxDelayMs?: number;
    /** Growth per failed attempt [2]. */
    factor?: number;
    /** Share of the delay that is random, 0–1 [0.5]. */
    jitter?: number;
    /** Attempts in a row before giving up [Infinity]. */
    maxAttempts?: number;
}
export interface ClientOptions {
    /** `ws://host:port` or `wss://…`; in a browser, the page's own origin by default. */
    url?: string;
    /** The URL room (`/ws/{room}`). */
    room: string;
    /** JWT (auth.mode = jwt). */
    token?: TokenSource;
    /** Dev mode user id (auth.mode = none): `?user=`. */
    user?: string;
    /** Makes the socket; defaults to `new WebSocket(url)`. */
    socket?: SocketFactory;
    /** `false` turns reconnecting off. */
    reconnect?: BackoffOptions | false;
    /** How long a request waits for its `ack` or `error`, ms [10000]. */
    requestTimeoutMs?: number;
    /** Frames held while disconnected; more are refused with `queue_full` [256]. */
    sendQueueMax?: number;
    /** Refresh the token this long before its `exp`, ms [60000]. */
    refreshBeforeMs?: number;
    /** Source of randomness for jitter and ids (tests). */
    random?: () => number;
    /** Clock, ms since the Unix epoch (tests). */
    now?: () => number;
    /** Timers (tests). */
    setTimeout?: (fn: () => void, ms: number) => unknown;
    clearTimeout?: (handle: unknown) => void;
}
/** A request refused by the server (`error` frame), or by the client. */
export declare class RoomcastError extends Error {
    /** The server's `code` (docs/protocol.md §6), or `timeout`, `disconnected`, `queue_full`, `closed`. */
    readonly code: string;
    readonly frame?: ErrorFrame;
    constructor(code: string, message: string, frame?: ErrorFrame);
}
/**
 * Delay before reconnect attempt `attempt` (0 = first): exponential, capped,
 * with the `jitter` share of it random so that many clients dropped at once
 * do not come back at once.
 */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
/** The `exp` claim of a JWT, in ms, or null when it cannot be read. */
export declare function tokenExpiryMs(token: string): number | null;
/** Where a room's numbered stream stands: the last `seq` seen in `epoch`. */
export interface Position {
    seq: number;
    epoch: string;
}
/**
 * The `message` bookkeeping of one room: the last `seq` seen, and the
 * numbers of this connection's own publishes (it never receives those live,
 * but a recovery replays them).
 */
export declare class Cursor {
    position: Position | null;
    private own;
    /** A full welcome: returns whether a resume (asked with `since`) failed. */
    welcome(frame: WelcomeFrame): boolean;
    /** A numbered frame (`message` or `chat`): false when it was seen already (or is our own, replayed). */
    accept(seq: number, epoch?: string): boolean;
    /** Our own publish got `seq`. */
    published(seq: number): void;
}
/**
 * A room's chat as the page shows it: merged by id from `welcome.history`,
 * `chat`, `chat_history` and `chat_deleted`, ordered by server time, never
 * showing a message twice. A complete history (not `loading`) replaces
 * what it covers, so deletions made while disconnected disappear too.
 */
export declare class ChatLog {
    messages: ChatFrame[];
    add(chat: ChatFrame): boolean;
    remove(id: string): boolean;
    /** The room's last messages, oldest first, as the server holds them now. */
    history(messages: ChatFrame[], complete: boolean): void;
}
/** Request options. */
export interface RequestOptions {
    timeoutMs?: number;
    /** Send again after a reconnect if unanswered (only for idempotent requests, e.g. `chat.send` with an `id`). */
    resend?: boolean;
}
type Listener<T> = (event: T) => void;
export declare class RoomcastClient {
    readonly room: string;
    state: State;
    /** The latest full welcome of the URL room (or the waiting one while in the lobby). */
    welcome: WelcomeFrame | null;
    /** The URL room's `message` position, sent as `since`/`epoch` on reconnect. */
    readonly cursor: Cursor;
    private readonly options;
    private socket;
    private listeners;
    private pending;
    private queue;
    private nextRef;
    private attempt;
    private retryTimer;
    private refreshTimer;
    private token;
    private closedByUser;
    /** Rooms joined with `join()`, joined again (with `since`) after a reconnect. */
    private joined;
    constructor(options: ClientOptions);
    on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void;
    /** Resolves with the next event of `type` that `filter` accepts. */
    next<K extends keyof Events>(type: K, filter?: (event: Events[K]) => boolean): Promise<Events[K]>;
    private emit;
    private setState;
    /** Connects (and keeps reconnecting until `close()`). Resolves at the first welcome. */
    connect(): Promise<WelcomeFrame>;
    /** Closes for good: no reconnect; waiting requests are refused with `closed`. */
    close(code?: number, reason?: string): void;
    private currentToken;
    private baseUrl;
    /** The URL of the next connect: token or user, and `since`/`epoch` to resume. */
    url(): string;
    private open;
    private onSocketClose;
    private onData;
    private dispatch;
    private cursorOf;
    private onWelcome;
    private onReply;
    /** Sends a frame without waiting for an answer; queued while disconnected. False when the queue is full. */
    send(frame: Record<string, unknown>): boolean;
    /** Sends binary data to the URL room (§5); dropped while disconnected. */
    sendBinary(data: ArrayBufferLike | ArrayBufferView): boolean;
    private sendText;
    private flush;
    /**
     * Sends a request with a fresh `ref`; resolves with its `ack` (or `pong`),
     * rejects with a {@link RoomcastError} for its `error`, a timeout, a full
     * queue, or a disconnect before the answer.
     */
    request(frame: Record<string, unknown>, options?: RequestOptions): Promise<AckFrame>;
    /** Frames held for the next connection: plain sends and unsent requests. */
    private held;
    /** Requests waiting for an answer (sent or queued). */
    get pendingCount(): number;
    /** Frames queued while disconnected (requests not counted). */
    get queuedCount(): number;
    publish(data: unknown, room?: string): Promise<AckFrame>;
    ping(): Promise<AckFrame>;
    direct(to: string, data: unknown): Promise<AckFrame>;
    /** Joins another room; after a reconnect it is joined again, resuming with `since`. */
    join(room: string): Promise<AckFrame>;
    leave(room: string): Promise<AckFrame>;
    private rejoin;
    /**
     * Sends a chat message with a client id, so that a send interrupted by a
     * disconnect is sent again after the reconnect and stored once
     * (`duplicate_id` counts as success).
     */
    chat(text: string, options?: {
        room?: string;
        id?: string;
    }): Promise<AckFrame>;
    /** A meeting request (§14.3), e.g. `meeting("hand.raise")`, `meeting("lobby.admit", { user })`. */
    meeting(type: MeetingRequest, fields?: Record<string, unknown>): Promise<AckFrame>;
    /** Sends WebRTC (or any) signaling data to user `to` in the URL room. */
    signal(to: string, data: unknown): Promise<AckFrame>;
    private scheduleRefresh;
    /** Fetches a new token and sends `refresh`; the next reconnect uses it too. */
    refresh(): Promise<void>;
    private timeout;
    private clearHandle;
    private clearTimer;
    private failPending;
}
export type MeetingRequest = "chat.send" | "chat.delete" | "chat.history" | "hand.raise" | "hand.lower" | "screenshare.request" | "screenshare.grant" | "screenshare.deny" | "screenshare.stop" | "lobby.admit" | "lobby.deny" | "lobby.set" | "kick";
export {};
