// SSEParser: the text/event-stream format, fed in arbitrary chunks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SSEParser } from "../hub.js";

function parse(chunks) {
  const out = [];
  const p = new SSEParser({
    onEvent: (ev) => out.push({ kind: "event", ...ev }),
    onRetry: (ms) => out.push({ kind: "retry", ms }),
    onComment: (text) => out.push({ kind: "comment", text }),
  });
  for (const c of chunks) p.push(c);
  return out;
}

const STREAM =
  "retry: 2875\n" +
  'event: hub.connected\ndata: {"type":"hub.connected"}\n\n' +
  ": ping\n\n" +
  'id: A-1\nevent: DRAFT\ndata: {"id":"A-1"}\n\n' +
  "data: line one\ndata: line two\n\n" +
  "event: nodata\n\n" +
  "id: A-2\r\nevent: CR\r\ndata: crlf\r\n\r\n" +
  "data: bare cr\r\r";

const WANT = [
  { kind: "retry", ms: 2875 },
  { kind: "event", type: "hub.connected", data: '{"type":"hub.connected"}', id: undefined },
  { kind: "comment", text: "ping" },
  { kind: "event", type: "DRAFT", data: '{"id":"A-1"}', id: "A-1" },
  { kind: "event", type: "message", data: "line one\nline two", id: undefined },
  { kind: "event", type: "CR", data: "crlf", id: "A-2" },
  { kind: "event", type: "message", data: "bare cr", id: undefined },
];

test("SSEParser: whole stream at once", () => {
  assert.deepEqual(parse([STREAM]), WANT);
});

test("SSEParser: split at every position (two chunks)", () => {
  for (let i = 0; i <= STREAM.length; i++) {
    assert.deepEqual(parse([STREAM.slice(0, i), STREAM.slice(i)]), WANT, `split at ${i}`);
  }
});

test("SSEParser: one character at a time", () => {
  assert.deepEqual(parse([...STREAM]), WANT);
});

test("SSEParser: CR at a chunk end followed by LF is one line break", () => {
  assert.deepEqual(parse(["data: a\r", "\n", "data: b\r", "\n\r", "\n"]), [
    { kind: "event", type: "message", data: "a\nb", id: undefined },
  ]);
});

test("SSEParser: fields", () => {
  const tests = [
    { name: "no space after colon", give: "data:x\n\n", want: [{ kind: "event", type: "message", data: "x", id: undefined }] },
    { name: "only one space stripped", give: "data:  x\n\n", want: [{ kind: "event", type: "message", data: " x", id: undefined }] },
    { name: "field without colon", give: "data\ndata\n\n", want: [{ kind: "event", type: "message", data: "\n", id: undefined }] },
    { name: "bad retry ignored", give: "retry: 12a\nretry: -1\nretry:\n", want: [] },
    { name: "unknown field ignored", give: "foo: bar\ndata: d\n\n", want: [{ kind: "event", type: "message", data: "d", id: undefined }] },
    { name: "event without data ignored", give: "id: 9\nevent: x\n\n", want: [] },
    { name: "incomplete event at end not dispatched", give: "data: partial\n", want: [] },
    { name: "id with NUL ignored", give: "id: a\0b\ndata: d\n\n", want: [{ kind: "event", type: "message", data: "d", id: undefined }] },
    { name: "BOM at start", give: "\uFEFFdata: d\n\n", want: [{ kind: "event", type: "message", data: "d", id: undefined }] },
    { name: "comment without space", give: ":hi\n", want: [{ kind: "comment", text: "hi" }] },
  ];
  for (const { name, give, want } of tests) assert.deepEqual(parse([give]), want, name);
});

test("SSEParser: lastEventId is sticky", () => {
  const p = new SSEParser();
  p.push("id: 5\ndata: a\n\ndata: b\n\n");
  assert.equal(p.lastEventId, "5");
});
