package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name       string
		giveHeader string
		giveQuery  string
		giveCookie *http.Cookie
		giveName   string
		want       string
	}{
		{name: "header first", giveHeader: "Bearer h", giveQuery: "?token=q", giveCookie: &http.Cookie{Name: "hub_token", Value: "c"}, want: "h"},
		{name: "scheme case-insensitive", giveHeader: "bearer h", want: "h"},
		{name: "query before cookie", giveQuery: "?token=q", giveCookie: &http.Cookie{Name: "hub_token", Value: "c"}, want: "q"},
		{name: "default cookie", giveCookie: &http.Cookie{Name: "hub_token", Value: "c"}, want: "c"},
		{name: "custom cookie", giveName: "sess", giveCookie: &http.Cookie{Name: "sess", Value: "c"}, want: "c"},
		{name: "custom cookie ignores default", giveName: "sess", giveCookie: &http.Cookie{Name: "hub_token", Value: "c"}, want: ""},
		{name: "empty query falls to cookie", giveQuery: "?token=", giveCookie: &http.Cookie{Name: "hub_token", Value: "c"}, want: "c"},
		{name: "other scheme skipped", giveHeader: "Basic dTpw", giveQuery: "?token=q", want: "q"},
		{name: "nothing", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/ws/realtime"+tt.giveQuery, nil)
			if tt.giveHeader != "" {
				r.Header.Set("Authorization", tt.giveHeader)
			}
			if tt.giveCookie != nil {
				r.AddCookie(tt.giveCookie)
			}
			if got := TokenFromRequest(r, tt.giveName); got != tt.want {
				t.Errorf("TokenFromRequest = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	good := func(t *testing.T, sub string) string {
		return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"sub": sub}), nil)
	}
	tests := []struct {
		name     string
		giveReq  func(t *testing.T) *http.Request
		wantCode string
		wantUser string
	}{
		{name: "header", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/?token="+good(t, "query"), nil)
			r.Header.Set("Authorization", "Bearer "+good(t, "header"))
			r.AddCookie(&http.Cookie{Name: "sess", Value: good(t, "cookie")})
			return r
		}, wantUser: "header"},
		{name: "query", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/?token="+good(t, "query"), nil)
			r.AddCookie(&http.Cookie{Name: "sess", Value: good(t, "cookie")})
			return r
		}, wantUser: "query"},
		{name: "custom cookie", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.AddCookie(&http.Cookie{Name: "sess", Value: good(t, "cookie")})
			return r
		}, wantUser: "cookie"},
		{name: "default cookie name not read", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.AddCookie(&http.Cookie{Name: "hub_token", Value: good(t, "cookie")})
			return r
		}, wantCode: CodeMissingToken},
		{name: "missing", giveReq: func(*testing.T) *http.Request {
			return httptest.NewRequest(http.MethodGet, "/", nil)
		}, wantCode: CodeMissingToken},
		{name: "bad header does not fall through", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/?token="+good(t, "query"), nil)
			r.Header.Set("Authorization", "Basic dTpw")
			return r
		}, wantCode: CodeInvalidToken},
		{name: "bearer without value", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/?token="+good(t, "query"), nil)
			r.Header.Set("Authorization", "Bearer ")
			return r
		}, wantCode: CodeInvalidToken},
		{name: "invalid header token does not fall through", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/?token="+good(t, "query"), nil)
			r.Header.Set("Authorization", "Bearer x.y.z")
			return r
		}, wantCode: CodeInvalidToken},
		{name: "expired", giveReq: func(t *testing.T) *http.Request {
			tok := sign(t, "HS256", []byte(testSecret), claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), nil)
			return httptest.NewRequest(http.MethodGet, "/?token="+tok, nil)
		}, wantCode: CodeTokenExpired},
	}
	v := newVerifier(t, Options{Secret: testSecret, Cookie: "sess"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, e := v.Authenticate(tt.giveReq(t))
			if tt.wantCode != "" {
				if e == nil || e.Code != tt.wantCode || e.Status != http.StatusUnauthorized {
					t.Fatalf("Authenticate = %+v, %+v; want 401 %s", id, e, tt.wantCode)
				}
				return
			}
			if e != nil {
				t.Fatalf("Authenticate: %v", e)
			}
			if id.UserID != tt.wantUser {
				t.Errorf("UserID = %q, want %q", id.UserID, tt.wantUser)
			}
		})
	}
}

