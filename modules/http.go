package modules

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/metrics"
	"github.com/hubd/hub/transport/api"
	"github.com/hubd/hub/transport/sse"
	"github.com/hubd/hub/transport/upstream"
	"github.com/hubd/hub/transport/ws"
	"github.com/hubd/hub/web"
)

// HTTPModule runs the public listener (and the internal one when
// HUB_INTERNAL_ADDR is set). Its stop hook runs after the hub has drained
// (see drainOnStop) and shuts the servers down within serverShutdown.
var HTTPModule = fx.Module("http",
	fx.Provide(newServers),
	fx.Invoke(func(*Servers) {}),
)

// Servers are the running HTTP servers; Addr and InternalAddr give the
// bound addresses (useful with port 0).
type Servers struct {
	// TLS is true when the public listener serves HTTPS (and HTTP/2).
	TLS              bool
	public, internal *http.Server
	publicLn         net.Listener
	internalLn       net.Listener
}

// Addr is the public listener's address.
func (s *Servers) Addr() string { return s.publicLn.Addr().String() }

// InternalAddr is the internal listener's address (the public one when not separate).
func (s *Servers) InternalAddr() string {
	if s.internalLn != nil {
		return s.internalLn.Addr().String()
	}
	return s.Addr()
}

// serverShutdown bounds the servers' Shutdown after the drain: what is
// still running then (an API call, a request on an idle keep-alive
// connection) is cut.
const serverShutdown = 300 * time.Millisecond

type serverParams struct {
	fx.In
	LC  fx.Lifecycle
	Cfg config.Config
	WS  *ws.Handler
	SSE *sse.Handler
	API *api.API
	Log *slog.Logger
	Up  *upstream.Upstream
	Dev *DevTokens `optional:"true"`
	Met *metrics.Metrics
}

func newServers(p serverParams) *Servers {
	s := &Servers{}
	public := http.NewServeMux()
	origins := p.Cfg.AllowedOrigins
	public.Handle(p.Cfg.WSPath, p.WS)
	public.Handle(p.Cfg.SSEPath, p.SSE)
	public.Handle("/", web.NewHandler(web.Options{
		AllowOrigin: func(origin string) bool {
			return len(origins) > 0 && httpx.OriginAllowed(origins, origin, "")
		},
		ConsoleAPI: consoleAPI(p.Cfg, s),
	}))
	p.API.RegisterPublic(public)
	// hub.send for clients without a WebSocket (SSE); 404 upstream_disabled when off
	public.Handle("/api/send", httpx.CORS(origins, "POST, OPTIONS", p.Up.SendHandler()))

	internal := public
	if p.Cfg.InternalAddr != "" {
		internal = http.NewServeMux()
		internal.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		})
	}
	p.API.RegisterInternal(internal)
	registerAdmin(internal)

	if p.Cfg.Pprof {
		// profiling only where the operator keeps it private
		if p.Cfg.InternalAddr != "" {
			registerPprof(internal)
		} else {
			p.Log.Warn("HUB_PPROF is set but HUB_INTERNAL_ADDR is not: pprof stays off (it is served on the internal listener only)")
		}
	}

	clientIP := httpx.NewClientIP(p.Cfg.TrustedProxies)
	// hub_api_requests_total: CountAPI reads the pattern the mux matched
	s.public = newServer(p.Met.CountAPI(jsonErrors(public)), p.Log, clientIP)
	if p.Cfg.InternalAddr != "" {
		var h http.Handler = jsonErrors(internal)
		if p.Cfg.Dev { // the console page on the public listener calls this API
			h = devConsoleCORS(p.Cfg, s, h)
		}
		s.internal = newServer(p.Met.CountAPI(h), p.Log, clientIP)
	}
	var certs *certReloader
	p.LC.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if p.Cfg.TLSCertFile != "" {
				var err error
				if certs, err = newCertReloader(p.Cfg.TLSCertFile, p.Cfg.TLSKeyFile, p.Log); err != nil {
					return err
				}
				s.public.TLSConfig = certs.tlsConfig()
				s.TLS = true
				certs.start(5 * time.Second)
			}
			ln, err := (&net.ListenConfig{Control: listenControl, KeepAlive: listenKeepAlive}).Listen(ctx, "tcp", p.Cfg.Addr)
			if err != nil {
				return fmt.Errorf("listen on HUB_ADDR %s: %w", p.Cfg.Addr, err)
			}
			s.publicLn = ln
			if s.internal != nil {
				iln, err := net.Listen("tcp", p.Cfg.InternalAddr)
				if err != nil {
					ln.Close()
					return fmt.Errorf("listen on HUB_INTERNAL_ADDR %s: %w", p.Cfg.InternalAddr, err)
				}
				s.internalLn = iln
				go serve(s.internal, iln, p.Log)
			}
			if s.TLS {
				go serveTLS(s.public, ln, p.Log)
			} else {
				go serve(s.public, ln, p.Log)
			}
			p.Log.Info("hub listening", "addr", ln.Addr().String(), "internal", s.InternalAddr(), "node", p.Cfg.NodeName)
			if p.Dev != nil { // printed once the listeners accept, so the curl line works at once
				printDevBanner(DevOutput, p.Cfg, p.Dev)
			}
			return nil
		},
		OnStop: func(ctx context.Context) error {
			sctx, cancel := context.WithTimeout(ctx, serverShutdown)
			defer cancel()
			var errs []error
			for _, srv := range []*http.Server{s.public, s.internal} {
				if srv == nil {
					continue
				}
				if err := srv.Shutdown(sctx); err != nil {
					errs = append(errs, err)
					srv.Close()
				}
			}
			if certs != nil {
				certs.close()
			}
			p.Log.Info("stopped")
			if len(errs) > 0 {
				p.Log.Warn("http shutdown", "err", errors.Join(errs...))
			}
			return nil
		},
	})
	return s
}

