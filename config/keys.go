package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// key describes one configuration key. The single table below drives the
// YAML file, the environment, the flags, Keys, Markdown and Validate.
type key struct {
	name    string // snake_case: the YAML key; env and flag names derive from it
	def     string // the default as text (for docs)
	prose   bool   // def is a description, not a literal value
	help    string // one line
	secret  bool   // never show the value in an error
	isURL   bool   // show the value with its password redacted
	boolean bool   // a flag that needs no value
	typ     string // what --help shows after the flag: duration, int, size, ...
	// emptyEnv: an empty environment variable sets the empty value (it
	// means "off") instead of counting as unset.
	emptyEnv bool

	// parse sets the field from text; its error is the reason only.
	parse func(c *Config, s string) error
	// parseList sets a list field from the items of a YAML sequence; nil
	// unless the field is a list.
	parseList func(c *Config, items []string) error
	// get returns the field as text, for error messages.
	get func(c *Config) string
	// check validates the field on its own (no I/O, no other field); nil
	// when every value is valid.
	check func(c *Config) error
}

func (k *key) env() string  { return "HUB_" + strings.ToUpper(k.name) }
func (k *key) flag() string { return strings.ReplaceAll(k.name, "_", "-") }

// label names the key in messages: `HUB_X (x)`.
func (k *key) label() string { return k.env() + " (" + k.name + ")" }

// invalid returns the error for a bad value of k.
func (k *key) invalid(value string, reason error) error {
	return fmt.Errorf("config: %s: invalid value %q: %w", k.label(), k.show(value), reason)
}

// show returns value as it may appear in a message.
func (k *key) show(value string) string {
	switch {
	case value == "":
		return ""
	case k.secret:
		return "[redacted]"
	case k.isURL:
		return redactURL(value)
	}
	return value
}

// apply parses s (trimmed) into k's field of c.
func (k *key) apply(c *Config, s string) error {
	s = strings.TrimSpace(s)
	if err := k.parse(c, s); err != nil {
		return k.invalid(s, err)
	}
	return nil
}

// applyList sets k's list field of c from YAML sequence items.
func (k *key) applyList(c *Config, items []string) error {
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	if err := k.parseList(c, items); err != nil {
		return k.invalid(strings.Join(items, ","), err)
	}
	return nil
}

