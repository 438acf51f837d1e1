//go:build !linux

package ws

import (
	"errors"
	"sync"
)

// poller is Linux-only; elsewhere every connection has a reader goroutine.
type poller struct{}

func newPoller(*sync.WaitGroup, func(*conn)) *poller { return &poller{} }

func (p *poller) add(*conn, int) error { return errors.New("no epoll on this system") }
func (p *poller) rearm(*conn, int)     {}
func (p *poller) remove(*conn, int)    {}
