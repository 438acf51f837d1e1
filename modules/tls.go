package modules

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// certReloader serves the TLS certificate from HUB_TLS_CERT_FILE and
// HUB_TLS_KEY_FILE and loads them again on SIGHUP or when either file
// changes (checked every few seconds), so certificates rotate without a
// restart. A failed reload keeps the previous certificate.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.RWMutex
	cert    *tls.Certificate
	modTime time.Time

	stop chan struct{}
	wg   sync.WaitGroup
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, stop: make(chan struct{})}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) newest() time.Time {
	var t time.Time
	for _, f := range []string{r.certFile, r.keyFile} {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}

func (r *certReloader) load() error {
	mod := r.newest()
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("HUB_TLS_CERT_FILE/HUB_TLS_KEY_FILE: %w", err)
	}
	r.mu.Lock()
	r.cert, r.modTime = &cert, mod
	r.mu.Unlock()
	return nil
}

// GetCertificate is the tls.Config hook.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

func (r *certReloader) reload(why string) {
	if err := r.load(); err != nil {
		r.log.Error("TLS certificate reload failed; keeping the previous one", "why", why, "err", err)
		return
	}
	r.log.Info("TLS certificate reloaded", "why", why)
}

// start watches SIGHUP and the files until close.
func (r *certReloader) start(poll time.Duration) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer signal.Stop(hup)
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-hup:
				r.reload("SIGHUP")
			case <-t.C:
				r.mu.RLock()
				known := r.modTime
				r.mu.RUnlock()
				if m := r.newest(); m.After(known) {
					r.reload("file changed")
				}
			}
		}
	}()
}

func (r *certReloader) close() {
	close(r.stop)
	r.wg.Wait()
}

func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: r.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
