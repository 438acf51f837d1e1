package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
)

func TestToken(t *testing.T) {
	out := mustRun(t, "", "token", "--secret", hubtest.Secret, "--alg", "HS384", "--sub", "ops", "--roles", "admin, service", "--ttl", "2h")
	tok, err := jwt.Parse([]byte(strings.TrimSpace(out)), jwt.WithKey(jwa.HS384, []byte(hubtest.Secret)))
	if err != nil {
		t.Fatalf("parse %q: %v", out, err)
	}
	roles, _ := tok.Get("roles")
	if tok.Subject() != "ops" || fmt.Sprint(roles) != "[admin service]" {
		t.Errorf("sub %q roles %v, want ops [admin service]", tok.Subject(), roles)
	}
	if ttl := time.Until(tok.Expiration()); ttl < time.Hour || ttl > 2*time.Hour+time.Minute {
		t.Errorf("exp in %s, want about 2h", ttl)
	}

	t.Setenv("HUB_JWT_SECRET", hubtest.Secret)
	out = mustRun(t, "", "token", "--sub", "u1")
	if _, err := jwt.Parse([]byte(strings.TrimSpace(out)), jwt.WithKey(jwa.HS256, []byte(hubtest.Secret))); err != nil {
		t.Errorf("token with the secret from HUB_JWT_SECRET: %v", err)
	}
}

// token mints a token through `hubctl token`.
func token(t *testing.T, sub string, roles ...string) string {
	t.Helper()
	return strings.TrimSpace(mustRun(t, "", "token", "--secret", hubtest.Secret, "--sub", sub, "--roles", strings.Join(roles, ",")))
}

// tailRun is a `hubctl tail` running in a goroutine.
type tailRun struct {
	t      *testing.T
	cancel context.CancelFunc
	out    *hubtest.Buffer
	errOut *hubtest.Buffer
	done   chan int
}

func startTail(t *testing.T, args ...string) *tailRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &tailRun{t: t, cancel: cancel, out: &hubtest.Buffer{}, errOut: &hubtest.Buffer{}, done: make(chan int, 1)}
	go func() {
		tr.done <- runContext(ctx, append([]string{"tail"}, args...), strings.NewReader(""), tr.out, tr.errOut)
	}()
	t.Cleanup(func() {
		cancel()
		<-tr.done
	})
	return tr
}

