package modules_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/docs"
	"github.com/hubd/hub/internal/hubtest"
)

// openAPIDoc loads docs/openapi.yaml (as embedded in the binary) and
// validates it as an OpenAPI 3.1 document.
func openAPIDoc(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(docs.OpenAPIYAML)
	if err != nil {
		t.Fatalf("load docs/openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("docs/openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("docs/openapi.yaml is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	return doc
}

// apiCase is one real request to the running hub.
type apiCase struct {
	name   string
	base   string // the listener: th.URL (public) or th.API (internal)
	method string
	path   string
	header map[string]string
	body   string
	// want lists the statuses the hub may answer (the first is expected;
	// more where the contract is ahead of this server, such as "key").
	want []int
	// reqValid: whether the document accepts the request as sent (true),
	// refuses it (false: the hub refuses it too), or cannot tell (nil:
	// sizes, UTF-8).
	reqValid *bool
	// code is the error.code the answer must carry, when not empty.
	code string
	// notYet: the contract has the endpoint but this server may not yet
	// (404 not_found): then nothing more is checked.
	notYet bool
}

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

// presence checks that a request carries the credential a security scheme
// names; whether it is valid is the hub's business, not the document's.
func presence(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	r := in.RequestValidationInput.Request
	switch in.SecuritySchemeName {
	case "bearerAuth":
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			return nil
		}
	case "apiKey":
		if r.Header.Get("X-API-Key") != "" {
			return nil
		}
	case "cookieAuth":
		if _, err := r.Cookie("hub_token"); err == nil {
			return nil
		}
	}
	return errors.New("no " + in.SecuritySchemeName + " credential")
}

// check sends c to the hub, then validates the request and the answer
// against the document: the answer must be a documented status with a
// body and headers of its schema.
func check(t *testing.T, router routers.Router, c apiCase) {
	t.Helper()
	newReq := func() *http.Request {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		req, err := http.NewRequest(c.method, c.base+c.path, body)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		return req
	}
	resp, err := http.DefaultClient.Do(newReq())
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !slices.Contains(c.want, resp.StatusCode) {
		t.Errorf("%s: status %d, want %v: %s", c.name, resp.StatusCode, c.want, body)
		return
	}
	if c.notYet && resp.StatusCode == http.StatusNotFound {
		t.Logf("%s: %s %s is not served by this server yet (404): not validated", c.name, c.method, c.path)
		return
	}
	if c.code != "" && resp.StatusCode == c.want[0] {
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		json.Unmarshal(body, &e)
		if e.Error.Code != c.code {
			t.Errorf("%s: error.code %q, want %q: %s", c.name, e.Error.Code, c.code, body)
		}
	}

	req := newReq()
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Errorf("%s: %s %s is not in the document: %v", c.name, c.method, c.path, err)
		return
	}
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true, // an answer the document does not list fails
		MultiError:            true,
		AuthenticationFunc:    presence,
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(context.Background(), in)
	switch {
	case c.reqValid == nil:
	case *c.reqValid && reqErr != nil:
		t.Errorf("%s: the document refuses a request that the hub takes: %v", c.name, reqErr)
	case !*c.reqValid && reqErr == nil:
		t.Errorf("%s: the document accepts a request that the hub refuses (%d %s)", c.name, resp.StatusCode, body)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                opts,
	}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s: the answer %d %s does not match the document: %v", c.name, resp.StatusCode, body, err)
	}
}

