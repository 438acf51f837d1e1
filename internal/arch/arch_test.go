package arch

import (
	"bufio"
	"bytes"
	"os/exec"
	"path"
	"strings"
	"testing"
)

const module = "github.com/hubd/hub"

// rule forbids, for the packages matching from, the imports matching any
// of deny unless they also match one of allow. Import paths have the
// module written as "@"; patterns are path.Match patterns ("*" is one
// path element), and a pattern ending in "/**" matches that package or
// anything below it ("**" alone matches every package).
type rule struct {
	from  string
	deny  []string
	allow []string
	why   string
	deps  bool     // check every dependency, not only direct imports
	skip  []string // packages matching from that the rule leaves out
}

var rules = []rule{
	{from: "@/hub", deny: []string{"@/**"}, why: "hub imports nothing of ours"},
	{from: "@/hub", deps: true, deny: []string{"net/http", "github.com/**", "go.uber.org/**", "golang.org/**"},
		why: "hub knows nothing of HTTP, WebSocket, JWT, fx or Redis (standard library only, transitively)"},
	{from: "@/hub/redisbroker", deny: []string{"@/**", "go.uber.org/fx", "go.uber.org/fx/**"}, allow: []string{"@/hub"},
		why: "the Redis broker implements hub.Broker and depends on hub only"},
	{from: "@/config", deny: []string{"@/**"}, why: "config imports no other package of ours"},
	{from: "@/docs", deny: []string{"@/**"}, why: "docs only embeds the OpenAPI document; it imports nothing of ours"},
	{from: "@/transport/*", deny: []string{"@/transport/**", "@/modules", "@/web", "@/config", "@/cmd/**", "@/client"},
		why: "a transport imports neither another transport nor the wiring above it"},
	{from: "@/internal/*", deny: []string{"@/transport/**", "@/modules", "@/web", "@/cmd/**", "@/client", "@/config"},
		why: "internal packages serve the transports and never import them"},
	{from: "@/internal/netpoll", deny: []string{"@/hub", "@/hub/**"}, why: "the poller knows nothing of the hub"},
	{from: "@/internal/wsproto", deps: true, deny: []string{"@/**", "github.com/**", "go.uber.org/**", "golang.org/**", "net", "net/**"},
		why: "the WebSocket codec is pure functions on bytes: standard library, no sockets"},
	{from: "**", deps: true, deny: []string{"github.com/coder/websocket", "github.com/coder/websocket/**"}, skip: []string{"@/cmd/hubctl"},
		why: "coder/websocket is a WebSocket client (hubctl, and tests); the endpoint's handshake and frames are the hub's own (internal/wsproto, DECISIONS.md 2)"},
	{from: "@/cmd/hubd", deny: []string{"@/**"}, allow: []string{"@/modules", "@/config"}, why: "cmd/hubd is a few lines over modules"},
	{from: "@/cmd/hubctl", deny: []string{"@/modules", "@/transport/**", "@/hub/redisbroker"}, why: "hubctl is a client"},
	{from: "@/cmd/hubbench", deny: []string{"@/modules", "@/transport/**", "@/hub/redisbroker"}, why: "hubbench is a client"},
	{from: "@/client", deny: []string{"@/**"}, why: "the Go client stands alone"},
	{from: "**", deny: []string{"go.uber.org/fx", "go.uber.org/fx/**"}, skip: []string{"@/modules", "@/cmd/hubd", "@/internal/hubtest/app"},
		why: "only modules (and cmd/hubd and the test harness hubtest/app, which run modules.App) know fx"},
	{from: "**", deny: []string{"@/internal/hubtest", "@/internal/hubtest/**"}, skip: []string{"@/internal/hubtest/**"},
		why: "internal/hubtest is test support: only tests import it"},
	{from: "@/internal/hubtest", deny: []string{"@/**"}, allow: []string{"@/internal/auth"},
		why: "hubtest stays light (internal/auth only) so that the tests of hub, the transports and internal packages import it without a cycle; starting modules.App is hubtest/app's"},
}

func short(p string) string {
	if p == module {
		return "@"
	}
	if strings.HasPrefix(p, module+"/") {
		return "@" + p[len(module):]
	}
	return p
}

