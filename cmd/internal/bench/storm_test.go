package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
)

// stormRedisDB is the Redis database of this package's tests.
const stormRedisDB = 11

// stormLine is what the tests read of the JSON line.
type stormLine struct {
	Connected int          `json:"connected"`
	Error     string       `json:"error"`
	Storm     *stormResult `json:"storm"`

	log string // hubbench's stderr, with the output of the nodes it started
}

func runStormArgs(t *testing.T, args ...string) stormLine {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := Run(ctx, "hubbench", append([]string{"--scenario", "storm", "--secret", hubtest.Secret, "--api-key", hubtest.APIKey, "--timeout", "90s"}, args...), &out, &errb)
	var res stormLine
	if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil || res.Storm == nil {
		t.Fatalf("result %q (%v), run: %v\n%s", out.String(), jerr, err, errb.String())
	}
	if err != nil {
		t.Fatalf("run: %v\n%s\n%s", err, out.String(), errb.String())
	}
	res.log = errb.String()
	return res
}

// checkStorm asserts that every device of the storm went live, recovered
// (recovered:true, the missed count, each missed event once) and got the
// broadcast after it.
func checkStorm(t *testing.T, res stormLine, devices, reconnecting int) {
	t.Helper()
	s := res.Storm
	if res.Error != "" || res.Connected != devices || s.Devices != devices || s.Reconnecting != reconnecting {
		t.Fatalf("connected %d, devices %d, reconnecting %d (want %d, %d): %s", res.Connected, s.Devices, s.Reconnecting, devices, reconnecting, res.Error)
	}
	if s.Live != reconnecting || s.Recovered != reconnecting || s.RecoveredShare != 1 || s.NotRecovered+s.WrongMissed != 0 {
		t.Fatalf("live %d, recovered %d (share %v), not recovered %d, wrong missed count %d, of %d",
			s.Live, s.Recovered, s.RecoveredShare, s.NotRecovered, s.WrongMissed, reconnecting)
	}
	if s.MissingEvents != 0 || s.ExtraEvents != 0 || s.LiveCheck != devices {
		t.Fatalf("missing %d, extra %d, live check reached %d of %d", s.MissingEvents, s.ExtraEvents, s.LiveCheck, devices)
	}
	if s.LiveMs == nil || s.AllLiveMs <= 0 || s.Attempts < reconnecting {
		t.Fatalf("time to live %+v, all live %v ms, attempts %d", s.LiveMs, s.AllLiveMs, s.Attempts)
	}
}

// TestStormDrop: a tiny network-drop storm against an in-process hub whose
// admission control lets fewer devices in per second than come back, so
// that some are refused (503 with Retry-After) and retry.
func TestStormDrop(t *testing.T) {
	th := app.Start(t, func(c *config.Config) {
		c.MaxConnectionsPerUser = 0
		// at most 10 + 5 of the 30 come in within the first 500 ms:
		// refusals are certain
		c.ConnectRate, c.ConnectBurst = 10, 10
		c.LogLevel = "warn"
	})
	csvPath := filepath.Join(t.TempDir(), "storm.csv")
	res := runStormArgs(t, "--url", th.URL, "--api-url", th.API, "--mode", "drop", "--conns", "30",
		"--devices-per-user", "3", "--sse-share", "0.5", "--missed", "2", "--csv", csvPath)
	checkStorm(t, res, 30, 30)
	s := res.Storm
	if s.SSE != 15 || s.MissedPerDevice != 3 {
		t.Errorf("SSE devices %d, missed per device %d; want 15, 3", s.SSE, s.MissedPerDevice)
	}
	if s.Refusals["503 overloaded"] == 0 || s.RefusalsNoRetryAfter != 0 || s.RetryAfterSeconds == nil || s.RetryDelayMs == nil {
		t.Errorf("refusals %v (%d without Retry-After, Retry-After %v, retry delays %+v): want 503 overloaded, each with Retry-After",
			s.Refusals, s.RefusalsNoRetryAfter, s.RetryAfterSeconds, s.RetryDelayMs)
	}
	if s.HeldAtT0 == nil {
		t.Error("no hubConnectionsAtT0: the hub's hub_connections gauge was not read")
	}
	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) < 3 || rows[0][1] != "live" {
		t.Fatalf("csv: %d rows, %v", len(rows), err)
	}
	if last := rows[len(rows)-1][1]; last != "30" {
		t.Errorf("the csv's last live count is %s, want 30", last)
	}
}

