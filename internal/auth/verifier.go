package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/jwtauth/v5"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

const (
	// maxSubjectLen is the longest accepted sub, in bytes.
	maxSubjectLen = 256
	// maxTokenLen bounds the work done on a token before its signature is
	// checked.
	maxTokenLen = 16 << 10
	// jwksTimeout bounds one JWKS fetch (and the default HTTP client).
	jwksTimeout = 10 * time.Second
	// defaultMissRefresh is how often at most a token with an unknown kid
	// makes the verifier fetch the JWKS again (key rotation).
	defaultMissRefresh = 15 * time.Second
)

// Options configures a Verifier. Exactly one of Secret, PublicKeyFile and
// JWKSURL should be set; none is allowed only when APIKeys is not empty
// (every token is then refused).
type Options struct {
	// Secret is the HMAC secret (HS256/384/512).
	Secret string
	// PublicKeyFile is a PEM file holding a public key (RSA, EC or Ed25519,
	// PKIX or PKCS#1) or a certificate.
	PublicKeyFile string
	// JWKSURL is the URL of a JSON Web Key Set; it is fetched once by New
	// and refreshed in the background (and when a token names an unknown
	// kid, at most every 15 s).
	JWKSURL string
	// Algorithms lists the accepted signing algorithms. Empty means HS256 for
	// a secret, the key's natural algorithm for a PEM key (RSA: RS256, EC
	// P-256/P-384/P-521: ES256/ES384/ES512, Ed25519: EdDSA) and, for a JWKS,
	// the alg of each key (or the natural one when a key has none). "none"
	// and algorithms that do not fit the key are refused by New.
	Algorithms []string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Audience, when set, must be one of the token's aud.
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat. Zero means none;
	// the configuration's default is 30 s. Negative is an error.
	Leeway time.Duration
	// Cookie is the name of the cookie read for the token; default "hub_token".
	Cookie string
	// APIKeys are the keys accepted in X-API-Key (compared in constant time;
	// empty strings are ignored).
	APIKeys []string
	// TokenCache is how many verified tokens are remembered, so that a
	// reconnecting device's token is not verified again (keyed by the
	// token's SHA-256, dropped at its exp and on a new key set). Zero means
	// DefaultTokenCache; negative turns the cache off.
	TokenCache int
	// HTTPClient fetches the JWKS; nil means a client with a 10 s timeout.
	// The JWKS cache gives a fetch no context, so a client without a timeout
	// can hang a refresh.
	HTTPClient *http.Client
}

// Verifier checks tokens and API keys. It is safe for concurrent use. A
// Verifier built with a JWKS URL owns a background refresher: call Close.
type Verifier struct {
	cookie   string
	apiKeys  [][sha256.Size]byte
	validate []jwt.ValidateOption

	// single key (secret or PEM): one jwtauth.JWTAuth per accepted algorithm.
	byAlg map[string]*jwtauth.JWTAuth
	// secret: the lean path's keyed hashes per accepted algorithm (lean.go).
	hmacAlgs map[string]*hmacAlg
	// what the lean path checks as jwt.Validate does with validate
	issuer, audience string
	leeway           time.Duration
	// verified tokens (nil: off)
	tokens *tokenCache
	// now is the clock of every time check (tests move it)
	now func() time.Time

	// JWKS.
	jwksURL      string
	ownTransport *http.Transport // nil when Options.HTTPClient was given
	cache        *jwk.Cache
	ctx          context.Context
	cancel       context.CancelFunc
	missRefresh  time.Duration
	refreshMu    sync.Mutex
	lastRefresh  time.Time
}

