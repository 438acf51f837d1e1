package httpx

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// OriginAllowed reports whether a browser Origin header value is allowed by
// the HUB_ALLOWED_ORIGINS patterns. A pattern with a scheme
// ("https://app.example") matches scheme and host (with port); one without
// ("app.example", "*.example.com") matches the host (with or without port,
// path.Match wildcards); "*" allows all. With no pattern only the request's
// own host is allowed. An empty origin (not a browser) is allowed.
func OriginAllowed(patterns []string, origin, requestHost string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	host := strings.ToLower(u.Host)
	if len(patterns) == 0 {
		return strings.EqualFold(host, requestHost)
	}
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSpace(p))
		switch {
		case p == "":
			continue
		case p == "*":
			return true
		case strings.Contains(p, "://"):
			pu, err := url.Parse(p)
			if err != nil {
				continue
			}
			if pu.Scheme == strings.ToLower(u.Scheme) && matchHost(pu.Host, host) {
				return true
			}
		default:
			if matchHost(p, host) || matchHost(p, u.Hostname()) {
				return true
			}
		}
	}
	return false
}

func matchHost(pattern, host string) bool {
	if pattern == host {
		return true
	}
	if strings.HasPrefix(pattern, "*.") {
		return strings.HasSuffix(host, pattern[1:])
	}
	return false
}

// UnavailableRetry is the Retry-After of a handshake refused with 503
// because the node is draining or its broker is unreachable: long enough
// for a load balancer to have taken a draining node out, or for a restart,
// short enough that a device does not stay away for nothing.
const UnavailableRetry = 2 * time.Second

// RetryAfter sets the Retry-After header to d rounded up to whole seconds
// (at least 1); it does nothing for d <= 0.
func RetryAfter(w http.ResponseWriter, d time.Duration) {
	if d <= 0 {
		return
	}
	s := int64((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.FormatInt(max(s, 1), 10))
}

// CORS answers cross-origin requests for origins allowed by patterns (an
// empty list allows none: same-origin requests need no CORS), preflights
// included, and passes everything else to next.
func CORS(patterns []string, methods string, next http.Handler) http.Handler {
	return CORSFunc(func(origin string, r *http.Request) bool {
		return len(patterns) > 0 && OriginAllowed(patterns, origin, r.Host)
	}, methods, next)
}

// CORSFunc is CORS for the origins that allow reports as allowed (it is
// called with a non-empty origin only).
func CORSFunc(allow func(origin string, r *http.Request) bool, methods string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		allowed := origin != "" && allow(origin, r)
		if allowed {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				w.Header().Set("Access-Control-Allow-Methods", methods)
				w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, X-API-Key")
				w.Header().Set("Access-Control-Max-Age", "600")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