// TestStormRestart: a tiny restart storm, two hubd child processes on
// Redis; the devices of the restarted node come back recovered.
func TestStormRestart(t *testing.T) {
	redisURL := hubtest.RedisDB(t, hubtest.RedisURL(t), stormRedisDB)
	bin := filepath.Join(t.TempDir(), "hubd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../hubd").CombinedOutput(); err != nil {
		t.Fatalf("build hubd: %v\n%s", err, out)
	}
	for k, v := range map[string]string{
		"HUB_BROKER": "redis", "HUB_REDIS_URL": redisURL, "HUB_JWT_SECRET": hubtest.Secret, "HUB_API_KEYS": hubtest.APIKey,
		"HUB_MAX_CONNECTIONS_PER_USER": "0", "HUB_SHUTDOWN_TIMEOUT": "3s", "HUB_LOG_LEVEL": "warn", "HUB_LOG_FORMAT": "json",
	} {
		t.Setenv(k, v)
	}
	u1, u2 := "http://"+hubtest.FreeAddr(t), "http://"+hubtest.FreeAddr(t)
	res := runStormArgs(t, "--url", u1, "--url2", u2, "--hubd", bin, "--mode", "restart", "--conns", "40",
		"--devices-per-user", "4", "--missed", "2")
	checkStorm(t, res, 40, 20)
	if res.Storm.RestartMs <= 0 || res.Storm.DrainMs <= 0 {
		t.Errorf("drain %v ms, restart %v ms", res.Storm.DrainMs, res.Storm.RestartMs)
	}
	// Every device answers the drain (close 1001 answered, the SSE stream
	// read to its end): the restarted node drained before its timeout
	// and cut nothing (a device that kept its socket open without
	// answering held the drain to the timeout).
	for _, warn := range []string{"drain timeout", "endpoint goroutines still running"} {
		if strings.Contains(res.log, warn) {
			t.Errorf("a node logged %q:\n%s", warn, res.log)
		}
	}
}

// TestStormFlags: the storm's flags are checked.
func TestStormFlags(t *testing.T) {
	base := []string{"--scenario", "storm", "--secret", "s", "--api-key", "k"}
	for _, bad := range [][]string{
		{"--mode", "flood"},
		{"--sse-share", "1.5"},
		{"--sse-share", "NaN"},
		{"--missed", "-1"},
		{"--mode", "restart"}, // no --url2, --hubd
		{"--mode", "restart", "--url2", "http://127.0.0.1:1"}, // no --hubd
	} {
		if _, err := parseFlags("hubbench", &bytes.Buffer{}, append(base, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	o, err := parseFlags("hubbench", &bytes.Buffer{}, append(base, "--devices-per-user", "4", "--conns", strconv.Itoa(maxConns)))
	if err != nil || o.perUser != 4 || o.storm.mode != "drop" {
		t.Errorf("good flags: %+v, %v", o.storm, err)
	}
}

// TestClientAnswersClose: a WebSocket client that reads the hub's close
// frame answers it with the same code before it reports the close.
func TestClientAnswersClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answer := make(chan []byte, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			answer <- nil
			return
		}
		defer sc.Close()
		_, _ = sc.Write([]byte{0x88, 0x04, 0x03, 0xe9, 'b', 'y'}) // close 1001 "by"
		_ = sc.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 8) // FIN|close, masked length 2, mask key, code
		if _, err := io.ReadFull(sc, b); err != nil {
			answer <- nil
			return
		}
		answer <- b
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &client{nc: nc, br: bufio.NewReader(nc), ws: true}
	_, err = c.next()
	if code, ok := closeCode(err); !ok || code != 1001 {
		t.Fatalf("next: %v, want the close 1001", err)
	}
	if b := <-answer; !bytes.Equal(b, []byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9}) {
		t.Fatalf("the client answered % x, want a masked close frame with 1001 (88 82 00 00 00 00 03 e9)", b)
	}
}