func TestAuthenticateService(t *testing.T) {
	withRoles := func(t *testing.T, c map[string]any) string {
		return sign(t, "HS256", []byte(testSecret), claims(c), nil)
	}
	tests := []struct {
		name       string
		giveKeys   []string
		giveReq    func(t *testing.T) *http.Request
		wantStatus int
		wantCode   string
		wantMsg    string
		wantUser   string
		wantRoles  []string
		wantAPIKey bool
	}{
		{name: "API key", giveKeys: []string{"other-key", "abcd-secret-key"}, giveReq: func(*testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header.Set("X-API-Key", "abcd-secret-key")
			return r
		}, wantUser: apiKeyUser(sha256.Sum256([]byte("abcd-secret-key"))), wantRoles: []string{"service"}, wantAPIKey: true},
		{name: "wrong API key", giveKeys: []string{"abcd-secret-key"}, giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header.Set("X-API-Key", "abcd-secret-kez")
			r.Header.Set("Authorization", "Bearer "+withRoles(t, map[string]any{"role": "admin"}))
			return r
		}, wantStatus: 401, wantCode: CodeInvalidToken, wantMsg: "invalid API key"},
		{name: "API key prefix", giveKeys: []string{"abcd-secret-key"}, giveReq: func(*testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header.Set("X-API-Key", "abcd")
			return r
		}, wantStatus: 401, wantCode: CodeInvalidToken, wantMsg: "invalid API key"},
		{name: "empty API key", giveKeys: []string{"abcd-secret-key", ""}, giveReq: func(*testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header["X-Api-Key"] = []string{""}
			return r
		}, wantStatus: 401, wantCode: CodeInvalidToken, wantMsg: "invalid API key"},
		{name: "API key when none configured", giveReq: func(*testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header.Set("X-API-Key", "abcd-secret-key")
			return r
		}, wantStatus: 401, wantCode: CodeInvalidToken, wantMsg: "invalid API key"},
		{name: "JWT service", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header.Set("Authorization", "Bearer "+withRoles(t, map[string]any{"roles": []string{"service"}, "sub": "billing"}))
			return r
		}, wantUser: "billing", wantRoles: []string{"service"}},
		{name: "JWT admin role claim", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header.Set("Authorization", "Bearer "+withRoles(t, map[string]any{"role": "admin", "sub": "root"}))
			return r
		}, wantUser: "root", wantRoles: []string{"admin"}},
		{name: "JWT user", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header.Set("Authorization", "Bearer "+withRoles(t, map[string]any{"roles": []string{"user"}}))
			return r
		}, wantStatus: 403, wantCode: CodeForbidden},
		{name: "invalid JWT", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.Header.Set("Authorization", "Bearer "+sign(t, "HS256", []byte("wrong"), claims(map[string]any{"role": "admin"}), nil))
			return r
		}, wantStatus: 401, wantCode: CodeInvalidToken},
		{name: "nothing", giveKeys: []string{"abcd-secret-key"}, giveReq: func(*testing.T) *http.Request {
			return httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
		}, wantStatus: 401, wantCode: CodeMissingToken},
		{name: "admin cookie ignored", giveReq: func(t *testing.T) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/api/broadcast", nil)
			r.AddCookie(&http.Cookie{Name: DefaultCookie, Value: withRoles(t, map[string]any{"role": "admin"})})
			return r
		}, wantStatus: 401, wantCode: CodeMissingToken},
		{name: "admin query token ignored", giveReq: func(t *testing.T) *http.Request {
			return httptest.NewRequest(http.MethodPost, "/api/broadcast?token="+withRoles(t, map[string]any{"role": "admin"}), nil)
		}, wantStatus: 401, wantCode: CodeMissingToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, Options{Secret: testSecret, APIKeys: tt.giveKeys})
			id, e := v.AuthenticateService(tt.giveReq(t))
			if tt.wantCode != "" {
				if e == nil || e.Code != tt.wantCode || e.Status != tt.wantStatus {
					t.Fatalf("AuthenticateService = %+v, %+v; want %d %s", id, e, tt.wantStatus, tt.wantCode)
				}
				if tt.wantMsg != "" && e.Message != tt.wantMsg {
					t.Errorf("Message = %q, want %q", e.Message, tt.wantMsg)
				}
				return
			}
			if e != nil {
				t.Fatalf("AuthenticateService: %v", e)
			}
			if id.UserID != tt.wantUser || !slices.Equal(id.Roles, tt.wantRoles) || id.APIKey != tt.wantAPIKey {
				t.Errorf("identity = %+v, want %q %q apiKey=%v", id, tt.wantUser, tt.wantRoles, tt.wantAPIKey)
			}
		})
	}
}

func TestAPIKeyUser(t *testing.T) {
	// The label shows nothing of the key; the caller scope is the whole
	// digest, so keys sharing a prefix never share it.
	a, b := sha256.Sum256([]byte("key-aaaaaaaaaaaaaaaa")), sha256.Sum256([]byte("key-bbbbbbbbbbbbbbbb"))
	if got := apiKeyUser(a); !strings.HasPrefix(got, "api-key:") || len(got) != len("api-key:")+8 || strings.Contains(got, "key-") {
		t.Errorf("apiKeyUser = %q, want api-key: and 8 hex digits", got)
	}
	if apiKeyUser(a) == apiKeyUser(b) {
		t.Errorf("two keys share the label %q", apiKeyUser(a))
	}
	if got, want := apiKeyCaller(a), "api-key:"+hex.EncodeToString(a[:]); got != want {
		t.Errorf("apiKeyCaller = %q, want %q", got, want)
	}
	if apiKeyCaller(a) == apiKeyCaller(b) {
		t.Error("two keys with one prefix share a caller scope")
	}
}

