// hub.js: the browser client of the hub (wire protocol v1, see docs/PROTOCOL.md).
//
// One ES module, no dependencies, no build step:
//
//   import { Hub } from "/client/hub.js";
//   const hub = new Hub({ token: "eyJ..." });
//   const off = hub.on("DRAFT_UPDATED", (event) => console.log(event.payload));
//   hub.on("hub.state", ({ state }) => console.log(state));
//   await hub.send("ORDER_UPDATE", { id: 1 });
//
// The client speaks WebSocket (preferred) and Server-Sent Events read with
// fetch (fallback), resumes after every reconnect from the id of the last event
// it passed on, drops replayed duplicates, refreshes its token before expiry and
// keeps an outbox of upstream sends that flushes in order once it is back.
//
// The pure parts (backoff, SSE parsing, duplicate tracking, refresh timing,
// close-code policy) are exported too, and every side effect (WebSocket, fetch,
// timers, randomness, clock, storage, window events) can be injected through
// the constructor, so the whole state machine is testable without a browser.
//
// Nothing here is global: each Hub owns its timers and listeners, and close()
// clears all of them.

/** Reserved prefix of control event types. */
const CONTROL_PREFIX = "hub.";

/** Application event types accepted by send(), as in the protocol. */
const TYPE_RE = /^[A-Za-z0-9_.:-]{1,128}$/;

/** Default option values; exported so that documentation and tests share them. */
export const DEFAULTS = Object.freeze({
  transports: Object.freeze(["websocket", "sse"]),
  backoff: Object.freeze({ baseMs: 500, maxMs: 30000 }),
  paths: Object.freeze({ websocket: "/ws/realtime", sse: "/sse/realtime", send: "/api/send" }),
  /** Fallback transport is given up for the preferred one after this long connected on it. */
  preferAgainMs: 5 * 60 * 1000,
  /** A connection that has not said hub.connected within this time counts as failed. */
  connectTimeoutMs: 15000,
  /** Added to heartbeatSeconds*2 before a silent connection is declared dead. */
  deadMarginMs: 5000,
  /** WebSocket close 1001 carries no delay hint: wait a random time in [0, this). */
  shutdownJitterMs: 3000,
  /** 4029 and HTTP 429: wait at least this long. */
  throttleMs: 5000,
  /** An upstream send with no hub.ack/hub.nack within this time is retried. */
  sendTimeoutMs: 30000,
  /** Most sends waiting in the outbox; send() rejects with "outbox_full" above it. */
  outboxLimit: 1000,
  /** How many recent event ids are remembered to drop replayed duplicates. */
  dedupWindow: 1000,
  /** Token refresh: at this fraction of the lifetime... */
  refreshFraction: 0.8,
  /** ...but not earlier than this long before expiry. */
  refreshLeadMs: 30000,
});

/**
 * Delay before reconnect attempt n (0 for the first retry after a loss):
 * "full jitter", a random time in [0, min(maxMs, baseMs * 2^n)].
 *
 * @param {number} n attempt number, 0-based
 * @param {{baseMs?: number, maxMs?: number}} [backoff]
 * @param {() => number} [random] returns a number in [0, 1)
 * @returns {number} milliseconds, an integer
 */
export function backoffDelay(n, backoff = {}, random = Math.random) {
  const baseMs = backoff.baseMs ?? DEFAULTS.backoff.baseMs;
  const maxMs = backoff.maxMs ?? DEFAULTS.backoff.maxMs;
  const exp = Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
  const cap = Math.max(0, Math.min(maxMs, baseMs * 2 ** exp));
  const r = Math.min(1, Math.max(0, Number(random()) || 0));
  return Math.floor(r * cap);
}

/**
 * When to ask for a new token, in ms from nowMs: once `fraction` (80 %) of the
 * token's lifetime has passed, and no earlier than `leadMs` (30 s) before its
 * expiry, i.e. at max(issued + 0.8 * lifetime, expires - 30 s). 0 means now.
 *
 * @param {number|null|undefined} issuedAtMs when the token was issued (JWT iat, or
 *   when it was obtained); when unknown or not before the expiry, nowMs is used
 * @param {number} expiresAtMs the token's expiry (hub.connected's tokenExpiresAt)
 * @param {number} nowMs the current time
 * @param {{fraction?: number, leadMs?: number}} [opts]
 * @returns {number|null} milliseconds to wait, or null when expiresAtMs is not a number
 */
export function refreshDelay(issuedAtMs, expiresAtMs, nowMs, opts = {}) {
  if (!Number.isFinite(expiresAtMs)) return null;
  const fraction = opts.fraction ?? DEFAULTS.refreshFraction;
  const leadMs = opts.leadMs ?? DEFAULTS.refreshLeadMs;
  const issued = Number.isFinite(issuedAtMs) && issuedAtMs < expiresAtMs ? issuedAtMs : nowMs;
  const at = Math.max(issued + fraction * (expiresAtMs - issued), expiresAtMs - leadMs);
  return Math.max(0, Math.round(at - nowMs));
}

