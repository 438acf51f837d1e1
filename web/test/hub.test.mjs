// The Hub state machine, driven with a fake WebSocket, a fake fetch and fake timers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Hub, HubError } from "../hub.js";
import { FakeClock, makeWebSocket, makeFetch, settle, MemoryStorage } from "./fakes.mjs";

/** A Hub wired to fakes; records its states and events. */
function setup(opts = {}) {
  const clock = new FakeClock();
  const WS = makeWebSocket();
  const f = makeFetch();
  const hub = new Hub({
    url: "http://hub.test",
    token: "tok-0",
    WebSocket: WS,
    fetch: f.fetch,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    window: null,
    ...opts,
  });
  const states = [];
  const events = [];
  hub.on("hub.state", (s) => states.push(s));
  hub.on("*", (e) => events.push(e));
  return { hub, clock, WS, calls: f.calls, states, events, ws: (i) => WS.instances.at(i ?? -1) };
}

const names = (states) => states.map((s) => s.state);
const ev = (id, type = "DRAFT_UPDATED", payload = {}) => ({ id, type, payload, timestamp: "2026-02-05T10:16:08.123Z" });

test("states are emitted asynchronously, first connecting then connected", async () => {
  const { hub, ws, WS, states } = setup();
  assert.equal(hub.state, "connecting");
  assert.deepEqual(states, []); // not yet: asynchronous
  await settle();
  assert.deepEqual(names(states), ["connecting"]);
  const w = ws();
  assert.equal(w.url.href, "ws://hub.test/ws/realtime?token=tok-0");
  hub.connect(); // no-op while connecting
  await settle();
  assert.equal(WS.instances.length, 1);
  w.connected({ recovered: false, missed: 0 });
  await settle();
  assert.deepEqual(states.at(-1), { state: "connected", transport: "websocket", recovered: false, missed: 0, connectionId: undefined });
  assert.equal(hub.transport, "websocket");
  hub.connect(); // no-op while connected
  await settle();
  assert.equal(names(states).length, 2);
  hub.close();
});

test("autoConnect:false stays idle until connect()", async () => {
  const { hub, WS, states } = setup({ autoConnect: false });
  await settle();
  assert.equal(hub.state, "idle");
  assert.equal(WS.instances.length, 0);
  hub.connect();
  await settle();
  assert.deepEqual(names(states), ["connecting"]);
  assert.equal(WS.instances.length, 1);
  hub.close();
  assert.equal(WS.instances.length, 1);
});

test("events reach type and * listeners once, control events only their type", async () => {
  const { hub, ws, events } = setup();
  const drafts = [];
  const connectedCtl = [];
  const off = hub.on("DRAFT_UPDATED", (e) => drafts.push(e.id));
  hub.on("hub.connected", (e) => connectedCtl.push(e.payload.connectionId));
  await settle();
  ws().connected({ connectionId: "c-1" });
  ws().message(ev("A-1"));
  ws().message(ev("A-2", "OTHER"));
  ws().message(ev("A-1")); // duplicate
  await settle();
  assert.deepEqual(drafts, ["A-1"]);
  assert.deepEqual(events.map((e) => e.id), ["A-1", "A-2"]);
  assert.deepEqual(connectedCtl, ["c-1"]);
  assert.equal(hub.lastEventId, "A-2");
  off();
  ws().message(ev("A-3"));
  await settle();
  assert.deepEqual(drafts, ["A-1"]);
  hub.close();
});

test("keyed and volatile envelopes reach listeners whole, over either transport", async () => {
  const keyedEv = { ...ev("K-1"), key: "draft:1" };
  const volatileEv = { ...ev("K-2", "TYPING", true), volatile: true };
  const ws = setup();
  const typed = [];
  ws.hub.on("DRAFT_UPDATED", (e) => typed.push(e));
  await settle();
  ws.ws().connected();
  ws.ws().message(keyedEv);
  ws.ws().message(volatileEv);
  await settle();
  assert.deepEqual(ws.events, [keyedEv, volatileEv]);
  assert.deepEqual(typed, [keyedEv]);
  assert.equal(ws.hub.lastEventId, "K-2"); // a volatile id is a place to resume from like any other
  ws.hub.close();

  const sse = setup({ transports: ["sse"] });
  await settle();
  sse.calls[0].respondSSE();
  sse.calls[0].connected();
  sse.calls[0].event(keyedEv, "K-1");
  sse.calls[0].event(volatileEv, "K-2");
  await settle();
  assert.deepEqual(sse.events, [keyedEv, volatileEv]);
  sse.hub.close();
});

