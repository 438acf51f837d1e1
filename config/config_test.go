package config

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Test credentials long enough for the minimums.
const (
	testSecret = "test-secret-0123456789abcdef-0123456789"
	testAPIKey = "test-api-key-0123456789"
)

// envOf returns an environment in the form of os.Environ holding m.
func envOf(m map[string]string) []string {
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return env
}

// envWithKey is envOf(m) plus HUB_JWT_SECRET=testSecret when m sets no JWT
// key and no HUB_DEV: a configuration that start-up accepts.
func envWithKey(m map[string]string) []string {
	env := envOf(m)
	for _, k := range []string{"HUB_JWT_SECRET", "HUB_JWT_PUBLIC_KEY_FILE", "HUB_JWT_JWKS_URL", "HUB_DEV"} {
		if _, ok := m[k]; ok {
			return env
		}
	}
	return append(env, "HUB_JWT_SECRET="+testSecret)
}

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefault(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "hub"
	}
	want := Config{
		Addr:                  ":8080",
		NodeName:              host,
		JWTLeeway:             30 * time.Second,
		TokenCookie:           "hub_token",
		WSPath:                "/ws/realtime",
		SSEPath:               "/sse/realtime",
		HeartbeatInterval:     25 * time.Second,
		PongTimeout:           10 * time.Second,
		WSCompression:         true,
		WSCompressionMin:      512,
		HistorySize:           1000,
		HistoryTTL:            10 * time.Minute,
		HistoryMaxBytes:       1 << 20,
		HistoryTotalBytes:     512 << 20,
		SendQueue:             1024,
		MaxConnectionsPerUser: 32,
		MaxPayload:            65536,
		ShutdownTimeout:       5 * time.Second,
		PublishTimeout:        time.Second,
		Broker:                "memory",
		RedisURL:              "redis://127.0.0.1:6379/0",
		LogLevel:              "info",
		UpstreamTimeout:       5 * time.Second,
		SendRate:              20,
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Default() = %+v\nwant %+v", got, want)
	}
	// The defaults have no JWT key: start-up refuses them (development
	// mode only on request), naming the keys.
	if err := Default().Validate(); err == nil || !errors.Is(err, errNoJWTKey) {
		t.Errorf("Default().Validate() = %v, want the missing-key error alone", err)
	} else if err.Error() != errNoJWTKey.Error() {
		t.Errorf("Default().Validate() = %v, want only %v", err, errNoJWTKey)
	}
	if Default().HasJWTKey() || Default().Dev {
		t.Error("Default() has a JWT key or development mode")
	}
	if _, _, err := Load(nil, nil); !errors.Is(err, errNoJWTKey) {
		t.Errorf("Load(nil, nil) = %v, want the missing-key error", err)
	}
	got, warnings, err := Load(nil, envOf(map[string]string{"HUB_JWT_SECRET": testSecret}))
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Load with a secret = %v, warnings %q", err, warnings)
	}
	want.JWTSecret, want.JWTAlgorithms = testSecret, []string{"HS256"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load with a secret = %+v\nwant %+v", got, want)
	}
}

func TestKeys(t *testing.T) {
	keys := Keys()
	if got, want := len(keys), reflect.TypeFor[Config]().NumField(); got != want {
		t.Fatalf("len(Keys()) = %d, want one per Config field (%d)", got, want)
	}
	seen := map[string]bool{}
	def := Default()
	for _, k := range keys {
		if seen[k.YAML] {
			t.Errorf("key %q listed twice", k.YAML)
		}
		seen[k.YAML] = true
		if want := "HUB_" + strings.ToUpper(k.YAML); k.Env != want {
			t.Errorf("%s: Env = %q, want %q", k.YAML, k.Env, want)
		}
		if want := strings.ReplaceAll(k.YAML, "_", "-"); k.Flag != want {
			t.Errorf("%s: Flag = %q, want %q", k.YAML, k.Flag, want)
		}
		if k.Help == "" || strings.Contains(k.Help, "\n") {
			t.Errorf("%s: Help %q must be one non-empty line", k.YAML, k.Help)
		}
		// A literal default parses to the value Default() holds.
		ik := byName[k.YAML]
		if ik.prose {
			continue
		}
		var c Config
		if err := ik.apply(&c, k.Default); err != nil {
			t.Errorf("%s: default %q does not parse: %v", k.YAML, k.Default, err)
			continue
		}
		if got, want := ik.get(&c), ik.get(&def); got != want {
			t.Errorf("%s: documented default %q gives %q, Default() has %q", k.YAML, k.Default, got, want)
		}
	}
}

// everyKey sets every key to a valid non-default value, as text.
var everyKey = map[string]string{
	"addr":                     "127.0.0.1:9000",
	"internal_addr":            "127.0.0.1:9001",
	"node_name":                "node-7",
	"jwt_secret":               "s3cret-value-0123456789abcdef-0123",
	"jwt_public_key_file":      "/keys/pub.pem",
	"jwt_jwks_url":             "https://id.example/jwks.json",
	"jwt_algorithms":           "hs384, HS512",
	"jwt_issuer":               "https://id.example/",
	"jwt_audience":             "hub",
	"jwt_leeway":               "1m30s",
	"token_cookie":             "tok",
	"api_keys":                 "key-one-0123456789,key-two-0123456789",
	"allowed_origins":          "https://app.example,*.example.com",
	"ws_path":                  "/ws",
	"sse_path":                 "/sse",
	"heartbeat_interval":       "15s",
	"pong_timeout":             "5s",
	"ws_compression":           "false",
	"ws_compression_min":       "0",
	"history_size":             "0",
	"history_ttl":              "0",
	"history_max_bytes":        "64KiB",
	"history_total_bytes":      "3GiB",
	"send_queue":               "16",
	"max_connections_per_user": "0",
	"max_connections":          "100",
	"max_payload":              "1MiB",
	"shutdown_timeout":         "30s",
	"publish_timeout":          "2500ms",
	"broker":                   "REDIS",
	"redis_url":                "rediss://user:pw@redis.example:6380/1",
	"log_level":                "DEBUG",
	"log_format":               "json",
	"tls_cert_file":            "/tls/cert.pem",
	"tls_key_file":             "/tls/key.pem",
	"connect_rate":             "2.5",
	"connect_burst":            "10",
	"max_connections_per_ip":   "4",
	"pprof":                    "true",
	"upstream_url":             "https://app.example/hub",
	"upstream_secret":          "up-secret",
	"upstream_timeout":         "2s",
	"send_rate":                "5",
	"dev":                      "true",
	"trusted_proxies":          "10.0.0.0/8, 192.0.2.1,2001:db8::/32",
}

