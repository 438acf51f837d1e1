package api

import (
	"sync"
	"time"
)

// Limits on failed credentials at the service and admin endpoints.
const (
	// MaxCredentialFailures is how many failed credential checks (401
	// answers) a client address may have within CredentialFailureWindow;
	// then it gets 429 rate_limited until the window has passed.
	MaxCredentialFailures = 20
	// CredentialFailureWindow is the window of MaxCredentialFailures.
	CredentialFailureWindow = time.Minute
	// MaxFailingAddrs bounds the client addresses remembered; beyond it an
	// address that is not blocked is forgotten first.
	MaxFailingAddrs = 10000
)

// failLimit counts failed credential checks per client address, in a
// fixed window that starts with the address's first failure: the
// MaxCredentialFailures-th failure within the window blocks the address
// until the window ends. Windows that have ended are dropped lazily (on a
// lookup of their address, and in a sweep at most once per window), and
// the map never holds more than max addresses, so an attacker with many
// addresses costs bounded memory. Safe for concurrent use.
type failLimit struct {
	limit  int
	window time.Duration
	max    int
	now    func() time.Time

	mu        sync.Mutex
	addrs     map[string]failWindow
	lastSweep time.Time
}

// failWindow is one address's current window.
type failWindow struct {
	start time.Time
	n     int
}

func newFailLimit() *failLimit {
	return &failLimit{limit: MaxCredentialFailures, window: CredentialFailureWindow, max: MaxFailingAddrs,
		now: time.Now, addrs: make(map[string]failWindow)}
}

// blocked returns how long addr is still refused; 0 when it is not.
func (l *failLimit) blocked(addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.addrs[addr]
	if !ok {
		return 0
	}
	left := w.start.Add(l.window).Sub(l.now())
	if left <= 0 {
		delete(l.addrs, addr)
		return 0
	}
	if w.n >= l.limit {
		return left
	}
	return 0
}

// fail counts one failed credential check of addr.
func (l *failLimit) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.lastSweep) >= l.window {
		l.sweepLocked(now)
	}
	if w, ok := l.addrs[addr]; ok && now.Sub(w.start) < l.window {
		w.n++
		l.addrs[addr] = w
		return
	}
	if _, ok := l.addrs[addr]; !ok && len(l.addrs) >= l.max {
		l.sweepLocked(now)
		if len(l.addrs) >= l.max {
			l.evictLocked()
		}
	}
	l.addrs[addr] = failWindow{start: now, n: 1}
}

// sweepLocked drops the windows that have ended.
func (l *failLimit) sweepLocked(now time.Time) {
	l.lastSweep = now
	for a, w := range l.addrs {
		if now.Sub(w.start) >= l.window {
			delete(l.addrs, a)
		}
	}
}

// evictLocked forgets one address, one that is not blocked when there is
// such an address (a blocked one otherwise).
func (l *failLimit) evictLocked() {
	victim, found := "", false
	for a, w := range l.addrs {
		if !found {
			victim, found = a, true
		}
		if w.n < l.limit {
			victim = a
			break
		}
	}
	delete(l.addrs, victim)
}
