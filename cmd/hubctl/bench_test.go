package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
)

// TestBench runs each scenario of `hubctl bench` against a real hub, small,
// and checks its one JSON line: every connection connected and every
// delivery arrived once.
func TestBench(t *testing.T) {
	th := app.Start(t, nil)
	for _, tt := range []struct {
		name string
		args []string
		want int // deliveries (0 for idle)
	}{
		{"idle ws", []string{"--scenario", "idle", "--transport", "ws", "--conns", "30", "--settle", "100ms"}, 0},
		{"idle sse", []string{"--scenario", "idle", "--transport", "sse", "--conns", "30", "--settle", "100ms"}, 0},
		{"fanout ws", []string{"--scenario", "fanout", "--transport", "ws", "--conns", "20", "--events", "5"}, 100},
		{"fanout sse", []string{"--scenario", "fanout", "--transport", "sse", "--conns", "20", "--events", "5"}, 100},
		{"unicast batched", []string{"--scenario", "unicast", "--transport", "ws", "--conns", "20", "--events", "40", "--batch", "10"}, 40},
		{"unicast, 10 users per broadcast call", []string{"--scenario", "unicast", "--transport", "ws", "--conns", "20", "--events", "40", "--batch", "10", "--unicast-api", "broadcast"}, 40},
		{"fanout ws compressed, JSON payloads", []string{"--scenario", "fanout", "--transport", "ws", "--conns", "20", "--events", "5",
			"--compression", "--payload-kind", "json", "--payload-bytes", "1024"}, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"bench", "--url", th.URL, "--secret", hubtest.Secret, "--api-key", hubtest.APIKey, "--timeout", "1m"}, tt.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if code := runContext(ctx, args, strings.NewReader(""), &out, &errOut); code != exitOK {
				t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
			}
			if strings.Count(out.String(), "\n") != 1 {
				t.Fatalf("want one JSON line, got %q", out.String())
			}
			var res struct {
				Conns, Connected                       int
				Deliveries, ExpectedDeliveries         int64
				Missing, Extra                         int64
				ConnectsPerSecond, DeliveriesPerSecond float64
				Compression                            bool
				BytesPerDelivery                       float64
				PayloadBytes                           int
			}
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("%v: %s", err, out.String())
			}
			if res.Connected != res.Conns || res.Conns == 0 || res.ConnectsPerSecond <= 0 {
				t.Fatalf("connected %d of %d (%.0f/s)", res.Connected, res.Conns, res.ConnectsPerSecond)
			}
			if res.Deliveries != int64(tt.want) || res.Missing != 0 || res.Extra != 0 {
				t.Fatalf("deliveries %d (want %d), missing %d, extra %d", res.Deliveries, tt.want, res.Missing, res.Extra)
			}
			if tt.want > 0 && (res.ExpectedDeliveries != int64(tt.want) || res.DeliveriesPerSecond <= 0) {
				t.Fatalf("expected %d, rate %v", res.ExpectedDeliveries, res.DeliveriesPerSecond)
			}
			if res.Compression && (res.BytesPerDelivery <= 0 || res.BytesPerDelivery*1.5 > float64(res.PayloadBytes)) {
				t.Fatalf("compressed: %.0f bytes per delivery of a %d-byte payload", res.BytesPerDelivery, res.PayloadBytes)
			}
		})
	}
	t.Run("usage", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code := runContext(context.Background(), []string{"bench", "--conns", "0", "--secret", "s"}, strings.NewReader(""), &out, &errOut)
		if code != exitUsage || !strings.Contains(errOut.String(), "--conns") {
			t.Fatalf("exit %d, %q", code, errOut.String())
		}
	})
}