// New builds a Verifier from o. With a JWKS URL it fetches the key set once
// (an unreachable or unusable set is an error) and keeps refreshing it until
// ctx is done or Close is called.
func New(ctx context.Context, o Options) (*Verifier, error) {
	sources := 0
	for _, s := range []string{o.Secret, o.PublicKeyFile, o.JWKSURL} {
		if s != "" {
			sources++
		}
	}
	switch {
	case sources > 1:
		return nil, errors.New("auth: configure only one of the JWT secret, the public key file and the JWKS URL")
	case sources == 0 && len(o.APIKeys) == 0:
		return nil, errors.New("auth: no JWT key configured (secret, public key file or JWKS URL)")
	case o.Leeway < 0:
		return nil, fmt.Errorf("auth: negative leeway %s", o.Leeway)
	}
	algs, err := parseAlgorithms(o.Algorithms)
	if err != nil {
		return nil, err
	}

	v := &Verifier{
		cookie:      o.Cookie,
		missRefresh: defaultMissRefresh,
		issuer:      o.Issuer,
		audience:    o.Audience,
		leeway:      o.Leeway,
		now:         time.Now,
	}
	v.validate = []jwt.ValidateOption{
		jwt.WithRequiredClaim("exp"),
		jwt.WithAcceptableSkew(o.Leeway),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return v.now() })),
	}
	if v.cookie == "" {
		v.cookie = DefaultCookie
	}
	if o.Issuer != "" {
		v.validate = append(v.validate, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		v.validate = append(v.validate, jwt.WithAudience(o.Audience))
	}
	for _, k := range o.APIKeys {
		if k != "" {
			v.apiKeys = append(v.apiKeys, sha256.Sum256([]byte(k)))
		}
	}

	switch {
	case o.Secret != "":
		if err := v.useKey([]byte(o.Secret), "HS256", hmacAlgs, algs); err != nil {
			return nil, err
		}
		v.hmacAlgs = newHMACAlgs([]byte(o.Secret), slices.Collect(maps.Keys(v.byAlg)))
	case o.PublicKeyFile != "":
		key, err := loadPublicKey(o.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		natural, compatible := algsForPublicKey(key)
		if err := v.useKey(key, natural, compatible, algs); err != nil {
			return nil, fmt.Errorf("%w (key in %s)", err, o.PublicKeyFile)
		}
	case o.JWKSURL != "":
		if err := v.startJWKS(ctx, o, algs); err != nil {
			return nil, err
		}
	}
	switch {
	case o.TokenCache == 0:
		v.tokens = newTokenCache(DefaultTokenCache)
	case o.TokenCache > 0:
		v.tokens = newTokenCache(o.TokenCache)
	}
	return v, nil
}

// Close stops the JWKS refresher, if any (its goroutines exit right after,
// asynchronously) and drops the idle JWKS connections. Call it when the
// Verifier is no longer used; it is safe to call more than once.
func (v *Verifier) Close() {
	if v.cancel != nil {
		v.cancel()
	}
	if v.ownTransport != nil {
		v.ownTransport.CloseIdleConnections()
	}
}

var hmacAlgs = []string{"HS256", "HS384", "HS512"}

// parseAlgorithms validates the configured algorithm names.
func parseAlgorithms(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if strings.EqualFold(n, "none") {
			return nil, errors.New(`auth: algorithm "none" is never accepted`)
		}
		// Names are matched case-insensitively (hs256 is HS256).
		i := slices.IndexFunc(jwa.SignatureAlgorithms(), func(a jwa.SignatureAlgorithm) bool {
			return strings.EqualFold(a.String(), n)
		})
		if i < 0 {
			return nil, fmt.Errorf("auth: unknown signing algorithm %q", n)
		}
		if canon := jwa.SignatureAlgorithms()[i].String(); !slices.Contains(out, canon) {
			out = append(out, canon)
		}
	}
	return out, nil
}

// useKey sets up single-key verification: the configured algorithms (or
// natural when none) must all fit the key.
func (v *Verifier) useKey(key any, natural string, compatible, configured []string) error {
	algs := configured
	if len(algs) == 0 {
		algs = []string{natural}
	}
	v.byAlg = make(map[string]*jwtauth.JWTAuth, len(algs))
	for _, alg := range algs {
		if !slices.Contains(compatible, alg) {
			return fmt.Errorf("auth: algorithm %s does not fit the configured key (use one of %s)", alg, strings.Join(compatible, ", "))
		}
		if b, ok := key.([]byte); ok {
			v.byAlg[alg] = jwtauth.New(alg, b, nil, v.validate...)
		} else {
			v.byAlg[alg] = jwtauth.New(alg, nil, key, v.validate...)
		}
	}
	return nil
}

// loadPublicKey reads the first public key or certificate of a PEM file.
func loadPublicKey(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read public key: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("auth: no PEM public key or certificate in %s", path)
		}
		var key any
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			cert, err = x509.ParseCertificate(block.Bytes)
			if err == nil {
				key = cert.PublicKey
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("auth: parse %s in %s: %w", strings.ToLower(block.Type), path, err)
		}
		if natural, _ := algsForPublicKey(key); natural == "" {
			return nil, fmt.Errorf("auth: unsupported public key type %T in %s", key, path)
		}
		return key, nil
	}
}

var rsaAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

// algsForPublicKey returns the natural algorithm of a public key and the
// algorithms it can verify; "" for an unsupported key.
func algsForPublicKey(key any) (natural string, compatible []string) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return "RS256", rsaAlgs
	case *ecdsa.PublicKey:
		return ecAlg(k.Curve.Params().Name)
	case ed25519.PublicKey:
		return "EdDSA", []string{"EdDSA"}
	}
	return "", nil
}

