// Package config owns the hub's typed configuration: the defaults, the YAML
// file, the environment and the command-line flags, merged and validated in
// one place.
//
// Sources are applied in this order, a later one winning over an earlier one:
//
//  1. the defaults ([Default]);
//  2. a YAML file named by --config (or, when that flag is absent, by the
//     HUB_CONFIG environment variable), keys in snake_case without the HUB_
//     prefix, e.g. jwt_secret; an unknown key is an error, a key with no value
//     (null) keeps the value it had;
//  3. environment variables HUB_<KEY>, e.g. HUB_JWT_SECRET; an empty variable
//     counts as unset, except HUB_TOKEN_COOKIE, which an empty variable turns
//     off; a HUB_ variable that is no key is reported by [Load] as a warning;
//  4. command-line flags --<key> in kebab-case, e.g. --jwt-secret; the last
//     occurrence of a repeated flag wins.
//
// Every key is described once, in a single table that drives all four
// sources, [Keys], [Markdown] and the flag usage text, so nothing is written
// twice.
//
// Value syntax: durations use Go syntax (25s, 10m, 1h30m); sizes are plain
// bytes (65536) or an integer with a unit, where KiB, MiB and GiB are powers of
// 1024 and KB, MB and GB are powers of 1000 (units are case-insensitive, a B
// suffix alone means bytes); booleans are true/false (or 1/0); lists are
// comma-separated in the environment and in flags, and either a YAML list or
// a comma-separated string in the file. Surrounding white space is trimmed.
//
// A bad value is an error that names the key, in the form
//
//	config: HUB_HISTORY_SIZE (history_size): invalid value "abc": must be a non-negative integer
//
// Secret values (JWT secret, API keys, upstream secret) never appear in an
// error, and passwords in URLs are redacted.
//
// Start-up is safe by default: without a JWT key (HUB_JWT_SECRET,
// HUB_JWT_PUBLIC_KEY_FILE or HUB_JWT_JWKS_URL) the configuration is refused
// unless development mode is asked for (--dev or HUB_DEV=true); an HMAC
// secret needs 32 bytes or more (RFC 7518 §3.2) and an API key 16 characters
// or more; HUB_ALLOWED_ORIGINS=* is refused while the token cookie is on.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Config is the hub's whole configuration. The comment of each field names
// its environment variable; the key table in keys.go holds each key's
// default, meaning and checks ([Keys] and [Usage] print them).
type Config struct {
	Addr                  string        // HUB_ADDR
	InternalAddr          string        // HUB_INTERNAL_ADDR
	NodeName              string        // HUB_NODE_NAME
	JWTSecret             string        // HUB_JWT_SECRET
	JWTPublicKeyFile      string        // HUB_JWT_PUBLIC_KEY_FILE
	JWTJWKSURL            string        // HUB_JWT_JWKS_URL
	JWTAlgorithms         []string      // HUB_JWT_ALGORITHMS
	JWTIssuer             string        // HUB_JWT_ISSUER
	JWTAudience           string        // HUB_JWT_AUDIENCE
	JWTLeeway             time.Duration // HUB_JWT_LEEWAY
	TokenCookie           string        // HUB_TOKEN_COOKIE
	APIKeys               []string      // HUB_API_KEYS
	AllowedOrigins        []string      // HUB_ALLOWED_ORIGINS
	WSPath                string        // HUB_WS_PATH
	SSEPath               string        // HUB_SSE_PATH
	HeartbeatInterval     time.Duration // HUB_HEARTBEAT_INTERVAL
	PongTimeout           time.Duration // HUB_PONG_TIMEOUT
	WSCompression         bool          // HUB_WS_COMPRESSION
	WSCompressionMin      int           // HUB_WS_COMPRESSION_MIN
	HistorySize           int           // HUB_HISTORY_SIZE
	HistoryTTL            time.Duration // HUB_HISTORY_TTL
	HistoryMaxBytes       int64         // HUB_HISTORY_MAX_BYTES
	HistoryTotalBytes     int64         // HUB_HISTORY_TOTAL_BYTES
	SendQueue             int           // HUB_SEND_QUEUE
	MaxConnectionsPerUser int           // HUB_MAX_CONNECTIONS_PER_USER
	MaxConnections        int           // HUB_MAX_CONNECTIONS
	MaxPayload            int64         // HUB_MAX_PAYLOAD
	ShutdownTimeout       time.Duration // HUB_SHUTDOWN_TIMEOUT
	PublishTimeout        time.Duration // HUB_PUBLISH_TIMEOUT
	Broker                string        // HUB_BROKER
	RedisURL              string        // HUB_REDIS_URL
	LogLevel              string        // HUB_LOG_LEVEL
	LogFormat             string        // HUB_LOG_FORMAT
	TLSCertFile           string        // HUB_TLS_CERT_FILE
	TLSKeyFile            string        // HUB_TLS_KEY_FILE
	ConnectRate           float64       // HUB_CONNECT_RATE
	ConnectBurst          int           // HUB_CONNECT_BURST
	MaxConnectionsPerIP   int           // HUB_MAX_CONNECTIONS_PER_IP
	Pprof                 bool          // HUB_PPROF
	UpstreamURL           string        // HUB_UPSTREAM_URL
	UpstreamSecret        string        // HUB_UPSTREAM_SECRET
	UpstreamTimeout       time.Duration // HUB_UPSTREAM_TIMEOUT
	SendRate              float64       // HUB_SEND_RATE
	Dev                   bool          // HUB_DEV

	TrustedProxies []netip.Prefix // HUB_TRUSTED_PROXIES
}