func serve(srv *http.Server, ln net.Listener, log *slog.Logger) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("http server", "err", err)
	}
}

func serveTLS(srv *http.Server, ln net.Listener, log *slog.Logger) {
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("https server", "err", err)
	}
}

// registerPprof serves the profiles on mux, all but /debug/pprof/cmdline:
// the command line may hold --jwt-secret or --api-keys (and the index
// would otherwise serve it as a profile name too).
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	})
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

func newServer(h http.Handler, log *slog.Logger, clientIP func(*http.Request) string) *http.Server {
	return &http.Server{
		Handler:           accessLog(h, log, clientIP),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    32 << 10,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// jsonErrors answers unknown paths and wrong methods with the contract's
// JSON error body instead of ServeMux's plain text.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			rec := &statusProbe{}
			h, _ := mux.Handler(r)
			h.ServeHTTP(rec, r)
			switch rec.status {
			case http.StatusMethodNotAllowed:
				if a := rec.Header().Get("Allow"); a != "" {
					w.Header().Set("Allow", a)
				}
				httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on "+r.URL.Path)
			default:
				httpx.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
			}
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// statusProbe records the status a ServeMux fallback handler would send.
type statusProbe struct {
	h      http.Header
	status int
}

func (p *statusProbe) Header() http.Header {
	if p.h == nil {
		p.h = http.Header{}
	}
	return p.h
}
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(s int)           { p.status = s }

var reqSeq atomic.Uint64

// accessLog logs each request with a request id and the client address
// (clientIP), never the query string (it may hold a token) nor any header.
func accessLog(next http.Handler, log *slog.Logger, clientIP func(*http.Request) string) http.Handler {
	var prefix [4]byte
	_, _ = rand.Read(prefix[:])
	p := hex.EncodeToString(prefix[:])
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 64 || strings.ContainsAny(id, " \t\r\n") {
			id = p + "-" + strconv.FormatUint(reqSeq.Add(1), 10)
		}
		w.Header().Set("X-Request-Id", id)
		if !log.Enabled(r.Context(), slog.LevelDebug) {
			// nothing to log: no status to record, no line to build (a
			// storm of handshakes pays for neither)
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(rw, r)
		log.Debug("request", "id", id, "method", r.Method, "path", r.URL.Path,
			"status", rw.status, "duration", time.Since(start).String(), "remote", clientIP(r))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
	w.ResponseWriter.WriteHeader(s)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and websocket.Accept reach the
// connection (Flush, Hijack, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection over (WebSocket upgrades).
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Flush flushes a streamed response (SSE).
func (w *statusWriter) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}