// table lists every key, in the order of the fields of Config.
var table = []key{
	stringKey("addr", ":8080", "public listener (WebSocket, SSE, console page), host:port",
		func(c *Config) *string { return &c.Addr }, nil, checkAddr).withType("host:port"),
	stringKey("internal_addr", "", "listener for the broadcast API, stats, metrics and pprof; empty shares the public one",
		func(c *Config) *string { return &c.InternalAddr }, nil, optional(checkAddr)).withType("host:port"),
	stringKey("node_name", "host name", "node name shown in stats and hub.connected",
		func(c *Config) *string { return &c.NodeName }, nil, checkNodeName).withProse(),
	stringKey("jwt_secret", "", "HMAC secret for HS256/HS384/HS512 tokens, at least 32 bytes",
		func(c *Config) *string { return &c.JWTSecret }, nil, optional(checkSecret)).withSecret(),
	stringKey("jwt_public_key_file", "", "PEM file with the public key for RS, PS, ES or EdDSA tokens",
		func(c *Config) *string { return &c.JWTPublicKeyFile }, nil, nil).withType("file"),
	stringKey("jwt_jwks_url", "", "http or https URL of a JWKS with the public keys",
		func(c *Config) *string { return &c.JWTJWKSURL }, nil, optional(checkHTTPURL)).withURL().withType("url"),
	listKey("jwt_algorithms", "HS256 with a secret, else the key's", "allowed token algorithms, comma-separated; none is never allowed",
		func(c *Config) *[]string { return &c.JWTAlgorithms }, canonicalAlgorithm, checkAlgorithm).withProse(),
	stringKey("jwt_issuer", "", "required iss claim when set",
		func(c *Config) *string { return &c.JWTIssuer }, nil, nil),
	stringKey("jwt_audience", "", "required aud claim when set",
		func(c *Config) *string { return &c.JWTAudience }, nil, nil),
	durationKey("jwt_leeway", "30s", "clock skew allowed when checking exp and nbf",
		func(c *Config) *time.Duration { return &c.JWTLeeway }, false),
	stringKey("token_cookie", "hub_token", "name of the cookie read for the token; empty (HUB_TOKEN_COOKIE=) turns the cookie off",
		func(c *Config) *string { return &c.TokenCookie }, nil, optional(checkCookieName)).withEmptyEnv(),
	listKey("api_keys", "", "service keys accepted in X-API-Key, comma-separated, each at least 16 characters",
		func(c *Config) *[]string { return &c.APIKeys }, nil, checkAPIKey).withSecret(),
	listKey("allowed_origins", "", "WebSocket and CORS origin patterns, comma-separated (https://app.example, app.example, *); empty allows the same host only; * is refused while the token cookie is on",
		func(c *Config) *[]string { return &c.AllowedOrigins }, nil, checkOrigin),
	stringKey("ws_path", "/ws/realtime", "WebSocket endpoint path",
		func(c *Config) *string { return &c.WSPath }, nil, checkPath).withType("path"),
	stringKey("sse_path", "/sse/realtime", "SSE endpoint path",
		func(c *Config) *string { return &c.SSEPath }, nil, checkPath).withType("path"),
	durationKey("heartbeat_interval", "25s", "interval of WebSocket pings and SSE heartbeats",
		func(c *Config) *time.Duration { return &c.HeartbeatInterval }, true),
	durationKey("pong_timeout", "10s", "time allowed for a pong before the connection is closed",
		func(c *Config) *time.Duration { return &c.PongTimeout }, true),
	boolKey("ws_compression", "true", "accept permessage-deflate from WebSocket clients that offer it (without context takeover)",
		func(c *Config) *bool { return &c.WSCompression }),
	intKey("ws_compression_min", "512", "events whose envelope has at least this many bytes go out compressed on connections that negotiated it",
		func(c *Config) *int { return &c.WSCompressionMin }, 0),
	intKey("history_size", "1000", "events kept per user for resume; 0 disables",
		func(c *Config) *int { return &c.HistorySize }, 0),
	durationKey("history_ttl", "10m", "how long events are kept for resume; 0 disables",
		func(c *Config) *time.Duration { return &c.HistoryTTL }, false),
	sizeKey("history_max_bytes", "1MiB", "history memory per user (envelope bytes, broadcasts included), oldest events evicted first",
		func(c *Config) *int64 { return &c.HistoryMaxBytes }),
	sizeKey("history_total_bytes", "512MiB", "history memory per node, an event sent to many users counted once; oldest events evicted first",
		func(c *Config) *int64 { return &c.HistoryTotalBytes }),
	intKey("send_queue", "1024", "events queued per connection before it counts as slow",
		func(c *Config) *int { return &c.SendQueue }, 1),
	intKey("max_connections_per_user", "32", "connections per user, WebSocket and SSE together; 0 = no limit",
		func(c *Config) *int { return &c.MaxConnectionsPerUser }, 0),
	intKey("max_connections", "0", "connections per node; 0 = no limit",
		func(c *Config) *int { return &c.MaxConnections }, 0),
	sizeKey("max_payload", "64KiB", "largest broadcast request body and hub.send frame (bytes, KiB/MiB/GiB or KB/MB/GB)",
		func(c *Config) *int64 { return &c.MaxPayload }),
	durationKey("shutdown_timeout", "5s", "drain time on SIGTERM",
		func(c *Config) *time.Duration { return &c.ShutdownTimeout }, true),
	durationKey("publish_timeout", "1s", "longest a publish waits on the broker before 503 (100ms to 1m)",
		func(c *Config) *time.Duration { return &c.PublishTimeout }, true).within(100*time.Millisecond, time.Minute),
	stringKey("broker", "memory", "cluster backplane: memory, redis (one Redis server) or redis-cluster (a Redis Cluster)",
		func(c *Config) *string { return &c.Broker }, strings.ToLower, checkBroker),
	stringKey("redis_url", "redis://127.0.0.1:6379/0", "Redis URL (redis:// or rediss://) used by the redis broker; for redis-cluster one or more seed nodes as redis://host:7000?addr=host:7001&addr=host:7002; Redis 7 or later (sharded Pub/Sub)",
		func(c *Config) *string { return &c.RedisURL }, nil, checkRedisURL).withURL().withType("url"),
	stringKey("log_level", "info", "log level: debug, info, warn or error",
		func(c *Config) *string { return &c.LogLevel }, strings.ToLower, oneOf("debug", "info", "warn", "error")),
	stringKey("log_format", "", "log format: text or json; empty means text on a terminal, else json",
		func(c *Config) *string { return &c.LogFormat }, strings.ToLower, optional(oneOf("text", "json"))),
	stringKey("tls_cert_file", "", "PEM certificate for HTTPS (with tls_key_file)",
		func(c *Config) *string { return &c.TLSCertFile }, nil, nil).withType("file"),
	stringKey("tls_key_file", "", "PEM private key for HTTPS (with tls_cert_file)",
		func(c *Config) *string { return &c.TLSKeyFile }, nil, nil).withType("file"),
	floatKey("connect_rate", "0", "new connections per second per node; 0 = unlimited",
		func(c *Config) *float64 { return &c.ConnectRate }, false),
	intKey("connect_burst", "0", "burst of new connections above connect_rate; 0 = twice the rate",
		func(c *Config) *int { return &c.ConnectBurst }, 0),
	intKey("max_connections_per_ip", "0", "connections per client IP; 0 = no limit",
		func(c *Config) *int { return &c.MaxConnectionsPerIP }, 0),
	boolKey("pprof", "false", "serve /debug/pprof on the internal listener",
		func(c *Config) *bool { return &c.Pprof }),
	stringKey("upstream_url", "", "http or https URL that receives hub.send operations; empty disables upstream",
		func(c *Config) *string { return &c.UpstreamURL }, nil, optional(checkHTTPURL)).withURL().withType("url"),
	stringKey("upstream_secret", "", "HMAC-SHA256 key for the X-Hub-Signature of upstream calls",
		func(c *Config) *string { return &c.UpstreamSecret }, nil, nil).withSecret(),
	durationKey("upstream_timeout", "5s", "time allowed for one upstream call",
		func(c *Config) *time.Duration { return &c.UpstreamTimeout }, true),
	floatKey("send_rate", "20", "hub.send operations per second per connection (burst twice that)",
		func(c *Config) *float64 { return &c.SendRate }, true),
	boolKey("dev", "false", "development mode: a random secret unless a key is set, 127.0.0.1:8080 unless an address is set, tokens printed; never in production",
		func(c *Config) *bool { return &c.Dev }),
	prefixListKey("trusted_proxies", "", "CIDRs of reverse proxies whose X-Forwarded-For gives the client address, comma-separated; empty trusts none",
		func(c *Config) *[]netip.Prefix { return &c.TrustedProxies }),
}

