package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/timeseries"
	"github.com/hubd/hub/transport/api"
)

func TestTimeSeries(t *testing.T) {
	var sampler *timeseries.Sampler
	e := newEnv(t, func(o *api.Options) {
		sampler = timeseries.New(timeseries.Options{Hub: o.Hub, Size: 10})
		o.Series = sampler
	})
	t.Cleanup(sampler.Close)
	e.connect(t, "u1", hub.TransportWebSocket)
	t0 := time.UnixMilli(1_700_000_000_000)
	for i := range 3 {
		sampler.Sample(t0.Add(time.Duration(i) * time.Second))
	}
	admin := bearer(mint(t, "root", "admin"))

	type answer struct {
		Node       string             `json:"node"`
		IntervalMs int64              `json:"intervalMs"`
		Size       int                `json:"size"`
		Points     []timeseries.Point `json:"points"`
	}
	get := func(path string) answer {
		t.Helper()
		got := e.do(t, http.MethodGet, path, admin, nil)
		if got.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, got.status, got.body)
		}
		var a answer
		if err := json.Unmarshal(got.body, &a); err != nil {
			t.Fatalf("GET %s: %s: %v", path, got.body, err)
		}
		return a
	}
	a := get("/api/admin/timeseries")
	if a.Node != "hub-1" || a.IntervalMs != 1000 || a.Size != 10 || len(a.Points) != 3 {
		t.Fatalf("answer %+v", a)
	}
	if p := a.Points[2]; p.T != t0.Add(2*time.Second).UnixMilli() || p.Connections["websocket"] != 1 || p.Users != 1 || p.Nodes["hub-1"] != 1 {
		t.Errorf("last point %+v", p)
	}
	if a := get(fmt.Sprintf("/api/admin/timeseries?since=%d", t0.Add(time.Second).UnixMilli())); len(a.Points) != 1 {
		t.Errorf("since the second point: %d points, want 1", len(a.Points))
	}
	if a := get(fmt.Sprintf("/api/admin/timeseries?since=%d", t0.Add(time.Hour).UnixMilli())); a.Points == nil || len(a.Points) != 0 {
		t.Errorf("since the future: %+v, want an empty list", a.Points)
	}

	tests := []struct {
		name       string
		path       string
		give       cred
		wantStatus int
		wantCode   string
	}{
		{"no credentials", "/api/admin/timeseries", cred{}, 401, "missing_token"},
		{"API key", "/api/admin/timeseries", keyCred, 403, "forbidden"},
		{"service JWT", "/api/admin/timeseries", bearer(mint(t, "svc", "service")), 403, "forbidden"},
		{"user JWT", "/api/admin/timeseries", bearer(mint(t, "u1")), 403, "forbidden"},
		{"bad since", "/api/admin/timeseries?since=yesterday", admin, 400, "invalid_request"},
		{"negative since", "/api/admin/timeseries?since=-1", admin, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.do(t, http.MethodGet, tt.path, tt.give, nil)
			if got.status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", got.status, got.body, tt.wantStatus)
			}
			if code, _ := got.errorCode(t); code != tt.wantCode {
				t.Errorf("code %q, want %q", code, tt.wantCode)
			}
		})
	}
	if got := e.post(t, "/api/admin/timeseries", admin, "{}"); got.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", got.status)
	}
}

// Without a Sampler the route does not exist (the bare mux's 404 here;
// modules answers it with the JSON error body).
func TestTimeSeriesOff(t *testing.T) {
	e := newEnv(t, nil)
	resp, err := e.srv.Client().Get(e.srv.URL + "/api/admin/timeseries")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d, want 404", resp.StatusCode)
	}
}
