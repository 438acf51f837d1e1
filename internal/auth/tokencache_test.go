package auth

import (
	"crypto/sha256"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// verifyTwice verifies token twice, the second time through the token
// cache when the first succeeded, and checks that both give the same
// answer and that only a success is remembered.
func verifyTwice(t *testing.T, v *Verifier, token string) (*Identity, *Error) {
	t.Helper()
	id, e := v.Verify(token)
	cached := v.tokens != nil && v.tokens.has(sha256.Sum256([]byte(token)))
	if cached != (e == nil && v.tokens != nil) {
		t.Fatalf("cached = %v after Verify → %v", cached, e)
	}
	id2, e2 := v.Verify(token)
	switch {
	case (e == nil) != (e2 == nil):
		t.Fatalf("first %v, second %v", e, e2)
	case e != nil && *e != *e2:
		t.Fatalf("first %v, second %v", e, e2)
	case e == nil && !sameIdentity(id, id2):
		t.Fatalf("first %+v, second %+v", id, id2)
	}
	return id2, e2
}

// has reports whether key has an entry (tests).
func (c *tokenCache) has(key [sha256.Size]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[key]
	return ok
}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(at time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(at.UnixNano())
	return c
}
func (c *fakeClock) now() time.Time   { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) set(at time.Time) { c.ns.Store(at.UnixNano()) }
func (c *fakeClock) unix(d time.Duration) string {
	return strconv.FormatInt(c.now().Add(d).Unix(), 10)
}

// TestTokenCacheExpiry: a cached token is refused (token_expired) from the
// instant the full path would refuse it, with and without leeway, and is
// dropped then.
func TestTokenCacheExpiry(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	for _, leeway := range []time.Duration{0, 30 * time.Second} {
		t.Run("leeway "+leeway.String(), func(t *testing.T) {
			clock := newFakeClock(start)
			v := newVerifier(t, Options{Secret: testSecret, Leeway: leeway})
			v.now = clock.now
			// the same checks with the cache off, as the reference
			ref := newVerifier(t, Options{Secret: testSecret, Leeway: leeway, TokenCache: -1})
			ref.now = clock.now
			token := signedRaw(`{"alg":"HS256"}`, `{"sub":"u1","exp":`+clock.unix(time.Minute)+`}`)
			if _, e := verifyTwice(t, v, token); e != nil {
				t.Fatal(e)
			}
			key := sha256.Sum256([]byte(token))
			// the last accepted instant, then the first refused one
			clock.set(start.Add(time.Minute + leeway - time.Nanosecond))
			for _, vv := range []*Verifier{v, ref} {
				if _, e := vv.Verify(token); e != nil {
					t.Fatalf("just before exp+leeway: %v", e)
				}
			}
			if !v.tokens.has(key) {
				t.Fatal("not cached")
			}
			clock.set(start.Add(time.Minute + leeway))
			_, e := v.Verify(token)
			_, eRef := ref.Verify(token)
			if e == nil || e.Code != CodeTokenExpired || eRef == nil || *e != *eRef {
				t.Fatalf("at exp+leeway: %v (without cache: %v), want token_expired", e, eRef)
			}
			if v.tokens.has(key) {
				t.Error("the expired entry is still there")
			}
		})
	}
}

// TestTokenCacheKeyChange: a token verified with a key of the JWKS is
// refused once a fetched set no longer holds that key, although it was
// cached; and a cached entry of one set is not used with another.
func TestTokenCacheKeyChange(t *testing.T) {
	k := keys()
	var body atomic.Pointer[[]byte]
	first := jwkSet(t, jwkEntry{pub: &k.rsa.PublicKey, kid: "r1", alg: "RS256"})
	body.Store(&first)
	srv := jwksServer(t, func() []byte { return *body.Load() })
	v := newVerifier(t, Options{JWKSURL: srv.URL})
	v.missRefresh = 0
	old := sign(t, "RS256", k.rsa, claims(nil), map[string]string{"kid": "r1"})
	if _, e := verifyTwice(t, v, old); e != nil {
		t.Fatal(e)
	}
	rotated := jwkSet(t, jwkEntry{pub: &k.rsa2.PublicKey, kid: "r2", alg: "RS256"})
	body.Store(&rotated)
	// a token of the new key makes the verifier fetch the set again
	if _, e := verifyTwice(t, v, sign(t, "RS256", k.rsa2, claims(nil), map[string]string{"kid": "r2"})); e != nil {
		t.Fatalf("new key: %v", e)
	}
	id, e := v.Verify(old)
	checkResult(t, old, id, e, CodeInvalidToken, "")
	if v.tokens.has(sha256.Sum256([]byte(old))) {
		t.Error("the entry of the removed key is still there")
	}
	// back to the first set: a new set (same key) again verifies afresh
	body.Store(&first)
	if _, e := v.cache.Refresh(t.Context(), srv.URL); e != nil {
		t.Fatal(e)
	}
	if _, e := verifyTwice(t, v, old); e != nil {
		t.Fatalf("the key is back: %v", e)
	}
}

// TestTokenCacheRefusalsStillHold: tokens sharing the cached token's
// header, payload or most of its signature, and every refusal of the
// verifier's tests, are refused with a good token in the cache, twice.
func TestTokenCacheRefusalsStillHold(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret, Issuer: "idp", Audience: "hub"})
	exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	good := signedRaw(`{"alg":"HS256"}`, `{"sub":"u1","exp":`+exp+`,"iss":"idp","aud":"hub"}`)
	if _, e := verifyTwice(t, v, good); e != nil {
		t.Fatal(e)
	}
	sig := good[len(good)-43:]
	head := good[:len(good)-43]
	bad := []string{
		good + "x",
		good[:len(good)-1],
		head + sig[:42] + string(sig[42]^2),
		head + hs256("x"),
		good + "." + sig,
		signedRaw(`{"alg":"HS256"}`, `{"sub":"u1","exp":`+exp+`,"iss":"idp","aud":"hub","x":1}`) + "A",
		rawToken(t, map[string]any{"alg": "none"}, map[string]any{"sub": "u1", "exp": exp, "iss": "idp", "aud": "hub"}, ""),
		signedRaw(`{"alg":"HS256","crit":["exp"]}`, `{"sub":"u1","exp":`+exp+`,"iss":"idp","aud":"hub"}`),
		signedRaw(`{"alg":"HS256"}`, `{"sub":"u1","exp":"`+exp+`","iss":"idp","aud":"hub"}`),
		signedRaw(`{"alg":"HS256"}`, `{"sub":"u1","exp":`+exp+`,"iss":"evil","aud":"hub"}`),
		signedRaw(`{"alg":"HS256"}`, `{"sub":"u1","exp":`+exp+`,"iss":"idp","aud":"other"}`),
	}
	for i, token := range bad {
		id, e := verifyTwice(t, v, token)
		checkResult(t, token, id, e, CodeInvalidToken, "")
		if t.Failed() {
			t.Fatalf("token %d", i)
		}
	}
	if n := v.tokens.len(); n != 1 {
		t.Errorf("%d entries, want the good token's only", n)
	}
}