// TestOpenAPIMatchesTheHub sends good and bad requests to every endpoint
// of the running hub (internal listener on, upstream to a real backend)
// and validates each request and answer against docs/openapi.yaml with
// kin-openapi. Not reached here: 409 in_flight and 503 unavailable (a
// shared idempotency store or broker that hangs), 500, and the upstream
// answers 502/503/504; their schemas are the ones exercised.
func TestOpenAPIMatchesTheHub(t *testing.T) {
	doc := openAPIDoc(t)
	doc.Servers = nil // match any host: the test's listeners have free ports
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Event struct{ Type string } `json:"event"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		w.Header().Set("Content-Type", "application/json")
		if in.Event.Type == "REJECT" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"reason":"no such order"}`))
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer backend.Close()

	th := startHub(t, func(c *config.Config) {
		c.InternalAddr = "127.0.0.1:0"
		c.MaxPayload = 4 << 10
		c.UpstreamURL = backend.URL
		c.UpstreamSecret = "upstream-secret-0123456789abcdef"
	})
	const user = "openapi-user"
	ws := th.mustWS(th.token(user, time.Hour), "")
	ws.connected()

	key := map[string]string{"X-API-Key": hubtest.APIKey, "Content-Type": "application/json"}
	service := map[string]string{"Authorization": "Bearer " + th.token("svc", time.Hour, "service"), "Content-Type": "application/json"}
	admin := map[string]string{"Authorization": "Bearer " + th.token("ops", time.Hour, "admin")}
	userTok := th.token(user, time.Hour)
	asUser := map[string]string{"Authorization": "Bearer " + userTok, "Content-Type": "application/json"}
	with := func(h map[string]string, k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range h {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	api, pub := th.API, th.URL
	big := `{"userIds":["u1"],"type":"BIG","payload":"` + strings.Repeat("x", 5000) + `"}`

	cases := []apiCase{
		// POST /api/broadcast
		{name: "broadcast to users", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["` + user + `","u2"],"type":"DRAFT_UPDATED","payload":{"draftId":42}}`, want: []int{202}, reqValid: yes()},
		{name: "broadcast to all with a service JWT", base: api, method: "POST", path: "/api/broadcast", header: service,
			body: `{"all":true,"type":"ANNOUNCEMENT","payload":"maintenance at 22:00"}`, want: []int{202}, reqValid: yes()},
		{name: "broadcast with an idempotency key", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"type":"T","idempotencyKey":"k-1"}`, want: []int{202}, reqValid: yes()},
		{name: "the same key again", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"type":"T","idempotencyKey":"k-1"}`, want: []int{202}, reqValid: yes()},
		{name: "a coalescing key (contract revision 2)", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"type":"DRAFT_UPDATED","key":"draft:42","payload":1}`, want: []int{202}, reqValid: yes()},
		{name: "volatile (contract revision 2)", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"type":"TYPING","volatile":true}`, want: []int{202}, reqValid: yes()},
		{name: "key and volatile together", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"type":"T","key":"k","volatile":true}`, want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "not JSON", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":`, want: []int{400}, reqValid: no(), code: "invalid_json"},
		{name: "not valid UTF-8", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: "{\"userIds\":[\"u1\"],\"type\":\"T\",\"payload\":\"\xff\"}", want: []int{400}, code: "invalid_json"},
		{name: "userIds and all", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"all":true,"type":"T"}`, want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "neither userIds nor all", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"type":"T"}`, want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "an unknown field", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"type":"T","colour":"red"}`, want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "a reserved type", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"type":"HUB.connected"}`, want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "a type with a space", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":["u1"],"type":"A B"}`, want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "empty userIds", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: `{"userIds":[],"type":"T"}`, want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "no credentials", base: api, method: "POST", path: "/api/broadcast", header: with(key, "X-API-Key", ""),
			body: `{"userIds":["u1"],"type":"T"}`, want: []int{401}, reqValid: no(), code: "missing_token"},
		{name: "a token in the query (not taken here)", base: api, method: "POST", path: "/api/broadcast?token=" + userTok,
			header: with(key, "X-API-Key", ""), body: `{"userIds":["u1"],"type":"T"}`, want: []int{401}, reqValid: no(), code: "missing_token"},
		{name: "a bad signature", base: api, method: "POST", path: "/api/broadcast",
			header: with(with(key, "X-API-Key", ""), "Authorization", "Bearer "+hubtest.TokenWith(t, "another-secret-0123456789abcdefghij", "svc", time.Hour, "service")),
			body:   `{"userIds":["u1"],"type":"T"}`, want: []int{401}, reqValid: yes(), code: "invalid_token"},
		{name: "an expired token", base: api, method: "POST", path: "/api/broadcast",
			header: with(with(key, "X-API-Key", ""), "Authorization", "Bearer "+hubtest.ExpiredToken(t, "svc", "service")),
			body:   `{"userIds":["u1"],"type":"T"}`, want: []int{401}, reqValid: yes(), code: "token_expired"},
		{name: "a user token without the role", base: api, method: "POST", path: "/api/broadcast", header: asUser,
			body: `{"userIds":["u1"],"type":"T"}`, want: []int{403}, reqValid: yes(), code: "forbidden"},
		{name: "text/plain", base: api, method: "POST", path: "/api/broadcast", header: with(key, "Content-Type", "text/plain"),
			body: `{"userIds":["u1"],"type":"T"}`, want: []int{415}, reqValid: no(), code: "unsupported_media_type"},
		{name: "over HUB_MAX_PAYLOAD", base: api, method: "POST", path: "/api/broadcast", header: key,
			body: big, want: []int{413}, code: "payload_too_large"},

		// POST /api/broadcast/batch
		{name: "a batch", base: api, method: "POST", path: "/api/broadcast/batch", header: key,
			body: `{"messages":[{"userIds":["u1"],"type":"A"},{"all":true,"type":"B","payload":[1,2]}]}`, want: []int{202}, reqValid: yes()},
		{name: "a batch with one bad message", base: api, method: "POST", path: "/api/broadcast/batch", header: key,
			body: `{"messages":[{"userIds":["u1"],"type":"A"},{"type":"B"}]}`, want: []int{202}, reqValid: no()},
		{name: "a batch without messages", base: api, method: "POST", path: "/api/broadcast/batch", header: key,
			body: `{"messages":[]}`, want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "a batch over HUB_MAX_PAYLOAD", base: api, method: "POST", path: "/api/broadcast/batch", header: key,
			body: `{"messages":[` + big + `]}`, want: []int{413}, code: "payload_too_large"},

		// users
		{name: "disconnect", base: api, method: "POST", path: "/api/users/u1/disconnect", header: with(key, "Content-Type", ""),
			want: []int{200}, reqValid: yes()},
		{name: "disconnect with a JSON body", base: api, method: "POST", path: "/api/users/u1/disconnect", header: key,
			body: `{}`, want: []int{200}},
		{name: "disconnect with a text body", base: api, method: "POST", path: "/api/users/u1/disconnect", header: with(key, "Content-Type", "text/plain"),
			body: `x`, want: []int{415}, code: "unsupported_media_type"},
		{name: "disconnect a 257-byte id", base: api, method: "POST", path: "/api/users/" + strings.Repeat("u", 257) + "/disconnect",
			header: with(key, "Content-Type", ""), want: []int{400}, reqValid: no(), code: "invalid_request"},
		{name: "disconnect without credentials", base: api, method: "POST", path: "/api/users/u1/disconnect",
			want: []int{401}, reqValid: no(), code: "missing_token"},
		{name: "connections", base: api, method: "GET", path: "/api/users/" + user + "/connections", header: with(key, "Content-Type", ""),
			want: []int{200, 404}, reqValid: yes(), notYet: true},

		// stats
		{name: "stats", base: api, method: "GET", path: "/api/websocket/stats", header: admin, want: []int{200}, reqValid: yes()},
		{name: "stats with an API key", base: api, method: "GET", path: "/api/websocket/stats", header: with(key, "Content-Type", ""),
			want: []int{403}, reqValid: no(), code: "forbidden"},
		{name: "stats with a service token", base: api, method: "GET", path: "/api/websocket/stats", header: with(service, "Content-Type", ""),
			want: []int{403}, reqValid: yes(), code: "forbidden"},

		// operations
		{name: "healthz", base: pub, method: "GET", path: "/healthz", want: []int{200}, reqValid: yes()},
		{name: "readyz", base: pub, method: "GET", path: "/readyz", want: []int{200}, reqValid: yes()},
		{name: "metrics", base: api, method: "GET", path: "/metrics", want: []int{200}, reqValid: yes()},
		{name: "openapi.json", base: api, method: "GET", path: "/api/openapi.json", want: []int{200}, reqValid: yes()},

		// POST /api/send (public listener)
		{name: "send", base: pub, method: "POST", path: "/api/send", header: asUser,
			body: `{"ref":"r1","idempotencyKey":"s-1","event":{"type":"ORDER_UPDATE","payload":{"orderId":7}}}`, want: []int{200}, reqValid: yes()},
		{name: "send rejected by the backend", base: pub, method: "POST", path: "/api/send", header: asUser,
			body: `{"idempotencyKey":"s-2","event":{"type":"REJECT","payload":null}}`, want: []int{422}, reqValid: yes()},
		{name: "send without event", base: pub, method: "POST", path: "/api/send", header: asUser,
			body: `{"idempotencyKey":"s-3"}`, want: []int{400}, reqValid: no()},
		{name: "send without credentials", base: pub, method: "POST", path: "/api/send", header: with(asUser, "Authorization", ""),
			body: `{"idempotencyKey":"s-4","event":{"type":"A"}}`, want: []int{401}, reqValid: no(), code: "missing_token"},
		{name: "send as text/plain", base: pub, method: "POST", path: "/api/send", header: with(asUser, "Content-Type", "text/plain"),
			body: `{"idempotencyKey":"s-5","event":{"type":"A"}}`, want: []int{415}, reqValid: no()},
		{name: "send with the cookie from another site", base: pub, method: "POST", path: "/api/send",
			header: map[string]string{"Cookie": "hub_token=" + userTok, "Origin": "https://evil.example", "Content-Type": "application/json"},
			body:   `{"idempotencyKey":"s-6","event":{"type":"A"}}`, want: []int{403}, reqValid: yes(), code: "origin_not_allowed"},
	}
	for _, c := range cases {
		check(t, router, c)
	}

	// the document served is the file
	resp, err := http.Get(api + "/api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, _ := docs.OpenAPIJSON()
	if !bytes.Equal(served, want) || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /api/openapi.json (%s) is not docs/openapi.yaml as JSON", resp.Header.Get("Content-Type"))
	}
	if _, err := openapi3.NewLoader().LoadFromData(served); err != nil {
		t.Errorf("the served document does not load: %v", err)
	}

	// 429 rate_limited with Retry-After, last: it locks this address out
	// of the service API for a minute
	bad := apiCase{name: "failed credentials, 429", base: api, method: "POST", path: "/api/broadcast",
		header: with(key, "X-API-Key", "not-a-key-0123456789"), body: `{"userIds":["u1"],"type":"T"}`}
	for i := 0; ; i++ {
		req, _ := http.NewRequest("POST", api+bad.path, strings.NewReader(bad.body))
		for k, v := range bad.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			break
		}
		if i > 25 {
			t.Fatalf("no 429 after %d failed credentials", i)
		}
	}
	bad.want, bad.reqValid, bad.code = []int{429}, yes(), "rate_limited"
	check(t, router, bad)
	// valid credentials too, until the minute has passed
	check(t, router, apiCase{name: "valid key while locked out", base: api, method: "POST", path: "/api/broadcast", header: key,
		body: `{"userIds":["u1"],"type":"T"}`, want: []int{429}, reqValid: yes(), code: "rate_limited"})
}