// everyKeyWant is the Config that everyKey describes.
var everyKeyWant = Config{
	Addr:                  "127.0.0.1:9000",
	InternalAddr:          "127.0.0.1:9001",
	NodeName:              "node-7",
	JWTSecret:             "s3cret-value-0123456789abcdef-0123",
	JWTPublicKeyFile:      "/keys/pub.pem",
	JWTJWKSURL:            "https://id.example/jwks.json",
	JWTAlgorithms:         []string{"HS384", "HS512"},
	JWTIssuer:             "https://id.example/",
	JWTAudience:           "hub",
	JWTLeeway:             90 * time.Second,
	TokenCookie:           "tok",
	APIKeys:               []string{"key-one-0123456789", "key-two-0123456789"},
	AllowedOrigins:        []string{"https://app.example", "*.example.com"},
	WSPath:                "/ws",
	SSEPath:               "/sse",
	HeartbeatInterval:     15 * time.Second,
	PongTimeout:           5 * time.Second,
	HistorySize:           0,
	HistoryTTL:            0,
	HistoryMaxBytes:       64 << 10,
	HistoryTotalBytes:     3 << 30,
	SendQueue:             16,
	MaxConnectionsPerUser: 0,
	MaxConnections:        100,
	MaxPayload:            1 << 20,
	ShutdownTimeout:       30 * time.Second,
	PublishTimeout:        2500 * time.Millisecond,
	Broker:                "redis",
	RedisURL:              "rediss://user:pw@redis.example:6380/1",
	LogLevel:              "debug",
	LogFormat:             "json",
	TLSCertFile:           "/tls/cert.pem",
	TLSKeyFile:            "/tls/key.pem",
	ConnectRate:           2.5,
	ConnectBurst:          10,
	MaxConnectionsPerIP:   4,
	Pprof:                 true,
	UpstreamURL:           "https://app.example/hub",
	UpstreamSecret:        "up-secret",
	UpstreamTimeout:       2 * time.Second,
	SendRate:              5,
	Dev:                   true,
	TrustedProxies:        []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/32")},
}

// TestEveryKeyFromEverySource sets every key through each source and checks
// the whole Config, so each name and parser of the table is exercised.
func TestEveryKeyFromEverySource(t *testing.T) {
	if len(everyKey) != len(Keys()) {
		t.Fatalf("everyKey has %d keys, want %d", len(everyKey), len(Keys()))
	}
	// Every field must differ from its default, or the test proves nothing.
	def, want := reflect.ValueOf(Default()), reflect.ValueOf(everyKeyWant)
	for i := range def.NumField() {
		if reflect.DeepEqual(def.Field(i).Interface(), want.Field(i).Interface()) {
			t.Errorf("everyKeyWant.%s equals its default", def.Type().Field(i).Name)
		}
	}

	env := map[string]string{}
	var args []string
	var yml strings.Builder
	for _, k := range Keys() {
		v, ok := everyKey[k.YAML]
		if !ok {
			t.Fatalf("everyKey misses %s", k.YAML)
		}
		env[k.Env] = v
		args = append(args, "--"+k.Flag+"="+v)
		fmt.Fprintf(&yml, "%s: %q\n", k.YAML, v)
	}
	file := writeFile(t, "hub.yaml", yml.String())

	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{name: "env", env: env},
		{name: "flags", args: args},
		{name: "yaml", args: []string{"--config", file}},
		{name: "yaml from HUB_CONFIG", env: map[string]string{"HUB_CONFIG": file}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := merge(tt.args, parseEnviron(envOf(tt.env)))
			if err != nil {
				t.Fatalf("merge: %v", err)
			}
			if !reflect.DeepEqual(got, everyKeyWant) {
				t.Errorf("got  %+v\nwant %+v", got, everyKeyWant)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "hub.yaml", "history_size: 10\nbroker: redis\nws_path: /file\n")
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantSize  int
		wantWS    string
		wantBrokr string
	}{
		{name: "defaults", wantSize: 1000, wantWS: "/ws/realtime", wantBrokr: "memory"},
		{name: "file over default", args: []string{"--config", file}, wantSize: 10, wantWS: "/file", wantBrokr: "redis"},
		{
			name: "env over file", args: []string{"--config", file},
			env:      map[string]string{"HUB_HISTORY_SIZE": "20"},
			wantSize: 20, wantWS: "/file", wantBrokr: "redis",
		},
		{
			name: "flag over env", args: []string{"--config", file, "--history-size", "30"},
			env:      map[string]string{"HUB_HISTORY_SIZE": "20", "HUB_WS_PATH": "/env"},
			wantSize: 30, wantWS: "/env", wantBrokr: "redis",
		},
		{
			name: "flag over default", args: []string{"-history-size=40", "--broker=redis"},
			wantSize: 40, wantWS: "/ws/realtime", wantBrokr: "redis",
		},
		{
			name: "last flag wins", args: []string{"--history-size=1", "--history-size=2"},
			wantSize: 2, wantWS: "/ws/realtime", wantBrokr: "memory",
		},
		{
			name: "--config over HUB_CONFIG", args: []string{"--config", file},
			env:      map[string]string{"HUB_CONFIG": "/does/not/exist.yaml"},
			wantSize: 10, wantWS: "/file", wantBrokr: "redis",
		},
		{
			name: "empty env is unset", args: []string{"--config", file},
			env:      map[string]string{"HUB_HISTORY_SIZE": ""},
			wantSize: 10, wantWS: "/file", wantBrokr: "redis",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Load(tt.args, envWithKey(tt.env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.HistorySize != tt.wantSize || c.WSPath != tt.wantWS || c.Broker != tt.wantBrokr {
				t.Errorf("got history_size=%d ws_path=%q broker=%q, want %d %q %q",
					c.HistorySize, c.WSPath, c.Broker, tt.wantSize, tt.wantWS, tt.wantBrokr)
			}
		})
	}
}

func TestBadValueMessage(t *testing.T) {
	const want = `config: HUB_HISTORY_SIZE (history_size): invalid value "abc": must be a non-negative integer`
	file := writeFile(t, "hub.yaml", "history_size: abc\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{name: "env", env: map[string]string{"HUB_HISTORY_SIZE": "abc"}},
		{name: "flag", args: []string{"--history-size", "abc"}},
		{name: "yaml", args: []string{"--config", file}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(tt.args, envWithKey(tt.env))
			if err == nil || err.Error() != want {
				t.Errorf("Load error = %v\nwant %s", err, want)
			}
		})
	}
}

