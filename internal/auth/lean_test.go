package auth

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fullOnly is v's result through the full path alone (no lean path, no
// cache).
func fullOnly(v *Verifier, token string) (*Identity, *Error) {
	id, _, e := v.verifyFull(token)
	return id, e
}

// sameIdentity reports whether a and b are the same identity.
func sameIdentity(a, b *Identity) bool {
	return a.UserID == b.UserID && a.Caller == b.Caller && slices.Equal(a.Roles, b.Roles) &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.APIKey == b.APIKey
}

// TestLeanTakesCommonTokens: the tokens of the usual shapes are accepted
// by the lean path (else the speed is silently gone) with the identity the
// full path gives.
func TestLeanTakesCommonTokens(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name    string
		algs    []string
		iss     string
		aud     string
		giveTok func(t *testing.T) string
	}{
		{name: "jwx HS256", giveTok: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(nil), nil)
		}},
		{name: "Mint", giveTok: func(t *testing.T) string {
			tok, err := Mint(testSecret, "HS256", "u1", []string{"a", "b"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}},
		{name: "HS512 with kid and typ", algs: []string{"HS512"}, giveTok: func(t *testing.T) string {
			return sign(t, "HS512", []byte(testSecret), claims(nil), map[string]string{"kid": "k1", "typ": "JWT"})
		}},
		{name: "roles, role, iss, aud list, jti and others", iss: "idp", aud: "hub", giveTok: func(t *testing.T) string {
			return signedRaw(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"ü1","exp":`+strconv.FormatInt(exp, 10)+
				`,"iss":"idp","aud":["x","hub"],"jti":"j","roles":["a","","a","b"],"role":"c","n":-1.5e3,"o":{"p":[true,null,"\u00e9"]}}`)
		}},
		{name: "role already in roles", giveTok: func(t *testing.T) string {
			return signedRaw(`{"alg":"HS256"}`, ` { "sub" : "u1" , "exp" : `+strconv.FormatInt(exp, 10)+` , "roles" : ["b","a"], "role" : "a" } `)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, Options{Secret: testSecret, Algorithms: tt.algs, Issuer: tt.iss, Audience: tt.aud})
			token := tt.giveTok(t)
			lean, ok := v.verifyLean(token)
			if !ok {
				t.Fatal("the lean path did not take the token")
			}
			full, e := fullOnly(v, token)
			if e != nil {
				t.Fatalf("full path: %v", e)
			}
			if !sameIdentity(lean, full) {
				t.Errorf("lean %+v, full %+v", lean, full)
			}
		})
	}
}

// TestLeanLeavesTheRest: shapes the lean path does not read, and every
// refusal, go to the full path (which decides, tested elsewhere).
func TestLeanLeavesTheRest(t *testing.T) {
	now := time.Now()
	exp := strconv.FormatInt(now.Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)
	future := strconv.FormatInt(now.Add(time.Hour).Unix(), 10)
	tests := []struct{ name, header, payload string }{
		{"fractional exp", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `.5}`},
		{"exp 0", `{"alg":"HS256"}`, `{"sub":"u1","exp":0}`},
		{"exp with exponent", `{"alg":"HS256"}`, `{"sub":"u1","exp":1e10}`},
		{"exp a string", `{"alg":"HS256"}`, `{"sub":"u1","exp":"` + exp + `"}`},
		{"expired", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + past + `}`},
		{"no exp", `{"alg":"HS256"}`, `{"sub":"u1"}`},
		{"nbf in the future", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"nbf":` + future + `}`},
		{"iat in the future", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"iat":` + future + `}`},
		{"duplicate exp", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"exp":` + exp + `}`},
		{"escaped key", `{"alg":"HS256"}`, `{"sub":"u1","\u0065xp":` + exp + `}`},
		{"escaped sub", `{"alg":"HS256"}`, `{"sub":"u\u0031","exp":` + exp + `}`},
		{"sub a number", `{"alg":"HS256"}`, `{"sub":1,"exp":` + exp + `}`},
		{"sub empty", `{"alg":"HS256"}`, `{"sub":"","exp":` + exp + `}`},
		{"sub invalid UTF-8", `{"alg":"HS256"}`, "{\"sub\":\"u\xff\",\"exp\":" + exp + "}"},
		{"roles a string", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"roles":"a"}`},
		{"roles null", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"roles":null}`},
		{"role an array", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"role":["a"]}`},
		{"trailing data", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `}x`},
		{"two objects", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `}{}`},
		{"not an object", `{"alg":"HS256"}`, `["sub"]`},
		{"bad JSON in another claim", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"x":01}`},
		{"another claim beyond a float64", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"x":1e400}`},
		{"another claim of 400 digits", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"x":` + strings.Repeat("9", 400) + `}`},
		{"crit", `{"alg":"HS256","crit":["exp"]}`, `{"sub":"u1","exp":` + exp + `}`},
		{"alg none", `{"alg":"none"}`, `{"sub":"u1","exp":` + exp + `}`},
		{"alg not configured", `{"alg":"HS384"}`, `{"sub":"u1","exp":` + exp + `}`},
		{"alg in another case", `{"alg":"hs256"}`, `{"sub":"u1","exp":` + exp + `}`},
		{"other header", `{"alg":"HS256","cty":"JWT"}`, `{"sub":"u1","exp":` + exp + `}`},
		{"duplicate alg", `{"alg":"HS256","alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `}`},
		{"key in another case", `{"ALG":"HS256"}`, `{"sub":"u1","exp":` + exp + `}`},
	}
	v := newVerifier(t, Options{Secret: testSecret})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if id, ok := v.verifyLean(signedRaw(tt.header, tt.payload)); ok {
				t.Errorf("the lean path accepted it: %+v", id)
			}
		})
	}
	t.Run("tampered signature", func(t *testing.T) {
		good := signedRaw(`{"alg":"HS256"}`, `{"sub":"u1","exp":`+exp+`}`)
		if _, ok := v.verifyLean(good); !ok {
			t.Fatal("the lean path refused the untampered token")
		}
		last := good[len(good)-2]
		for _, bad := range []string{
			good[:len(good)-2] + string(last^1) + good[len(good)-1:],
			good[:len(good)-1],
			good + "A",
			good + ".",
		} {
			if _, ok := v.verifyLean(bad); ok {
				t.Errorf("accepted %q", bad)
			}
		}
	})
	t.Run("issuer and audience", func(t *testing.T) {
		va := newVerifier(t, Options{Secret: testSecret, Issuer: "idp", Audience: "hub"})
		for _, p := range []string{
			`{"sub":"u1","exp":` + exp + `,"aud":"hub"}`,
			`{"sub":"u1","exp":` + exp + `,"iss":"idp"}`,
			`{"sub":"u1","exp":` + exp + `,"iss":"IDP","aud":"hub"}`,
			`{"sub":"u1","exp":` + exp + `,"iss":"idp","aud":["x"]}`,
		} {
			if _, ok := va.verifyLean(signedRaw(`{"alg":"HS256"}`, p)); ok {
				t.Errorf("accepted %s", p)
			}
		}
	})
}

// FuzzLeanMatchesFull: whenever the lean path accepts a token, the full
// path accepts it too, with the same identity.
func FuzzLeanMatchesFull(f *testing.F) {
	exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	for _, s := range [][2]string{
		{`{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `}`},
		{`{"alg":"HS256","typ":"JWT"}`, `{"sub":"u1","exp":` + exp + `,"roles":["a","b"],"role":"c"}`},
		{`{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"iss":"idp","aud":["hub"],"x":{"y":[1,2.5e-3,"\n"]}}`},
		{`{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"nbf":1,"iat":1}`},
		{`{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `.0}`},
		{`{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"x":[1e308,-2.5E-400,0.1]}`},
	} {
		f.Add(s[0], s[1])
	}
	plain := newFuzzVerifier(f)
	checked, err := New(f.Context(), Options{Secret: testSecret, Issuer: "idp", Audience: "hub", Leeway: 30 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(checked.Close)
	f.Fuzz(func(t *testing.T, header, payload string) {
		token := signedRaw(header, payload)
		for _, v := range []*Verifier{plain, checked} {
			lean, ok := v.verifyLean(token)
			if !ok {
				continue
			}
			full, e := fullOnly(v, token)
			if e != nil {
				t.Fatalf("lean accepted %s.%s, full refused: %v", header, payload, e)
			}
			if !sameIdentity(lean, full) {
				t.Fatalf("lean %+v, full %+v", lean, full)
			}
		}
	})
}

// BenchmarkVerify: one HS256 token of the usual shape through each path.
func BenchmarkVerify(b *testing.B) {
	v, err := New(b.Context(), Options{Secret: testSecret})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	token, err := Mint(testSecret, "HS256", "bench-12345", nil, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, e := fullOnly(v, token); e != nil {
				b.Fatal(e)
			}
		}
	})
	b.Run("lean", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := v.verifyLean(token); !ok {
				b.Fatal("refused")
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, e := v.Verify(token); e != nil {
				b.Fatal(e)
			}
		}
	})
}
