// Pure helpers of hub.js: backoff, refresh timing, close-code policy, URLs, JWT iat.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, refreshDelay, closeAction, joinURL, jwtIssuedAt, IdTracker } from "../hub.js";

test("backoffDelay stays within [0, min(maxMs, baseMs*2^n)]", () => {
  const b = { baseMs: 500, maxMs: 30000 };
  const tests = [
    { n: 0, wantCap: 500 },
    { n: 1, wantCap: 1000 },
    { n: 3, wantCap: 4000 },
    { n: 6, wantCap: 30000 },
    { n: 60, wantCap: 30000 },
    { n: 5000, wantCap: 30000 },
  ];
  for (const { n, wantCap } of tests) {
    assert.equal(backoffDelay(n, b, () => 0), 0, `n=${n} low`);
    const high = backoffDelay(n, b, () => 0.999999);
    assert.ok(high <= wantCap && high >= wantCap - 1, `n=${n}: ${high} near ${wantCap}`);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(n, b);
      assert.ok(d >= 0 && d <= wantCap && Number.isInteger(d), `n=${n}: ${d}`);
    }
  }
});

test("backoffDelay defaults and bad input", () => {
  assert.equal(backoffDelay(0, {}, () => 0.5), 250);
  assert.equal(backoffDelay(-3, {}, () => 0.5), 250);
  assert.equal(backoffDelay(NaN, { baseMs: 100, maxMs: 1000 }, () => 0.5), 50);
  assert.equal(backoffDelay(2, { baseMs: 100, maxMs: 1000 }, () => 2), 400); // random clamped to 1
});

test("refreshDelay: 80% of the lifetime, no earlier than 30 s before expiry", () => {
  const s = 1000;
  const tests = [
    { name: "short token: 80%", give: [0, 60 * s, 0], want: 48 * s },
    { name: "long token: 30 s before expiry", give: [0, 3600 * s, 0], want: 3570 * s },
    { name: "issued earlier", give: [0, 100 * s, 50 * s], want: 30 * s },
    { name: "unknown issue time uses now", give: [null, 10 * s, 0], want: 8 * s },
    { name: "past due", give: [0, 10 * s, 20 * s], want: 0 },
    { name: "issued after expiry is ignored", give: [50 * s, 10 * s, 0], want: 8 * s },
  ];
  for (const { name, give, want } of tests) assert.equal(refreshDelay(...give), want, name);
  assert.equal(refreshDelay(0, NaN, 0), null);
});

test("closeAction follows the close-code table", () => {
  const tests = [
    [1000, "close"],
    [1003, "close"],
    [1008, "close"],
    [1009, "close"],
    [4003, "close"],
    [1001, "shutdown"],
    [4001, "token"],
    [4008, "now"],
    [4029, "throttle"],
    [1006, "retry"],
    [1011, "retry"],
  ];
  for (const [give, want] of tests) assert.equal(closeAction(give), want, String(give));
});

test("joinURL keeps the base path prefix", () => {
  assert.equal(joinURL("https://x.test", "/ws/realtime").href, "https://x.test/ws/realtime");
  assert.equal(joinURL("https://x.test/push/?a=1#h", "/sse/realtime").href, "https://x.test/push/sse/realtime");
});

test("jwtIssuedAt reads iat, null otherwise", () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  assert.equal(jwtIssuedAt(`${b64({ alg: "HS256" })}.${b64({ sub: "u", iat: 1700 })}.sig`), 1700000);
  assert.equal(jwtIssuedAt(`${b64({})}.${b64({ sub: "u" })}.sig`), null);
  assert.equal(jwtIssuedAt("not-a-jwt"), null);
  assert.equal(jwtIssuedAt(null), null);
});

test("IdTracker passes each id once and forgets the oldest beyond capacity", () => {
  const ids = new IdTracker(3);
  assert.equal(ids.accept("a"), true);
  assert.equal(ids.accept("a"), false);
  assert.equal(ids.accept("b"), true);
  assert.equal(ids.accept("c"), true);
  assert.equal(ids.size, 3);
  assert.equal(ids.accept("d"), true); // evicts "a"
  assert.equal(ids.size, 3);
  assert.equal(ids.has("a"), false);
  assert.equal(ids.accept("b"), false);
  assert.equal(ids.accept("a"), true);
});

test("IdTracker default window is 1000", () => {
  const ids = new IdTracker();
  for (let i = 0; i < 1000; i++) assert.equal(ids.accept("e" + i), true);
  for (let i = 0; i < 1000; i++) assert.equal(ids.accept("e" + i), false);
  assert.equal(ids.accept("e1000"), true);
  assert.equal(ids.has("e0"), false);
});
