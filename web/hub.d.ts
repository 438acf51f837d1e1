// Types for hub.js, the browser client of the hub (wire protocol v1).

/** Connection states, in the order a client usually goes through them. */
export type HubState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

/** A transport the client can use. */
export type TransportName = "websocket" | "sse";

/** Why a connection ended: a close code or HTTP-mapped code, or a client-side reason. */
export interface HubCloseError {
  /**
   * A WebSocket close code (1000, 1003, 1008, 1009, 4001, 4003, ...), the
   * equivalent for an SSE handshake refusal (401 -> 4001, 403 -> 1008,
   * 429 -> 4029, 503 -> 1001), or a client-side reason on "reconnecting":
   * "network_error", "timeout", "offline", "stream_end", "http_error", "token_error".
   */
  code: number | string;
  reason: string;
  /** The HTTP status when an SSE handshake was refused. */
  status?: number;
}

/** The object passed to `hub.state` listeners. */
export interface HubStateChange {
  state: HubState;
  /** The transport on "connected", else null. */
  transport: TransportName | null;
  /** On "connected": whether every missed event was replayed (false on a first connect). */
  recovered?: boolean;
  /** On "connected": how many missed events were replayed. */
  missed?: number;
  /** On "connected": the hub's connection id. */
  connectionId?: string;
  /** On "closed" when the server or a failure ended the client; on "reconnecting": what was lost. */
  error?: HubCloseError;
  /** On "reconnecting": the wait before the next attempt, in ms. */
  delayMs?: number;
}

/** An event as the hub delivers it (the envelope). */
export interface HubEvent<P = unknown> {
  id: string;
  type: string;
  /**
   * The coalescing key the event was published with (the syntax of a type,
   * e.g. "draft:42"), absent without one. Events to a user with the same key
   * supersede each other in the user's history: a resume replays only the
   * newest of each key.
   */
  key?: string;
  /** true when the event was published volatile (never stored, never replayed); absent otherwise. */
  volatile?: true;
  payload: P;
  /** RFC 3339 with milliseconds, UTC. */
  timestamp: string;
}

/** A control event (type starting with "hub."); it has no id. */
export interface HubControlEvent<P = any> {
  type: string;
  payload?: P;
}

/** The payload of hub.ack, which send() resolves with. */
export interface HubAck<R = unknown> {
  ref: string;
  status: number;
  result: R;
}

/** The payload of hub.nack. */
export interface HubNack {
  ref: string;
  retryable: boolean;
  error: { code: string; message: string };
}

/** Minimal Storage used for outbox "local" (window.localStorage by default). */
export interface HubStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Minimal event target for the online/offline events (window by default). */
export interface HubWindow {
  addEventListener(type: "online" | "offline", fn: () => void): void;
  removeEventListener(type: "online" | "offline", fn: () => void): void;
}

export interface HubOptions {
  /** The hub's base URL (a path prefix is kept); default: the page's origin. */
  url?: string;
  /** A fixed token. With neither token nor getToken the hub must accept a cookie. */
  token?: string;
  /** Returns a fresh token; called at start (without token), on 4001/401/hub.expired and for refresh. */
  getToken?: () => string | Promise<string>;
  /** Order of preference; default ["websocket", "sse"]. */
  transports?: TransportName[];
  /** Reconnect backoff; default { baseMs: 500, maxMs: 30000 }. */
  backoff?: { baseMs?: number; maxMs?: number };
  /** false: stays "idle" until connect(). Default true. */
  autoConnect?: boolean;
  /** Where unsent sends wait: "memory" (default) or "local" (localStorage, key "hub.outbox:" + url). */
  outbox?: "memory" | "local";
  /** Resume position to start from (e.g. saved by the app), instead of a fresh start. */
  lastEventId?: string;
  /** Endpoint paths; default { websocket: "/ws/realtime", sse: "/sse/realtime", send: "/api/send" }. */
  paths?: { websocket?: string; sse?: string; send?: string };
  /** After this long connected on a fallback, the next reconnect tries the preferred transport. Default 300000. */
  preferAgainMs?: number;
  /** An attempt without hub.connected within this time fails. Default 15000. */
  connectTimeoutMs?: number;
  /** Silence allowed beyond heartbeatSeconds*2 before a connection counts as dead. Default 5000. */
  deadMarginMs?: number;
  /** WebSocket close 1001: reconnect after a random delay in [0, this). Default 3000. */
  shutdownJitterMs?: number;
  /** Least wait after 4029 / HTTP 429. Default 5000. */
  throttleMs?: number;
  /** A send without hub.ack/hub.nack within this time is retried. Default 30000. */
  sendTimeoutMs?: number;
  /** Most sends waiting; beyond it send() rejects with "outbox_full". Default 1000. */
  outboxLimit?: number;
  /** Recent event ids remembered to drop duplicates. Default 1000. */
  dedupWindow?: number;