/**
 * What the client does when a WebSocket closes with `code`:
 * "close" (final: 1000, 1003, 1008, 1009, 4003), "shutdown" (1001: random
 * delay, resume), "token" (4001: fresh token, reconnect), "now" (4008:
 * reconnect at once), "throttle" (4029: wait at least 5 s), or "retry"
 * (anything else, e.g. 1006: ordinary backoff).
 *
 * @param {number} code
 * @returns {"close"|"shutdown"|"token"|"now"|"throttle"|"retry"}
 */
export function closeAction(code) {
  switch (code) {
    case 1000:
    case 1003:
    case 1008:
    case 1009:
    case 4003:
      return "close";
    case 1001:
      return "shutdown";
    case 4001:
      return "token";
    case 4008:
      return "now";
    case 4029:
      return "throttle";
    default:
      return "retry";
  }
}

/**
 * Remembers the last `capacity` event ids so that each id is passed on once.
 * Insertion order ring: the oldest id is forgotten first.
 */
export class IdTracker {
  /** @param {number} [capacity] */
  constructor(capacity = DEFAULTS.dedupWindow) {
    this.capacity = Math.max(1, Math.floor(capacity) || 1);
    this._set = new Set();
    this._ring = new Array(this.capacity);
    this._next = 0;
  }

  /** Whether id was accepted before (and is still remembered). */
  has(id) {
    return this._set.has(id);
  }

  /**
   * Records id and reports whether it is new: true the first time, false for
   * a duplicate (which the caller drops).
   * @param {string} id
   * @returns {boolean}
   */
  accept(id) {
    if (this._set.has(id)) return false;
    const old = this._ring[this._next];
    if (old !== undefined) this._set.delete(old);
    this._ring[this._next] = id;
    this._next = (this._next + 1) % this.capacity;
    this._set.add(id);
    return true;
  }

  /** Number of ids remembered. */
  get size() {
    return this._set.size;
  }
}

/**
 * Incremental text/event-stream parser (the WHATWG algorithm). Feed it text in
 * chunks split anywhere (even between CR and LF); it calls
 * `onEvent({type, data, id})` for each complete event that has data (an event
 * without a data line is ignored, as browsers do), `onRetry(ms)` for a valid
 * `retry:` field and `onComment(text)` for a comment line. `type` is the
 * `event:` field or "message"; `id` is the `id:` field of that event (or
 * undefined; the spec's sticky last-event-id is `lastEventId`).
 */
export class SSEParser {
  /**
   * @param {{onEvent?: (ev: {type: string, data: string, id?: string}) => void,
   *          onRetry?: (ms: number) => void, onComment?: (text: string) => void}} [handlers]
   */
  constructor(handlers = {}) {
    this._onEvent = handlers.onEvent ?? (() => {});
    this._onRetry = handlers.onRetry ?? (() => {});
    this._onComment = handlers.onComment ?? (() => {});
    /** The spec's last event ID buffer (sticky across events). */
    this.lastEventId = "";
    this.reset();
  }

  /** Forgets any partial line and event (for a new stream). */
  reset() {
    this._buf = "";
    this._start = true; // a BOM may follow
    this._skipLF = false; // the previous chunk ended in CR
    this._data = [];
    this._type = "";
    this._id = undefined;
  }

  /**
   * Feeds a chunk of decoded text.
   * @param {string} chunk
   */
  push(chunk) {
    let s = String(chunk);
    if (s === "") return;
    if (this._start) {
      this._start = false;
      if (s.charCodeAt(0) === 0xfeff) s = s.slice(1);
    }
    if (this._skipLF) {
      this._skipLF = false;
      if (s.charCodeAt(0) === 10) s = s.slice(1);
    }
    const buf = this._buf + s;
    let start = 0;
    // The old buffer holds no line break, so scanning starts at its end.
    for (let i = this._buf.length; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this._line(buf.slice(start, i));
      if (c === 13) {
        if (i + 1 < buf.length) {
          if (buf.charCodeAt(i + 1) === 10) i++;
        } else {
          this._skipLF = true;
        }
      }
      start = i + 1;
    }
    this._buf = buf.slice(start);
  }

  /** @param {string} line one line without its terminator */
  _line(line) {
    if (line === "") {
      this._dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) {
      this._onComment(line.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
    }
    switch (field) {
      case "data":
        this._data.push(value);
        break;
      case "event":
        this._type = value;
        break;
      case "id":
        if (!value.includes("\0")) {
          this._id = value;
          this.lastEventId = value;
        }
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this._onRetry(parseInt(value, 10));
        break;
      default:
      // Unknown fields are ignored.
    }
  }

  _dispatch() {
    const data = this._data;
    const type = this._type || "message";
    const id = this._id;
    this._data = [];
    this._type = "";
    this._id = undefined;
    if (data.length === 0) return; // no data: not an event
    this._onEvent({ type, data: data.join("\n"), id });
  }
}

/**
 * An Error from send() or a closed client: `code` is the hub's error code (e.g.
 * "upstream_disabled", "rate_limited") or the client's own ("closed",
 * "outbox_full", "invalid_type", "invalid_payload").
 */
export class HubError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {unknown} [payload] the hub.nack payload, when there was one
   */
  constructor(code, message, payload) {
    super(message || code);
    this.name = "HubError";
    this.code = code;
    this.payload = payload;
  }
}

