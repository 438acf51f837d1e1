package admit_test

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubd/hub/internal/admit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a fake clock that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBucket(t *testing.T) {
	tests := []struct {
		name     string
		give     admit.Options
		calls    int
		resuming func(i int) bool
		step     time.Duration // clock advance after each call
		want     int
	}{
		{name: "fresh burst keeps the reserve", give: admit.Options{Rate: 50, Burst: 20},
			calls: 2000, resuming: never, want: 10},
		{name: "resuming burst takes the whole bucket", give: admit.Options{Rate: 50, Burst: 20},
			calls: 2000, resuming: always, want: 20},
		{name: "fresh over two seconds", give: admit.Options{Rate: 50, Burst: 20},
			calls: 2000, resuming: never, step: time.Millisecond, want: 10 + 99},
		{name: "resuming over two seconds", give: admit.Options{Rate: 50, Burst: 20},
			calls: 2000, resuming: always, step: time.Millisecond, want: 20 + 99},
		{name: "no reserve", give: admit.Options{Rate: 50, Burst: 20, ResumeShare: -1},
			calls: 2000, resuming: never, want: 20},
		{name: "full reserve still admits one fresh", give: admit.Options{Rate: 50, Burst: 20, ResumeShare: 1},
			calls: 2000, resuming: never, want: 1},
		{name: "default burst is twice the rate", give: admit.Options{Rate: 50, ResumeShare: -1},
			calls: 2000, resuming: never, want: 100},
		{name: "default burst at least one", give: admit.Options{Rate: 0.1},
			calls: 2000, resuming: always, want: 1},
		{name: "unlimited", give: admit.Options{},
			calls: 2000, resuming: never, want: 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			tt.give.Now = clk.Now
			var outcomes sync.Map
			tt.give.Observe = func(o string) {
				v, _ := outcomes.LoadOrStore(o, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
			c := admit.New(tt.give)
			admitted := 0
			for i := range tt.calls {
				r := httptest.NewRequest(http.MethodGet, "/ws/realtime", nil)
				ok, status, code, after := c.Admit(r, tt.resuming(i))
				if ok {
					admitted++
				} else {
					if status != http.StatusServiceUnavailable || code != "overloaded" {
						t.Fatalf("refusal = %d %q, want 503 overloaded", status, code)
					}
					if after < time.Second {
						t.Fatalf("retryAfter = %v, want >= 1s", after)
					}
				}
				clk.Advance(tt.step)
			}
			if admitted != tt.want {
				t.Errorf("admitted %d of %d, want %d", admitted, tt.calls, tt.want)
			}
			count := func(o string) int {
				v, ok := outcomes.Load(o)
				if !ok {
					return 0
				}
				return int(v.(*atomic.Int64).Load())
			}
			if got := count(admit.OutcomeAdmitted); got != tt.want {
				t.Errorf("observed admitted = %d, want %d", got, tt.want)
			}
			if got := count(admit.OutcomeOverloaded); got != tt.calls-tt.want {
				t.Errorf("observed overloaded = %d, want %d", got, tt.calls-tt.want)
			}
		})
	}
}

func never(int) bool  { return false }
func always(int) bool { return true }

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name     string
		give     admit.Options
		resuming bool
		want     time.Duration
	}{
		// one token per 10 s; the only token is gone
		{name: "slow bucket resuming", give: admit.Options{Rate: 0.1, Burst: 1}, resuming: true, want: 10 * time.Second},
		// fresh clients took the bucket down to the reserve (2 of 4): one more token at 0.5/s
		{name: "slow bucket fresh", give: admit.Options{Rate: 0.5, Burst: 4}, want: 2 * time.Second},
		// a token every 20 ms is rounded up to the minimum
		{name: "fast bucket", give: admit.Options{Rate: 50, Burst: 20}, resuming: true, want: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			tt.give.Now = clk.Now
			c := admit.New(tt.give)
			var after time.Duration
			for i := 0; ; i++ {
				release, ok, _, _, a := c.Acquire("192.0.2.1", tt.resuming)
				if !ok {
					after = a
					break
				}
				release()
				if i > 100 {
					t.Fatal("bucket never refused")
				}
			}
			if after != tt.want {
				t.Errorf("retryAfter = %v, want %v", after, tt.want)
			}
			// after waiting that long the client is admitted
			clk.Advance(after)
			if _, ok, _, _, _ := c.Acquire("192.0.2.1", tt.resuming); !ok {
				t.Errorf("refused after waiting Retry-After")
			}
		})
	}
}