// match reports whether p matches pattern, where a trailing "/**" matches
// the prefix itself or anything below it and "**" alone matches all.
func match(pattern, p string) bool {
	if pattern == "**" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "/**"); ok {
		return p == prefix || strings.HasPrefix(p, prefix+"/")
	}
	ok, _ := path.Match(pattern, p)
	return ok
}

func matchAny(patterns []string, p string) bool {
	for _, pat := range patterns {
		if match(pat, p) {
			return true
		}
	}
	return false
}

// packages lists every package of the module (tests excluded: test
// helpers may import what production code may not) with its direct
// imports and its dependencies.
func packages(t *testing.T) map[string][2][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{join .Imports \" \"}}\t{{join .Deps \" \"}}", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string][2][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 {
			t.Fatalf("go list line %q", sc.Text())
		}
		conv := func(s string) []string {
			var r []string
			for _, x := range strings.Fields(s) {
				r = append(r, short(x))
			}
			return r
		}
		pkgs[short(f[0])] = [2][]string{conv(f[1]), conv(f[2])}
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// violations lists the broken arrows of pkgs under rules.
func violations(pkgs map[string][2][]string) []string {
	var bad []string
	for p, imp := range pkgs {
		for _, r := range rules {
			if !match(r.from, p) || matchAny(r.skip, p) {
				continue
			}
			list := imp[0]
			if r.deps {
				list = imp[1]
			}
			for _, i := range list {
				if i == p || !matchAny(r.deny, i) || matchAny(r.allow, i) {
					continue
				}
				bad = append(bad, p+" -> "+i+": "+r.why)
			}
		}
	}
	return bad
}

func TestArrows(t *testing.T) {
	for _, v := range violations(packages(t)) {
		t.Error(v)
	}
}

// TestRulesCatch makes sure the rules bite: each made-up import graph
// breaks one arrow and must be reported.
func TestRulesCatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkgs map[string][2][]string
	}{
		{"hub imports config", map[string][2][]string{"@/hub": {{"@/config"}, {"@/config"}}}},
		{"hub pulls in net/http", map[string][2][]string{"@/hub": {{"strings"}, {"strings", "net/http"}}}},
		{"a transport imports another", map[string][2][]string{"@/transport/sse": {{"@/transport/ws"}, nil}}},
		{"internal imports a transport", map[string][2][]string{"@/internal/auth": {{"@/transport/api"}, nil}}},
		{"hub/redisbroker imports fx", map[string][2][]string{"@/hub/redisbroker": {{"go.uber.org/fx"}, nil}}},
		{"a transport imports fx", map[string][2][]string{"@/transport/api": {{"go.uber.org/fx"}, nil}}},
		{"netpoll imports hub", map[string][2][]string{"@/internal/netpoll": {{"@/hub"}, nil}}},
		{"wsproto opens sockets", map[string][2][]string{"@/internal/wsproto": {{"net"}, {"net"}}}},
		{"the endpoint borrows coder/websocket again", map[string][2][]string{"@/transport/ws": {{"github.com/coder/websocket"}, {"github.com/coder/websocket"}}}},
		{"hubctl imports modules", map[string][2][]string{"@/cmd/hubctl": {{"@/modules"}, nil}}},
		{"hubd imports a transport", map[string][2][]string{"@/cmd/hubd": {{"@/transport/ws"}, nil}}},
		{"production code imports the test harness", map[string][2][]string{"@/modules": {{"@/internal/hubtest"}, nil}}},
		{"hubtest imports modules", map[string][2][]string{"@/internal/hubtest": {{"@/modules"}, nil}}},
	} {
		if len(violations(tc.pkgs)) == 0 {
			t.Errorf("%s: not reported", tc.name)
		}
	}
	ok := map[string][2][]string{
		"@/modules":              {{"go.uber.org/fx", "@/transport/ws", "@/hub"}, nil},
		"@/cmd/hubd":             {{"@/modules", "@/config", "go.uber.org/fx"}, nil},
		"@/transport/ws":         {{"@/hub", "@/internal/netpoll", "@/internal/auth"}, nil},
		"@/cmd/hubctl":           {{"github.com/coder/websocket"}, {"github.com/coder/websocket"}},
		"@/internal/hubtest/app": {{"@/internal/hubtest", "@/modules", "go.uber.org/fx"}, nil},
	}
	if v := violations(ok); len(v) != 0 {
		t.Errorf("allowed arrows reported: %v", v)
	}
}