// TestParseErrorsNameKey checks each kind of unparsable or out-of-range text.
func TestParseErrorsNameKey(t *testing.T) {
	tests := []struct {
		env, give, want string
	}{
		{"HUB_HISTORY_SIZE", "-1", "must be a non-negative integer"},
		{"HUB_HISTORY_SIZE", "1.5", "must be a non-negative integer"},
		{"HUB_SEND_QUEUE", "0", "must be an integer >= 1"},
		{"HUB_MAX_CONNECTIONS", "-5", "must be a non-negative integer"},
		{"HUB_MAX_CONNECTIONS_PER_USER", "x", "must be a non-negative integer"},
		{"HUB_MAX_CONNECTIONS_PER_IP", "-1", "must be a non-negative integer"},
		{"HUB_CONNECT_BURST", "-1", "must be a non-negative integer"},
		{"HUB_HEARTBEAT_INTERVAL", "0s", "must be a positive duration"},
		{"HUB_HEARTBEAT_INTERVAL", "25", "must be a positive duration"},
		{"HUB_PONG_TIMEOUT", "-1s", "must be a positive duration"},
		{"HUB_WS_COMPRESSION", "maybe", "must be true or false"},
		{"HUB_WS_COMPRESSION_MIN", "-1", "must be a non-negative integer"},
		{"HUB_WS_COMPRESSION_MIN", "1KiB", "must be a non-negative integer"},
		{"HUB_SHUTDOWN_TIMEOUT", "0", "must be a positive duration"},
		{"HUB_UPSTREAM_TIMEOUT", "soon", "must be a positive duration"},
		{"HUB_JWT_LEEWAY", "-1s", "must be a non-negative duration"},
		{"HUB_HISTORY_TTL", "-1m", "must be a non-negative duration"},
		{"HUB_MAX_PAYLOAD", "0", "must be a positive size"},
		{"HUB_MAX_PAYLOAD", "64XB", "must be a positive size"},
		{"HUB_MAX_PAYLOAD", "-1", "must be a positive size"},
		{"HUB_SEND_RATE", "0", "must be a positive number"},
		{"HUB_SEND_RATE", "NaN", "must be a positive number"},
		{"HUB_CONNECT_RATE", "-1", "must be a non-negative number"},
		{"HUB_CONNECT_RATE", "+Inf", "must be a non-negative number"},
		{"HUB_PPROF", "maybe", "must be true or false"},
		{"HUB_BROKER", "kafka", "must be one of memory, redis, redis-cluster"},
		{"HUB_LOG_LEVEL", "verbose", "must be one of debug, info, warn, error"},
		{"HUB_LOG_FORMAT", "xml", "must be one of text, json"},
		{"HUB_ADDR", "8080", "must be host:port"},
		{"HUB_ADDR", ":http", "port number"},
		{"HUB_INTERNAL_ADDR", "localhost", "must be host:port"},
		{"HUB_NODE_NAME", "a\x01b", "control characters"},
		{"HUB_WS_PATH", "ws", `must start with "/"`},
		{"HUB_SSE_PATH", "/api/sse", "used by the hub itself"},
		{"HUB_WS_PATH", "/", "used by the hub itself"},
		{"HUB_TOKEN_COOKIE", "a b", "valid cookie name"},
		{"HUB_REDIS_URL", "http://127.0.0.1:6379", "redis:// or rediss://"},
		{"HUB_REDIS_URL", "redis://127.0.0.1:6379/abc", `invalid database number: "abc"`},
		{"HUB_REDIS_URL", "redis://127.0.0.1:6379/0/1", "invalid URL path"},
		{"HUB_REDIS_URL", "redis://127.0.0.1:6379/0?db=x", "invalid database number"},
		{"HUB_REDIS_URL", "redis://127.0.0.1:6379/0?dial_timeout=soon", "invalid dial_timeout duration"},
		{"HUB_REDIS_URL", "redis://127.0.0.1:6379/0?colour=blue", "unexpected option: colour"},
		{"HUB_UPSTREAM_URL", "ftp://app.example", "http:// or https://"},
		{"HUB_JWT_JWKS_URL", "/jwks.json", "http:// or https://"},
		{"HUB_JWT_ALGORITHMS", "none", `"none" is never allowed`},
		{"HUB_JWT_ALGORITHMS", "HS256,NONE", `"none" is never allowed`},
		{"HUB_JWT_ALGORITHMS", "HS257", "must be among HS256"},
		{"HUB_JWT_ALGORITHMS", "HS256,,HS384", "without empty items"},
		{"HUB_ALLOWED_ORIGINS", "https://a.example/path", "scheme://host"},
		{"HUB_ALLOWED_ORIGINS", "a.example,", "without empty items"},
		{"HUB_ALLOWED_ORIGINS", "a.example/x", "must be a host"},
		{"HUB_JWT_SECRET", "secret", "must be at least 32 bytes"},
		{"HUB_JWT_SECRET", strings.Repeat("s", 31), "must be at least 32 bytes"},
		{"HUB_API_KEYS", "q7", "at least 16 characters"},
		{"HUB_API_KEYS", testAPIKey + ",short-key", "at least 16 characters"},
		{"HUB_TRUSTED_PROXIES", "10.0.0.0/33", "not a CIDR"},
		{"HUB_TRUSTED_PROXIES", "proxy.example", "not a CIDR"},
		{"HUB_TRUSTED_PROXIES", "10.0.0.1/8", "did you mean 10.0.0.0/8?"},
		{"HUB_TRUSTED_PROXIES", "::ffff:10.0.0.0/104", "dotted form"},
		{"HUB_TRUSTED_PROXIES", "fe80::1%eth0", "not a CIDR"},
		{"HUB_TRUSTED_PROXIES", "10.0.0.0/8,,192.0.2.0/24", "without empty items"},
		{"HUB_DEV", "yes", "must be true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.give, func(t *testing.T) {
			_, _, err := Load(nil, envWithKey(map[string]string{tt.env: tt.give}))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			name := strings.ToLower(strings.TrimPrefix(tt.env, "HUB_"))
			prefix := fmt.Sprintf("config: %s (%s): invalid value ", tt.env, name)
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant prefix %q and %q", err, prefix, tt.want)
			}
		})
	}
}

