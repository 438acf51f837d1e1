// Package hub is the core of the push server: a per-user registry of
// connections (sharded by user id), publishing to users and to everyone,
// per-user history for resume, per-connection bounded queues, heartbeats,
// token expiry and graceful drain.
//
// The hub knows nothing of HTTP, WebSocket, JWT or fx. A transport registers a
// connection with [Hub.Register], giving the hub a [Sink]; the hub puts encoded
// [Message] values in the connection's queue and wakes the sink, and the
// transport drains the queue with [Conn.Next] and writes the bytes of its wire
// format ([Message.Frame] for WebSocket, [Message.SSE] for Server-Sent
// Events). Every event is encoded once per wire format and the same bytes are
// shared by all of its recipients.
//
// A queue is bounded: when it is full the connection is marked slow and
// aborted (once, asynchronously), so a slow client never blocks a publisher;
// it reconnects and resumes from the history.
package hub
