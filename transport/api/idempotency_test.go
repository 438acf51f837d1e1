package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// counter is a publish function that counts its calls and answers the count.
type counter struct {
	n    int
	fail bool
}

func (c *counter) publish() (json.RawMessage, *apiError) {
	c.n++
	if c.fail {
		return nil, &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "boom"}
	}
	return json.RawMessage(`{"id":"` + strconv.Itoa(c.n) + `"}`), nil
}

func TestIdemCache(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		max       int
		run       func(c *idemCache, clk *clock, p *counter)
		wantCalls int
		wantKeys  int
	}{
		{"repeat within the TTL", 10, func(c *idemCache, clk *clock, p *counter) {
			c.do(ctx, "k", p.publish)
			clk.add(IdempotencyTTL - time.Second)
			c.do(ctx, "k", p.publish)
		}, 1, 1},
		{"repeat after the TTL", 10, func(c *idemCache, clk *clock, p *counter) {
			c.do(ctx, "k", p.publish)
			clk.add(IdempotencyTTL)
			c.do(ctx, "k", p.publish)
		}, 2, 1},
		{"expired keys are dropped lazily", 10, func(c *idemCache, clk *clock, p *counter) {
			c.do(ctx, "a", p.publish)
			c.do(ctx, "b", p.publish)
			clk.add(IdempotencyTTL)
			c.do(ctx, "c", p.publish)
		}, 3, 1},
		{"bounded: the oldest key goes first", 2, func(c *idemCache, clk *clock, p *counter) {
			c.do(ctx, "a", p.publish)
			c.do(ctx, "b", p.publish)
			c.do(ctx, "c", p.publish) // evicts a
			c.do(ctx, "b", p.publish) // still known
			c.do(ctx, "a", p.publish) // forgotten: publishes, evicts c
		}, 4, 2},
		{"a failure is not remembered", 10, func(c *idemCache, clk *clock, p *counter) {
			p.fail = true
			c.do(ctx, "k", p.publish)
			p.fail = false
			c.do(ctx, "k", p.publish)
			c.do(ctx, "k", p.publish)
		}, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Unix(1700000000, 0)}
			c := newIdemCache(tt.max, IdempotencyTTL, clk.now)
			p := &counter{}
			tt.run(c, clk, p)
			if p.n != tt.wantCalls {
				t.Errorf("%d publishes, want %d", p.n, tt.wantCalls)
			}
			if got := c.len(); got != tt.wantKeys {
				t.Errorf("%d keys held, want %d", got, tt.wantKeys)
			}
		})
	}
}

func TestIdemCacheAnswer(t *testing.T) {
	c := newIdemCache(10, IdempotencyTTL, time.Now)
	p := &counter{}
	first, err := c.do(context.Background(), "k", p.publish)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.do(context.Background(), "k", p.publish)
	if err != nil || string(again) != string(first) {
		t.Errorf("got %s %v, want %s", again, err, first)
	}
}

func TestIdemCacheFailedAttemptsStayBounded(t *testing.T) {
	c := newIdemCache(4, IdempotencyTTL, time.Now)
	p := &counter{fail: true}
	for i := range 10000 {
		c.do(context.Background(), strconv.Itoa(i), p.publish)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.order) - c.head; n > 2*4+1024+1 {
		t.Errorf("%d entries queued after failed attempts, want a bounded number", n)
	}
}