test("reconnect resumes from lastEventId and drops the replay overlap", async () => {
  const { hub, ws, clock, events, states } = setup();
  await settle();
  ws().connected();
  ws().message(ev("A-1"));
  ws().message(ev("A-2"));
  await settle();
  ws().serverClose(1006);
  await settle();
  assert.equal(states.at(-1).state, "reconnecting");
  assert.equal(states.at(-1).delayMs, 250); // n=0: 0.5 * 500
  await clock.advance(250);
  const w = ws();
  assert.equal(w.url.searchParams.get("last_event_id"), "A-2");
  w.connected({ recovered: true, missed: 1 });
  w.message(ev("A-2")); // overlap
  w.message(ev("A-3"));
  await settle();
  assert.deepEqual(events.map((e) => e.id), ["A-1", "A-2", "A-3"]);
  assert.deepEqual(states.at(-1), { state: "connected", transport: "websocket", recovered: true, missed: 1, connectionId: undefined });
  hub.close();
});

test("backoff grows per attempt and resets after hub.connected", async () => {
  const { hub, ws, clock, states } = setup({ random: () => 0.999999, transports: ["websocket"] });
  await settle();
  const delays = [];
  for (let i = 0; i < 4; i++) {
    ws().serverClose(1006);
    await settle();
    assert.equal(clock.timers.size, 1, "only the retry timer");
    const delay = [...clock.timers.values()][0].at - clock.t;
    delays.push(delay);
    await clock.advance(delay);
  }
  assert.deepEqual(delays, [499, 999, 1999, 3999]);
  ws().connected();
  await settle();
  ws().serverClose(1006);
  await settle();
  assert.equal(states.at(-1).delayMs, 499);
  hub.close();
});

test("a transport failing twice before hub.connected falls back; 5 min later the preferred one is tried again", async () => {
  const { hub, ws, WS, clock, calls } = setup();
  await settle();
  ws().serverClose(1006);
  await clock.advance(1000);
  assert.equal(WS.instances.length, 2);
  ws().serverClose(1006);
  await clock.advance(1000);
  assert.equal(WS.instances.length, 2);
  assert.equal(calls.length, 1, "third attempt goes to SSE");
  const c = calls[0];
  assert.equal(c.url.href, "http://hub.test/sse/realtime");
  assert.equal(c.headers.get("authorization"), "Bearer tok-0");
  assert.equal(c.headers.get("accept"), "text/event-stream");
  c.respondSSE();
  c.connected();
  await settle();
  assert.equal(hub.transport, "sse");
  // lost before 5 minutes: stays on SSE
  c.write(": ping\n");
  await clock.advance(30_000);
  c.end();
  await clock.advance(1000);
  assert.equal(calls.length, 2);
  calls[1].respondSSE();
  calls[1].write(": ping\n\n");
  calls[1].connected();
  await settle();
  // 5 minutes after the first hub.connected on SSE (with heartbeats): back to WebSocket first
  for (let i = 0; i < 6; i++) {
    calls[1].write(": ping\n");
    await clock.advance(50_000);
  }
  calls[1].end();
  await clock.advance(1000);
  assert.equal(WS.instances.length, 3);
  assert.equal(calls.length, 2);
  hub.close();
});

test("close codes that end the client", async () => {
  for (const code of [1000, 1003, 1008, 1009, 4003]) {
    const { hub, ws, clock, states } = setup();
    await settle();
    ws().connected();
    ws().serverClose(code, "bye");
    await settle();
    assert.deepEqual(states.at(-1), { state: "closed", transport: null, error: { code, reason: "bye" } }, String(code));
    assert.equal(hub.state, "closed");
    assert.equal(clock.timers.size, 0, `timers left after ${code}`);
  }
});

