package hubtest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fatalT records Fatalf and ends the goroutine, as testing.T does.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventually(t *testing.T) {
	calls := 0
	hubtest.Eventually(t, 5*time.Second, "the third call", func() bool { calls++; return calls == 3 })
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}

	f := &fatalT{TB: t}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		hubtest.Eventually(f, 30*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if !strings.Contains(f.msg, "timed out") || !strings.Contains(f.msg, "never") {
		t.Errorf("failure %q, want it to name the timeout and what", f.msg)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("gave up after %s, before its deadline", d)
	}
}

func TestBuffer(t *testing.T) {
	var b hubtest.Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := len(b.String()); n != 400 {
		t.Errorf("len = %d, want 400", n)
	}
}

func TestTokens(t *testing.T) {
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	id, aerr := v.Verify(hubtest.Token(t, "u1", time.Hour, auth.RoleAdmin, auth.RoleService))
	if aerr != nil {
		t.Fatalf("Token: %v", aerr)
	}
	if id.UserID != "u1" || !slices.Equal(id.Roles, []string{"admin", "service"}) {
		t.Errorf("identity %+v, want u1 with admin and service", id)
	}
	if id, aerr := v.Verify(hubtest.Token(t, "u2", time.Hour)); aerr != nil || id.UserID != "u2" || len(id.Roles) != 0 {
		t.Errorf("user token: %+v, %v", id, aerr)
	}
	if _, aerr := v.Verify(hubtest.ExpiredToken(t, "u1", auth.RoleService)); aerr == nil || aerr.Code != auth.CodeTokenExpired {
		t.Errorf("ExpiredToken: %v, want %s", aerr, auth.CodeTokenExpired)
	}
	if _, aerr := v.Verify(hubtest.TokenWith(t, "another-secret-0123456789abcdef0123", "u1", time.Hour)); aerr == nil || aerr.Code != auth.CodeInvalidToken {
		t.Errorf("TokenWith another secret: %v, want %s", aerr, auth.CodeInvalidToken)
	}
}

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// roundTrip dials addr, sends a line and reads it back.
func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("read %q", line)
	}
	return nil
}

func TestProxy(t *testing.T) {
	px := hubtest.StartProxy(t, echo(t))
	if err := roundTrip(px.Addr()); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	// the echo's "ping\n" came back through it
	hubtest.Eventually(t, 5*time.Second, "the proxy to count the echo", func() bool { return px.ToTarget() == 5 && px.FromTarget() == 5 })

	// a connection open at the cut is closed
	c, err := net.Dial("tcp", px.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	px.Cut()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("a connection survived the cut")
	}
	if err := roundTrip(px.Addr()); err == nil {
		t.Fatal("a new connection got through while cut")
	}

	px.Restore()
	if err := roundTrip(px.Addr()); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
}

func TestRedisPrefix(t *testing.T) {
	u := hubtest.RedisURL(t)
	c := hubtest.RedisClient(t, u)
	var p string
	t.Run("keys", func(t *testing.T) {
		p = hubtest.RedisPrefix(t, u)
		if !strings.HasPrefix(p, "hubtest:") || p == hubtest.RedisPrefix(t, u) {
			t.Fatalf("prefix %q, want hubtest:<random>: and a new one each call", p)
		}
		if err := c.Set(context.Background(), p+"k", "v", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	})
	if n := c.Exists(context.Background(), p+"k").Val(); n != 0 {
		t.Errorf("the key of the prefix outlived its test")
	}
}

func TestRedisServer(t *testing.T) {
	r := hubtest.StartRedisServer(t)
	c := hubtest.RedisClient(t, r.URL())
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	r.Kill()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered after Kill")
	}
	r.Start()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	if n := c.Exists(ctx, "k").Val(); n != 0 {
		t.Error("a key survived a restart without persistence")
	}

	db := hubtest.RedisDB(t, r.URL(), 3)
	if !strings.HasSuffix(db, "/3") {
		t.Fatalf("RedisDB = %q, want database 3", db)
	}
	c3 := hubtest.RedisClient(t, db)
	_ = c3.Set(ctx, "x", "1", 0).Err()
	hubtest.RedisDB(t, r.URL(), 3)
	if n := c3.DBSize(ctx).Val(); n != 0 {
		t.Errorf("database 3 holds %d keys after RedisDB, want 0", n)
	}
}

func TestTCPPair(t *testing.T) {
	server, client := hubtest.TCPPair(t)
	if _, ok := server.(*net.TCPConn); !ok {
		t.Fatalf("server end is a %T, want *net.TCPConn", server)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(server, b); err != nil || b[0] != 'x' {
		t.Fatalf("read %q, %v", b, err)
	}
}