// configEnv names the environment variable read for the YAML file when the
// --config flag is absent.
const configEnv = "HUB_CONFIG"

// DevAddr is the public listener in development mode when no source gives
// an address: loopback only.
const DevAddr = "127.0.0.1:8080"

// Default returns the defaults: each key's default as written in the key
// table (the one place a default is written; docs and --help read it too).
// NodeName is the host name, or "hub" when it cannot be read.
func Default() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "hub"
	}
	c := Config{NodeName: host}
	for i := range table {
		k := &table[i]
		if k.prose || k.def == "" {
			continue
		}
		if err := k.parse(&c, k.def); err != nil {
			panic("config: the default of " + k.name + " does not parse: " + err.Error())
		}
	}
	return c
}

// Load merges defaults < YAML file named by --config (in args) < environment
// < flags (args), then validates. args are the command-line arguments
// without the program name; environ is the environment in the form of
// os.Environ ("KEY=value"; nil reads none). -h or --help returns
// [flag.ErrHelp] itself; print [Usage] then. --version returns
// [ErrVersion]; print the version then.
//
// warnings name each HUB_ variable of environ that is no configuration key
// (a misspelt key would otherwise be ignored in silence), with the nearest
// key; they come with an error too, since a misspelling often causes it.
// The caller prints or logs them.
func Load(args []string, environ []string) (c Config, warnings []string, err error) {
	env := parseEnviron(environ)
	warnings = env.unknownVariables()
	c, err = merge(args, env)
	if err != nil {
		return Config{}, warnings, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, warnings, err
	}
	return c, warnings, nil
}

// merge applies the sources in order and resolves the dependent defaults,
// without validating the result as a whole.
func merge(args []string, env environment) (Config, error) {
	fs, fl := newFlagSet(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, flag.ErrHelp
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q (flags only)", fs.Arg(0))
	}
	if fl.version {
		return Config{}, ErrVersion
	}

	c := Default()
	// No source can set an empty address (it does not parse), so an empty
	// one after the sources means none gave one: see resolve.
	c.Addr = ""
	path, from := fl.configFile, "--config"
	if !fl.configSet {
		v, _ := env.lookup(configEnv)
		path, from = strings.TrimSpace(v), configEnv
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", from, err)
		}
		if err := c.applyYAML(data, path); err != nil {
			return Config{}, err
		}
	}
	for i := range table {
		k := &table[i]
		v, ok := env.lookup(k.env())
		if !ok || (v == "" && !k.emptyEnv) {
			continue // an empty variable counts as unset
		}
		if err := k.apply(&c, v); err != nil {
			return Config{}, err
		}
	}
	for i := range table {
		k := &table[i]
		if v, ok := fl.values[k.name]; ok {
			if err := k.apply(&c, v); err != nil {
				return Config{}, err
			}
		}
	}
	c.resolve()
	return c, nil
}

// resolve fills the defaults that depend on other keys.
func (c *Config) resolve() {
	if c.Addr == "" {
		c.Addr = byName["addr"].def
		if c.Dev {
			c.Addr = DevAddr
		}
	}
	if c.JWTAlgorithms == nil && c.JWTSecret != "" {
		c.JWTAlgorithms = []string{"HS256"}
	}
}

// HasJWTKey reports whether a JWT key is configured: a secret, a public key
// file or a JWKS URL. Without one the hub starts only in development mode
// ([Config.Dev]), which makes a random secret.
func (c Config) HasJWTKey() bool {
	return c.JWTSecret != "" || c.JWTPublicKeyFile != "" || c.JWTJWKSURL != ""
}

// Key describes one configuration key, for docs and tests.
type Key struct {
	Env     string // environment variable, e.g. "HUB_JWT_SECRET"
	YAML    string // key in the YAML file, e.g. "jwt_secret"
	Flag    string // flag name without dashes, e.g. "jwt-secret" (used as --jwt-secret)
	Default string // the default as text; empty when there is none
	Help    string // one-line description
}

// Keys lists every configuration key in table order (the order of the
// fields of [Config]).
func Keys() []Key {
	keys := make([]Key, len(table))
	for i := range table {
		k := &table[i]
		keys[i] = Key{Env: k.env(), YAML: k.name, Flag: k.flag(), Default: k.def, Help: k.help}
	}
	return keys
}
