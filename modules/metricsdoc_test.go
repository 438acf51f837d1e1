package modules_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// documentedMetric is a row of a table in docs/METRICS.md.
type documentedMetric struct {
	name, typ string
	labels    []string
}

// metricRow matches "| `hub_x` | type | labels | meaning |".
var metricRow = regexp.MustCompile("^\\| `([a-z_:][a-z0-9_:]*)` \\| (counter|gauge|histogram|summary) \\|([^|]*)\\|")

// documentedMetrics reads the metric tables of docs/METRICS.md. The labels
// column names each label in backquotes, with its values in parentheses.
func documentedMetrics(t *testing.T) map[string]documentedMetric {
	t.Helper()
	data, err := os.ReadFile("../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	parens := regexp.MustCompile(`\([^)]*\)`)
	quoted := regexp.MustCompile("`([a-z_]+)`")
	doc := map[string]documentedMetric{}
	for _, line := range strings.Split(string(data), "\n") {
		m := metricRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d := documentedMetric{name: m[1], typ: m[2]}
		for _, q := range quoted.FindAllStringSubmatch(parens.ReplaceAllString(m[3], ""), -1) {
			d.labels = append(d.labels, q[1])
		}
		sort.Strings(d.labels)
		doc[d.name] = d
	}
	if len(doc) < 10 {
		t.Fatalf("found only %d metrics in docs/METRICS.md: did its tables change shape?", len(doc))
	}
	return doc
}

func scrapeMetrics(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams, string(body)
}

// seriesValue returns the value of the series of fam whose labels include
// want (a histogram's sample count), or -1.
func seriesValue(fam *dto.MetricFamily, want map[string]string) float64 {
	return hubtest.SeriesValue(fam, want)
}

// TestMetricsAsDocumented runs the app through a connection on each
// transport, a resume, a publish and API errors, then compares
// docs/METRICS.md with GET /metrics both ways (name, type, label names),
// and checks that every query of deploy/grafana/hub.json names a family
// that is served.
func TestMetricsAsDocumented(t *testing.T) {
	th := startHub(t, func(c *config.Config) {
		c.InternalAddr = "127.0.0.1:0"
		c.ConnectRate = 1000 // admission control on: hub_admission_total
	})
	const user = "metrics-user-7f3a"
	tok := th.token(user, time.Hour)
	ws := th.mustWS(tok, "")
	ws.connected()
	sse := th.mustSSE(tok, "")
	defer sse.close()
	sse.connected()

	ids := th.publish("METRICS_CHECK", map[string]int{"n": 1}, user)
	if e := ws.next(5 * time.Second); e.ID != ids[user] {
		t.Fatalf("websocket got %q, want the event %s", e.Type, ids[user])
	}
	// a device that comes back with its last id resumes
	again := th.mustWS(tok, ids[user])
	again.connected()

	key := map[string]string{"X-API-Key": hubtest.APIKey}
	if status, _ := th.post("/api/broadcast", `{"userIds":`, key); status != http.StatusBadRequest {
		t.Fatalf("bad JSON: %d, want 400", status)
	}
	if status, _ := th.post("/api/broadcast", map[string]any{"userIds": []string{user}, "type": "X"}, nil); status != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d, want 401", status)
	}
	if status, _ := th.post("/api/users/"+user+"/disconnect", "", key); status != http.StatusOK {
		t.Fatalf("disconnect: %d", status)
	}

	var fams map[string]*dto.MetricFamily
	var text string
	hubtest.Eventually(t, 5*time.Second, "the deliveries counted on both transports", func() bool {
		fams, text = scrapeMetrics(t, th.API+"/metrics")
		d := fams["hub_events_delivered_total"]
		return d != nil && seriesValue(d, map[string]string{"transport": "websocket"}) >= 1 &&
			seriesValue(d, map[string]string{"transport": "sse"}) >= 1
	})

	// the hub_broker_* families are served with the Redis broker only
	// (TestBrokerMetricsAsDocumented)
	checkDocumented(t, fams, func(name string) bool { return !strings.HasPrefix(name, "hub_broker_") })
	for name := range fams {
		if strings.HasPrefix(name, "hub_broker_") {
			t.Errorf("%s is served without the Redis broker", name)
		}
	}

	// the API's requests, by route pattern and status
	api := fams["hub_api_requests_total"]
	for _, tt := range []struct {
		route, code string
		want        float64
	}{
		{"/api/broadcast", "202", 1},
		{"/api/broadcast", "400", 1},
		{"/api/broadcast", "401", 1},
		{"/api/users/{userId}/disconnect", "200", 1},
	} {
		if got := seriesValue(api, map[string]string{"route": tt.route, "code": tt.code}); got != tt.want {
			t.Errorf("hub_api_requests_total{route=%q,code=%q} = %v, want %v", tt.route, tt.code, got, tt.want)
		}
	}
	if got := seriesValue(fams["hub_admission_total"], map[string]string{"outcome": "admitted"}); got < 3 {
		t.Errorf("hub_admission_total{outcome=admitted} = %v, want 3 connections", got)
	}
	if strings.Contains(text, user) {
		t.Errorf("the user id %s appears in /metrics", user)
	}

	t.Run("grafana dashboard", func(t *testing.T) {
		checkDashboard(t, "../deploy/grafana/hub.json", fams)
	})
}