test("server hints: 1001 random up to 3 s, 4008 at once, 4029 at least 5 s", async () => {
  const tests = [
    { code: 1001, want: 1500 },
    { code: 4008, want: 0 },
    { code: 4029, want: 5000 },
  ];
  for (const { code, want } of tests) {
    const { hub, ws, WS, clock, states } = setup();
    await settle();
    ws().connected();
    ws().serverClose(code, "x");
    await settle();
    assert.equal(states.at(-1).state, "reconnecting");
    assert.equal(states.at(-1).delayMs, want, String(code));
    await clock.advance(want);
    assert.equal(WS.instances.length, 2, String(code));
    hub.close();
  }
});

test("4001 with a fixed token ends the client; with getToken it reconnects with a fresh one", async () => {
  {
    const { ws, states } = setup();
    await settle();
    ws().connected();
    ws().serverClose(4001, "token expired");
    await settle();
    assert.deepEqual(states.at(-1).error, { code: 4001, reason: "token expired" });
  }
  {
    let n = 0;
    const { hub, ws, clock } = setup({ token: undefined, getToken: async () => "fresh-" + ++n });
    await settle();
    assert.equal(ws().url.searchParams.get("token"), "fresh-1");
    ws().connected();
    ws().serverClose(4001, "token expired");
    await clock.advance(0);
    assert.equal(ws().url.searchParams.get("token"), "fresh-2");
    hub.close();
  }
});

test("hub.ping is answered with hub.pong; silence beyond 2 heartbeats drops the connection", async () => {
  const { hub, ws, WS, clock, states } = setup();
  await settle();
  const w = ws();
  w.connected({ heartbeatSeconds: 10 });
  await settle();
  w.message({ type: "hub.ping" });
  assert.deepEqual(w.sent, [{ type: "hub.pong" }]);
  for (let i = 0; i < 5; i++) {
    await clock.advance(15_000);
    w.message({ type: "hub.ping" });
  }
  assert.equal(hub.state, "connected");
  await clock.advance(25_001);
  assert.equal(states.at(-1).state, "reconnecting");
  assert.equal(states.at(-1).error.code, "timeout");
  assert.ok(w.closedByClient);
  await clock.advance(1000);
  assert.equal(WS.instances.length, 2);
  hub.close();
});

test("no hub.connected within connectTimeoutMs counts as a failure", async () => {
  const { hub, clock, states } = setup({ connectTimeoutMs: 1000 });
  await settle();
  await clock.advance(1000);
  assert.equal(states.at(-1).state, "reconnecting");
  hub.close();
});

test("WebSocket token refresh at 80% of the lifetime", async () => {
  let n = 0;
  const { hub, ws, clock } = setup({ token: undefined, getToken: async () => "t" + ++n });
  await settle();
  const w = ws();
  w.connected({ tokenExpiresAt: new Date(clock.t + 100_000).toISOString(), heartbeatSeconds: 1000 });
  await clock.advance(79_000);
  assert.deepEqual(w.sent, []);
  await clock.advance(1_000);
  assert.deepEqual(w.sent, [{ type: "hub.refresh", token: "t2" }]);
  w.message({ type: "hub.refreshed", payload: { tokenExpiresAt: new Date(clock.t + 100_000).toISOString() } });
  await clock.advance(80_000);
  assert.deepEqual(w.sent.at(-1), { type: "hub.refresh", token: "t3" });
  hub.close();
});

test("SSE: resume header, token refresh by a quiet reconnect, hub.expired, hub.shutdown retry", async () => {
  let n = 0;
  const { hub, clock, calls, states, events } = setup({ token: undefined, getToken: async () => "s" + ++n, transports: ["sse"] });
  await settle();
  calls[0].respondSSE();
  calls[0].write("retry: 2000\n\n");
  calls[0].connected({ tokenExpiresAt: new Date(clock.t + 10_000).toISOString() });
  calls[0].event(ev("E-1"), "E-1");
  await settle();
  assert.equal(hub.lastEventId, "E-1");
  await clock.advance(8_000); // refresh: reconnect with the new token
  assert.equal(calls.length, 2);
  assert.ok(calls[0].aborted);
  assert.equal(calls[1].headers.get("authorization"), "Bearer s2");
  assert.equal(calls[1].headers.get("last-event-id"), "E-1");
  calls[1].respondSSE();
  calls[1].connected({ recovered: true });
  calls[1].event(ev("E-1"), "E-1"); // overlap
  calls[1].event(ev("E-2"), "E-2");
  await settle();
  assert.deepEqual(names(states), ["connecting", "connected"], "quiet reconnect");
  assert.deepEqual(events.map((e) => e.id), ["E-1", "E-2"]);
  // hub.expired: fresh token, reconnect at once
  calls[1].write('event: hub.expired\ndata: {"type":"hub.expired"}\n\n');
  await clock.advance(0);
  assert.equal(calls.length, 3);
  assert.equal(calls[2].headers.get("authorization"), "Bearer s3");
  calls[2].respondSSE();
  calls[2].connected({ recovered: true });
  // hub.shutdown: the server's retry value
  calls[2].write('retry: 1234\nevent: hub.shutdown\ndata: {"type":"hub.shutdown"}\n\n');
  await settle();
  assert.equal(states.at(-1).state, "reconnecting");
  assert.equal(states.at(-1).delayMs, 1234);
  await clock.advance(1233);
  assert.equal(calls.length, 3);
  await clock.advance(1);
  assert.equal(calls.length, 4);
  hub.close();
});