// TestAuthenticateFrom: each endpoint's sources only (the contract's
// table); a credential outside them is ignored, as if absent, and Cookie
// says when the cookie gave the token.
func TestAuthenticateFrom(t *testing.T) {
	good := func(t *testing.T, sub string) string {
		return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"sub": sub}), nil)
	}
	type give struct{ header, query, cookie bool }
	tests := []struct {
		name       string
		giveSet    Sources
		give       give
		wantUser   string
		wantCookie bool
		wantCode   string
	}{
		{"stream: header first", StreamSources, give{true, true, true}, "header", false, ""},
		{"stream: query", StreamSources, give{false, true, true}, "query", false, ""},
		{"stream: cookie", StreamSources, give{false, false, true}, "cookie", true, ""},
		{"send: header first", SendSources, give{true, true, true}, "header", false, ""},
		{"send: query ignored, cookie used", SendSources, give{false, true, true}, "cookie", true, ""},
		{"send: query alone is no token", SendSources, give{false, true, false}, "", false, CodeMissingToken},
		{"header only: cookie ignored", FromHeader, give{false, false, true}, "", false, CodeMissingToken},
		{"header only: query ignored", FromHeader, give{false, true, false}, "", false, CodeMissingToken},
		{"header only", FromHeader, give{true, true, true}, "header", false, ""},
	}
	v := newVerifier(t, Options{Secret: testSecret})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := "/api/send"
			if tt.give.query {
				target += "?token=" + good(t, "query")
			}
			r := httptest.NewRequest(http.MethodPost, target, nil)
			if tt.give.header {
				r.Header.Set("Authorization", "Bearer "+good(t, "header"))
			}
			if tt.give.cookie {
				r.AddCookie(&http.Cookie{Name: DefaultCookie, Value: good(t, "cookie")})
			}
			id, e := v.AuthenticateFrom(r, tt.giveSet)
			if tt.wantCode != "" {
				if e == nil || e.Code != tt.wantCode || e.Status != http.StatusUnauthorized {
					t.Fatalf("AuthenticateFrom = %+v, %+v; want 401 %s", id, e, tt.wantCode)
				}
				if strings.Contains(e.Message, "query") {
					t.Errorf("message %q names a source this endpoint does not take", e.Message)
				}
				return
			}
			if e != nil {
				t.Fatalf("AuthenticateFrom: %v", e)
			}
			if id.UserID != tt.wantUser || id.Cookie != tt.wantCookie || id.Caller != "jwt:"+tt.wantUser {
				t.Errorf("identity %+v, want user %q cookie=%v", id, tt.wantUser, tt.wantCookie)
			}
		})
	}
}

func TestCheckCookieOrigin(t *testing.T) {
	tests := []struct {
		name       string
		giveCookie bool
		giveOrigin string
		givePats   []string
		wantRefuse bool
	}{
		{"cookie, foreign origin", true, "https://evil.example", nil, true},
		{"cookie, origin null", true, "null", []string{"https://app.example"}, true},
		{"cookie, own host", true, "http://hub.example", nil, false},
		{"cookie, allowed origin", true, "https://app.example", []string{"https://app.example"}, false},
		{"cookie, not in the list", true, "https://evil.example", []string{"https://app.example"}, true},
		{"cookie, no origin", true, "", nil, false},
		{"header, foreign origin", false, "https://evil.example", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://hub.example/sse/realtime", nil)
			if tt.giveOrigin != "" {
				r.Header.Set("Origin", tt.giveOrigin)
			}
			e := CheckCookieOrigin(r, &Identity{UserID: "u1", Cookie: tt.giveCookie}, tt.givePats)
			if (e != nil) != tt.wantRefuse {
				t.Fatalf("CheckCookieOrigin = %v, want refused: %v", e, tt.wantRefuse)
			}
			if e != nil && (e.Status != http.StatusForbidden || e.Code != CodeOriginNotAllowed) {
				t.Errorf("error %d %s, want 403 origin_not_allowed", e.Status, e.Code)
			}
		})
	}
}

func TestRoles(t *testing.T) {
	id := &Identity{UserID: "u1", Roles: []string{"user", "service"}}
	tests := []struct {
		give []string
		want bool
	}{
		{give: []string{"admin", "service"}, want: true},
		{give: []string{"user"}, want: true},
		{give: []string{"admin"}, want: false},
		{give: nil, want: false},
	}
	for _, tt := range tests {
		if got := id.HasRole(tt.give...); got != tt.want {
			t.Errorf("HasRole(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
	var none *Identity
	if none.HasRole("admin") {
		t.Error("nil identity has a role")
	}
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, ErrMissingToken)
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Error.Code != CodeMissingToken || body.Error.Message == "" {
		t.Errorf("body = %s", rec.Body)
	}
}