// byName indexes table by YAML name.
var byName = func() map[string]*key {
	m := make(map[string]*key, len(table))
	for i := range table {
		m[table[i].name] = &table[i]
	}
	return m
}()

func (k key) withSecret() key { k.secret = true; return k }

// within bounds a duration key to [lo, hi] on top of its own checks.
func (k key) within(lo, hi time.Duration) key {
	reason := fmt.Errorf("must be a duration from %v to %v", lo, hi)
	get, parse, check := k.get, k.parse, k.check
	bad := func(c *Config) bool {
		d, err := time.ParseDuration(get(c))
		return err != nil || d < lo || d > hi
	}
	k.parse = func(c *Config, s string) error {
		if err := parse(c, s); err != nil {
			return err
		}
		if bad(c) {
			return reason
		}
		return nil
	}
	k.check = func(c *Config) error {
		if err := check(c); err != nil {
			return err
		}
		if bad(c) {
			return reason
		}
		return nil
	}
	return k
}
func (k key) withURL() key { k.isURL = true; return k }

// withType names what --help shows after the flag (host:port, file, url).
func (k key) withType(t string) key { k.typ = t; return k }
func (k key) withProse() key        { k.prose = true; return k }

func (k key) withEmptyEnv() key { k.emptyEnv = true; return k }

// stringKey describes a string field. norm (optional) normalises the text,
// check (optional) validates it.
func stringKey(name, def, help string, p func(*Config) *string, norm func(string) string, check func(string) error) key {
	return key{
		name: name, def: def, help: help, typ: "string",
		parse: func(c *Config, s string) error {
			if norm != nil {
				s = norm(s)
			}
			if check != nil {
				if err := check(s); err != nil {
					return err
				}
			}
			*p(c) = s
			return nil
		},
		get: func(c *Config) string { return *p(c) },
		check: func(c *Config) error {
			if check == nil {
				return nil
			}
			return check(*p(c))
		},
	}
}

// listKey describes a list of strings: comma-separated text or a YAML
// sequence. An empty text means an empty (nil) list; an empty item is an
// error. norm (optional) normalises each item, check (optional) validates it.
func listKey(name, def, help string, p func(*Config) *[]string, norm func(string) string, check func(string) error) key {
	checkItem := func(it string) error {
		if check != nil {
			return check(it)
		}
		return nil
	}
	parseItem := func(it string) (string, error) {
		if norm != nil {
			it = norm(it)
		}
		return it, checkItem(it)
	}
	return listOf(name, def, help, p, parseItem, func(s string) string { return s }, func(it string) error {
		if it == "" {
			return errNoEmptyItems
		}
		return checkItem(it)
	}).withType("list")
}

// prefixListKey describes a list of IP prefixes (CIDRs; a single address
// counts as a prefix of its full length).
func prefixListKey(name, def, help string, p func(*Config) *[]netip.Prefix) key {
	return listOf(name, def, help, p, parsePrefix, netip.Prefix.String, func(pr netip.Prefix) error {
		if !pr.IsValid() || pr != pr.Masked() || pr.Addr().Is4In6() || pr.Addr().Zone() != "" {
			return fmt.Errorf("%q is not a valid CIDR such as 10.0.0.0/8", pr)
		}
		return nil
	}).withType("cidrs")
}