/**
 * Joins base URL and a path, keeping the base's own path prefix
 * ("https://x.test/push/" + "/ws/realtime" -> "https://x.test/push/ws/realtime").
 * @param {string} base
 * @param {string} path
 * @returns {URL}
 */
export function joinURL(base, path) {
  const u = new URL(base);
  u.pathname = u.pathname.replace(/\/+$/, "") + (path.startsWith("/") ? path : "/" + path);
  u.search = "";
  u.hash = "";
  return u;
}

/**
 * The `iat` of a JWT in ms, or null when the token is not a readable JWT.
 * Used only to time the refresh; the client never trusts it for anything else.
 * @param {string|null} token
 * @returns {number|null}
 */
export function jwtIssuedAt(token) {
  if (typeof token !== "string") return null;
  const part = token.split(".")[1];
  if (!part || typeof atob !== "function") return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4)));
    return Number.isFinite(claims.iat) ? claims.iat * 1000 : null;
  } catch {
    return null;
  }
}

/** A random string for idempotency keys and outbox entries. */
function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  let s = "";
  for (let i = 0; i < 4; i++) s += Math.floor(Math.random() * 2 ** 32).toString(16).padStart(8, "0");
  return s;
}

/** A short, loggable message of anything thrown. */
function errText(err) {
  return err && typeof err === "object" && "message" in err ? String(err.message) : String(err);
}

/** Reads `{"error":{"code":...}}` from a refused response, best effort. */
async function errorCode(res) {
  try {
    const body = await res.json();
    return body && body.error && typeof body.error.code === "string" ? body.error.code : "";
  } catch {
    return "";
  }
}

/**
 * The client. See hub.d.ts and docs/PROTOCOL.md ("Browser client") for the
 * contract; the comments below explain how it is kept.
 */
export class Hub {
  /** @param {import("./hub.d.ts").HubOptions} [options] */
  constructor(options = {}) {
    const o = options;
    const g = globalThis;

    const base = o.url ?? g.location?.origin;
    if (!base) throw new TypeError("Hub: options.url is required outside a page");
    this._base = String(base);
    new URL(this._base); // throws a TypeError early for a bad URL

    this._token = typeof o.token === "string" && o.token !== "" ? o.token : null;
    this._getToken = typeof o.getToken === "function" ? o.getToken : null;
    this._tokenStale = false;
    this._tokenAt = null; // when this._token was obtained (ms), if fetched by us

    const wanted = Array.isArray(o.transports) ? o.transports : DEFAULTS.transports;
    this._transports = [...new Set(wanted.filter((t) => t === "websocket" || t === "sse"))];
    if (this._transports.length === 0) throw new TypeError('Hub: transports must name "websocket" and/or "sse"');

    this._backoff = {
      baseMs: o.backoff?.baseMs ?? DEFAULTS.backoff.baseMs,
      maxMs: o.backoff?.maxMs ?? DEFAULTS.backoff.maxMs,
    };
    this._paths = { ...DEFAULTS.paths, ...(o.paths ?? {}) };
    for (const k of [
      "preferAgainMs",
      "connectTimeoutMs",
      "deadMarginMs",
      "shutdownJitterMs",
      "throttleMs",
      "sendTimeoutMs",
      "outboxLimit",
    ]) {
      this["_" + k] = Number.isFinite(o[k]) ? o[k] : DEFAULTS[k];
    }

    // Injected side effects (defaults: the page's globals).
    this._WebSocket = o.WebSocket ?? g.WebSocket;
    this._fetch = o.fetch ?? (typeof g.fetch === "function" ? g.fetch.bind(g) : null);
    this._setTimeout = o.setTimeout ?? g.setTimeout.bind(g);
    this._clearTimeout = o.clearTimeout ?? g.clearTimeout.bind(g);
    this._random = o.random ?? Math.random;
    this._now = o.now ?? Date.now;
    this._microtask =
      o.queueMicrotask ??
      (typeof g.queueMicrotask === "function" ? g.queueMicrotask.bind(g) : (f) => Promise.resolve().then(f));
    this._window =
      o.window !== undefined ? o.window : typeof g.window === "object" && g.window && g.window.addEventListener ? g.window : null;
    this._onListenerError =
      o.onListenerError ?? (typeof g.reportError === "function" ? g.reportError.bind(g) : (e) => console.error(e));

    // Listeners and the asynchronous delivery queue (states and events share
    // it, so they reach listeners in the order they happened).
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    this._queue = [];
    this._flushScheduled = false;

    // Connection state.
    this._state = "idle";
    this._conn = null; // the current attempt or connection
    this._seq = 0; // attempt counter, for debugging
    this._attempt = 0; // backoff exponent n
    this._failStreak = 0; // failures of the current transport before hub.connected
    this._authFailures = 0; // consecutive 4001/401 before hub.connected
    this._tIndex = 0; // index in _transports
    this._fallbackSince = null; // first hub.connected on a fallback transport
    this._transportName = null;
    this._expiresAt = null; // token expiry (ms) from the hub
    this._quiet = false; // an SSE token-refresh reconnect is in progress
    this._offline = false;
    this._windowBound = false;
    /** @type {Map<string, unknown>} named timers, all cleared by close() */
    this._timers = new Map();

    // Exactly once.
    this._ids = new IdTracker(Number.isFinite(o.dedupWindow) ? o.dedupWindow : DEFAULTS.dedupWindow);
    this._lastEventId = typeof o.lastEventId === "string" && o.lastEventId !== "" ? o.lastEventId : null;

    // Upstream outbox.
    this._outbox = []; // entries {oid, key, type, payload, tries}; the head is the one in flight
    this._waiters = new Map(); // oid -> {resolve, reject}
    this._inflight = null; // {entry, ref, conn}
    this._refSeq = 0;
    this._storage = null;
    this._storageKey = "hub.outbox:" + this._base;
    if (o.outbox === "local") {
      try {
        this._storage = o.storage ?? g.localStorage ?? null;
      } catch {
        this._storage = null; // localStorage can throw (privacy settings): memory only
      }
      this._loadOutbox();
    }

    this._onOnline = () => {
      this._offline = false;
      if (this._timers.has("retry")) this._open();
    };
    this._onOffline = () => {
      this._offline = true;
      if (this._conn) this._lost(this._conn, { code: "offline", reason: "the browser went offline" });
    };

    if (o.autoConnect !== false) this.connect();
  }