// TestBrokerMetricsAsDocumented runs a node with the Redis broker through a
// connection, a publish and a broadcast, and checks that GET /metrics
// serves the hub_broker_* families as docs/METRICS.md lists them, and that
// they moved.
func TestBrokerMetricsAsDocumented(t *testing.T) {
	th := startNode(t, clusterRedisURL(t), "metrics-node", func(c *config.Config) { c.InternalAddr = "127.0.0.1:0" })
	const user = "broker-metrics-user"
	ws := th.mustWS(th.token(user, time.Hour), "")
	ws.connected()
	id := th.publish("METRICS_CHECK", 1, user)[user]
	if e := ws.next(5 * time.Second); e.ID != id {
		t.Fatalf("got %q, want the event %s", e.ID, id)
	}
	th.publishAll("METRICS_ALL", 2)
	fams, text := scrapeMetrics(t, th.API+"/metrics")
	checkDocumented(t, fams, func(name string) bool { return strings.HasPrefix(name, "hub_broker_") })
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"hub_broker_subscribed_users", nil, 1},
		{"hub_broker_publish_duration_seconds", map[string]string{"op": "publish"}, 1},
		{"hub_broker_publish_duration_seconds", map[string]string{"op": "broadcast"}, 1},
		{"hub_broker_errors_total", map[string]string{"op": "publish"}, 0},
		{"hub_broker_pubsub_reconnects_total", nil, 0},
	} {
		if f := fams[tt.name]; f == nil {
			t.Errorf("%s not served", tt.name)
		} else if got := seriesValue(f, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if strings.Contains(text, user) {
		t.Errorf("the user id %s appears in /metrics", user)
	}
}

// checkDocumented compares the families served with the metrics documented
// in docs/METRICS.md both ways (name, type, label names), for the names
// only accepts.
func checkDocumented(t *testing.T, fams map[string]*dto.MetricFamily, only func(name string) bool) {
	t.Helper()
	doc := documentedMetrics(t)
	for name, d := range doc {
		if !only(name) {
			continue
		}
		f := fams[name]
		if f == nil {
			t.Errorf("%s is documented in METRICS.md but not served at /metrics", name)
			continue
		}
		if got := strings.ToLower(f.GetType().String()); got != d.typ {
			t.Errorf("%s: type %s, documented %s", name, got, d.typ)
		}
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		var got []string
		for l := range labels {
			got = append(got, l)
		}
		sort.Strings(got)
		if !slices.Equal(got, d.labels) {
			t.Errorf("%s: labels %q, documented %q", name, got, d.labels)
		}
	}
	for name := range fams {
		if strings.HasPrefix(name, "hub_") && only(name) && doc[name].name == "" {
			t.Errorf("%s is served but not documented in METRICS.md", name)
		}
	}
}

// promQLName matches an identifier of a PromQL expression.
var promQLName = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)

