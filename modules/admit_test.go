package modules_test

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// upgradeRequest builds a WebSocket handshake request for the raw HTTP client.
func upgradeRequest(url string) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return req
}

func TestAdmissionBurst(t *testing.T) {
	th := startHub(t, func(c *config.Config) {
		c.ConnectRate = 0.01 // so that the bucket does not refill during the burst
		c.ConnectBurst = 10
		c.MaxConnectionsPerUser = 0
	})
	tok := th.token("alice", time.Hour)
	// a burst of fresh handshakes: only part of the bucket is theirs
	var mu sync.Mutex
	counts := map[int]int{}
	retryAfter := true
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range 2000 {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			url := th.URL + th.Config.SSEPath + "?token=" + tok
			if i%2 == 1 {
				url = "http" + th.WSURL[len("ws"):] + "?token=" + tok
			}
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			if i%2 == 1 {
				req = upgradeRequest(url)
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			counts[resp.StatusCode]++
			if resp.StatusCode >= 400 && resp.Header.Get("Retry-After") == "" {
				retryAfter = false
			}
		}(i)
	}
	wg.Wait()
	admitted := counts[http.StatusOK] + counts[http.StatusSwitchingProtocols]
	if admitted == 0 || admitted > 10 || counts[http.StatusServiceUnavailable]+counts[http.StatusTooManyRequests] != 2000-admitted {
		t.Fatalf("statuses %v", counts)
	}
	if !retryAfter {
		t.Fatal("a refusal without Retry-After")
	}
	// the node stays responsive
	req, _ := http.NewRequest(http.MethodGet, th.URL+"/healthz", nil)
	if status, _ := do(t, req); status != http.StatusOK {
		t.Fatalf("healthz %d", status)
	}
	// Made-up last event ids (not an id this hub could have issued) do
	// not count as resumes: a flood of them is refused like fresh clients
	// and leaves the reserve to the clients that really resume (issue 15).
	id := th.publish("BEFORE", nil, "alice")["alice"] // publishing takes no token
	epoch := id[:strings.LastIndexByte(id, '-')]
	bogus := []string{"x-1", epoch + "-999999", epoch + "-999999p", "zzz-0p", "1", "' or 1=1"}
	for i, last := range bogus {
		for _, sse := range []bool{false, true} {
			var req *http.Request
			if sse {
				req, _ = http.NewRequest(http.MethodGet, th.URL+th.Config.SSEPath+"?token="+tok, nil)
				req.Header.Set("Last-Event-ID", last)
			} else {
				req = upgradeRequest("http" + th.WSURL[len("ws"):] + "?token=" + tok + "&last_event_id=" + url.QueryEscape(last))
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("made-up id %d %q (sse %v): status %d, want 503 like a fresh client", i, last, sse, resp.StatusCode)
			}
		}
	}
	// a resuming client still gets in while fresh ones are refused, from
	// an event id or from a position, on either transport
	w, resp, err := th.dialWS(tok, id, nil)
	if err != nil {
		t.Fatalf("resuming client refused: %v %v", err, resp)
	}
	w.connected()
	s := th.mustSSE(tok, epoch+"-0p")
	s.connected()
	_, resp, err = th.dialWS(tok, "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("fresh client after the burst: %v %v", err, resp)
	}
}

func TestAdmissionPerIPCountsLiveWebSockets(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.MaxConnectionsPerIP = 2 })
	a := th.mustWS(th.token("alice", time.Hour), "")
	a.connected()
	th.mustWS(th.token("bob", time.Hour), "").connected()
	_, resp, err := th.dialWS(th.token("carol", time.Hour), "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection from one IP: %v %v", err, resp)
	}
	a.c.CloseNow()
	hubtest.Eventually(t, 5*time.Second, "the slot to be released", func() bool {
		w, _, err := th.dialWS(th.token("carol", time.Hour), "", nil)
		if err != nil {
			return false
		}
		w.connected()
		return true
	})
}

// TestAdmissionPerIPBehindTrustedProxy: with HUB_TRUSTED_PROXIES naming the
// peer (127.0.0.1 plays the proxy), the per-IP limit counts the address the
// proxy reports in X-Forwarded-For, and entries a client added on the left
// do not change it; without it the header is ignored (issue 15: behind a
// proxy every limit counted the proxy).
func TestAdmissionPerIPBehindTrustedProxy(t *testing.T) {
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	refused := func(th *testHub, user, header string) bool {
		t.Helper()
		w, resp, err := th.dialWS(th.token(user, time.Hour), "", xff(header))
		if err == nil {
			w.connected()
			return false
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s via %q: %v %v, want admitted or 429", user, header, err, resp)
		}
		return true
	}

	th := startHub(t, func(c *config.Config) {
		c.MaxConnectionsPerIP = 1
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	if refused(th, "alice", "203.0.113.1") {
		t.Fatal("first client behind the proxy refused")
	}
	if refused(th, "bob", "203.0.113.2") {
		t.Fatal("a second client behind the proxy counted as the first")
	}
	if !refused(th, "carol", "198.51.100.7, 203.0.113.1") {
		t.Fatal("a spoofed leftmost entry got past the limit of 203.0.113.1")
	}
	if !refused(th, "dave", "203.0.113.2, 127.0.0.1") {
		t.Fatal("a chain through a second trusted proxy did not count 203.0.113.2")
	}

	direct := startHub(t, func(c *config.Config) { c.MaxConnectionsPerIP = 1 })
	if refused(direct, "alice", "203.0.113.1") {
		t.Fatal("first client refused")
	}
	if !refused(direct, "bob", "203.0.113.2") {
		t.Fatal("X-Forwarded-For believed without HUB_TRUSTED_PROXIES")
	}
}