test("SSE hub.closed is handled like a WebSocket close with its code", async () => {
  const tests = [
    { name: "4003 ends the client", give: { code: 4003, reason: "disconnected by server" }, want: { state: "closed", error: { code: 4003, reason: "disconnected by server" } } },
    { name: "4008 reconnects at once", give: { code: 4008, reason: "slow consumer" }, want: { state: "reconnecting", error: { code: 4008, reason: "slow consumer" }, delayMs: 0 } },
    { name: "1008 ends the client", give: { code: 1008, reason: "policy" }, want: { state: "closed", error: { code: 1008, reason: "policy" } } },
  ];
  for (const { name, give, want } of tests) {
    const { hub, calls, states, events } = setup({ transports: ["sse"] });
    const closedEvents = [];
    hub.on("hub.closed", (e) => closedEvents.push(e));
    await settle();
    calls[0].respondSSE();
    calls[0].connected();
    calls[0].event(ev("C-1"), "C-1");
    calls[0].event({ type: "hub.closed", payload: give });
    await settle();
    const got = states.at(-1);
    assert.equal(got.state, want.state, name);
    assert.deepEqual(got.error, want.error, name);
    if (want.delayMs !== undefined) assert.equal(got.delayMs, want.delayMs, name);
    assert.equal(hub.state, want.state, name);
    assert.ok(calls[0].aborted, `${name}: stream released`);
    assert.deepEqual(events.map((e) => e.id), ["C-1"], name);
    if (want.state === "closed") {
      assert.equal(closedEvents.length, 1, `${name}: hub.closed listener`);
      assert.deepEqual(closedEvents[0].payload, give, name);
      assert.equal(calls.length, 1, `${name}: no reconnect`);
    }
    hub.close();
  }
});

test("SSE 401 with a fixed token closes; 403 closes; 429 waits 5 s", async () => {
  const tests = [
    { status: 401, code: "invalid_token", want: { state: "closed", error: { code: 4001, reason: "invalid_token", status: 401 } } },
    { status: 403, code: "forbidden", want: { state: "closed", error: { code: 1008, reason: "forbidden", status: 403 } } },
    { status: 429, code: "too_many_connections", want: { state: "reconnecting", delayMs: 5000 } },
  ];
  for (const { status, code, want } of tests) {
    const { hub, calls, states } = setup({ transports: ["sse"] });
    await settle();
    calls[0].json(status, { error: { code, message: "m" } });
    await settle();
    const got = states.at(-1);
    assert.equal(got.state, want.state, String(status));
    if (want.error) assert.deepEqual(got.error, want.error);
    if (want.delayMs !== undefined) assert.equal(got.delayMs, want.delayMs);
    hub.close();
  }
});

test("online/offline: offline drops the connection, online retries at once", async () => {
  const win = new EventTarget();
  const { hub, ws, WS, clock, states } = setup({ window: win });
  await settle();
  ws().connected();
  await settle();
  win.dispatchEvent(new Event("offline"));
  await settle();
  assert.equal(states.at(-1).state, "reconnecting");
  assert.equal(states.at(-1).error.code, "offline");
  win.dispatchEvent(new Event("online"));
  await settle();
  assert.equal(WS.instances.length, 2);
  assert.equal(clock.timers.size, 1); // only the connect watchdog
  hub.close();
  win.dispatchEvent(new Event("offline"));
  win.dispatchEvent(new Event("online"));
  await settle();
  assert.equal(WS.instances.length, 2, "window listeners removed by close()");
});