// TestResumingFirst drains the bucket down to the reserve with fresh
// clients: then fresh ones are refused while resuming ones still get in.
func TestResumingFirst(t *testing.T) {
	clk := newClock()
	c := admit.New(admit.Options{Rate: 50, Burst: 20, Now: clk.Now})
	fresh := 0
	for range 100 {
		if _, ok, _, _, _ := c.Acquire("192.0.2.1", false); ok {
			fresh++
		}
	}
	if fresh != 10 {
		t.Fatalf("fresh admitted = %d, want 10", fresh)
	}
	for i := range 10 {
		if _, ok, _, _, _ := c.Acquire("192.0.2.2", true); !ok {
			t.Fatalf("resuming client %d refused with the reserve left", i)
		}
		if _, ok, status, code, _ := c.Acquire("192.0.2.3", false); ok || status != 503 || code != "overloaded" {
			t.Fatalf("fresh client admitted below the reserve (ok=%v %d %q)", ok, status, code)
		}
	}
	if _, ok, _, _, _ := c.Acquire("192.0.2.2", true); ok {
		t.Fatal("resuming client admitted from an empty bucket")
	}
	// 20 ms later one token is back: it is a resuming client's, not a fresh one's
	clk.Advance(20 * time.Millisecond)
	if _, ok, _, _, _ := c.Acquire("192.0.2.3", false); ok {
		t.Fatal("fresh client took a reserved token")
	}
	if _, ok, _, _, _ := c.Acquire("192.0.2.2", true); !ok {
		t.Fatal("resuming client refused a refilled token")
	}
}

func TestPerIP(t *testing.T) {
	var overloaded atomic.Int64
	c := admit.New(admit.Options{PerIP: 2, Observe: func(o string) {
		if o == admit.OutcomeIPLimited {
			overloaded.Add(1)
		}
	}})
	r1, ok, _, _, _ := c.Acquire("192.0.2.1", false)
	if !ok {
		t.Fatal("first refused")
	}
	r2, ok, _, _, _ := c.Acquire("192.0.2.1", true)
	if !ok {
		t.Fatal("second refused")
	}
	_, ok, status, code, after := c.Acquire("192.0.2.1", true)
	if ok || status != http.StatusTooManyRequests || code != "too_many_connections" || after < time.Second {
		t.Fatalf("third = %v %d %q %v, want refused 429 too_many_connections >= 1s", ok, status, code, after)
	}
	if _, ok, _, _, _ := c.Acquire("192.0.2.9", false); !ok {
		t.Fatal("another IP refused")
	}
	r1()
	r1() // a second call gives back nothing more
	if got := c.Connections("192.0.2.1"); got != 1 {
		t.Fatalf("connections after release = %d, want 1", got)
	}
	r3, ok, _, _, _ := c.Acquire("192.0.2.1", false)
	if !ok {
		t.Fatal("refused after a release")
	}
	if _, ok, _, _, _ := c.Acquire("192.0.2.1", false); ok {
		t.Fatal("admitted over the limit after a double release")
	}
	r2()
	r3()
	if got := c.Connections("192.0.2.1"); got != 0 {
		t.Errorf("connections after all released = %d, want 0", got)
	}
	if got := overloaded.Load(); got != 2 {
		t.Errorf("ip_limited observed %d times, want 2", got)
	}
}

// TestPerIPRefusalKeepsTokens: a client refused for its IP takes no token.
func TestPerIPRefusalKeepsTokens(t *testing.T) {
	clk := newClock()
	c := admit.New(admit.Options{Rate: 1, Burst: 3, ResumeShare: -1, PerIP: 1, Now: clk.Now})
	if _, ok, _, _, _ := c.Acquire("192.0.2.1", false); !ok {
		t.Fatal("first refused")
	}
	for range 50 {
		if _, ok, _, code, _ := c.Acquire("192.0.2.1", false); ok || code != "too_many_connections" {
			t.Fatalf("over-limit IP: ok=%v code=%q", ok, code)
		}
	}
	for _, ip := range []string{"192.0.2.2", "192.0.2.3"} {
		if _, ok, _, _, _ := c.Acquire(ip, false); !ok {
			t.Fatalf("%s refused: per-IP refusals took tokens", ip)
		}
	}
}

func TestNilController(t *testing.T) {
	var c *admit.Controller
	ok, _, _, _ := c.Admit(httptest.NewRequest(http.MethodGet, "/", nil), false)
	if !ok {
		t.Error("nil controller refused")
	}
	release, ok, _, _, _ := c.Acquire("x", true)
	if !ok || release == nil {
		t.Fatal("nil controller Acquire refused")
	}
	release()
}