  // ---- public surface -------------------------------------------------------

  /** "idle" | "connecting" | "connected" | "reconnecting" | "closed" */
  get state() {
    return this._state;
  }

  /** Id of the last event passed to listeners, or null. */
  get lastEventId() {
    return this._lastEventId;
  }

  /** "websocket" | "sse" while connected, else null. */
  get transport() {
    return this._state === "connected" ? this._transportName : null;
  }

  /** Number of sends waiting in the outbox (the one in flight included). */
  get pendingSends() {
    return this._outbox.length;
  }

  /**
   * Adds a listener: an application event type, "*" (every non-control
   * event), "hub.state", or a control event type ("hub.connected", "hub.ack",
   * ...). Returns a function that removes it. Adding the same function twice
   * for one type has no effect.
   * @param {string} type
   * @param {(event: any) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    if (typeof type !== "string" || typeof fn !== "function") throw new TypeError("Hub.on(type, fn)");
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** Removes a listener added with on(). */
  off(type, fn) {
    const set = this._listeners.get(type);
    if (!set) return;
    set.delete(fn);
    if (set.size === 0) this._listeners.delete(type);
  }

  /**
   * Starts connecting. A no-op while connecting or connected, and after
   * close(); while waiting to reconnect it skips the wait.
   */
  connect() {
    const s = this._state;
    if (s === "closed" || s === "connecting" || s === "connected") return;
    this._bindWindow(true);
    if (s === "idle") this._setState("connecting");
    if (this._conn) return; // an attempt is already under way
    this._open();
  }

  /**
   * Closes the client for good: state "closed", every timer and socket
   * released, pending sends rejected with code "closed" (with outbox "local"
   * they stay stored for the next Hub on this URL).
   */
  close() {
    this._finish(null);
  }

  /**
   * Sends an operation upstream to the application (through the hub). Resolves
   * with the hub.ack payload ({ref, status, result}); rejects with a HubError
   * on a final hub.nack. Waits in the outbox while disconnected; retryable
   * nacks are retried with backoff under the same idempotency key.
   * @param {string} type
   * @param {unknown} payload
   * @param {{idempotencyKey?: string}} [opts]
   * @returns {Promise<any>}
   */
  send(type, payload, opts = {}) {
    if (this._state === "closed") return Promise.reject(new HubError("closed", "the hub client is closed"));
    if (typeof type !== "string" || !TYPE_RE.test(type) || type.startsWith(CONTROL_PREFIX)) {
      return Promise.reject(new HubError("invalid_type", `invalid event type ${JSON.stringify(type)}`));
    }
    const key = opts.idempotencyKey ?? "k-" + randomId();
    if (typeof key !== "string" || key === "") {
      return Promise.reject(new HubError("invalid_request", "idempotencyKey must be a non-empty string"));
    }
    const value = payload === undefined ? null : payload;
    try {
      JSON.stringify(value);
    } catch (err) {
      return Promise.reject(new HubError("invalid_payload", "payload is not JSON: " + errText(err)));
    }
    if (this._outbox.length >= this._outboxLimit) {
      return Promise.reject(new HubError("outbox_full", "too many sends waiting"));
    }
    const entry = { oid: randomId(), key, type, payload: value, tries: 0 };
    return new Promise((resolve, reject) => {
      this._waiters.set(entry.oid, { resolve, reject });
      this._outbox.push(entry);
      this._saveOutbox();
      this._pump();
    });
  }

  // ---- listeners ------------------------------------------------------------

  /** Queues a delivery; listeners run in a microtask, in order. */
  _emit(type, data, wildcard) {
    this._queue.push({ type, data, wildcard });
    if (this._flushScheduled) return;
    this._flushScheduled = true;
    this._microtask(() => this._flush());
  }

  _flush() {
    const q = this._queue;
    // The queue may grow while listeners run; they are delivered in this pass.
    for (let i = 0; i < q.length; i++) {
      const { type, data, wildcard } = q[i];
      this._call(type, data);
      if (wildcard) this._call("*", data);
      if (type === "hub.state" && data.state === "closed") this._listeners.clear(); // nothing can follow
    }
    q.length = 0;
    this._flushScheduled = false;
  }