// TestTokenCacheBounded: the cache holds at most its size; a new token
// replaces the oldest; an entry put again after being dropped survives the
// replacement of its old place.
func TestTokenCacheBounded(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret, TokenCache: 3})
	tok := func(i int) string {
		return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"sub": "u" + strconv.Itoa(i)}), nil)
	}
	key := func(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }
	toks := []string{tok(0), tok(1), tok(2), tok(3), tok(4)}
	for _, s := range toks {
		if _, e := v.Verify(s); e != nil {
			t.Fatal(e)
		}
		if n := v.tokens.len(); n > 3 {
			t.Fatalf("%d entries, want at most 3", n)
		}
	}
	for i, s := range toks {
		if got, want := v.tokens.has(key(s)), i >= 2; got != want {
			t.Errorf("token %d cached = %v, want %v", i, got, want)
		}
	}
	// token 2 is the oldest: drop it, put it again (a new place), then
	// two more: the old place of 2 is replaced, 2 stays
	c := v.tokens
	c.mu.Lock()
	delete(c.m, key(toks[2]))
	c.mu.Unlock()
	if _, e := v.Verify(toks[2]); e != nil {
		t.Fatal(e)
	}
	if _, e := v.Verify(tok(5)); e != nil {
		t.Fatal(e)
	}
	if !v.tokens.has(key(toks[2])) {
		t.Error("token 2, put again, was dropped with its old place")
	}
	if n := v.tokens.len(); n > 3 {
		t.Errorf("%d entries, want at most 3", n)
	}
	off := newVerifier(t, Options{Secret: testSecret, TokenCache: -1})
	if off.tokens != nil {
		t.Error("TokenCache -1 did not turn the cache off")
	}
}

// TestTokenCacheCopies: the identity handed out is the caller's: changing
// it does not change what the cache answers next.
func TestTokenCacheCopies(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret})
	token := sign(t, "HS256", []byte(testSecret), claims(map[string]any{"roles": []string{"a", "b"}}), nil)
	id, e := v.Verify(token)
	if e != nil {
		t.Fatal(e)
	}
	id.Roles[0], id.UserID = "admin", "other"
	id2, e := v.Verify(token)
	if e != nil {
		t.Fatal(e)
	}
	if id2.UserID != "u1" || !slices.Equal(id2.Roles, []string{"a", "b"}) {
		t.Errorf("cached identity changed: %+v", id2)
	}
}