// TestConcurrent checks, under -race, that the per-IP limit holds with many
// goroutines admitting and releasing, and that a frozen bucket admits
// exactly its size.
func TestConcurrent(t *testing.T) {
	t.Run("per IP", func(t *testing.T) {
		const limit = 3
		c := admit.New(admit.Options{PerIP: limit})
		ips := []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}
		var held [3]atomic.Int64
		var over atomic.Int64
		var wg sync.WaitGroup
		for g := range 40 {
			wg.Go(func() {
				for i := range 200 {
					k := (g + i) % len(ips)
					release, ok, _, _, _ := c.Acquire(ips[k], i%2 == 0)
					if !ok {
						continue
					}
					if held[k].Add(1) > limit {
						over.Add(1)
					}
					held[k].Add(-1)
					release()
				}
			})
		}
		wg.Wait()
		if n := over.Load(); n != 0 {
			t.Errorf("limit exceeded %d times", n)
		}
		for _, ip := range ips {
			if got := c.Connections(ip); got != 0 {
				t.Errorf("%s holds %d after all released", ip, got)
			}
		}
	})
	t.Run("bucket", func(t *testing.T) {
		clk := newClock()
		c := admit.New(admit.Options{Rate: 50, Burst: 20, Now: clk.Now})
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for g := range 50 {
			wg.Go(func() {
				for i := range 40 {
					if _, ok, _, _, _ := c.Acquire(fmt.Sprintf("10.0.%d.%d", g, i), true); ok {
						admitted.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if got := admitted.Load(); got != 20 {
			t.Errorf("admitted %d, want 20", got)
		}
	})
}

// A storm of refusals is told to come back spread over the time the bucket
// needs to admit them all, not all after the same second: each refused
// client waits behind the ones refused before it that are not due yet, and
// when everyone comes back at the time they were told, the bucket admits
// them (every refusal is at least 1 s, none beyond the bound).
func TestRetryAfterSpreadsAStorm(t *testing.T) {
	clk := newClock()
	const rate = 100
	c := admit.New(admit.Options{Rate: rate, Burst: rate, ResumeShare: -1, Now: clk.Now})
	perSecond := map[time.Duration]int{}
	var refusedAfter []time.Duration
	for range 5 * rate { // 500 clients at once; 100 tokens in the bucket
		if _, ok, _, _, after := c.Acquire("192.0.2.1", true); !ok {
			// as the header tells it: whole seconds, rounded up
			secs := time.Duration(math.Ceil(after.Seconds())) * time.Second
			perSecond[secs]++
			refusedAfter = append(refusedAfter, after)
		}
	}
	if len(refusedAfter) != 4*rate {
		t.Fatalf("%d refused, want %d", len(refusedAfter), 4*rate)
	}
	// 400 refused at 100/s: told 1 s, 2 s, 3 s, 4 s, about 100 each
	for s := time.Second; s <= 4*time.Second; s += time.Second {
		if n := perSecond[s]; n < rate-1 || n > rate+1 {
			t.Errorf("%d clients told %v, want about %d (all: %v)", n, s, rate, perSecond)
		}
	}
	for i := 1; i < len(refusedAfter); i++ {
		if refusedAfter[i] < refusedAfter[i-1] {
			t.Fatalf("refusal %d told %v after one told %v", i, refusedAfter[i], refusedAfter[i-1])
		}
	}
	// each group comes back when told: the bucket has refilled for it
	admitted := 0
	for s := time.Second; s <= 4*time.Second; s += time.Second {
		clk.Advance(time.Second)
		for range perSecond[s] {
			if _, ok, _, _, _ := c.Acquire("192.0.2.1", true); ok {
				admitted++
			}
		}
	}
	if admitted < 4*rate-4 {
		t.Errorf("%d of %d admitted when they came back as told", admitted, 4*rate)
	}
}

// The spread is bounded: however many are refused, none is told to wait
// more than 30 s of the rate (plus the one token it needs).
func TestRetryAfterBounded(t *testing.T) {
	clk := newClock()
	c := admit.New(admit.Options{Rate: 10, Burst: 10, ResumeShare: -1, Now: clk.Now})
	var longest time.Duration
	for range 10000 {
		if _, ok, _, _, after := c.Acquire("192.0.2.1", true); !ok {
			longest = max(longest, after)
		}
	}
	if longest > 31*time.Second || longest < 30*time.Second {
		t.Errorf("longest Retry-After %v, want 30-31 s", longest)
	}
}