// ecAlg maps a curve name (Go's or JOSE's, they agree) to its algorithm.
func ecAlg(curve string) (string, []string) {
	var alg string
	switch curve {
	case elliptic.P256().Params().Name:
		alg = "ES256"
	case elliptic.P384().Params().Name:
		alg = "ES384"
	case elliptic.P521().Params().Name:
		alg = "ES512"
	default:
		return "", nil
	}
	return alg, []string{alg}
}

// curved is implemented by EC and OKP JWKs.
type curved interface {
	Crv() jwa.EllipticCurveAlgorithm
}

// algsForJWK is algsForPublicKey for a JWK; symmetric keys are never used
// from a key set.
func algsForJWK(key jwk.Key) (natural string, compatible []string) {
	switch key.KeyType() {
	case jwa.RSA:
		return "RS256", rsaAlgs
	case jwa.EC:
		if k, ok := key.(curved); ok {
			return ecAlg(k.Crv().String())
		}
	case jwa.OKP:
		if k, ok := key.(curved); ok && k.Crv() == jwa.Ed25519 {
			return "EdDSA", []string{"EdDSA"}
		}
	}
	return "", nil
}

// startJWKS registers the URL in a jwk.Cache bound to ctx and fetches it once.
func (v *Verifier) startJWKS(ctx context.Context, o Options, algs []string) error {
	client := o.HTTPClient
	if client == nil {
		// An own transport, so that Close can drop its idle connections.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		v.ownTransport = tr
		client = &http.Client{Timeout: jwksTimeout, Transport: tr}
	}
	v.jwksURL = o.JWKSURL
	v.ctx, v.cancel = context.WithCancel(ctx)
	v.cache = jwk.NewCache(v.ctx)
	filter := jwk.PostFetchFunc(func(_ string, set jwk.Set) (jwk.Set, error) {
		return usableKeys(set, algs)
	})
	if err := v.cache.Register(o.JWKSURL, jwk.WithHTTPClient(bodyClosingClient{client}), jwk.WithPostFetcher(filter)); err != nil {
		v.Close()
		return fmt.Errorf("auth: register JWKS: %w", err)
	}
	fetchCtx, cancel := context.WithTimeout(v.ctx, jwksTimeout)
	defer cancel()
	if _, err := v.cache.Refresh(fetchCtx, o.JWKSURL); err != nil {
		v.Close()
		return fmt.Errorf("auth: fetch JWKS: %w", err)
	}
	v.lastRefresh = time.Now()
	return nil
}

// maxJWKSSize bounds a JWKS response.
const maxJWKSSize = 1 << 20

// bodyClosingClient reads and closes every response body itself: the JWKS
// cache never closes a body, and leaves a non-200 one unread, which would
// keep the connection (and two goroutines) alive.
type bodyClosingClient struct{ c *http.Client }

// Get fetches url and returns the response with its body in memory. The
// cache passes no context: the client's timeout bounds the request.
func (b bodyClosingClient) Get(url string) (*http.Response, error) {
	res, err := b.c.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("read JWKS: %w", err)
	}
	if len(body) > maxJWKSSize {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSSize)
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res, nil
}

// usableKeys keeps the signing keys of set whose algorithm fits the key and,
// when algs is not empty, is one of algs. A key without alg gets its natural
// algorithm. A set with no usable key is an error.
func usableKeys(set jwk.Set, algs []string) (jwk.Set, error) {
	out := jwk.NewSet()
	for i := range set.Len() {
		key, _ := set.Key(i)
		if use := key.KeyUsage(); use != "" && use != jwk.ForSignature.String() {
			continue
		}
		natural, compatible := algsForJWK(key)
		if natural == "" {
			continue
		}
		alg := key.Algorithm().String()
		if alg == "" {
			alg = natural
			if err := key.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(alg)); err != nil {
				return nil, fmt.Errorf("set key algorithm: %w", err)
			}
		}
		if !slices.Contains(compatible, alg) || (len(algs) > 0 && !slices.Contains(algs, alg)) {
			continue
		}
		if err := out.AddKey(key); err != nil {
			return nil, fmt.Errorf("add key: %w", err)
		}
	}
	if out.Len() == 0 {
		return nil, errors.New("the key set has no usable signing key")
	}
	return out, nil
}

// header is the part of a JWS protected header looked at before verifying.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	// Crit, when present at all, makes the token refused: it names header
	// parameters the recipient must understand (RFC 7515 §4.1.11), and the
	// hub understands no extension.
	Crit json.RawMessage `json:"crit"`
}