// TestValidateNamesKey checks Validate on configurations built in code,
// including the rules that involve several keys or files.
func TestValidateNamesKey(t *testing.T) {
	dir := t.TempDir()
	pem := filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(pem, []byte("-----BEGIN PUBLIC KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name string
		give func(c *Config)
		want []string // substrings; nil means valid
	}{
		{name: "development mode", give: func(*Config) {}},
		{name: "internal and public on ports the system picks", give: func(c *Config) { c.Addr, c.InternalAddr = "127.0.0.1:0", "127.0.0.1:0" }},
		{name: "secret", give: func(c *Config) { c.Dev = false; c.JWTSecret = testSecret }},
		{name: "secret in development mode", give: func(c *Config) { c.JWTSecret = testSecret }},
		{name: "secret with HS512", give: func(c *Config) { c.JWTSecret = testSecret; c.JWTAlgorithms = []string{"HS512"} }},
		{name: "secret of 32 bytes", give: func(c *Config) { c.Dev = false; c.JWTSecret = strings.Repeat("s", 32) }},
		{name: "api key of 16 characters", give: func(c *Config) { c.APIKeys = []string{strings.Repeat("k", 16)} }},
		{name: "api key of 16 non-ASCII characters", give: func(c *Config) { c.APIKeys = []string{strings.Repeat("é", 16)} }},
		{name: "all origins without the cookie", give: func(c *Config) { c.AllowedOrigins = []string{"*"}; c.TokenCookie = "" }},
		{name: "cookie off", give: func(c *Config) { c.TokenCookie = "" }},
		{name: "trusted proxies", give: func(c *Config) {
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
		}},
		{name: "pem with RS256 and EdDSA", give: func(c *Config) { c.JWTPublicKeyFile = pem; c.JWTAlgorithms = []string{"RS256", "EdDSA"} }},
		{name: "jwks without algorithms", give: func(c *Config) { c.JWTJWKSURL = "https://id.example/jwks" }},
		{name: "dev mode with HS256", give: func(c *Config) { c.JWTAlgorithms = []string{"HS256"} }},
		{name: "tls pair", give: func(c *Config) { c.TLSCertFile, c.TLSKeyFile = pem, pem }},
		{name: "zero limits", give: func(c *Config) {
			c.HistorySize, c.HistoryTTL, c.MaxConnections, c.MaxConnectionsPerUser, c.JWTLeeway = 0, 0, 0, 0, 0
		}},
		{
			name: "no key outside development mode",
			give: func(c *Config) { c.Dev = false },
			want: []string{"HUB_JWT_SECRET, HUB_JWT_PUBLIC_KEY_FILE or HUB_JWT_JWKS_URL", "no JWT key", "--dev", "HUB_DEV=true"},
		},
		{
			name: "api keys only outside development mode",
			give: func(c *Config) { c.Dev = false; c.APIKeys = []string{testAPIKey} },
			want: []string{"HUB_JWT_SECRET, HUB_JWT_PUBLIC_KEY_FILE or HUB_JWT_JWKS_URL", "--dev"},
		},
		{
			name: "short secret",
			give: func(c *Config) { c.JWTSecret = "secret" },
			want: []string{`config: HUB_JWT_SECRET (jwt_secret): invalid value "[redacted]": must be at least 32 bytes (RFC 7518 §3.2)`},
		},
		{
			name: "short api key",
			give: func(c *Config) { c.APIKeys = []string{testAPIKey, "q7"} },
			want: []string{`config: HUB_API_KEYS (api_keys): invalid value "[redacted]": each key must be at least 16 characters`},
		},
		{
			name: "all origins with the cookie",
			give: func(c *Config) { c.AllowedOrigins = []string{"https://a.example", "*"} },
			want: []string{`config: HUB_ALLOWED_ORIGINS (allowed_origins): invalid value "https://a.example,*"`, "HUB_TOKEN_COOKIE=hub_token", "set HUB_TOKEN_COOKIE= (empty)"},
		},
		{
			name: "all origins with another cookie",
			give: func(c *Config) { c.AllowedOrigins = []string{"*"}; c.TokenCookie = "session" },
			want: []string{"HUB_ALLOWED_ORIGINS (allowed_origins)", "HUB_TOKEN_COOKIE=session"},
		},
		{
			name: "trusted proxy with host bits",
			give: func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")} },
			want: []string{"HUB_TRUSTED_PROXIES (trusted_proxies)", "not a valid CIDR"},
		},
		{
			name: "zero trusted proxy",
			give: func(c *Config) { c.TrustedProxies = []netip.Prefix{{}} },
			want: []string{"HUB_TRUSTED_PROXIES (trusted_proxies)", "not a valid CIDR"},
		},
		{
			name: "secret with RS256",
			give: func(c *Config) { c.JWTSecret = testSecret; c.JWTAlgorithms = []string{"HS256", "RS256"} },
			want: []string{`config: HUB_JWT_ALGORITHMS (jwt_algorithms): invalid value "HS256,RS256": RS256 cannot be used with HUB_JWT_SECRET`},
		},
		{
			name: "pem with HS256",
			give: func(c *Config) { c.JWTPublicKeyFile = pem; c.JWTAlgorithms = []string{"HS256"} },
			want: []string{"HUB_JWT_ALGORITHMS (jwt_algorithms)", "needs HUB_JWT_SECRET"},
		},
		{
			name: "dev mode with RS256",
			give: func(c *Config) { c.JWTAlgorithms = []string{"RS256"} },
			want: []string{"HUB_JWT_ALGORITHMS (jwt_algorithms)", "needs HUB_JWT_PUBLIC_KEY_FILE or HUB_JWT_JWKS_URL"},
		},
		{
			name: "none",
			give: func(c *Config) { c.JWTSecret = testSecret; c.JWTAlgorithms = []string{"none"} },
			want: []string{"HUB_JWT_ALGORITHMS (jwt_algorithms)", `"none" is never allowed`},
		},
		{
			name: "lower-case algorithm in code",
			give: func(c *Config) { c.JWTSecret = testSecret; c.JWTAlgorithms = []string{"hs256"} },
			want: []string{"HUB_JWT_ALGORITHMS (jwt_algorithms)", "must be among"},
		},
		{
			name: "two key sources",
			give: func(c *Config) { c.JWTSecret = testSecret; c.JWTJWKSURL = "https://id.example/jwks" },
			want: []string{"config: HUB_JWT_SECRET (jwt_secret), HUB_JWT_JWKS_URL (jwt_jwks_url): only one JWT key source may be set"},
		},
		{
			name: "three key sources",
			give: func(c *Config) {
				c.JWTSecret = testSecret
				c.JWTPublicKeyFile = pem
				c.JWTJWKSURL = "https://id.example/jwks"
			},
			want: []string{"HUB_JWT_SECRET (jwt_secret), HUB_JWT_PUBLIC_KEY_FILE (jwt_public_key_file), HUB_JWT_JWKS_URL (jwt_jwks_url)"},
		},
		{
			name: "missing public key file",
			give: func(c *Config) { c.JWTPublicKeyFile = missing },
			want: []string{"HUB_JWT_PUBLIC_KEY_FILE (jwt_public_key_file)", "cannot read the file", "no such file"},
		},
		{
			name: "public key file is a directory",
			give: func(c *Config) { c.JWTPublicKeyFile = dir },
			want: []string{"HUB_JWT_PUBLIC_KEY_FILE (jwt_public_key_file)", "cannot read the file"},
		},
		{
			name: "empty public key file",
			give: func(c *Config) { c.JWTPublicKeyFile = empty },
			want: []string{"HUB_JWT_PUBLIC_KEY_FILE (jwt_public_key_file)", "the file is empty"},
		},
		{
			name: "same paths",
			give: func(c *Config) { c.SSEPath = c.WSPath },
			want: []string{"HUB_SSE_PATH (sse_path)", "must differ from HUB_WS_PATH"},
		},
		{
			name: "internal equals public",
			give: func(c *Config) { c.InternalAddr = c.Addr },
			want: []string{"HUB_INTERNAL_ADDR (internal_addr)", "must differ from HUB_ADDR"},
		},
		{name: "cert without key", give: func(c *Config) { c.TLSCertFile = pem }, want: []string{"HUB_TLS_KEY_FILE (tls_key_file)", "required when HUB_TLS_CERT_FILE"}},
		{name: "key without cert", give: func(c *Config) { c.TLSKeyFile = pem }, want: []string{"HUB_TLS_CERT_FILE (tls_cert_file)", "required when HUB_TLS_KEY_FILE"}},
		{
			name: "unreadable tls files",
			give: func(c *Config) { c.TLSCertFile, c.TLSKeyFile = missing, missing },
			want: []string{"HUB_TLS_CERT_FILE (tls_cert_file)", "HUB_TLS_KEY_FILE (tls_key_file)", "cannot read the file"},
		},
		{name: "empty origin", give: func(c *Config) { c.AllowedOrigins = []string{"a.example", ""} }, want: []string{"HUB_ALLOWED_ORIGINS (allowed_origins)", "without empty items"}},
		{name: "empty api key", give: func(c *Config) { c.APIKeys = []string{""} }, want: []string{"HUB_API_KEYS (api_keys)"}},
		{name: "empty node name", give: func(c *Config) { c.NodeName = "" }, want: []string{"HUB_NODE_NAME (node_name)", "must not be empty"}},
		{name: "empty addr", give: func(c *Config) { c.Addr = "" }, want: []string{"HUB_ADDR (addr)"}},
		{name: "bad cookie in code", give: func(c *Config) { c.TokenCookie = "a;b" }, want: []string{"HUB_TOKEN_COOKIE (token_cookie)"}},
		{name: "zero heartbeat", give: func(c *Config) { c.HeartbeatInterval = 0 }, want: []string{`HUB_HEARTBEAT_INTERVAL (heartbeat_interval): invalid value "0s"`}},
		{name: "zero pong", give: func(c *Config) { c.PongTimeout = 0 }, want: []string{"HUB_PONG_TIMEOUT (pong_timeout)"}},
		{name: "negative leeway", give: func(c *Config) { c.JWTLeeway = -time.Second }, want: []string{"HUB_JWT_LEEWAY (jwt_leeway)"}},
		{name: "negative ttl", give: func(c *Config) { c.HistoryTTL = -time.Second }, want: []string{"HUB_HISTORY_TTL (history_ttl)"}},
		{name: "zero shutdown", give: func(c *Config) { c.ShutdownTimeout = 0 }, want: []string{"HUB_SHUTDOWN_TIMEOUT (shutdown_timeout)"}},
		{name: "publish timeout too short", give: func(c *Config) { c.PublishTimeout = 10 * time.Millisecond }, want: []string{"HUB_PUBLISH_TIMEOUT (publish_timeout)", "100ms"}},
		{name: "publish timeout too long", give: func(c *Config) { c.PublishTimeout = time.Hour }, want: []string{"HUB_PUBLISH_TIMEOUT (publish_timeout)"}},
		{name: "zero upstream timeout", give: func(c *Config) { c.UpstreamTimeout = 0 }, want: []string{"HUB_UPSTREAM_TIMEOUT (upstream_timeout)"}},
		{name: "negative history", give: func(c *Config) { c.HistorySize = -1 }, want: []string{"HUB_HISTORY_SIZE (history_size)"}},
		{name: "zero queue", give: func(c *Config) { c.SendQueue = 0 }, want: []string{"HUB_SEND_QUEUE (send_queue)"}},
		{name: "zero payload", give: func(c *Config) { c.MaxPayload = 0 }, want: []string{"HUB_MAX_PAYLOAD (max_payload)"}},
		{name: "zero send rate", give: func(c *Config) { c.SendRate = 0 }, want: []string{"HUB_SEND_RATE (send_rate)"}},
		{name: "upper-case level in code", give: func(c *Config) { c.LogLevel = "INFO" }, want: []string{"HUB_LOG_LEVEL (log_level)"}},
		{name: "bad broker", give: func(c *Config) { c.Broker = "" }, want: []string{"HUB_BROKER (broker)"}},
		{
			name: "all problems joined",
			give: func(c *Config) { c.Addr = "x"; c.SendQueue = -1; c.SSEPath = "sse" },
			want: []string{"HUB_ADDR (addr)", "HUB_SEND_QUEUE (send_queue)", "HUB_SSE_PATH (sse_path)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Development mode, so that a case without a key is valid; the
			// cases about the key turn it off.
			c := Default()
			c.Dev = true
			tt.give(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q\nwant it to contain %q", err, w)
				}
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "config: HUB_") {
					t.Errorf("error line %q does not start with \"config: HUB_\"", line)
				}
			}
		})
	}
}

