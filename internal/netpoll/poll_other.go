//go:build !linux

package netpoll

import (
	"errors"
	"sync"
)

// Poller is Linux-only; elsewhere Lifecycle.Watch fails and every
// connection reads on a goroutine of its own.
type Poller struct{}

// New returns a poller that watches nothing.
func New(*sync.WaitGroup) *Poller { return &Poller{} }

// add fails: there is no epoll on this system.
func (p *Poller) add(Watcher, int) error { return errors.New("no epoll on this system") }

// rearm does nothing.
func (p *Poller) rearm(Watcher, int) {}

// remove does nothing.
func (p *Poller) remove(Watcher, int) {}