// strictB64 is base64url without padding that refuses non-zero unused bits.
var strictB64 = base64.RawURLEncoding.Strict()

// peekHeader decodes the protected header of a compact JWS without trusting
// it: it only selects the key, which must then verify the signature.
func peekHeader(token string) (header, bool) {
	var h header
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return h, false
	}
	// Every segment must be canonical base64url: jwx decodes leniently, so
	// without this one signed token would have many spellings (the unused
	// bits of a segment's last character), and a token must have one.
	for _, p := range parts[1:] {
		if _, err := strictB64.DecodeString(p); err != nil {
			return h, false
		}
	}
	raw, err := strictB64.DecodeString(parts[0])
	if err != nil {
		return h, false
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, false
	}
	return h, true
}

// Verify checks a token's signature and claims and returns its identity.
// Every failure is a 401: token_expired when exp has passed (beyond the
// leeway), invalid_token otherwise. A token verified before is answered
// from the token cache while its exp holds and the keys are the same; a
// common HMAC token takes the lean path (lean.go); every other token,
// and every refusal, the full path through jwx.
func (v *Verifier) Verify(token string) (*Identity, *Error) {
	if token == "" {
		return nil, invalid("the token is empty")
	}
	if len(token) > maxTokenLen {
		return nil, invalid("the token is too long")
	}
	var (
		key  [sha256.Size]byte
		keys any // the key set verified with: cached entries must match it
	)
	if v.tokens != nil {
		key = sha256.Sum256([]byte(token))
		keys = v.currentKeys()
		if id, ok := v.tokens.get(key, keys, v.now()); ok {
			return id, nil
		}
	}
	var (
		id *Identity
		e  *Error
		ok bool
	)
	if v.hmacAlgs != nil {
		id, ok = v.verifyLean(token)
	}
	if !ok {
		id, keys, e = v.verifyFull(token)
	}
	if e == nil && v.tokens != nil {
		v.tokens.put(key, id, keys, id.ExpiresAt.Add(v.leeway))
	}
	return id, e
}

// currentKeys is the key set tokens are verified with now: the JWKS as
// last fetched (a new fetch is a new set), nil for a fixed key.
func (v *Verifier) currentKeys() any {
	if v.cache == nil {
		return nil
	}
	set, err := v.cache.Get(v.ctx, v.jwksURL)
	if err != nil {
		return nil
	}
	return set
}

// verifyFull verifies through jwx and returns the identity and the key set
// used (nil for a fixed key).
func (v *Verifier) verifyFull(token string) (*Identity, any, *Error) {
	h, ok := peekHeader(token)
	if !ok {
		return nil, nil, invalid("the token is malformed (not a signed JWT)")
	}
	if h.Alg == "" || strings.EqualFold(h.Alg, "none") {
		return nil, nil, invalid("unsigned tokens (alg none) are not accepted")
	}
	if h.Crit != nil {
		return nil, nil, invalid("the token names critical header extensions (crit), which the hub does not understand")
	}

	var (
		tok  jwt.Token
		keys any
		e    *Error
	)
	if v.cache != nil {
		tok, keys, e = v.parseJWKS(token, h)
	} else {
		tok, e = v.parseSingle(token, h)
	}
	if e != nil {
		return nil, nil, e
	}
	if e := numericTimes(token); e != nil {
		return nil, nil, e
	}
	if err := jwt.Validate(tok, v.validate...); err != nil {
		return nil, nil, validationError(err)
	}
	id, e := identity(tok)
	return id, keys, e
}

func errAlgNotAccepted() *Error { return invalid("the token's signing algorithm is not accepted") }

func (v *Verifier) parseSingle(token string, h header) (jwt.Token, *Error) {
	ja, ok := v.byAlg[h.Alg]
	if !ok {
		return nil, errAlgNotAccepted()
	}
	tok, err := ja.Decode(token)
	if err != nil {
		return nil, invalid("the token's signature is invalid or the token is malformed")
	}
	return tok, nil
}

func (v *Verifier) parseJWKS(token string, h header) (jwt.Token, jwk.Set, *Error) {
	set, key, e := v.findKey(h.Kid)
	if e != nil {
		return nil, nil, e
	}
	// jwx verifies with the key's alg, whatever the header says: insist that
	// they agree, so the header can never pick another algorithm.
	if key.Algorithm().String() != h.Alg {
		return nil, nil, errAlgNotAccepted()
	}
	tok, err := jwt.Parse([]byte(token),
		jwt.WithKeySet(set, jws.WithUseDefault(true)),
		jwt.WithValidate(false))
	if err != nil {
		return nil, nil, invalid("the token's signature is invalid or the token is malformed")
	}
	return tok, set, nil
}