func TestSecretsNeverShown(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		secret string
	}{
		{name: "api key with a space", env: map[string]string{"HUB_API_KEYS": "topsecret key"}, secret: "topsecret"},
		{name: "api keys with an empty item", env: map[string]string{"HUB_API_KEYS": "topsecret,"}, secret: "topsecret"},
		{name: "jwt secret with RS256", env: map[string]string{"HUB_JWT_SECRET": "topsecret-0123456789abcdef-0123456789", "HUB_JWT_ALGORITHMS": "RS256"}, secret: "topsecret"},
		{name: "short jwt secret", env: map[string]string{"HUB_JWT_SECRET": "topsecret"}, secret: "topsecret"},
		{name: "short api key", env: map[string]string{"HUB_API_KEYS": "topsecret"}, secret: "topsecret"},
		{name: "short upper-case api key", env: map[string]string{"HUB_API_KEYS": "TOPSECRET"}, secret: "TOPSECRET"},
		{name: "redis password", env: map[string]string{"HUB_REDIS_URL": "redis://u:topsecret@/0"}, secret: "topsecret"},
		{name: "redis password, bad database", env: map[string]string{"HUB_REDIS_URL": "redis://u:topsecret@127.0.0.1/abc"}, secret: "topsecret"},
		{name: "redis password, bad option", env: map[string]string{"HUB_REDIS_URL": "redis://:topsecret@127.0.0.1/0?pool_size=many"}, secret: "topsecret"},
		{name: "upstream password", env: map[string]string{"HUB_UPSTREAM_URL": "ftp://u:topsecret@x"}, secret: "topsecret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(nil, envWithKey(tt.env))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error shows the secret: %q", err)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		give    string
		want    int64
		wantErr bool
	}{
		{give: "65536", want: 65536},
		{give: "0", want: 0},
		{give: "512B", want: 512},
		{give: "8KiB", want: 8 << 10},
		{give: "64KiB", want: 64 << 10},
		{give: "64kib", want: 64 << 10},
		{give: "1MiB", want: 1 << 20},
		{give: "2GiB", want: 2 << 30},
		{give: "1KB", want: 1000},
		{give: "1MB", want: 1000 * 1000},
		{give: "3GB", want: 3 * 1000 * 1000 * 1000},
		{give: "1 MiB", want: 1 << 20},
		{give: " 4KiB ", want: 4 << 10},
		{give: "", wantErr: true},
		{give: "KiB", wantErr: true},
		{give: "-1", wantErr: true},
		{give: "1.5MiB", wantErr: true},
		{give: "1TiB", wantErr: true},
		{give: "abc", wantErr: true},
		{give: "9223372036854775807GiB", wantErr: true},
		{give: "99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := parseSize(tt.give)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tt.give, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		give int64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1024, "1KiB"}, {65536, "64KiB"}, {1 << 20, "1MiB"}, {3 << 30, "3GiB"}, {1536, "1536"},
	}
	for _, tt := range tests {
		if got := formatSize(tt.give); got != tt.want {
			t.Errorf("formatSize(%d) = %q, want %q", tt.give, got, tt.want)
		}
		if n, err := parseSize(tt.want); err != nil || n != tt.give {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v", tt.give, n, err)
		}
	}
}

func TestLists(t *testing.T) {
	tests := []struct {
		name string
		yaml string // file content; empty means none
		env  string // HUB_ALLOWED_ORIGINS
		args []string
		want []string
	}{
		{name: "default", want: nil},
		{name: "env", env: "https://a.example, b.example ,c.example", want: []string{"https://a.example", "b.example", "c.example"}},
		{name: "flag", args: []string{"--allowed-origins", "a.example,b.example"}, want: []string{"a.example", "b.example"}},
		{name: "empty flag clears", env: "a.example", args: []string{"--allowed-origins="}, want: nil},
		{name: "yaml list", yaml: "allowed_origins:\n  - https://a.example\n  - b.example\n", want: []string{"https://a.example", "b.example"}},
		{name: "yaml flow list", yaml: "allowed_origins: [a.example, b.example]\n", want: []string{"a.example", "b.example"}},
		{name: "yaml string", yaml: "allowed_origins: \"a.example, b.example\"\n", want: []string{"a.example", "b.example"}},
		{name: "yaml empty list", yaml: "allowed_origins: []\n", want: nil},
		{name: "yaml null keeps default", yaml: "allowed_origins:\n", want: nil},
		{name: "env over yaml", yaml: "allowed_origins: [a.example]\n", env: "c.example", want: []string{"c.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.yaml != "" {
				args = append([]string{"--config", writeFile(t, "hub.yaml", tt.yaml)}, args...)
			}
			c, _, err := Load(args, envWithKey(map[string]string{"HUB_ALLOWED_ORIGINS": tt.env}))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(c.AllowedOrigins, tt.want) {
				t.Errorf("AllowedOrigins = %#v, want %#v", c.AllowedOrigins, tt.want)
			}
		})
	}
}

