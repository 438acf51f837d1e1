package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Validate checks every field and returns all the problems found, joined,
// each naming its key. It reads the JWT public key and TLS files to check
// that they are readable.
func (c Config) Validate() error {
	var errs []error
	for i := range table {
		k := &table[i]
		if k.check == nil {
			continue
		}
		if err := k.check(&c); err != nil {
			errs = append(errs, k.invalid(k.get(&c), err))
		}
	}
	errs = append(errs, c.checkJWT()...)
	errs = append(errs, c.checkOriginsWithCookie()...)
	if c.InternalAddr != "" && c.InternalAddr == c.Addr && !strings.HasSuffix(c.Addr, ":0") { // port 0: two ports the system picks
		k := byName["internal_addr"]
		errs = append(errs, k.invalid(c.InternalAddr, errors.New("must differ from HUB_ADDR (leave it empty to share the public listener)")))
	}
	if c.WSPath == c.SSEPath {
		k := byName["sse_path"]
		errs = append(errs, k.invalid(c.SSEPath, errors.New("must differ from HUB_WS_PATH")))
	}
	errs = append(errs, c.checkTLS()...)
	if c.Broker == "redis" && isClusterURL(c.RedisURL) {
		k := byName["redis_url"]
		errs = append(errs, k.invalid(c.RedisURL, errors.New("names several nodes (addr=): a Redis Cluster needs HUB_BROKER=redis-cluster")))
	}
	return errors.Join(errs...)
}

// checkJWT checks the key sources and the algorithms against them.
func (c *Config) checkJWT() []error {
	var errs []error
	var sources []string
	for _, name := range []string{"jwt_secret", "jwt_public_key_file", "jwt_jwks_url"} {
		k := byName[name]
		if k.get(c) != "" {
			sources = append(sources, k.label())
		}
	}
	if len(sources) > 1 {
		errs = append(errs, fmt.Errorf("config: %s: only one JWT key source may be set", strings.Join(sources, ", ")))
	}
	if len(sources) == 0 && !c.Dev {
		errs = append(errs, errNoJWTKey)
	}
	if c.JWTPublicKeyFile != "" {
		if err := checkReadable(c.JWTPublicKeyFile); err != nil {
			errs = append(errs, byName["jwt_public_key_file"].invalid(c.JWTPublicKeyFile, err))
		}
	}

	algs := byName["jwt_algorithms"]
	if algs.check(c) != nil {
		return errs // already reported
	}
	var hmac, public []string
	for _, a := range c.JWTAlgorithms {
		if isHMAC(a) {
			hmac = append(hmac, a)
		} else {
			public = append(public, a)
		}
	}
	switch {
	case c.JWTSecret != "" && len(public) > 0:
		errs = append(errs, algs.invalid(algs.get(c), fmt.Errorf("%s cannot be used with HUB_JWT_SECRET, which allows HS256, HS384 and HS512 only", strings.Join(public, ", "))))
	case c.JWTSecret == "" && len(hmac) > 0 && (c.JWTPublicKeyFile != "" || c.JWTJWKSURL != ""):
		errs = append(errs, algs.invalid(algs.get(c), fmt.Errorf("%s needs HUB_JWT_SECRET; a public key file or JWKS URL allows RS, PS, ES or EdDSA algorithms only", strings.Join(hmac, ", "))))
	case !c.HasJWTKey() && len(public) > 0:
		errs = append(errs, algs.invalid(algs.get(c), fmt.Errorf("%s needs HUB_JWT_PUBLIC_KEY_FILE or HUB_JWT_JWKS_URL", strings.Join(public, ", "))))
	}
	return errs
}

// errNoJWTKey refuses a configuration without a JWT key outside
// development mode (a misspelt key must not start a hub that hands out
// tokens).
var errNoJWTKey = errors.New("config: HUB_JWT_SECRET, HUB_JWT_PUBLIC_KEY_FILE or HUB_JWT_JWKS_URL: no JWT key is configured; " +
	"set one (a secret of at least 32 bytes, a PEM public key file or a JWKS URL), " +
	"or start with --dev (HUB_DEV=true) for development mode with a random secret")

// checkOriginsWithCookie refuses "*" in the allowed origins while the
// token cookie is on: any site could then act with a user's cookie.
func (c *Config) checkOriginsWithCookie() []error {
	if c.TokenCookie == "" {
		return nil
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			k := byName["allowed_origins"]
			return []error{k.invalid(k.get(c), fmt.Errorf(
				`"*" is refused while the token cookie is on (HUB_TOKEN_COOKIE=%s): any site could use a user's cookie; `+
					"list the allowed origins, or set HUB_TOKEN_COOKIE= (empty) to turn the cookie off", c.TokenCookie))}
		}
	}
	return nil
}

// checkTLS checks that the certificate and key come together and can be read.
func (c *Config) checkTLS() []error {
	cert, key := byName["tls_cert_file"], byName["tls_key_file"]
	switch {
	case c.TLSCertFile == "" && c.TLSKeyFile == "":
		return nil
	case c.TLSKeyFile == "":
		return []error{key.invalid("", errors.New("required when HUB_TLS_CERT_FILE is set"))}
	case c.TLSCertFile == "":
		return []error{cert.invalid("", errors.New("required when HUB_TLS_KEY_FILE is set"))}
	}
	var errs []error
	if err := checkReadable(c.TLSCertFile); err != nil {
		errs = append(errs, cert.invalid(c.TLSCertFile, err))
	}
	if err := checkReadable(c.TLSKeyFile); err != nil {
		errs = append(errs, key.invalid(c.TLSKeyFile, err))
	}
	return errs
}

// checkReadable reports whether path names a readable, non-empty file.
func checkReadable(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot read the file: %w", err)
	}
	if len(data) == 0 {
		return errors.New("the file is empty")
	}
	return nil
}
