package modules_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
)

// BenchmarkResumeAfterUpdates: 1,000 devices (one per user) are away while
// each user's draft gets 200 updates spread over 10 keys (one API call per
// update, to all 1,000 users); then every device resumes over WebSocket
// from the last id it saw, 50 dialling at a time, and reads hub.connected
// and its replay. One op is the resume of all 1,000 (ns/op is their wall
// time); the publishing is not timed. Reported: the replayed events and
// envelope bytes per device, and each device's resume time (dial to the
// last replayed event), p50 and p99 over all ops. Without keys every
// device gets the 200 updates; with keys, 10.
//
//	go test -run '^$' -bench BenchmarkResumeAfterUpdates -benchtime 5x ./modules/
//
// The redis cases need HUB_REDIS_URL (database 7 is flushed).
func BenchmarkResumeAfterUpdates(b *testing.B) {
	for _, broker := range []string{"memory", "redis"} {
		for _, keyed := range []bool{false, true} {
			name := broker + "/no-keys"
			if keyed {
				name = broker + "/10-keys"
			}
			b.Run(name, func(b *testing.B) { benchResume(b, broker, keyed) })
		}
	}
}

const (
	resumeDevices = 1000
	resumeUpdates = 200
	resumeKeys    = 10
	resumeDialers = 50
)

func benchResume(b *testing.B, broker string, keyed bool) {
	mod := func(c *config.Config) {
		c.LogLevel = "warn"
		c.MaxPayload = 1 << 20
	}
	if broker == "redis" {
		u := hubtest.RedisDB(b, hubtest.RedisURL(b), clusterRedisDB)
		inner := mod
		mod = func(c *config.Config) { inner(c); c.Broker, c.RedisURL = "redis", u }
	}
	a := app.Start(b, mod)
	users := make([]string, resumeDevices)
	for i := range users {
		users[i] = fmt.Sprintf("resume-%04d", i)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	publish := func(body map[string]any) string {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, a.API+"/api/broadcast", bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", hubtest.APIKey)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var ans struct {
			Events []struct{ ID string }
		}
		if resp.StatusCode != http.StatusAccepted || json.NewDecoder(resp.Body).Decode(&ans) != nil || len(ans.Events) == 0 {
			b.Fatalf("publish: status %d", resp.StatusCode)
		}
		return ans.Events[0].ID
	}
	tokens := make([]string, resumeDevices)
	for i, u := range users {
		tokens[i] = hubtest.Token(b, u, time.Hour)
	}
	text := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."
	var (
		mu       sync.Mutex
		times    []time.Duration
		events   int
		replayed int
	)
	for b.Loop() {
		b.StopTimer()
		last := publish(map[string]any{"userIds": users, "type": "START"})
		for i := range resumeUpdates {
			body := map[string]any{"userIds": users, "type": "DRAFT_UPDATED",
				"payload": map[string]any{"draft": i % resumeKeys, "rev": i, "text": text}}
			if keyed {
				body["key"] = fmt.Sprintf("draft:%d", i%resumeKeys)
			}
			publish(body)
		}
		want := resumeUpdates
		if keyed {
			want = resumeKeys
		}
		b.StartTimer()

		work := make(chan string)
		var wg sync.WaitGroup
		for range resumeDialers {
			wg.Go(func() {
				for tok := range work {
					d, n, size, err := resumeOne(a.WSURL, tok, last)
					if err == nil && n != want {
						err = fmt.Errorf("replayed %d events, want %d", n, want)
					}
					if err != nil {
						b.Error(err)
						continue
					}
					mu.Lock()
					times = append(times, d)
					events += n
					replayed += size
					mu.Unlock()
				}
			})
		}
		for _, tok := range tokens {
			work <- tok
		}
		close(work)
		wg.Wait()
	}
	b.StopTimer()
	if len(times) == 0 {
		return
	}
	slices.Sort(times)
	n := float64(len(times))
	b.ReportMetric(float64(events)/n, "events/device")
	b.ReportMetric(float64(replayed)/n, "B/device")
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1000, "p99-ms")
}

// resumeOne dials a WebSocket resuming from last, reads hub.connected (it
// must be recovered) and the replay it announces, and returns the time
// from the dial to the last replayed event, the events and the envelope
// bytes replayed.
func resumeOne(wsURL, token, last string) (time.Duration, int, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, _, err := websocket.Dial(ctx, wsURL+"?token="+token+"&last_event_id="+url.QueryEscape(last),
		&websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("dial: %w", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	_, frame, err := c.Read(ctx)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("hub.connected: %w", err)
	}
	var hello struct {
		Type    string
		Payload struct {
			Recovered bool
			Missed    int
		}
	}
	if json.Unmarshal(frame, &hello) != nil || hello.Type != "hub.connected" || !hello.Payload.Recovered {
		return 0, 0, 0, fmt.Errorf("first frame %s, want hub.connected, recovered", frame)
	}
	size := 0
	for range hello.Payload.Missed {
		_, frame, err := c.Read(ctx)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("replay: %w", err)
		}
		size += len(frame)
	}
	return time.Since(start), hello.Payload.Missed, size, nil
}