func TestJWTAlgorithmsDefault(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{name: "dev mode", env: map[string]string{"HUB_DEV": "true"}, want: nil},
		{name: "secret", env: map[string]string{"HUB_JWT_SECRET": testSecret}, want: []string{"HS256"}},
		{name: "secret with list", env: map[string]string{"HUB_JWT_SECRET": testSecret, "HUB_JWT_ALGORITHMS": "hs512,HS384"}, want: []string{"HS512", "HS384"}},
		{name: "jwks", env: map[string]string{"HUB_JWT_JWKS_URL": "https://id.example/jwks"}, want: nil},
		{name: "jwks with list", env: map[string]string{"HUB_JWT_JWKS_URL": "https://id.example/jwks", "HUB_JWT_ALGORITHMS": "es256,eddsa,ps256"}, want: []string{"ES256", "EdDSA", "PS256"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Load(nil, envOf(tt.env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(c.JWTAlgorithms, tt.want) {
				t.Errorf("JWTAlgorithms = %#v, want %#v", c.JWTAlgorithms, tt.want)
			}
			if got, want := c.HasJWTKey(), !c.Dev; got != want {
				t.Errorf("HasJWTKey() = %v, want %v", got, want)
			}
		})
	}
}

func TestHasJWTKey(t *testing.T) {
	tests := []struct {
		name string
		give func(c *Config)
		want bool
	}{
		{name: "nothing", give: func(*Config) {}, want: false},
		{name: "issuer only", give: func(c *Config) { c.JWTIssuer = "x"; c.JWTAlgorithms = []string{"HS256"} }, want: false},
		{name: "api keys only", give: func(c *Config) { c.APIKeys = []string{testAPIKey} }, want: false},
		{name: "development mode", give: func(c *Config) { c.Dev = true }, want: false},
		{name: "secret", give: func(c *Config) { c.JWTSecret = testSecret }, want: true},
		{name: "public key file", give: func(c *Config) { c.JWTPublicKeyFile = "k.pem" }, want: true},
		{name: "jwks", give: func(c *Config) { c.JWTJWKSURL = "https://x/jwks" }, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.give(&c)
			if got := c.HasJWTKey(); got != tt.want {
				t.Errorf("HasJWTKey() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestNoKeyNoDevRefused reproduces the finding of issue 15: a misspelt key
// (or API keys alone) used to start development mode on every interface.
// Development mode now comes only from --dev or HUB_DEV=true; without it
// and without a key, start-up is refused with a message naming the keys.
func TestNoKeyNoDevRefused(t *testing.T) {
	const typoValue = "a-secret-that-was-misspelt-0123456789"
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{name: "nothing"},
		{name: "misspelt secret", env: map[string]string{"HUB_JWT_SECRETT": typoValue}},
		{name: "api keys only", env: map[string]string{"HUB_API_KEYS": testAPIKey}},
		{name: "HUB_DEV=false", env: map[string]string{"HUB_DEV": "false"}},
		{name: "--dev=false", args: []string{"--dev=false"}},
		{name: "empty HUB_DEV", env: map[string]string{"HUB_DEV": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Load(tt.args, envOf(tt.env))
			if err == nil {
				t.Fatalf("Load = %+v, want an error", c)
			}
			for _, want := range []string{"HUB_JWT_SECRET", "HUB_JWT_PUBLIC_KEY_FILE", "HUB_JWT_JWKS_URL", "--dev", "HUB_DEV=true"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			if strings.Contains(err.Error(), typoValue) || strings.Contains(err.Error(), testAPIKey) {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
}

// TestDevMode: development mode only on request (--dev, HUB_DEV=true or
// dev: true in the file); it listens on loopback unless an address is
// given by any source, even the default one written out.
func TestDevMode(t *testing.T) {
	devFile := writeFile(t, "dev.yaml", "dev: true\n")
	addrFile := writeFile(t, "addr.yaml", "addr: \":8080\"\n")
	nullAddrFile := writeFile(t, "null.yaml", "addr:\ndev: true\n")
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantDev  bool
		wantAddr string
	}{
		{name: "--dev", args: []string{"--dev"}, wantDev: true, wantAddr: DevAddr},
		{name: "-dev=true", args: []string{"-dev=true"}, wantDev: true, wantAddr: DevAddr},
		{name: "HUB_DEV=true", env: map[string]string{"HUB_DEV": "true"}, wantDev: true, wantAddr: DevAddr},
		{name: "HUB_DEV=1", env: map[string]string{"HUB_DEV": "1"}, wantDev: true, wantAddr: DevAddr},
		{name: "yaml", args: []string{"--config", devFile}, wantDev: true, wantAddr: DevAddr},
		{name: "yaml null addr", args: []string{"--config", nullAddrFile}, wantDev: true, wantAddr: DevAddr},
		{name: "HUB_ADDR", args: []string{"--dev"}, env: map[string]string{"HUB_ADDR": ":9000"}, wantDev: true, wantAddr: ":9000"},
		{name: "--addr", args: []string{"--dev", "--addr", "0.0.0.0:8080"}, wantDev: true, wantAddr: "0.0.0.0:8080"},
		{name: "yaml addr", args: []string{"--dev", "--config", addrFile}, wantDev: true, wantAddr: ":8080"},
		{name: "empty HUB_ADDR", args: []string{"--dev"}, env: map[string]string{"HUB_ADDR": ""}, wantDev: true, wantAddr: DevAddr},
		{name: "with a secret", args: []string{"--dev"}, env: map[string]string{"HUB_JWT_SECRET": testSecret}, wantDev: true, wantAddr: DevAddr},
		{name: "flag over env", args: []string{"--dev=false"}, env: map[string]string{"HUB_DEV": "true", "HUB_JWT_SECRET": testSecret}, wantDev: false, wantAddr: ":8080"},
		{name: "not asked", env: map[string]string{"HUB_JWT_SECRET": testSecret}, wantDev: false, wantAddr: ":8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Load(tt.args, envOf(tt.env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Dev != tt.wantDev || c.Addr != tt.wantAddr {
				t.Errorf("Dev = %v, Addr = %q; want %v, %q", c.Dev, c.Addr, tt.wantDev, tt.wantAddr)
			}
		})
	}
}

// TestTokenCookieOff: an empty HUB_TOKEN_COOKIE (unlike other keys, where
// an empty variable counts as unset) turns the cookie off, and with it off
// HUB_ALLOWED_ORIGINS=* is accepted; with it on, * is refused naming both
// keys.
func TestTokenCookieOff(t *testing.T) {
	offFile := writeFile(t, "off.yaml", "token_cookie: \"\"\nallowed_origins: \"*\"\n")
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCookie string
		wantErr    []string
	}{
		{name: "default", wantCookie: "hub_token"},
		{name: "empty env turns it off", env: map[string]string{"HUB_TOKEN_COOKIE": ""}, wantCookie: ""},
		{name: "empty flag turns it off", args: []string{"--token-cookie="}, wantCookie: ""},
		{name: "star with the cookie off", env: map[string]string{"HUB_TOKEN_COOKIE": "", "HUB_ALLOWED_ORIGINS": "*"}, wantCookie: ""},
		{name: "star with the cookie off in yaml", args: []string{"--config", offFile}, wantCookie: ""},
		{name: "env over yaml turns it on", args: []string{"--config", offFile}, env: map[string]string{"HUB_TOKEN_COOKIE": "tok"},
			wantErr: []string{"HUB_ALLOWED_ORIGINS (allowed_origins)", "HUB_TOKEN_COOKIE=tok"}},
		{name: "star with the cookie", env: map[string]string{"HUB_ALLOWED_ORIGINS": "*"},
			wantErr: []string{`config: HUB_ALLOWED_ORIGINS (allowed_origins): invalid value "*"`, "HUB_TOKEN_COOKIE=hub_token", "set HUB_TOKEN_COOKIE= (empty) to turn the cookie off"}},
		{name: "star among others with the cookie", args: []string{"--allowed-origins", "a.example,*"},
			wantErr: []string{"HUB_ALLOWED_ORIGINS (allowed_origins)", "HUB_TOKEN_COOKIE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Load(tt.args, envWithKey(tt.env))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Load = %+v, want an error", c)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q\nwant it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.TokenCookie != tt.wantCookie {
				t.Errorf("TokenCookie = %q, want %q", c.TokenCookie, tt.wantCookie)
			}
		})
	}
}

// TestUnknownVariables: a HUB_ variable that is no key is reported with
// the nearest key (never its value), also when Load fails; the variables
// that hubctl and the tests read are not.
func TestUnknownVariables(t *testing.T) {
	const value = "value-that-must-not-show-0123456789"
	tests := []struct {
		name string
		env  map[string]string
		want []string // a part of each warning, in order
	}{
		{name: "none", env: map[string]string{"HUB_HISTORY_SIZE": "5", "PATH": "/bin", "hub_lower": "x", "HUBX": "x"}},
		{name: "misspelt secret", env: map[string]string{"HUB_JWT_SECRETT": value},
			want: []string{"config: HUB_JWT_SECRETT is not a configuration key and is ignored (did you mean HUB_JWT_SECRET?)"}},
		{name: "two, sorted", env: map[string]string{"HUB_SEND_QUEU": value, "HUB_ALLOWED_ORIGIN": value},
			want: []string{"HUB_ALLOWED_ORIGIN is not a configuration key and is ignored (did you mean HUB_ALLOWED_ORIGINS?)",
				"HUB_SEND_QUEU is not a configuration key and is ignored (did you mean HUB_SEND_QUEUE?)"}},
		{name: "config file", env: map[string]string{"HUB_CONFG": value}, want: []string{"HUB_CONFG is not a configuration key and is ignored (did you mean HUB_CONFIG?)"}},
		{name: "far from everything", env: map[string]string{"HUB_X": value}, want: []string{"HUB_X is not a configuration key and is ignored (did you mean HUB_"}},
		{name: "empty", env: map[string]string{"HUB_DEVV": ""}, want: []string{"HUB_DEVV is not a configuration key and is ignored (did you mean HUB_DEV?)"}},
		{name: "read by others", env: map[string]string{
			"HUB_URL": value, "HUB_TOKEN": value, "HUB_API_KEY": value, "HUB_CONFIG": "",
			"HUB_REQUIRE_REDIS": "1", "HUB_REQUIRE_BROWSER": "1", "HUB_SCREENSHOTS": "1", "HUB_SOAK": "1m", "HUB_SEED": "7", "HUB_CHROMIUM": "/bin/chromium",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, warnings, err := Load(nil, envWithKey(tt.env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(warnings) != len(tt.want) {
				t.Fatalf("warnings %q, want %d", warnings, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(warnings[i], w) {
					t.Errorf("warning %q\nwant %q", warnings[i], w)
				}
			}
			if joined := strings.Join(warnings, "\n"); strings.Contains(joined, value) {
				t.Errorf("warnings %q show a value", warnings)
			}
		})
	}

	// The warning comes with the error it explains.
	_, warnings, err := Load(nil, envOf(map[string]string{"HUB_JWT_SECRETT": value}))
	if err == nil || len(warnings) != 1 || !strings.Contains(warnings[0], "did you mean HUB_JWT_SECRET?") {
		t.Errorf("Load with only HUB_JWT_SECRETT = %v, warnings %q; want the missing-key error and the warning", err, warnings)
	}
	// The first of two equal names counts, as with os.Getenv.
	c, _, err := Load(nil, []string{"HUB_JWT_SECRET=" + testSecret, "HUB_HISTORY_SIZE=5", "HUB_HISTORY_SIZE=6", "NOEQUALS"})
	if err != nil || c.HistorySize != 5 {
		t.Errorf("duplicate variable: HistorySize = %d, %v; want 5", c.HistorySize, err)
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "ab", 2}, {"HUB_DEV", "HUB_DEV", 0},
		{"HUB_JWT_SECRETT", "HUB_JWT_SECRET", 1}, {"kitten", "sitting", 3}, {"HUB_SEND_QUEU", "HUB_SEND_QUEUE", 1},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := editDistance(tt.b, tt.a); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestDurationsAndScalars(t *testing.T) {
	file := writeFile(t, "hub.yaml", strings.Join([]string{
		"heartbeat_interval: 1m30s",
		"history_ttl: 0",
		"history_size: 5",          // YAML int
		"send_rate: 2.5",           // YAML float
		"pprof: true",              // YAML bool
		"max_payload: 1048576",     // plain bytes
		"shutdown_timeout: \"2s\"", // quoted
		"jwt_leeway: 500ms",
		"",
	}, "\n"))
	c, _, err := Load([]string{"--config", file, "--pong-timeout", "1h"}, envWithKey(nil))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	got := []any{c.HeartbeatInterval, c.HistoryTTL, c.HistorySize, c.SendRate, c.Pprof, c.MaxPayload, c.ShutdownTimeout, c.JWTLeeway, c.PongTimeout}
	want := []any{90 * time.Second, time.Duration(0), 5, 2.5, true, int64(1 << 20), 2 * time.Second, 500 * time.Millisecond, time.Hour}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestBoolFlag(t *testing.T) {
	tests := []struct {
		args []string
		want bool
	}{
		{args: nil, want: false},
		{args: []string{"--pprof"}, want: true},
		{args: []string{"-pprof"}, want: true},
		{args: []string{"--pprof=false"}, want: false},
		{args: []string{"--pprof=1"}, want: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			c, _, err := Load(tt.args, envWithKey(map[string]string{"HUB_PPROF": ""}))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Pprof != tt.want {
				t.Errorf("Pprof = %v, want %v", c.Pprof, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			_, _, err := Load([]string{"--addr", ":1", arg}, nil)
			if err != flag.ErrHelp { //nolint:errorlint // the contract is the sentinel itself
				t.Errorf("Load(%s) = %v, want flag.ErrHelp", arg, err)
			}
		})
	}
	usage := Usage()
	for _, k := range Keys() {
		if !strings.Contains(usage, "-"+k.Flag+" ") && !strings.Contains(usage, "-"+k.Flag+"\n") {
			t.Errorf("Usage() misses -%s", k.Flag)
		}
		if !strings.Contains(usage, k.Env) {
			t.Errorf("Usage() misses %s", k.Env)
		}
	}
	if !strings.Contains(usage, "-config") {
		t.Error("Usage() misses -config")
	}
}

func TestArgumentErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown flag", args: []string{"--nope"}, want: "flag provided but not defined: -nope"},
		{name: "positional", args: []string{"serve"}, want: `unexpected argument "serve"`},
		{name: "missing value", args: []string{"--addr"}, want: "flag needs an argument: -addr"},
		{name: "unreadable file", args: []string{"--config", "/does/not/exist.yaml"}, want: "config: --config: open /does/not/exist.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(tt.args, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("Load error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	_, _, err := Load(nil, envOf(map[string]string{"HUB_CONFIG": "/does/not/exist.yaml"}))
	if err == nil || !strings.Contains(err.Error(), "config: HUB_CONFIG: open /does/not/exist.yaml") {
		t.Errorf("Load with bad HUB_CONFIG = %v", err)
	}
}

func TestYAMLFile(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    string // error substring; empty means success
		wantCfg func(c Config) bool
	}{
		{name: "empty file", give: ""},
		{name: "comments only", give: "# addr: \":1\"\n"},
		{name: "null document", give: "~\n"},
		{name: "null value keeps default", give: "addr:\n", wantCfg: func(c Config) bool { return c.Addr == ":8080" }},
		{name: "unknown key with anchor", give: "x: &a 7\n", want: `unknown key "x"`},
		{name: "anchor and alias", give: "history_size: &n 7\nsend_queue: *n\n", wantCfg: func(c Config) bool { return c.HistorySize == 7 && c.SendQueue == 7 }},
		{name: "unknown key", give: "addr: \":1\"\nhistory: 5\n", want: `config: %s line 2: unknown key "history"`},
		{name: "camel case hint", give: "jwtSecret: x\n", want: `unknown key "jwtSecret" (did you mean "jwt_secret"?)`},
		{name: "env name hint", give: "HUB_HISTORY_SIZE: 1\n", want: `(did you mean "history_size"?)`},
		{name: "duplicate key", give: "addr: \":1\"\naddr: \":2\"\n", want: `key "addr" appears twice`},
		{name: "not a mapping", give: "- addr\n", want: "want a mapping"},
		{name: "two documents", give: "addr: \":1\"\n---\naddr: \":2\"\n", want: "want one YAML document"},
		{name: "syntax error", give: "addr: [\n", want: "config: parse"},
		{name: "mapping value", give: "addr:\n  host: x\n", want: "HUB_ADDR (addr)"},
		{name: "list for a scalar key", give: "addr: [\":1\"]\n", want: "must be a single value, not a list"},
		{name: "nested list item", give: "api_keys: [[a]]\n", want: "HUB_API_KEYS (api_keys)"},
		{name: "empty list item", give: "api_keys: [a-key-0123456789abc, \"\"]\n", want: "without empty items"},
		{name: "trusted proxies list", give: "trusted_proxies: [10.0.0.0/8, \"::1\"]\n", wantCfg: func(c Config) bool {
			return reflect.DeepEqual(c.TrustedProxies, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")})
		}},
		{name: "bad trusted proxy in a list", give: "trusted_proxies: [10.0.0.0/8, nope]\n", want: "HUB_TRUSTED_PROXIES (trusted_proxies)"},
		{name: "bad value", give: "max_payload: lots\n", want: `config: HUB_MAX_PAYLOAD (max_payload): invalid value "lots"`},
		{name: "validation after merge", give: "ws_path: /same\nsse_path: /same\n", want: "HUB_SSE_PATH (sse_path)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "hub.yaml", tt.give)
			c, _, err := Load([]string{"--config", path}, envWithKey(nil))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if tt.wantCfg != nil && !tt.wantCfg(c) {
					t.Errorf("unexpected config %+v", c)
				}
				return
			}
			want := tt.want
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, path)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Load error = %v\nwant it to contain %q", err, want)
			}
		})
	}
}

func TestLoadReturnsValidationErrors(t *testing.T) {
	_, _, err := Load([]string{"--jwt-secret", testSecret, "--jwt-algorithms", "RS256"}, nil)
	if err == nil || !strings.Contains(err.Error(), "HUB_JWT_ALGORITHMS (jwt_algorithms)") {
		t.Errorf("Load = %v, want an error naming HUB_JWT_ALGORITHMS", err)
	}
	if err != nil && errors.Is(err, flag.ErrHelp) {
		t.Error("validation error must not be flag.ErrHelp")
	}
}

// TestUsageShowsTypesAndDefaults: --help names each flag's value type (not
// flag's generic "value"), its variable and its default.
func TestUsageShowsTypesAndDefaults(t *testing.T) {
	usage := Usage()
	lines := map[string]string{} // flag -> its head line
	for _, line := range strings.Split(usage, "\n") {
		if rest, ok := strings.CutPrefix(line, "  --"); ok {
			name, _, _ := strings.Cut(rest, " ")
			lines[name] = line
		}
	}
	for i := range table {
		k := &table[i]
		line, ok := lines[k.flag()]
		if !ok {
			t.Errorf("Usage() has no line for --%s", k.flag())
			continue
		}
		fields := strings.Fields(line)
		switch {
		case k.boolean:
			if len(fields) < 2 || !strings.HasPrefix(fields[1], "(") {
				t.Errorf("boolean --%s shows a value type: %q", k.flag(), line)
			}
		case len(fields) < 2 || fields[1] == "value" || strings.HasPrefix(fields[1], "("):
			t.Errorf("--%s shows no type: %q", k.flag(), line)
		}
		if !strings.Contains(line, "("+k.env()) {
			t.Errorf("--%s does not name %s: %q", k.flag(), k.env(), line)
		}
		if k.def != "" && !strings.Contains(line, "default "+k.def+")") && !strings.Contains(line, "default: "+k.def+")") {
			t.Errorf("--%s does not show its default %q: %q", k.flag(), k.def, line)
		}
	}
	for flagName, want := range map[string]string{
		"addr":               "  --addr host:port  (HUB_ADDR, default :8080)",
		"heartbeat-interval": "  --heartbeat-interval duration  (HUB_HEARTBEAT_INTERVAL, default 25s)",
		"history-size":       "  --history-size int  (HUB_HISTORY_SIZE, default 1000)",
		"max-payload":        "  --max-payload size  (HUB_MAX_PAYLOAD, default 64KiB)",
		"send-rate":          "  --send-rate number  (HUB_SEND_RATE, default 20)",
		"api-keys":           "  --api-keys list  (HUB_API_KEYS)",
		"trusted-proxies":    "  --trusted-proxies cidrs  (HUB_TRUSTED_PROXIES)",
		"dev":                "  --dev  (HUB_DEV, default false)",
		"config":             "  --config file",
		"version":            "  --version",
	} {
		if lines[flagName] != want {
			t.Errorf("--%s: got %q, want %q", flagName, lines[flagName], want)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-version"}, {"--addr", ":1", "--version"}} {
		if _, _, err := Load(args, nil); !errors.Is(err, ErrVersion) {
			t.Errorf("Load(%q) = %v, want ErrVersion", args, err)
		}
	}
	if _, _, err := Load([]string{"--version=false", "--dev"}, nil); err != nil {
		t.Errorf("--version=false: %v", err)
	}
}

// HUB_BROKER=redis-cluster takes go-redis's cluster URL; one server's
// broker refuses it, naming the key.
func TestRedisClusterURL(t *testing.T) {
	const u = "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002"
	c, _, err := Load(nil, []string{"HUB_DEV=true", "HUB_BROKER=redis-cluster", "HUB_REDIS_URL=" + u})
	if err != nil {
		t.Fatalf("redis-cluster with a cluster URL: %v", err)
	}
	if c.Broker != "redis-cluster" || c.RedisURL != u {
		t.Fatalf("broker %q url %q", c.Broker, c.RedisURL)
	}
	_, _, err = Load(nil, []string{"HUB_DEV=true", "HUB_BROKER=redis", "HUB_REDIS_URL=" + u})
	if err == nil || !strings.Contains(err.Error(), "HUB_REDIS_URL") || !strings.Contains(err.Error(), "redis-cluster") {
		t.Fatalf("redis with a cluster URL: %v, want an error naming HUB_REDIS_URL and redis-cluster", err)
	}
	_, _, err = Load(nil, []string{"HUB_DEV=true", "HUB_BROKER=redis-cluster", "HUB_REDIS_URL=redis://127.0.0.1:7000?addr=x&bogus=1"})
	if err == nil || !strings.Contains(err.Error(), "HUB_REDIS_URL") {
		t.Fatalf("bad cluster URL: %v, want an error naming HUB_REDIS_URL", err)
	}
}
