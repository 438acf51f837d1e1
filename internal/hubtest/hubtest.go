// Package hubtest is the test harness shared by every package's tests:
// wait for a condition with a deadline (Eventually), mint tokens (Token,
// ExpiredToken), reach the test Redis (RedisURL, RedisDB, RedisPrefix,
// StartRedisServer, StartRedisCluster), and the network bits tests need: a free loopback
// address, a loopback TCP pair and a TCP proxy the test can cut. It is
// test support only: no production code imports it.
//
// It imports nothing of ours but internal/auth (for minting), so that the
// tests of hub, hub/redisbroker, the transports and internal packages can
// use it without an import cycle. Starting the assembled app, which needs
// modules, lives in the subpackage hubtest/app.
package hubtest

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

// Eventually polls cond until it returns true, and fails t ("timed out
// waiting for what") when it has not within deadline. It is how a test
// waits for what another goroutine does; a bare sleep is never the way.
// cond runs on the test's goroutine, every millisecond at first, then
// less often (every 10 ms at most).
func Eventually(t testing.TB, deadline time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", deadline, what)
		}
		time.Sleep(wait) // the polling interval, not synchronisation
		wait = min(2*wait, 10*time.Millisecond)
	}
}

// Buffer is a bytes.Buffer that one goroutine may write while another
// reads it: an app's logs, a command's output. Its zero value is empty
// and ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// FreeAddr returns a loopback address ("127.0.0.1:port") whose port was
// free a moment ago, for a server that must keep its address across a
// restart.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TCPPair returns both ends of a real loopback TCP connection (two
// *net.TCPConn), closed when the test ends.
func TCPPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcp pair: %v", err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("tcp pair: %v", err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		t.Fatal("tcp pair: accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}