test("close() is final and releases everything", async () => {
  const { hub, ws, clock, states } = setup();
  await settle();
  const w = ws();
  w.connected({ tokenExpiresAt: new Date(clock.t + 100_000).toISOString() });
  await settle();
  const p = hub.send("OP", 1);
  hub.close();
  await assert.rejects(p, (e) => e instanceof HubError && e.code === "closed");
  await settle();
  assert.equal(clock.timers.size, 0);
  assert.deepEqual(w.closedByClient, { code: 1000, reason: "client closing" });
  assert.equal(w.onmessage, null);
  assert.deepEqual(states.at(-1), { state: "closed", transport: null });
  assert.equal(hub.transport, null);
  hub.connect();
  await settle();
  assert.equal(hub.state, "closed");
  await assert.rejects(hub.send("OP", 1), (e) => e.code === "closed");
});

test("WebSocket sends: in order, one at a time, retryable nack retried, final nack rejects", async () => {
  const { hub, ws, clock } = setup();
  const p1 = hub.send("OP", { n: 1 }, { idempotencyKey: "k1" });
  const p2 = hub.send("OP", { n: 2 }, { idempotencyKey: "k2" });
  const p3 = hub.send("OP", { n: 3 });
  await settle();
  const w = ws();
  assert.deepEqual(w.sent, [], "waits in the outbox while connecting");
  w.connected();
  await settle();
  assert.equal(w.sent.length, 1);
  assert.deepEqual(w.sent[0], { type: "hub.send", ref: w.sent[0].ref, idempotencyKey: "k1", event: { type: "OP", payload: { n: 1 } } });
  w.message({ type: "hub.ack", payload: { ref: w.sent[0].ref, status: 200, result: { ok: 1 } } });
  assert.deepEqual(await p1, { ref: w.sent[0].ref, status: 200, result: { ok: 1 } });
  await settle();
  assert.equal(w.sent.length, 2);
  w.message({ type: "hub.nack", payload: { ref: w.sent[1].ref, retryable: true, error: { code: "rate_limited", message: "slow down" } } });
  await settle();
  assert.equal(w.sent.length, 2, "retry waits for the backoff");
  await clock.advance(250);
  assert.equal(w.sent.length, 3);
  assert.equal(w.sent[2].idempotencyKey, "k2");
  assert.notEqual(w.sent[2].ref, w.sent[1].ref);
  w.message({ type: "hub.ack", payload: { ref: w.sent[2].ref, status: 200, result: null } });
  await p2;
  await settle();
  assert.match(w.sent[3].idempotencyKey, /^k-/);
  w.message({ type: "hub.nack", payload: { ref: w.sent[3].ref, retryable: false, error: { code: "upstream_disabled", message: "off" } } });
  await assert.rejects(p3, (e) => e instanceof HubError && e.code === "upstream_disabled" && e.message === "off");
  assert.equal(hub.pendingSends, 0);
  hub.close();
});

test("an unanswered WebSocket send is resent after a reconnect with the same key", async () => {
  const { hub, ws, clock } = setup();
  await settle();
  ws().connected();
  const p = hub.send("OP", 1, { idempotencyKey: "k" });
  await settle();
  assert.equal(ws().sent.length, 1);
  ws().serverClose(1006);
  await clock.advance(1000);
  const w2 = ws();
  w2.connected();
  await settle();
  assert.equal(w2.sent.length, 1);
  assert.equal(w2.sent[0].idempotencyKey, "k");
  w2.message({ type: "hub.ack", payload: { ref: w2.sent[0].ref, status: 200, result: "done" } });
  assert.equal((await p).result, "done");
  hub.close();
});

