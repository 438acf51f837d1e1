package admit_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubd/hub/internal/admit"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/hubtest"
)

// newServer serves /healthz and /connect. /connect runs the admission hook
// the way the transports do; an admitted request is answered 200 and, with
// ?hold=1, kept open (like an SSE stream) until the client goes away.
func newServer(t *testing.T, c *admit.Controller) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /connect", func(w http.ResponseWriter, r *http.Request) {
		resuming := r.URL.Query().Get("last_event_id") != ""
		if ok, status, code, after := c.Admit(r, resuming); !ok {
			httpx.RetryAfter(w, after)
			httpx.WriteError(w, status, code, "connection refused by admission control; retry later")
			return
		}
		w.WriteHeader(http.StatusOK)
		if r.URL.Query().Get("hold") == "" {
			return
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type result struct {
	status     int
	code       string
	retryAfter string
	resuming   bool
}

func handshake(client *http.Client, url string, resuming bool) (result, error) {
	if resuming {
		url += "?last_event_id=e-1"
	}
	resp, err := client.Get(url)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	res := result{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), resuming: resuming}
	if resp.StatusCode != http.StatusOK {
		var body struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return res, err
		}
		res.code = body.Error.Code
	}
	return res, nil
}

// TestFloodOverHTTP fires 2,000 handshakes from 50 goroutines at a bucket of
// 20 with a frozen clock: exactly 20 are admitted (at most 10 fresh, the rest
// held for resuming clients), every other gets 503 overloaded with a
// Retry-After that spreads them over the time the bucket needs (at most 50
// told 1 s, the last ones 30 s), and /healthz keeps answering meanwhile.
func TestFloodOverHTTP(t *testing.T) {
	clk := newClock()
	c := admit.New(admit.Options{Rate: 50, Burst: 20, Now: clk.Now})
	srv := newServer(t, c)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	const total, workers = 2000, 50
	var next atomic.Int64
	results := make(chan result, total)
	errs := make(chan error, total)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				res, err := handshake(client, srv.URL+"/connect", i%4 == 0)
				if err != nil {
					errs <- err
					continue
				}
				results <- res
			}
		})
	}
	health := make(chan error, 1)
	wg.Go(func() {
		hc := &http.Client{Timeout: 5 * time.Second}
		for range 20 {
			resp, err := hc.Get(srv.URL + "/healthz")
			if err != nil {
				health <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				health <- &statusError{resp.StatusCode}
				return
			}
		}
	})
	wg.Wait()
	close(results)
	close(errs)
	close(health)
	for err := range errs {
		t.Fatalf("handshake: %v", err)
	}
	if err := <-health; err != nil {
		t.Fatalf("healthz during the flood: %v", err)
	}

	var fresh, resumed, refused int
	told := map[int]int{} // refusals by Retry-After
	for res := range results {
		switch {
		case res.status == http.StatusOK && res.resuming:
			resumed++
		case res.status == http.StatusOK:
			fresh++
		case res.status == http.StatusServiceUnavailable && res.code == "overloaded" && res.retryAfter != "":
			secs, err := strconv.Atoi(res.retryAfter)
			if err != nil || secs < 1 || secs > 31 {
				t.Fatalf("Retry-After %q, want 1 to 31 s", res.retryAfter)
			}
			told[secs]++
			refused++
		default:
			t.Fatalf("unexpected answer %+v", res)
		}
	}
	if fresh+resumed != 20 || fresh > 10 || refused != total-20 {
		t.Errorf("fresh=%d resumed=%d refused=%d, want 20 admitted (<= 10 fresh) and %d refused",
			fresh, resumed, refused, total-20)
	}

	// the refused are told to come back spread over the time the bucket
	// needs for them (50/s), up to 30 s: not all after the same second
	if told[1] > 50 || told[30]+told[31] == 0 {
		t.Errorf("Retry-After not spread: %v", told)
	}

	// once Retry-After has passed, a client gets in again
	clk.Advance(time.Second)
	res, err := handshake(client, srv.URL+"/connect", false)
	if err != nil || res.status != http.StatusOK {
		t.Fatalf("after Retry-After: %+v, %v", res, err)
	}
}

type statusError struct{ status int }

func (e *statusError) Error() string { return http.StatusText(e.status) }

// TestPerIPOverHTTP holds connections open: the limit refuses the next with
// 429 too_many_connections, and closing one gives its slot back with no call
// from the handler (Admit releases when the request's context ends).
func TestPerIPOverHTTP(t *testing.T) {
	c := admit.New(admit.Options{PerIP: 2})
	srv := newServer(t, c)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	var open []*http.Response
	for range 2 {
		resp, err := client.Get(srv.URL + "/connect?hold=1")
		if err != nil {
			t.Fatalf("hold: %v", err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("hold status = %d", resp.StatusCode)
		}
		open = append(open, resp)
	}
	res, err := handshake(client, srv.URL+"/connect", true)
	if err != nil {
		t.Fatal(err)
	}
	if res.status != http.StatusTooManyRequests || res.code != "too_many_connections" || res.retryAfter != "1" {
		t.Fatalf("over the limit: %+v, want 429 too_many_connections Retry-After 1", res)
	}

	open[0].Body.Close()
	hubtest.Eventually(t, 5*time.Second, "slot released", func() bool { return c.Connections("127.0.0.1") == 1 })
	res, err = handshake(client, srv.URL+"/connect", false)
	if err != nil || res.status != http.StatusOK {
		t.Fatalf("after a close: %+v, %v", res, err)
	}
	open[1].Body.Close()
	hubtest.Eventually(t, 5*time.Second, "all slots released", func() bool { return c.Connections("127.0.0.1") == 0 })
}