  // Injected side effects (for tests and unusual hosts); default: the globals.
  WebSocket?: new (url: string) => WebSocket;
  fetch?: typeof fetch;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: any) => void;
  /** Returns a number in [0, 1). */
  random?: () => number;
  /** Milliseconds since the epoch. */
  now?: () => number;
  queueMicrotask?: (fn: () => void) => void;
  storage?: HubStorage;
  /** Source of online/offline events; null disables them. */
  window?: HubWindow | null;
  /** Called with an error thrown by a listener (default: reportError or console.error). */
  onListenerError?: (err: unknown) => void;
}

export interface SendOptions {
  /** Default: a fresh random key ("k-" + UUID). Repeating a key within 10 minutes returns the first outcome. */
  idempotencyKey?: string;
}

/** Control event types a listener may subscribe to. */
export type HubControlType =
  | "hub.connected"
  | "hub.ping"
  | "hub.refreshed"
  | "hub.ack"
  | "hub.nack"
  | "hub.error"
  | "hub.shutdown"
  | "hub.expired"
  | "hub.closed";

export class Hub {
  constructor(options?: HubOptions);
  /** The current state. */
  readonly state: HubState;
  /** Id of the last event passed to listeners, else the last position hub.connected gave (when it replayed nothing), or null. */
  readonly lastEventId: string | null;
  /** "websocket" | "sse" while connected, else null. */
  readonly transport: TransportName | null;
  /** Sends waiting in the outbox (the one in flight included). */
  readonly pendingSends: number;

  on(type: "hub.state", fn: (change: HubStateChange) => void): () => void;
  on(type: "hub.ack", fn: (event: HubControlEvent<HubAck>) => void): () => void;
  on(type: "hub.nack", fn: (event: HubControlEvent<HubNack>) => void): () => void;
  on(type: HubControlType, fn: (event: HubControlEvent) => void): () => void;
  /** "*": every non-control event. */
  on<P = any>(type: string, fn: (event: HubEvent<P>) => void): () => void;
  off(type: string, fn: (event: any) => void): void;

  /** Starts connecting; a no-op while connecting or connected and after close(). */
  connect(): void;
  /** Final: state "closed", all timers and sockets released, pending sends rejected. */
  close(): void;
  /** Resolves with the hub.ack payload; rejects with a HubError on a final nack or close(). */
  send<R = unknown>(type: string, payload: unknown, opts?: SendOptions): Promise<HubAck<R>>;
}

/** Error of send(): `code` is the hub's ("upstream_disabled", ...) or the client's ("closed", "outbox_full", "invalid_type", "invalid_payload", "invalid_request"). */
export class HubError extends Error {
  constructor(code: string, message: string, payload?: unknown);
  readonly code: string;
  /** The hub.nack payload, when there was one. */
  readonly payload?: unknown;
}

/** Full-jitter backoff: a random integer in [0, min(maxMs, baseMs * 2^n)]. */
export function backoffDelay(n: number, backoff?: { baseMs?: number; maxMs?: number }, random?: () => number): number;

/** Ms from nowMs until a token refresh: max(issued + 80 % of lifetime, expiry - 30 s) - now, at least 0; null without expiry. */
export function refreshDelay(
  issuedAtMs: number | null | undefined,
  expiresAtMs: number,
  nowMs: number,
  opts?: { fraction?: number; leadMs?: number },
): number | null;

/** The client's reaction to a WebSocket close code. */
export function closeAction(code: number): "close" | "shutdown" | "token" | "now" | "throttle" | "retry";

/** Base URL + path, keeping the base's path prefix. */
export function joinURL(base: string, path: string): URL;

/** A JWT's iat in ms, or null. */
export function jwtIssuedAt(token: string | null): number | null;

/** Remembers the last `capacity` ids; accept() is true once per id. */
export class IdTracker {
  constructor(capacity?: number);
  readonly capacity: number;
  readonly size: number;
  has(id: string): boolean;
  accept(id: string): boolean;
}

/** One parsed text/event-stream event. */
export interface SSEEvent {
  /** The event: field, or "message". */
  type: string;
  /** data: lines joined with "\n". */
  data: string;
  /** The id: field of this event, if any. */
  id?: string;
}

/** Incremental text/event-stream parser. */
export class SSEParser {
  constructor(handlers?: {
    onEvent?: (event: SSEEvent) => void;
    onRetry?: (ms: number) => void;
    onComment?: (text: string) => void;
  });
  /** The spec's sticky last event id. */
  lastEventId: string;
  push(chunk: string): void;
  reset(): void;
}

export const DEFAULTS: Readonly<{
  transports: readonly TransportName[];
  backoff: Readonly<{ baseMs: number; maxMs: number }>;
  paths: Readonly<{ websocket: string; sse: string; send: string }>;
  preferAgainMs: number;
  connectTimeoutMs: number;
  deadMarginMs: number;
  shutdownJitterMs: number;
  throttleMs: number;
  sendTimeoutMs: number;
  outboxLimit: number;
  dedupWindow: number;
  refreshFraction: number;
  refreshLeadMs: number;
}>;