  _call(type, data) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      if (!set.has(fn)) continue; // removed by an earlier listener
      try {
        fn(data);
      } catch (err) {
        this._onListenerError(err);
      }
    }
  }

  /** Changes state and emits it (only on a change, unless force). */
  _setState(state, extra = {}, force = false) {
    if (this._state === state && !force) return;
    this._state = state;
    this._emit("hub.state", { state, transport: state === "connected" ? this._transportName : null, ...extra }, false);
  }

  // ---- timers ---------------------------------------------------------------

  /** Starts (or restarts) the named timer. */
  _timer(name, ms, fn) {
    this._clear(name);
    const handle = this._setTimeout(() => {
      if (this._timers.get(name) !== handle) return;
      this._timers.delete(name);
      fn();
    }, Math.max(0, ms));
    this._timers.set(name, handle);
  }

  _clear(name) {
    const handle = this._timers.get(name);
    if (handle === undefined) return;
    this._timers.delete(name);
    this._clearTimeout(handle);
  }

  _bindWindow(on) {
    const w = this._window;
    if (!w || on === this._windowBound) return;
    this._windowBound = on;
    const m = on ? "addEventListener" : "removeEventListener";
    w[m]("online", this._onOnline);
    w[m]("offline", this._onOffline);
  }

  // ---- connecting -------------------------------------------------------------

  /** Starts one attempt on the current transport. */
  _open() {
    if (this._state === "closed") return;
    this._clear("retry");
    const conn = {
      kind: this._transports[this._tIndex],
      seq: ++this._seq,
      connected: false,
      dead: false,
      lastSeen: this._now(),
      heartbeatMs: 25000,
      retryMs: null, // SSE retry: hint
      ws: null,
      abort: null,
    };
    this._conn = conn;
    this._acquireToken().then(
      (token) => {
        if (this._conn !== conn) return;
        this._armDead(conn);
        if (conn.kind === "websocket") this._openWS(conn, token);
        else this._openSSE(conn, token);
      },
      (err) => {
        if (this._conn !== conn) return;
        this._lost(conn, { code: "token_error", reason: errText(err) }, "retry", false);
      },
    );
  }

  /** The token to connect with; calls getToken when there is none or it was refused. */
  async _acquireToken() {
    if (this._getToken && (this._token === null || this._tokenStale)) {
      const t = await this._getToken();
      if (typeof t !== "string" || t === "") throw new Error("getToken returned no token");
      this._token = t;
      this._tokenAt = this._now();
      this._tokenStale = false;
    }
    return this._token;
  }

  _openWS(conn, token) {
    const url = joinURL(this._base, this._paths.websocket);
    url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
    if (token) url.searchParams.set("token", token);
    if (this._lastEventId !== null) url.searchParams.set("last_event_id", this._lastEventId);
    let ws;
    try {
      ws = new this._WebSocket(url.href);
    } catch (err) {
      this._lost(conn, { code: "network_error", reason: errText(err) });
      return;
    }
    conn.ws = ws;
    ws.onmessage = (ev) => {
      if (this._conn !== conn || typeof ev.data !== "string") return;
      conn.lastSeen = this._now();
      let env;
      try {
        env = JSON.parse(ev.data);
      } catch {
        return;
      }
      this._envelope(conn, env);
    };
    ws.onclose = (ev) => {
      if (this._conn !== conn) return;
      const code = typeof ev.code === "number" ? ev.code : 1006;
      const reason = typeof ev.reason === "string" ? ev.reason : "";
      const action = closeAction(code);
      if (action === "close") this._finish({ code, reason });
      else this._lost(conn, { code, reason }, action);
    };
    ws.onerror = () => {}; // a close event always follows
  }

  async _openSSE(conn, token) {
    const ctrl = new AbortController();
    conn.abort = () => ctrl.abort();
    const headers = { Accept: "text/event-stream" };
    if (token) headers.Authorization = "Bearer " + token;
    if (this._lastEventId !== null) headers["Last-Event-ID"] = this._lastEventId;
    let res;
    try {
      if (!this._fetch) throw new Error("fetch is not available");
      res = await this._fetch(joinURL(this._base, this._paths.sse).href, {
        method: "GET",
        headers,
        cache: "no-store",
        signal: ctrl.signal,
      });
    } catch (err) {
      if (this._conn === conn) this._lost(conn, { code: "network_error", reason: errText(err) });
      return;
    }
    if (this._conn !== conn) {
      res.body?.cancel?.().catch(() => {});
      return;
    }
    if (res.status !== 200) {
      const code = await errorCode(res);
      if (this._conn !== conn) return;
      const reason = code || `http ${res.status}`;
      if (res.status === 401) this._lost(conn, { code: 4001, reason, status: 401 }, "token");
      else if (res.status === 403) this._finish({ code: 1008, reason, status: 403 });
      else if (res.status === 429) this._lost(conn, { code: 4029, reason, status: 429 }, "throttle");
      else if (res.status === 503) this._lost(conn, { code: 1001, reason, status: 503 }, "shutdown");
      else this._lost(conn, { code: "http_error", reason, status: res.status });
      return;
    }
    const ctype = res.headers?.get?.("content-type") ?? "";
    if (!ctype.toLowerCase().startsWith("text/event-stream") || !res.body) {
      res.body?.cancel?.().catch(() => {});
      this._lost(conn, { code: "http_error", reason: "not an event stream", status: res.status });
      return;
    }

    const parser = new SSEParser({
      onEvent: (ev) => {
        if (this._conn !== conn) return;
        let env;
        try {
          env = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (env && typeof env === "object" && typeof env.type !== "string" && ev.type !== "message") env.type = ev.type;
        this._envelope(conn, env);
      },
      onRetry: (ms) => {
        conn.retryMs = ms;
      },
    });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (this._conn !== conn) break;
        if (done) {
          this._lost(conn, { code: "stream_end", reason: "the event stream ended" });
          break;
        }
        conn.lastSeen = this._now(); // comments (": ping") count as life too
        parser.push(typeof value === "string" ? value : decoder.decode(value, { stream: true }));
        if (this._conn !== conn) break; // an event in that chunk ended it (hub.shutdown, ...)
      }
    } catch (err) {
      if (this._conn === conn) this._lost(conn, { code: "network_error", reason: errText(err) });
    } finally {
      if (this._conn !== conn) reader.cancel().catch(() => {});
    }
  }

  /**
   * Dead-connection watchdog: before hub.connected the attempt must succeed
   * within connectTimeoutMs; afterwards something (an event, hub.ping, an SSE
   * comment) must arrive every heartbeatSeconds*2 + deadMarginMs.
   */
  _armDead(conn) {
    const limit = conn.connected ? conn.heartbeatMs * 2 + this._deadMarginMs : this._connectTimeoutMs;
    conn.lastSeen = this._now();
    const check = () => {
      if (this._conn !== conn) return;
      const quiet = this._now() - conn.lastSeen;
      if (!conn.connected || quiet >= limit) {
        this._lost(conn, { code: "timeout", reason: conn.connected ? "no heartbeat" : "no hub.connected in time" });
      } else {
        this._timer("dead", limit - quiet, check);
      }
    };
    this._timer("dead", limit, check);
  }

  // ---- receiving ------------------------------------------------------------

  /** Handles one envelope from either transport. */
  _envelope(conn, env) {
    if (!env || typeof env !== "object" || typeof env.type !== "string") return;
    if (env.type.startsWith(CONTROL_PREFIX)) {
      this._control(conn, env);
      return;
    }
    if (typeof env.id === "string" && env.id !== "") {
      if (!this._ids.accept(env.id)) return; // a replay overlap: already passed on
      this._lastEventId = env.id;
    }
    this._emit(env.type, env, true);
  }

  _control(conn, env) {
    const p = env.payload && typeof env.payload === "object" ? env.payload : {};
    switch (env.type) {
      case "hub.state":
        return; // ours, never the server's
      case "hub.connected":
        this._connected(conn, p);
        break;
      case "hub.ping":
        if (conn.kind === "websocket") this._wsSend(conn, { type: "hub.pong" });
        break;
      case "hub.refreshed":
        this._expiresAt = Date.parse(p.tokenExpiresAt) || null;
        this._scheduleRefresh(conn);
        break;
      case "hub.ack":
      case "hub.nack":
        if (this._inflight && this._inflight.conn === conn && p.ref === this._inflight.ref) {
          this._settle(this._inflight, env.type === "hub.ack", p);
        }
        break;
      case "hub.shutdown":
        this._emit(env.type, env, false);
        this._lost(conn, { code: 1001, reason: "server shutdown" }, "shutdown");
        return;
      case "hub.expired":
        this._emit(env.type, env, false);
        this._lost(conn, { code: 4001, reason: "token expired" }, "token");
        return;
      case "hub.closed": {
        // The SSE counterpart of a WebSocket close: {code, reason}, handled
        // exactly as that close code would be (4003 ends the client).
        this._emit(env.type, env, false);
        const code = Number.isInteger(p.code) ? p.code : 1006;
        const reason = typeof p.reason === "string" ? p.reason : "";
        const action = closeAction(code);
        if (action === "close") this._finish({ code, reason });
        else this._lost(conn, { code, reason }, action);
        return;
      }
      default:
    }
    this._emit(env.type, env, false);
  }

  _connected(conn, p) {
    if (conn.connected) return;
    conn.connected = true;
    conn.heartbeatMs = (Number(p.heartbeatSeconds) > 0 ? Number(p.heartbeatSeconds) : 25) * 1000;
    this._attempt = 0;
    this._failStreak = 0;
    this._authFailures = 0;
    if (this._tIndex === 0) this._fallbackSince = null;
    else if (this._fallbackSince === null) this._fallbackSince = this._now();
    const previous = this._transportName;
    this._transportName = conn.kind;
    this._expiresAt = Date.parse(p.tokenExpiresAt) || null;
    this._armDead(conn);
    this._scheduleRefresh(conn);

    const recovered = p.recovered === true;
    const missed = Number(p.missed) || 0;
    // With nothing to replay, the position is where a reconnect resumes
    // from, so that a connection cut before its first event loses nothing.
    // (With a replay, the replayed events move lastEventId as usual.)
    if (missed === 0 && typeof p.position === "string" && p.position !== "") {
      this._lastEventId = p.position;
    }
    // A quiet (token refresh) reconnect that resumed cleanly is not news.
    const quiet = this._quiet && this._state === "connected" && recovered && previous === conn.kind;
    this._quiet = false;
    if (!quiet) this._setState("connected", { recovered, missed, connectionId: p.connectionId }, true);
    // A send waiting out a retry backoff goes now: the connection is new.
    this._clear("sendRetry");
    this._pump();
  }

  // ---- losing ---------------------------------------------------------------

  /** Releases a connection or attempt without touching the state. */
  _detach(conn) {
    conn.dead = true;
    if (this._conn === conn) this._conn = null;
    this._clear("dead");
    this._clear("refresh");
    if (this._inflight && this._inflight.conn === conn) {
      // A WebSocket send without an answer: resent (same key) after reconnecting.
      this._inflight = null;
      this._clear("ack");
    }
    const ws = conn.ws;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = ws.onopen = null;
      try {
        ws.close(1000, "client closing");
      } catch {
        // already closed or closing
      }
    }
    if (conn.abort) conn.abort();
  }

  /**
   * The connection or attempt is gone: decide the delay from the reason
   * (mode: closeAction's vocabulary) and schedule the next attempt.
   */
  _lost(conn, error, mode = "retry", countFailure = true) {
    if (this._conn !== conn || this._state === "closed") return;
    const wasConnected = conn.connected;
    this._detach(conn);
    this._quiet = false;

    if (!wasConnected && countFailure && mode === "retry" && !this._offline) {
      // Fallback: a transport that failed twice in a row before hub.connected.
      this._failStreak++;
      if (this._failStreak >= 2 && this._transports.length > 1) {
        this._tIndex = (this._tIndex + 1) % this._transports.length;
        this._failStreak = 0;
        this._fallbackSince = null;
      }
    }
    if (wasConnected) this._maybePreferAgain();

    const n = this._attempt++;
    let delay;
    switch (mode) {
      case "now":
        delay = 0;
        break;
      case "shutdown":
        delay = conn.retryMs !== null ? conn.retryMs : Math.floor(this._random() * this._shutdownJitterMs);
        break;
      case "throttle":
        delay = Math.max(this._throttleMs, backoffDelay(n, this._backoff, this._random));
        break;
      case "token":
        if (!this._getToken) {
          this._finish(error);
          return;
        }
        this._tokenStale = true;
        delay = this._authFailures++ === 0 ? 0 : backoffDelay(n, this._backoff, this._random);
        break;
      default:
        delay = backoffDelay(n, this._backoff, this._random);
    }
    this._setState("reconnecting", { error, delayMs: delay });
    this._timer("retry", delay, () => this._open());
  }

  /** After preferAgainMs connected on a fallback, the next attempt tries the preferred transport. */
  _maybePreferAgain() {
    if (this._tIndex !== 0 && this._fallbackSince !== null && this._now() - this._fallbackSince >= this._preferAgainMs) {
      this._tIndex = 0;
      this._failStreak = 0;
      this._fallbackSince = null;
    }
  }

  /** The end: state "closed" (with error when not asked for), everything released. */
  _finish(error) {
    if (this._state === "closed") return;
    if (this._conn) this._detach(this._conn);
    for (const name of [...this._timers.keys()]) this._clear(name);
    this._bindWindow(false);
    this._inflight = null;
    const waiters = [...this._waiters.values()];
    this._waiters.clear();
    this._outbox = []; // with outbox "local" the stored copy stays for the next Hub
    const why = error ? `closed (${error.code} ${error.reason})` : "closed";
    for (const w of waiters) w.reject(new HubError("closed", "the hub client was " + why));
    this._setState("closed", error ? { error } : {});
  }

  // ---- tokens -----------------------------------------------------------------

  _scheduleRefresh(conn) {
    this._clear("refresh");
    if (!this._getToken || this._expiresAt === null) return;
    const issued = jwtIssuedAt(this._token) ?? this._tokenAt;
    const delay = refreshDelay(issued, this._expiresAt, this._now());
    if (delay === null) return;
    this._timer("refresh", delay, () => this._refresh(conn));
  }

  async _refresh(conn) {
    let token;
    try {
      token = await this._getToken();
      if (typeof token !== "string" || token === "") throw new Error("getToken returned no token");
    } catch {
      // Try again shortly while the token lasts; at expiry the hub closes
      // with 4001 (or hub.expired) and the reconnect fetches one anyway.
      if (this._conn === conn && this._expiresAt !== null && this._now() < this._expiresAt) {
        this._timer("refresh", Math.min(5000, this._expiresAt - this._now()), () => this._refresh(conn));
      }
      return;
    }
    if (this._conn !== conn || !conn.connected) return;
    this._token = token;
    this._tokenAt = this._now();
    this._tokenStale = false;
    if (conn.kind === "websocket") {
      this._wsSend(conn, { type: "hub.refresh", token }); // answered by hub.refreshed or close 4001
      return;
    }
    // SSE cannot change its token in place: reconnect with it and resume,
    // without a "reconnecting" state if it goes well.
    this._maybePreferAgain();
    this._detach(conn);
    this._quiet = true;
    this._open();
  }

  // ---- upstream sends -----------------------------------------------------------

  _wsSend(conn, obj) {
    try {
      conn.ws.send(JSON.stringify(obj));
      return true;
    } catch {
      return false; // the close event follows
    }
  }

  /** Sends the head of the outbox when connected and nothing is in flight (one at a time keeps the order). */
  _pump() {
    if (this._inflight || this._timers.has("sendRetry") || this._outbox.length === 0) return;
    const conn = this._conn;
    if (!conn || !conn.connected) return;
    const entry = this._outbox[0];
    const ref = "r" + ++this._refSeq;
    const inflight = { entry, ref, conn: conn.kind === "websocket" ? conn : null };
    this._inflight = inflight;
    if (conn.kind === "websocket") {
      const frame = { type: "hub.send", ref, idempotencyKey: entry.key, event: { type: entry.type, payload: entry.payload } };
      if (!this._wsSend(conn, frame)) {
        this._inflight = null;
        return;
      }
      this._timer("ack", this._sendTimeoutMs, () =>
        this._settle(inflight, false, { ref, retryable: true, error: { code: "timeout", message: "no answer" } }),
      );
      return;
    }
    this._post(inflight);
  }

  /** SSE (and any HTTP) sends: POST /api/send, the JSON answer is the ack payload. */
  async _post(inflight) {
    const { entry, ref } = inflight;
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (this._token) headers.Authorization = "Bearer " + this._token;
    let res;
    let body = null;
    try {
      if (!this._fetch) throw new Error("fetch is not available");
      res = await this._fetch(joinURL(this._base, this._paths.send).href, {
        method: "POST",
        headers,
        body: JSON.stringify({ idempotencyKey: entry.key, event: { type: entry.type, payload: entry.payload } }),
      });
      try {
        body = await res.json();
      } catch {
        body = null;
      }
    } catch (err) {
      this._settle(inflight, false, { ref, retryable: true, error: { code: "network_error", message: errText(err) } });
      return;
    }
    const obj = body && typeof body === "object" && !Array.isArray(body) ? body : null;
    if (obj && typeof obj.retryable === "boolean" && obj.error) {
      this._settle(inflight, false, { ...obj, ref }); // a nack-shaped answer
    } else if (res.ok) {
      this._settle(inflight, true, obj ? { ...obj, ref } : body);
    } else {
      const error = obj && obj.error && typeof obj.error.code === "string" ? obj.error : { code: `http_${res.status}`, message: `HTTP ${res.status}` };
      let retryable = res.status >= 500 || res.status === 408 || res.status === 429;
      if (res.status === 401 && this._getToken) {
        this._tokenStale = true; // the next POST or reconnect fetches a fresh one
        retryable = true;
        try {
          await this._acquireToken();
        } catch {
          // retried with backoff
        }
      }
      this._settle(inflight, false, { ref, retryable, error });
    }
  }

  /** An answer for the send in flight (ack, or nack payload {retryable, error}). */
  _settle(inflight, ok, payload) {
    if (this._inflight !== inflight) return; // stale (reconnected or closed meanwhile)
    this._inflight = null;
    this._clear("ack");
    const entry = inflight.entry;
    if (inflight.conn === null) {
      // Over HTTP no control event arrived: let hub.ack/hub.nack listeners see it too.
      this._emit(ok ? "hub.ack" : "hub.nack", { type: ok ? "hub.ack" : "hub.nack", payload }, false);
    }
    if (!ok && payload && payload.retryable === true) {
      entry.tries++;
      this._saveOutbox();
      this._timer("sendRetry", backoffDelay(entry.tries - 1, this._backoff, this._random), () => this._pump());
      return;
    }
    const i = this._outbox.indexOf(entry);
    if (i >= 0) this._outbox.splice(i, 1);
    this._saveOutbox();
    const w = this._waiters.get(entry.oid);
    this._waiters.delete(entry.oid);
    if (w) {
      if (ok) w.resolve(payload);
      else {
        const e = (payload && payload.error) || {};
        w.reject(new HubError(String(e.code || "nack"), String(e.message || e.code || "refused"), payload));
      }
    }
    this._pump();
  }

  _saveOutbox() {
    if (!this._storage) return;
    try {
      if (this._outbox.length === 0) this._storage.removeItem(this._storageKey);
      else this._storage.setItem(this._storageKey, JSON.stringify(this._outbox));
    } catch {
      // quota or privacy mode: the memory copy still works
    }
  }

  _loadOutbox() {
    if (!this._storage) return;
    let list;
    try {
      list = JSON.parse(this._storage.getItem(this._storageKey) ?? "[]");
    } catch {
      return;
    }
    if (!Array.isArray(list)) return;
    for (const e of list) {
      if (e && typeof e.oid === "string" && typeof e.key === "string" && typeof e.type === "string") {
        this._outbox.push({ oid: e.oid, key: e.key, type: e.type, payload: e.payload ?? null, tries: Number(e.tries) || 0 });
      }
    }
  }
}