// findKey returns the current key set and the key named kid (the only key
// when kid is empty and the set has one). An unknown kid makes it fetch the
// set again (key rotation), at most every missRefresh.
func (v *Verifier) findKey(kid string) (jwk.Set, jwk.Key, *Error) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(v.ctx, jwksTimeout)
		set, err := v.cache.Get(ctx, v.jwksURL)
		cancel()
		if err != nil {
			return nil, nil, invalid("the signing keys are unavailable")
		}
		if kid == "" {
			if set.Len() != 1 {
				return nil, nil, invalid("the token has no key id (kid)")
			}
			key, _ := set.Key(0)
			return set, key, nil
		}
		if key, ok := set.LookupKeyID(kid); ok {
			return set, key, nil
		}
		if attempt > 0 || !v.refreshAfterMiss() {
			return nil, nil, invalid("the token's signing key is unknown")
		}
	}
}

// refreshAfterMiss fetches the JWKS again unless that was done less than
// missRefresh ago. It reports whether the set may have changed.
func (v *Verifier) refreshAfterMiss() bool {
	v.refreshMu.Lock()
	defer v.refreshMu.Unlock()
	if time.Since(v.lastRefresh) < v.missRefresh {
		// Another request may just have refreshed it: look once more.
		return true
	}
	v.lastRefresh = time.Now()
	ctx, cancel := context.WithTimeout(v.ctx, jwksTimeout)
	defer cancel()
	_, err := v.cache.Refresh(ctx, v.jwksURL)
	return err == nil
}

// timeClaims must be JSON numbers (RFC 7519 §2, NumericDate): jwx would
// also read a string such as "1767225600".
var timeClaims = []string{"exp", "nbf", "iat"}

// numericTimes refuses a token (already verified) whose payload gives exp,
// nbf or iat as anything but a JSON number. Every member is looked at, so
// a duplicate key cannot hide a string behind a number.
func numericTimes(token string) *Error {
	_, rest, _ := strings.Cut(token, ".")
	seg, _, _ := strings.Cut(rest, ".")
	payload, err := strictB64.DecodeString(seg)
	if err != nil {
		return invalid("the token is malformed (not a signed JWT)")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return invalid("the token's claims are not a JSON object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return invalid("the token's claims are not a JSON object")
		}
		name, _ := t.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return invalid("the token's claims are not a JSON object")
		}
		if slices.Contains(timeClaims, name) && !isJSONNumber(val) {
			return invalid("the token's " + name + " claim must be a JSON number (seconds since the epoch)")
		}
	}
	return nil
}

// isJSONNumber reports whether raw, valid JSON, is a number.
func isJSONNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

// validationError maps a jwt.Validate error to the contract's error.
func validationError(err error) *Error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return &Error{Status: http.StatusUnauthorized, Code: CodeTokenExpired, Message: "the token has expired"}
	case errors.Is(err, jwt.ErrTokenNotYetValid()):
		return invalid("the token is not valid yet (nbf is in the future)")
	case errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return invalid("the token was issued in the future (iat)")
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return invalid("the token's issuer (iss) is not accepted")
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return invalid("the token's audience (aud) is not accepted")
	case errors.Is(err, jwt.ErrRequiredClaim()):
		return invalid("the token has no expiry (exp)")
	}
	return invalid("the token's claims are invalid")
}

// identity reads sub and the roles of a verified token.
func identity(tok jwt.Token) (*Identity, *Error) {
	sub := tok.Subject()
	if sub == "" {
		return nil, invalid("the token has no subject (sub)")
	}
	if len(sub) > maxSubjectLen {
		return nil, invalid("the token's subject (sub) is longer than 256 bytes")
	}
	var roles []string
	if raw, ok := tok.Get("roles"); ok {
		list, ok := raw.([]any)
		if !ok {
			return nil, invalid("the token's roles claim must be an array of strings")
		}
		for _, r := range list {
			s, ok := r.(string)
			if !ok {
				return nil, invalid("the token's roles claim must be an array of strings")
			}
			if s != "" && !slices.Contains(roles, s) {
				roles = append(roles, s)
			}
		}
	}
	if raw, ok := tok.Get("role"); ok {
		s, ok := raw.(string)
		if !ok {
			return nil, invalid("the token's role claim must be a string")
		}
		if s != "" && !slices.Contains(roles, s) {
			roles = append(roles, s)
		}
	}
	return &Identity{UserID: sub, Caller: jwtCaller(sub), Roles: roles, ExpiresAt: tok.Expiration()}, nil
}