var errNoEmptyItems = errors.New("must be a comma-separated list without empty items")

// listOf describes a list field of items of type T: comma-separated text or
// a YAML sequence. An empty text means an empty (nil) list; an empty item
// is an error. parseItem reads one trimmed, non-empty item, format writes
// one back, and checkItem validates an item set in code.
func listOf[T any](name, def, help string, p func(*Config) *[]T, parseItem func(string) (T, error), format func(T) string, checkItem func(T) error) key {
	set := func(c *Config, items []string) error {
		var out []T
		for _, it := range items {
			it = strings.TrimSpace(it)
			if it == "" {
				return errNoEmptyItems
			}
			v, err := parseItem(it)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		*p(c) = out
		return nil
	}
	return key{
		name: name, def: def, help: help,
		parse: func(c *Config, s string) error {
			if s == "" {
				*p(c) = nil
				return nil
			}
			return set(c, strings.Split(s, ","))
		},
		parseList: set,
		get: func(c *Config) string {
			items := make([]string, len(*p(c)))
			for i, it := range *p(c) {
				items[i] = format(it)
			}
			return strings.Join(items, ",")
		},
		check: func(c *Config) error {
			for _, it := range *p(c) {
				if err := checkItem(it); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// intKey describes an int field that must be >= minimum (0 or 1).
func intKey(name, def, help string, p func(*Config) *int, minimum int) key {
	reason := errors.New("must be a non-negative integer")
	if minimum > 0 {
		reason = fmt.Errorf("must be an integer >= %d", minimum)
	}
	return key{
		name: name, def: def, help: help, typ: "int",
		parse: func(c *Config, s string) error {
			n, err := strconv.Atoi(s)
			if err != nil || n < minimum {
				return reason
			}
			*p(c) = n
			return nil
		},
		get: func(c *Config) string { return strconv.Itoa(*p(c)) },
		check: func(c *Config) error {
			if *p(c) < minimum {
				return reason
			}
			return nil
		},
	}
}

// sizeKey describes a positive byte size.
func sizeKey(name, def, help string, p func(*Config) *int64) key {
	reason := errors.New("must be a positive size such as 65536, 64KiB or 1MiB")
	return key{
		name: name, def: def, help: help, typ: "size",
		parse: func(c *Config, s string) error {
			n, err := parseSize(s)
			if err != nil || n <= 0 {
				return reason
			}
			*p(c) = n
			return nil
		},
		get: func(c *Config) string { return formatSize(*p(c)) },
		check: func(c *Config) error {
			if *p(c) <= 0 {
				return reason
			}
			return nil
		},
	}
}

// durationKey describes a duration that must be > 0 (positive) or >= 0.
func durationKey(name, def, help string, p func(*Config) *time.Duration, positive bool) key {
	reason := errors.New("must be a non-negative duration such as 30s or 10m")
	if positive {
		reason = errors.New("must be a positive duration such as 25s or 10m")
	}
	bad := func(d time.Duration) bool { return d < 0 || (positive && d == 0) }
	return key{
		name: name, def: def, help: help, typ: "duration",
		parse: func(c *Config, s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || bad(d) {
				return reason
			}
			*p(c) = d
			return nil
		},
		get: func(c *Config) string { return (*p(c)).String() },
		check: func(c *Config) error {
			if bad(*p(c)) {
				return reason
			}
			return nil
		},
	}
}

// floatKey describes a finite number that must be > 0 (positive) or >= 0.
func floatKey(name, def, help string, p func(*Config) *float64, positive bool) key {
	reason := errors.New("must be a non-negative number")
	if positive {
		reason = errors.New("must be a positive number")
	}
	bad := func(f float64) bool {
		return math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || (positive && f == 0)
	}
	return key{
		name: name, def: def, help: help, typ: "number",
		parse: func(c *Config, s string) error {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || bad(f) {
				return reason
			}
			*p(c) = f
			return nil
		},
		get: func(c *Config) string { return strconv.FormatFloat(*p(c), 'g', -1, 64) },
		check: func(c *Config) error {
			if bad(*p(c)) {
				return reason
			}
			return nil
		},
	}
}

// boolKey describes a boolean; as a flag it needs no value.
func boolKey(name, def, help string, p func(*Config) *bool) key {
	return key{
		name: name, def: def, help: help, boolean: true,
		parse: func(c *Config, s string) error {
			b, err := strconv.ParseBool(s)
			if err != nil {
				return errors.New("must be true or false")
			}
			*p(c) = b
			return nil
		},
		get: func(c *Config) string { return strconv.FormatBool(*p(c)) },
	}
}