// envelopes returns the lines printed so far, decoded.
func (tr *tailRun) envelopes() []map[string]any {
	tr.t.Helper()
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(tr.out.String()), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			tr.t.Fatalf("tail printed %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitType waits for an envelope of type typ and returns it.
func (tr *tailRun) waitType(typ string) map[string]any {
	tr.t.Helper()
	var found map[string]any
	hubtest.Eventually(tr.t, 5*time.Second, "a "+typ+" line from tail (stderr: "+tr.errOut.String()+")", func() bool {
		for _, e := range tr.envelopes() {
			if e["type"] == typ {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// waitErr waits until tail's stderr contains text.
func (tr *tailRun) waitErr(text string) {
	tr.t.Helper()
	hubtest.Eventually(tr.t, 10*time.Second, fmt.Sprintf("%q on tail's stderr", text), func() bool {
		return strings.Contains(tr.errOut.String(), text)
	})
}

// exit waits for tail to end and returns its status.
func (tr *tailRun) exit() int {
	tr.t.Helper()
	select {
	case code := <-tr.done:
		tr.done <- code // for the cleanup
		return code
	case <-time.After(10 * time.Second):
		tr.t.Fatal("tail did not end")
		return -1
	}
}

func TestPublishAndTail(t *testing.T) {
	for _, transport := range []string{"ws", "sse"} {
		t.Run(transport, func(t *testing.T) {
			th := app.Start(t, nil)
			u1 := token(t, "u1")
			tr := startTail(t, "--url", th.URL, "--token", u1, "--transport", transport)
			connected := tr.waitType("hub.connected")
			if p, _ := connected["payload"].(map[string]any); p["userId"] != "u1" {
				t.Errorf("hub.connected %v, want userId u1", connected)
			}

			out := mustRun(t, "", "publish", "--url", th.URL, "--api-key", hubtest.APIKey,
				"--user", "u1", "--user", "u2", "--type", "DRAFT_UPDATED", "--payload", `{"draftId":42}`)
			var answer struct {
				Events []struct{ UserID, ID string }
			}
			decode(t, out, &answer)
			if len(answer.Events) != 2 || answer.Events[0].UserID != "u1" || answer.Events[0].ID == "" {
				t.Fatalf("publish printed %s", out)
			}
			ev := tr.waitType("DRAFT_UPDATED")
			if ev["id"] != answer.Events[0].ID || fmt.Sprint(ev["payload"]) != "map[draftId:42]" || ev["timestamp"] == nil {
				t.Errorf("tail printed %v, want id %s", ev, answer.Events[0].ID)
			}

			// to all, with a service JWT minted by hubctl token
			out = mustRun(t, "", "publish", "--url", th.URL, "--token", token(t, "svc", "service"), "--all", "--type", "NEWS", "--payload", `"hi"`)
			var all struct{ ID string }
			decode(t, out, &all)
			if ev := tr.waitType("NEWS"); ev["id"] != all.ID || ev["payload"] != "hi" {
				t.Errorf("tail printed %v, want id %s", ev, all.ID)
			}

			// the API disconnect ends tail with 4003: exit 1, the code on stderr,
			// and a hub.closed line on both transports
			out = mustRun(t, "", "disconnect", "--url", th.URL, "--api-key", hubtest.APIKey, "--user", "u1")
			if strings.TrimSpace(out) != `{"closed":1}` {
				t.Errorf("disconnect printed %q, want {\"closed\":1}", out)
			}
			if code := tr.exit(); code != exitError {
				t.Errorf("tail exit %d after a disconnect, want %d", code, exitError)
			}
			closed := tr.waitType("hub.closed")
			if p, _ := closed["payload"].(map[string]any); p["code"] != 4003.0 || p["reason"] != "disconnected by server" {
				t.Errorf("hub.closed line %v, want code 4003 and its reason", closed)
			}
			if e := tr.errOut.String(); !strings.Contains(e, "4003") || !strings.Contains(e, "disconnected by server") {
				t.Errorf("stderr %q, want the close code 4003 and its reason", e)
			}
			if strings.Contains(tr.errOut.String()+tr.out.String(), u1) {
				t.Error("tail printed the token")
			}
		})
	}
}

// TestPublishKeyAndVolatile: --key and --volatile reach the envelope that
// tail prints, and tail resuming from before them gets the newest event of
// each key and no volatile one.
func TestPublishKeyAndVolatile(t *testing.T) {
	th := app.Start(t, nil)
	pub := func(args ...string) string {
		t.Helper()
		var a struct {
			ID     string
			Events []struct{ ID string }
		}
		decode(t, mustRun(t, "", append([]string{"publish", "--url", th.URL, "--api-key", hubtest.APIKey}, args...)...), &a)
		if len(a.Events) > 0 {
			return a.Events[0].ID
		}
		return a.ID
	}
	start := pub("--users", "u1", "--type", "START")
	var draft string
	for i := range 3 {
		draft = pub("--users", "u1", "--type", "DRAFT", "--payload", fmt.Sprint(i), "--key", "draft:1")
	}
	pub("--users", "u1", "--type", "TYPING", "--volatile")
	banner := pub("--all", "--type", "BANNER", "--key", "banner")

	tr := startTail(t, "--url", th.URL, "--token", token(t, "u1"), "--last-event-id", start)
	connected := tr.waitType("hub.connected")
	if p, _ := connected["payload"].(map[string]any); p["recovered"] != true || p["missed"] != 2.0 {
		t.Fatalf("hub.connected %v, want recovered with 2 missed", connected)
	}
	ev := tr.waitType("BANNER")
	if ev["id"] != banner || ev["key"] != "banner" {
		t.Errorf("banner %v", ev)
	}
	evs := tr.envelopes()
	if len(evs) != 3 || evs[1]["id"] != draft || evs[1]["key"] != "draft:1" || evs[1]["payload"] != 2.0 {
		t.Fatalf("tail printed %v, want hub.connected, the last draft, the banner", evs)
	}
	typing := pub("--users", "u1", "--type", "TYPING", "--volatile")
	if ev := tr.waitType("TYPING"); ev["id"] != typing || ev["volatile"] != true {
		t.Errorf("live volatile event %v", ev)
	}
}

func TestTailResumeInterruptAndShutdown(t *testing.T) {
	for _, transport := range []string{"ws", "sse"} {
		t.Run(transport, func(t *testing.T) {
			th := app.Start(t, nil)
			u1 := token(t, "u1")
			var first, second struct{ Events []struct{ ID string } }
			decode(t, mustRun(t, "", "publish", "--url", th.URL, "--api-key", hubtest.APIKey, "--users", "u1", "--type", "A"), &first)
			decode(t, mustRun(t, "", "publish", "--url", th.URL, "--api-key", hubtest.APIKey, "--users", "u1", "--type", "B"), &second)

			tr := startTail(t, "--url", th.URL, "--token", u1, "--transport", transport, "--last-event-id", first.Events[0].ID)
			connected := tr.waitType("hub.connected")
			if p, _ := connected["payload"].(map[string]any); p["recovered"] != true || p["missed"] != 1.0 {
				t.Errorf("hub.connected %v, want recovered with 1 missed", connected)
			}
			if ev := tr.waitType("B"); ev["id"] != second.Events[0].ID {
				t.Errorf("replayed %v, want id %s", ev, second.Events[0].ID)
			}
			for _, e := range tr.envelopes() {
				if e["type"] == "A" {
					t.Errorf("replayed the event it resumed from: %v", e)
				}
			}

			// an interrupt ends tail with 0
			tr.cancel()
			if code := tr.exit(); code != exitOK {
				t.Errorf("exit %d after an interrupt, want 0", code)
			}

			// a server shutdown (1001 / hub.shutdown) is printed as a
			// hub.shutdown line on both transports, and tail reconnects
			// until interrupted
			tr2 := startTail(t, "--url", th.URL, "--token", u1, "--transport", transport, "--backoff-max", "100ms")
			tr2.waitType("hub.connected")
			th.Stop()
			tr2.waitType("hub.shutdown")
			tr2.waitErr("reconnecting in")
			if e := tr2.errOut.String(); !strings.Contains(e, "closed by the server: 1001 server shutdown") {
				t.Errorf("stderr %q, want the close code 1001", e)
			}
			tr2.cancel()
			if code := tr2.exit(); code != exitOK {
				t.Errorf("exit %d after an interrupt while reconnecting, want 0 (stderr %q)", code, tr2.errOut.String())
			}
		})
	}
}

func TestPublishStdin(t *testing.T) {
	th := app.Start(t, nil)
	tr := startTail(t, "--url", th.URL, "--token", token(t, "u7"))
	tr.waitType("hub.connected")

	// 1001 messages: two batches; one refused message in the middle
	var in strings.Builder
	for i := range 1001 {
		switch i {
		case 500:
			in.WriteString(`{"userIds":["u7"],"type":"hub.bad"}` + "\n\n")
		case 1000:
			in.WriteString(`{"all":true,"type":"LAST","payload":[1,2]}` + "\n")
		default:
			fmt.Fprintf(&in, `{"userIds":["u7"],"type":"N","payload":%d}`+"\n", i)
		}
	}
	r := hubctl(t, in.String(), "publish", "--url", th.URL, "--api-key", hubtest.APIKey, "--stdin")
	if r.code != exitError {
		t.Errorf("exit %d with a refused message, want 1", r.code)
	}
	if !strings.Contains(r.stderr, "message 500") || !strings.Contains(r.stderr, "invalid_request") {
		t.Errorf("stderr %q, want message 500 named with invalid_request", r.stderr)
	}
	var answer struct {
		Results []struct {
			Events []struct{ UserID, ID string }
			ID     string
			Error  *struct{ Code, Message string }
		}
	}
	decode(t, r.stdout, &answer)
	if len(answer.Results) != 1001 {
		t.Fatalf("%d results, want 1001", len(answer.Results))
	}
	if answer.Results[500].Error == nil || answer.Results[500].Error.Code != "invalid_request" {
		t.Errorf("result 500 = %+v, want invalid_request", answer.Results[500])
	}
	last := tr.waitType("LAST")
	if last["id"] != answer.Results[1000].ID || answer.Results[1000].ID == "" {
		t.Errorf("LAST %v, want id %q", last, answer.Results[1000].ID)
	}
	hubtest.Eventually(t, 5*time.Second, "999 N events", func() bool {
		n := 0
		for _, e := range tr.envelopes() {
			if e["type"] == "N" {
				n++
			}
		}
		return n == 999
	})
	for i, e := range tr.envelopes()[1:1000] { // in order, after hub.connected
		want := answer.Results[i].Events
		if i >= 500 {
			want = answer.Results[i+1].Events
		}
		if e["id"] != want[0].ID {
			t.Fatalf("event %d id %v, want %s (in order)", i, e["id"], want[0].ID)
		}
	}

	// a line that is not a broadcast body: nothing is sent
	r = hubctl(t, "{\"all\":true,\"type\":\"X\"}\nnot json\n", "publish", "--url", th.URL, "--api-key", hubtest.APIKey, "--stdin")
	if r.code != exitError || !strings.Contains(r.stderr, "line 2") || r.stdout != "" {
		t.Errorf("bad line: %+v, want exit 1 naming line 2", r)
	}
}

func TestStats(t *testing.T) {
	th := app.Start(t, nil)
	tr := startTail(t, "--url", th.URL, "--token", token(t, "u1"), "--transport", "sse")
	tr.waitType("hub.connected")
	out := mustRun(t, "", "stats", "--url", th.URL, "--token", token(t, "ops", "admin"))
	var st struct {
		TotalConnections int            `json:"totalConnections"`
		ActiveUsers      int            `json:"activeUsers"`
		Connections      map[string]int `json:"connections"`
		Node             string         `json:"node"`
	}
	decode(t, out, &st)
	if st.TotalConnections != 1 || st.ActiveUsers != 1 || st.Connections["sse"] != 1 || st.Node != "hub-test" {
		t.Errorf("stats printed %s", out)
	}

	// An API key cannot read the stats: stats says so before sending
	// anything (the URL has no hub: a request would fail otherwise), exit 2.
	for _, name := range []string{"HUB_TOKEN", "HUB_API_KEY", "HUB_API_KEYS"} {
		t.Setenv(name, "")
	}
	for _, tt := range []struct {
		name string
		env  [2]string
		args []string
		want string
	}{
		{"--api-key", [2]string{}, []string{"--api-key", hubtest.APIKey}, "an API key cannot read the stats"},
		{"--api-key=", [2]string{}, []string{"-api-key=" + hubtest.APIKey}, "an API key cannot read the stats"},
		{"HUB_API_KEY", [2]string{"HUB_API_KEY", hubtest.APIKey}, nil, "the API key from HUB_API_KEY or HUB_API_KEYS cannot read the stats"},
		{"HUB_API_KEYS", [2]string{"HUB_API_KEYS", hubtest.APIKey}, nil, "the API key from HUB_API_KEY or HUB_API_KEYS cannot read the stats"},
		{"no credentials", [2]string{}, nil, "--token (or HUB_TOKEN) is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env[0] != "" {
				t.Setenv(tt.env[0], tt.env[1])
			}
			r := hubctl(t, "", append([]string{"stats", "--url", "http://127.0.0.1:1"}, tt.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) || strings.Contains(r.stderr, "refused") {
				t.Errorf("%+v, want exit 2 saying %q before any request", r, tt.want)
			}
			if strings.Contains(r.stderr, hubtest.APIKey) {
				t.Error("the API key was printed")
			}
		})
	}
	// with both a token and an API key in the environment, the token is used
	t.Setenv("HUB_API_KEY", hubtest.APIKey)
	t.Setenv("HUB_TOKEN", token(t, "ops", "admin"))
	mustRun(t, "", "stats", "--url", th.URL)
	if r := hubctl(t, "", "stats", "--help"); strings.Contains(r.stdout, "--api-key") || strings.Contains(r.stdout, "-api-key") {
		t.Errorf("stats --help offers an API key:\n%s", r.stdout)
	}
}

func TestEnvironment(t *testing.T) {
	th := app.Start(t, nil)
	t.Setenv("HUB_URL", th.URL)
	t.Setenv("HUB_API_KEY", hubtest.APIKey)
	out := mustRun(t, "", "disconnect", "--user", "nobody")
	if strings.TrimSpace(out) != `{"closed":0}` {
		t.Errorf("disconnect printed %q", out)
	}
	t.Setenv("HUB_API_KEY", "")
	admin := token(t, "ops", "admin")
	t.Setenv("HUB_TOKEN", admin)
	mustRun(t, "", "stats")
	r := hubctl(t, "", "stats", "--help")
	if strings.Contains(r.stdout+r.stderr, admin) {
		t.Error("--help printed the token from HUB_TOKEN")
	}
}

// TestAPIKeyFromHubAPIKeys: with neither HUB_API_KEY nor HUB_TOKEN set,
// hubctl takes the first key of HUB_API_KEYS, the hub's own list (issue
// 15); HUB_API_KEY and HUB_TOKEN still come first.
func TestAPIKeyFromHubAPIKeys(t *testing.T) {
	th := app.Start(t, nil)
	t.Setenv("HUB_URL", th.URL)
	const wrongKey = "wrong-key-0123456789"
	tests := []struct {
		name     string
		apiKey   string // HUB_API_KEY
		token    string // HUB_TOKEN
		apiKeys  string // HUB_API_KEYS
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "first of HUB_API_KEYS", apiKeys: " " + hubtest.APIKey + " , " + wrongKey, args: []string{"disconnect", "--user", "nobody"}, wantCode: exitOK},
		{name: "only the first is tried", apiKeys: wrongKey + "," + hubtest.APIKey, args: []string{"disconnect", "--user", "nobody"}, wantCode: exitError, wantErr: "invalid_token"},
		{name: "HUB_API_KEY first", apiKey: hubtest.APIKey, apiKeys: wrongKey, args: []string{"disconnect", "--user", "nobody"}, wantCode: exitOK},
		{name: "HUB_TOKEN first", token: token(t, "ops", "admin"), apiKeys: wrongKey, args: []string{"stats"}, wantCode: exitOK},
		{name: "flag first", apiKeys: wrongKey, args: []string{"disconnect", "--user", "nobody", "--api-key", hubtest.APIKey}, wantCode: exitOK},
		{name: "empty list", apiKeys: " , ", args: []string{"disconnect", "--user", "nobody"}, wantCode: exitError, wantErr: "missing_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HUB_API_KEY", tt.apiKey)
			t.Setenv("HUB_TOKEN", tt.token)
			t.Setenv("HUB_API_KEYS", tt.apiKeys)
			r := hubctl(t, "", tt.args...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, tt.wantCode, tt.wantErr)
			}
			if strings.Contains(r.stdout+r.stderr, hubtest.APIKey) || strings.Contains(r.stdout+r.stderr, wrongKey) {
				t.Error("an API key was printed")
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	th := app.Start(t, nil)
	for _, name := range []string{"HUB_API_KEY", "HUB_API_KEYS", "HUB_TOKEN"} {
		t.Setenv(name, "") // "no credentials" means none from the environment either
	}
	bad := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	tests := []struct {
		name     string
		give     []string
		wantCode string
	}{
		{"no credentials", []string{"publish", "--url", th.URL, "--users", "u1", "--type", "A"}, "missing_token"},
		{"bad token", []string{"publish", "--url", th.URL, "--token", bad, "--all", "--type", "A"}, "invalid_token"},
		{"user token", []string{"disconnect", "--url", th.URL, "--token", token(t, "u1"), "--user", "u1"}, "forbidden"},
		{"reserved type", []string{"publish", "--url", th.URL, "--api-key", hubtest.APIKey, "--all", "--type", "hub.x"}, "invalid_request"},
		{"tail refused", []string{"tail", "--url", th.URL, "--token", bad}, "invalid_token"},
		{"tail sse refused", []string{"tail", "--url", th.URL, "--token", bad, "--transport", "sse"}, "invalid_token"},
		{"no hub", []string{"stats", "--url", "http://127.0.0.1:1", "--token", bad}, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := hubctl(t, "", tt.give...)
			if r.code != exitError {
				t.Errorf("exit %d, want 1 (stderr %q)", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantCode) {
				t.Errorf("stderr %q, want it to name %q", r.stderr, tt.wantCode)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if strings.Contains(r.stderr, bad) {
				t.Error("the token was printed")
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name     string
		give     []string
		wantCode int
		wantOut  string // in stdout for 0, stderr otherwise
	}{
		{"no command", nil, exitUsage, "Usage: hubctl <command>"},
		{"help", []string{"--help"}, exitOK, "disconnect"},
		{"help command", []string{"help", "tail"}, exitOK, "--last-event-id"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"token help", []string{"token", "--help"}, exitOK, "Usage: hubctl token"},
		{"publish help", []string{"publish", "-h"}, exitOK, "--idempotency-key"},
		{"tail help", []string{"tail", "--help"}, exitOK, "--transport"},
		{"stats help", []string{"stats", "--help"}, exitOK, "Usage: hubctl stats"},
		{"disconnect help", []string{"disconnect", "--help"}, exitOK, "--user"},
		{"unknown flag", []string{"stats", "--nope"}, exitUsage, "flag provided but not defined"},
		{"stray argument", []string{"disconnect", "--user", "u1", "extra"}, exitUsage, `unexpected argument "extra"`},
		{"token without sub", []string{"token", "--secret", "s"}, exitUsage, "--sub"},
		{"token bad alg", []string{"token", "--secret", "s", "--sub", "u", "--alg", "RS256"}, exitUsage, "--alg"},
		{"token bad ttl", []string{"token", "--secret", "s", "--sub", "u", "--ttl", "-1h"}, exitUsage, "--ttl"},
		{"publish no recipients", []string{"publish", "--type", "A"}, exitUsage, "recipients"},
		{"publish both", []string{"publish", "--user", "u", "--all", "--type", "A"}, exitUsage, "not both"},
		{"publish no type", []string{"publish", "--all"}, exitUsage, "--type"},
		{"publish bad payload", []string{"publish", "--all", "--type", "A", "--payload", "{"}, exitUsage, "--payload"},
		{"publish stdin and flags", []string{"publish", "--stdin", "--type", "A"}, exitUsage, "--type cannot be used with --stdin"},
		{"publish stdin and key", []string{"publish", "--stdin", "--key", "k"}, exitUsage, "--key cannot be used with --stdin"},
		{"publish key and volatile", []string{"publish", "--all", "--type", "A", "--key", "k", "--volatile"}, exitUsage, "--key or --volatile, not both"},
		{"publish empty key", []string{"publish", "--all", "--type", "A", "--key", ""}, exitUsage, "--key must not be empty"},
		{"publish help names key", []string{"publish", "-h"}, exitOK, "--volatile"},
		{"tail no token", []string{"tail", "--url", "http://127.0.0.1:1"}, exitUsage, "--token"},
		{"tail bad transport", []string{"tail", "--token", "t", "--transport", "carrier-pigeon"}, exitUsage, "--transport"},
		{"tail bad url", []string{"tail", "--token", "t", "--url", "ftp://x"}, exitUsage, "--url"},
		{"disconnect no user", []string{"disconnect"}, exitUsage, "--user"},
	}
	t.Setenv("HUB_JWT_SECRET", "")
	t.Setenv("HUB_TOKEN", "")
	t.Setenv("HUB_API_KEY", "")
	t.Setenv("HUB_API_KEYS", "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := hubctl(t, "", tt.give...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tt.wantCode, r.stderr)
			}
			where := r.stderr
			if tt.wantCode == exitOK {
				where = r.stdout
			}
			if !strings.Contains(where, tt.wantOut) {
				t.Errorf("output %q, want it to contain %q", where, tt.wantOut)
			}
		})
	}
}

func TestRunWithSignals(t *testing.T) {
	var out, errOut hubtest.Buffer
	if code := run([]string{"token", "--secret", hubtest.Secret, "--sub", "u1"}, strings.NewReader(""), &out, &errOut); code != exitOK {
		t.Fatalf("run: exit %d, stderr %q", code, errOut.String())
	}
	if strings.Count(out.String(), ".") != 2 {
		t.Errorf("run printed %q, want a JWT", out.String())
	}
}

// TestTokenFromConfig: `hubctl token --config` signs with the hub's own
// configuration (its secret, first HMAC algorithm, issuer and audience),
// read as hubd reads it, and the hub accepts the token.
func TestTokenFromConfig(t *testing.T) {
	for _, name := range []string{"HUB_JWT_SECRET", "HUB_CONFIG", "HUB_JWT_ISSUER", "HUB_JWT_AUDIENCE", "HUB_JWT_ALGORITHMS"} {
		t.Setenv(name, "")
	}
	const secret = "a-secret-of-the-hub-0123456789abcdef"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hubYAML := write("hub.yaml", "jwt_secret: "+secret+"\njwt_algorithms: [HS384]\njwt_issuer: https://id.example\njwt_audience: hub\n")
	th := app.Start(t, func(c *config.Config) {
		c.JWTSecret, c.JWTAlgorithms, c.JWTIssuer, c.JWTAudience = secret, []string{"HS384"}, "https://id.example", "hub"
	})

	tok := strings.TrimSpace(mustRun(t, "", "token", "--config", hubYAML, "--sub", "ops", "--roles", "admin"))
	parsed, err := jwt.Parse([]byte(tok), jwt.WithKey(jwa.HS384, []byte(secret)))
	if err != nil {
		t.Fatalf("token %q: %v", tok, err)
	}
	if parsed.Issuer() != "https://id.example" || fmt.Sprint(parsed.Audience()) != "[hub]" || parsed.Subject() != "ops" {
		t.Errorf("claims iss %q aud %v sub %q", parsed.Issuer(), parsed.Audience(), parsed.Subject())
	}
	mustRun(t, "", "stats", "--url", th.URL, "--token", tok) // the hub takes it

	// HUB_CONFIG names the file when neither --secret nor HUB_JWT_SECRET is set
	t.Setenv("HUB_CONFIG", hubYAML)
	tok = strings.TrimSpace(mustRun(t, "", "token", "--sub", "ops", "--roles", "admin"))
	mustRun(t, "", "stats", "--url", th.URL, "--token", tok)
	t.Setenv("HUB_CONFIG", "")

	// HUB_ variables apply over the file, as for hubd
	const other = "another-secret-of-the-hub-0123456789"
	t.Setenv("HUB_JWT_SECRET", other)
	tok = strings.TrimSpace(mustRun(t, "", "token", "--config", hubYAML, "--sub", "ops"))
	if _, err := jwt.Parse([]byte(tok), jwt.WithKey(jwa.HS384, []byte(other))); err != nil {
		t.Errorf("with HUB_JWT_SECRET set: %v, want the token signed with it", err)
	}
	t.Setenv("HUB_JWT_SECRET", "")

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no secret in the file", []string{"--config", write("dev.yaml", "dev: true\n")}, exitError, "has no jwt_secret"},
		{"public key", []string{"--config", write("rsa.yaml", "jwt_jwks_url: https://id.example/jwks\n")}, exitError, "public key"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, exitError, "nope.yaml"},
		{"bad file", []string{"--config", write("bad.yaml", "jwt_secret: short\n")}, exitError, "HUB_JWT_SECRET"},
		{"both", []string{"--config", hubYAML, "--secret", secret}, exitUsage, "give one of them"},
		{"an algorithm the hub refuses", []string{"--config", hubYAML, "--alg", "HS256"}, exitUsage, "the hub accepts HS384 only"},
		{"no secret at all", nil, exitUsage, "--config hub.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := hubctl(t, "", append([]string{"token", "--sub", "ops"}, tt.args...)...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, tt.wantCode, tt.wantErr)
			}
			if strings.Contains(r.stderr, secret) {
				t.Error("the secret was printed")
			}
		})
	}
}
