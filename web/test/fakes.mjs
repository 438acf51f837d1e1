// Test doubles for hub.js: a fake clock (timers + now), a fake WebSocket class
// and a fake fetch whose SSE streams and POST answers the test controls.

/** Lets pending promise chains and microtasks run. */
export async function settle(rounds = 10) {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** Fake timers and clock; advance() fires due timers in time order. */
export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.t = start;
    this.timers = new Map();
    this.seq = 0;
    this.now = () => this.t;
    this.setTimeout = (fn, ms = 0) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Moves time forward by ms, firing every timer that falls due (and settling after each). */
  async advance(ms) {
    const end = this.t + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const [id, tm] of this.timers) {
        if (tm.at <= end && (next === null || tm.at < next[1].at)) next = [id, tm];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
      await settle();
    }
    this.t = end;
  }
}

/** A WebSocket class whose instances the test drives from the server side. */
export function makeWebSocket() {
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url);
      this.sent = [];
      this.readyState = 0;
      this.closedByClient = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeWebSocket.instances.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.closedByClient = { code, reason };
      this.readyState = 3;
    }
    // server side
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    message(obj) {
      this.onmessage?.({ data: typeof obj === "string" ? obj : JSON.stringify(obj) });
    }
    connected(payload = {}) {
      if (this.readyState === 0) this.open();
      this.message({ type: "hub.connected", payload: { transport: "websocket", heartbeatSeconds: 25, recovered: false, missed: 0, ...payload } });
    }
    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  FakeWebSocket.instances = [];
  return FakeWebSocket;
}

/** A fetch whose calls wait until the test answers them. */
export function makeFetch() {
  const calls = [];
  const enc = new TextEncoder();
  const fetch = (url, init = {}) =>
    new Promise((resolve, reject) => {
      const call = { url: new URL(url), init, headers: new Headers(init.headers), controller: null, aborted: false };
      call.body = init.body ? JSON.parse(init.body) : undefined;
      calls.push(call);
      init.signal?.addEventListener("abort", () => {
        call.aborted = true;
        const err = new DOMException("aborted", "AbortError");
        reject(err);
        try {
          call.controller?.error(err);
        } catch {
          // already closed
        }
      });
      call.respondSSE = () => {
        const stream = new ReadableStream({
          start(c) {
            call.controller = c;
          },
        });
        resolve(new Response(stream, { status: 200, headers: { "content-type": "text/event-stream" } }));
      };
      call.write = (text) => call.controller.enqueue(enc.encode(text));
      call.event = (env, id) => call.write(`${id ? `id: ${id}\n` : ""}event: ${env.type}\ndata: ${JSON.stringify(env)}\n\n`);
      call.connected = (payload = {}) =>
        call.event({ type: "hub.connected", payload: { transport: "sse", heartbeatSeconds: 25, recovered: false, missed: 0, ...payload } });
      call.end = () => call.controller.close();
      call.json = (status, obj) =>
        resolve(new Response(JSON.stringify(obj), { status, headers: { "content-type": "application/json" } }));
      call.fail = (msg = "network down") => reject(new TypeError(msg));
    });
  return { fetch, calls };
}

/** An in-memory Storage. */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}