// promQLNotNames are the words of PromQL that are not metric names when
// not followed by "(" (functions always are).
var promQLNotNames = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// metricNames returns the metric names an expression selects: what is
// left of its identifiers once strings, label matchers, ranges, grouping
// clauses, functions and keywords are taken out.
func metricNames(expr string) []string {
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`"(?:[^"\\]|\\.)*"`), // strings
		regexp.MustCompile(`\{[^}]*\}`),         // label matchers
		regexp.MustCompile(`\[[^\]]*\]`),        // ranges
		regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`), // grouping
		regexp.MustCompile(`\$\w+`), // Grafana variables
	} {
		expr = re.ReplaceAllString(expr, " ")
	}
	var names []string
	for _, loc := range promQLName.FindAllStringIndex(expr, -1) {
		word := expr[loc[0]:loc[1]]
		rest := strings.TrimLeft(expr[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promQLNotNames[word] {
			continue // a function or aggregation, or a keyword
		}
		if loc[0] > 0 && (expr[loc[0]-1] >= '0' && expr[loc[0]-1] <= '9' || expr[loc[0]-1] == '.') {
			continue // the exponent or unit of a number (1e3)
		}
		names = append(names, word)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for _, tt := range []struct {
		give string
		want []string
	}{
		{`sum by (transport) (rate(hub_events_delivered_total{instance=~"$instance"}[$__rate_interval]))`, []string{"hub_events_delivered_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(hub_delivery_latency_seconds_bucket[5m])))`, []string{"hub_delivery_latency_seconds_bucket"}},
		{`sum by (instance) (process_resident_memory_bytes) / clamp_min(sum by (instance) (hub_connections{a="b}"}), 1)`, []string{"process_resident_memory_bytes", "hub_connections"}},
		{`hub_draining == 1 or up{job="hub"} == 0`, []string{"hub_draining", "up"}},
		{`rate(hub_nope_total[5m]) > 1e3`, []string{"hub_nope_total"}},
		{`label_values(hub_connections, instance)`, []string{"hub_connections", "instance"}},
	} {
		if got := metricNames(tt.give); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%s) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

// checkDashboard checks every expression of a Grafana dashboard against
// the families served, and that the panels the operators need are there.
func checkDashboard(t *testing.T, path string, fams map[string]*dto.MetricFamily) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	served := func(name string) bool {
		if fams[name] != nil {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] != nil && fams[base].GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
		return false
	}
	used := map[string]bool{}
	exprs := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			names := metricNames(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: no metric in %q", p.Title, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !served(n) {
					t.Errorf("panel %q: %s is not served at /metrics (%s)", p.Title, n, tg.Expr)
				}
			}
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		if m := regexp.MustCompile(`^label_values\((\w+),\s*\w+\)$`).FindStringSubmatch(s); m == nil || !served(m[1]) {
			t.Errorf("variable %s: query %q names no served metric", v.Name, s)
		}
	}
	if exprs < 10 {
		t.Errorf("only %d queries in the dashboard", exprs)
	}
	// what issue 20 asks the dashboard to show
	for _, want := range []string{
		"hub_connections", "hub_events_delivered_total", "hub_delivery_latency_seconds_bucket",
		"hub_events_published_total", "hub_slow_consumer_closes_total", "hub_admission_total",
		"hub_api_requests_total",
	} {
		if !used[want] {
			t.Errorf("the dashboard shows nothing of %s", want)
		}
	}
	if !strings.Contains(string(data), "histogram_quantile(0.5,") || !strings.Contains(string(data), "histogram_quantile(0.99,") {
		t.Error("the dashboard has no p50 and p99 of the delivery latency")
	}
}
