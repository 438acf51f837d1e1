//go:build !linux

package netpoll

import (
	"errors"
	"sync"
)

// Poller is Linux-only; elsewhere Add fails and every connection reads on
// a goroutine of its own.
type Poller struct{}

// New returns a poller that watches nothing.
func New(*sync.WaitGroup) *Poller { return &Poller{} }

// Add fails: there is no epoll on this system.
func (p *Poller) Add(Watcher, int) error { return errors.New("no epoll on this system") }

// Rearm does nothing.
func (p *Poller) Rearm(Watcher, int) {}

// Remove does nothing.
func (p *Poller) Remove(Watcher, int) {}
