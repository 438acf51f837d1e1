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
//     counts as unset;
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
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Config is the hub's whole configuration. The comment of each field names
// its environment variable and its default; [Keys] lists the same facts.
type Config struct {
	Addr                  string        // HUB_ADDR, default ":8080"
	InternalAddr          string        // HUB_INTERNAL_ADDR, default "" (same listener as public)
	NodeName              string        // HUB_NODE_NAME, default os.Hostname() (fallback "hub")
	JWTSecret             string        // HUB_JWT_SECRET
	JWTPublicKeyFile      string        // HUB_JWT_PUBLIC_KEY_FILE
	JWTJWKSURL            string        // HUB_JWT_JWKS_URL
	JWTAlgorithms         []string      // HUB_JWT_ALGORITHMS, default ["HS256"] with a secret; nil means "the key's" for PEM/JWKS
	JWTIssuer             string        // HUB_JWT_ISSUER
	JWTAudience           string        // HUB_JWT_AUDIENCE
	JWTLeeway             time.Duration // HUB_JWT_LEEWAY, default 30s
	TokenCookie           string        // HUB_TOKEN_COOKIE, default "hub_token"
	APIKeys               []string      // HUB_API_KEYS
	AllowedOrigins        []string      // HUB_ALLOWED_ORIGINS, default nil = same host only
	WSPath                string        // HUB_WS_PATH, default "/ws/realtime" (must start with "/")
	SSEPath               string        // HUB_SSE_PATH, default "/sse/realtime"
	HeartbeatInterval     time.Duration // HUB_HEARTBEAT_INTERVAL, default 25s (must be > 0)
	PongTimeout           time.Duration // HUB_PONG_TIMEOUT, default 10s (> 0)
	HistorySize           int           // HUB_HISTORY_SIZE, default 1000 (0 disables)
	HistoryTTL            time.Duration // HUB_HISTORY_TTL, default 10m (0 disables)
	SendQueue             int           // HUB_SEND_QUEUE, default 1024 (>= 1)
	MaxConnectionsPerUser int           // HUB_MAX_CONNECTIONS_PER_USER, default 32 (0 = no limit)
	MaxConnections        int           // HUB_MAX_CONNECTIONS, default 0 (no limit)
	MaxPayload            int64         // HUB_MAX_PAYLOAD, default 64KiB = 65536 (> 0)
	ShutdownTimeout       time.Duration // HUB_SHUTDOWN_TIMEOUT, default 5s
	PublishTimeout        time.Duration // HUB_PUBLISH_TIMEOUT, default 1s (100ms to 1m): longest a publish waits on the broker
	Broker                string        // HUB_BROKER, "memory" (default) or "redis"
	RedisURL              string        // HUB_REDIS_URL, default "redis://127.0.0.1:6379/0" (scheme redis or rediss)
	LogLevel              string        // HUB_LOG_LEVEL: debug|info|warn|error, default info
	LogFormat             string        // HUB_LOG_FORMAT: text|json; default "" = text on a terminal, else json (the logger resolves it)
	TLSCertFile           string        // HUB_TLS_CERT_FILE (both or neither with key)
	TLSKeyFile            string        // HUB_TLS_KEY_FILE
	ConnectRate           float64       // HUB_CONNECT_RATE, new connections per second node-wide, default 0 = unlimited
	ConnectBurst          int           // HUB_CONNECT_BURST, default 0 = twice the rate
	MaxConnectionsPerIP   int           // HUB_MAX_CONNECTIONS_PER_IP, default 0 = no limit
	Pprof                 bool          // HUB_PPROF, default false (served on the internal listener only)
	UpstreamURL           string        // HUB_UPSTREAM_URL (http/https URL when set)
	UpstreamSecret        string        // HUB_UPSTREAM_SECRET
	UpstreamTimeout       time.Duration // HUB_UPSTREAM_TIMEOUT, default 5s
	SendRate              float64       // HUB_SEND_RATE, sends per second per connection, default 20 (> 0)
}

// configEnv names the environment variable read for the YAML file when the
// --config flag is absent.
const configEnv = "HUB_CONFIG"

// Default returns the defaults. NodeName is the host name, or "hub" when it
// cannot be read.
func Default() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "hub"
	}
	return Config{
		Addr:                  ":8080",
		NodeName:              host,
		JWTLeeway:             30 * time.Second,
		TokenCookie:           "hub_token",
		WSPath:                "/ws/realtime",
		SSEPath:               "/sse/realtime",
		HeartbeatInterval:     25 * time.Second,
		PongTimeout:           10 * time.Second,
		HistorySize:           1000,
		HistoryTTL:            10 * time.Minute,
		SendQueue:             1024,
		MaxConnectionsPerUser: 32,
		MaxPayload:            64 << 10,
		ShutdownTimeout:       5 * time.Second,
		PublishTimeout:        time.Second,
		Broker:                "memory",
		RedisURL:              "redis://127.0.0.1:6379/0",
		LogLevel:              "info",
		UpstreamTimeout:       5 * time.Second,
		SendRate:              20,
	}
}

// Load merges defaults < YAML file named by --config (in args) < environment
// (getenv) < flags (args), then validates. args are the command-line
// arguments without the program name; getenv is os.Getenv in production (nil
// reads no environment). -h or --help returns [flag.ErrHelp] itself; print
// [Usage] then.
func Load(args []string, getenv func(string) string) (Config, error) {
	c, err := merge(args, getenv)
	if err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// merge applies the sources in order and resolves the dependent defaults,
// without validating the result as a whole.
func merge(args []string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
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

	c := Default()
	path, from := fl.configFile, "--config"
	if !fl.configSet {
		path, from = strings.TrimSpace(getenv(configEnv)), configEnv
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
		if v := getenv(k.env()); v != "" {
			if err := k.apply(&c, v); err != nil {
				return Config{}, err
			}
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
	if c.JWTAlgorithms == nil && c.JWTSecret != "" {
		c.JWTAlgorithms = []string{"HS256"}
	}
}

// DevMode reports whether no JWT key is configured (no secret, public key
// file nor JWKS URL).
func (c Config) DevMode() bool {
	return c.JWTSecret == "" && c.JWTPublicKeyFile == "" && c.JWTJWKSURL == ""
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