// TestOpenAPIUpstreamDisabled: /api/send without HUB_UPSTREAM_URL answers
// 404 upstream_disabled as documented.
func TestOpenAPIUpstreamDisabled(t *testing.T) {
	doc := openAPIDoc(t)
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	th := startHub(t, nil)
	check(t, router, apiCase{name: "send, upstream off", base: th.URL, method: "POST", path: "/api/send",
		header: map[string]string{"Authorization": "Bearer " + th.token("u1", time.Hour), "Content-Type": "application/json"},
		body:   `{"idempotencyKey":"s-1","event":{"type":"A"}}`, want: []int{404}, reqValid: yes()})
}

// TestOpenAPICoversTheContract: every endpoint and error code of
// docs/PROTOCOL.md's HTTP API is in the document, with its status.
func TestOpenAPICoversTheContract(t *testing.T) {
	doc := openAPIDoc(t)
	raw, _ := docs.OpenAPIJSON()
	for _, op := range []struct {
		method, path string
		statuses     []int
	}{
		{"POST", "/api/broadcast", []int{202, 400, 401, 403, 409, 413, 415, 429, 503}},
		{"POST", "/api/broadcast/batch", []int{202, 400, 401, 403, 413, 415, 429, 503}},
		{"POST", "/api/users/{userId}/disconnect", []int{200, 400, 401, 403, 415, 429}},
		{"GET", "/api/users/{userId}/connections", []int{200, 401, 403, 429}},
		{"GET", "/api/websocket/stats", []int{200, 401, 403, 429}},
		{"POST", "/api/send", []int{200, 400, 401, 403, 404, 409, 413, 415, 429, 503}},
		{"GET", "/healthz", []int{200}},
		{"GET", "/readyz", []int{200, 503}},
		{"GET", "/metrics", []int{200}},
		{"GET", "/api/openapi.json", []int{200}},
	} {
		item := doc.Paths.Find(op.path)
		if item == nil || item.GetOperation(op.method) == nil {
			t.Errorf("%s %s is not in the document", op.method, op.path)
			continue
		}
		for _, s := range op.statuses {
			if item.GetOperation(op.method).Responses.Value(strconv.Itoa(s)) == nil {
				t.Errorf("%s %s: no %d answer", op.method, op.path, s)
			}
		}
	}
	for _, code := range []string{
		"invalid_json", "invalid_request", "missing_token", "invalid_token", "token_expired",
		"forbidden", "origin_not_allowed", "payload_too_large", "unsupported_media_type",
		"rate_limited", "unavailable", "shutting_down", "in_flight", "upstream_disabled",
	} {
		if !strings.Contains(string(raw), code) {
			t.Errorf("the document never names the error code %s", code)
		}
	}
	rl := doc.Components.Responses["RateLimited"]
	if rl == nil || rl.Value.Headers["Retry-After"] == nil {
		t.Error("429 rate_limited has no Retry-After header")
	}
	for _, name := range []string{"bearerAuth", "apiKey"} {
		if doc.Components.SecuritySchemes[name] == nil {
			t.Errorf("no security scheme %s", name)
		}
	}
}