test("a send waiting out a retry backoff goes at once after a reconnect", async () => {
  const { hub, ws, clock } = setup({ backoff: { baseMs: 60000, maxMs: 60000 }, random: () => 0.99 });
  await settle();
  ws().connected();
  const p = hub.send("OP", 1, { idempotencyKey: "k" });
  await settle();
  const w1 = ws();
  w1.message({ type: "hub.nack", payload: { ref: w1.sent[0].ref, retryable: true, error: { code: "upstream_timeout", message: "slow" } } });
  await settle();
  assert.equal(w1.sent.length, 1, "the retry waits for its backoff");
  w1.serverClose(4008, "slow consumer"); // reconnects at once
  await clock.advance(10);
  const w2 = ws();
  assert.notEqual(w2, w1);
  w2.connected();
  await settle();
  assert.equal(w2.sent.length, 1, "sent on the new connection without waiting for the old backoff");
  assert.equal(w2.sent[0].idempotencyKey, "k");
  w2.message({ type: "hub.ack", payload: { ref: w2.sent[0].ref, status: 200, result: null } });
  await p;
  hub.close();
});

test("SSE sends POST /api/send; 5xx and network errors are retried", async () => {
  const { hub, clock, calls } = setup({ transports: ["sse"] });
  await settle();
  calls[0].respondSSE();
  calls[0].connected();
  await settle();
  const p = hub.send("OP", { a: 1 }, { idempotencyKey: "k9" });
  await settle();
  const post = calls[1];
  assert.equal(post.url.href, "http://hub.test/api/send");
  assert.equal(post.init.method, "POST");
  assert.equal(post.headers.get("authorization"), "Bearer tok-0");
  assert.deepEqual(post.body, { idempotencyKey: "k9", event: { type: "OP", payload: { a: 1 } } });
  post.json(502, { error: { code: "upstream_error", message: "bad gateway" } });
  await clock.advance(250);
  calls[2].fail();
  await clock.advance(500);
  assert.equal(calls.length, 4);
  calls[3].json(200, { status: 200, result: { saved: true } });
  const ack = await p;
  assert.deepEqual(ack.result, { saved: true });
  const p2 = hub.send("OP", 2);
  await settle();
  calls[4].json(404, { error: { code: "upstream_disabled", message: "no upstream" } });
  await assert.rejects(p2, (e) => e.code === "upstream_disabled");
  hub.close();
});

test('outbox "local" survives a reload and flushes in order', async () => {
  const storage = new MemoryStorage();
  {
    const { hub } = setup({ outbox: "local", storage, autoConnect: false });
    hub.send("OP", 1, { idempotencyKey: "a" }).catch(() => {});
    hub.send("OP", 2, { idempotencyKey: "b" }).catch(() => {});
    assert.equal(JSON.parse(storage.getItem("hub.outbox:http://hub.test")).length, 2);
    hub.close();
  }
  const { hub, ws } = setup({ outbox: "local", storage });
  const acks = [];
  hub.on("hub.ack", (e) => acks.push(e.payload.ref));
  assert.equal(hub.pendingSends, 2);
  await settle();
  const w = ws();
  w.connected();
  await settle();
  assert.equal(w.sent[0].idempotencyKey, "a");
  w.message({ type: "hub.ack", payload: { ref: w.sent[0].ref, status: 200 } });
  await settle();
  assert.equal(w.sent[1].idempotencyKey, "b");
  w.message({ type: "hub.ack", payload: { ref: w.sent[1].ref, status: 200 } });
  await settle();
  assert.equal(acks.length, 2);
  assert.equal(storage.getItem("hub.outbox:http://hub.test"), null);
  hub.close();
});

test("send validates its input", async () => {
  const { hub } = setup({ autoConnect: false });
  await assert.rejects(hub.send("hub.x", 1), (e) => e.code === "invalid_type");
  await assert.rejects(hub.send("bad type", 1), (e) => e.code === "invalid_type");
  const cyc = {};
  cyc.self = cyc;
  await assert.rejects(hub.send("OP", cyc), (e) => e.code === "invalid_payload");
  hub.close();
});

test("a throwing listener does not stop the others", async () => {
  const errors = [];
  const { hub, ws } = setup({ onListenerError: (e) => errors.push(e) });
  const got = [];
  hub.on("X", () => {
    throw new Error("boom");
  });
  hub.on("X", (e) => got.push(e.id));
  await settle();
  ws().connected();
  ws().message(ev("1", "X"));
  await settle();
  assert.deepEqual(got, ["1"]);
  assert.equal(errors.length, 1);
  hub.close();
});
