package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The rawwrite scenario measures the machine's ceiling for what a unicast
// delivery costs the hub at the least: one write(2) of a small message to
// one of many loopback sockets, round-robin, blocking, with nothing else
// around it (no hub). This process is the writer (pin it as the hub is
// pinned, e.g. `taskset -c 0`); the readers are a child process of the
// same binary (pinned to core 1 with taskset when it is installed, as
// hubbench is), which dials --conns connections from 127.0.0.2, ... and
// drains them. Every unicast figure is to be read next to this ceiling,
// measured in the same sitting.

// rawMessage is the size of one write: about a unicast envelope's frame.
const rawMessage = 60

// rawReaderFlag starts the hidden reader role: --raw-reader ADDR CONNS PER-SOURCE.
const rawReaderFlag = "--raw-reader"

// runRawWrite runs the writer: it listens on 127.0.0.1, starts the reader
// process, accepts its connections and writes o.events messages.
func (b *bench) runRawWrite(ctx context.Context, res *result) {
	o := b.o
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		res.Error = err.Error()
		return
	}
	defer ln.Close()
	self, err := os.Executable()
	if err != nil {
		res.Error = err.Error()
		return
	}
	args := []string{self, rawReaderFlag, ln.Addr().String(), strconv.Itoa(o.conns), strconv.Itoa(o.perSource)}
	if ts, err := exec.LookPath("taskset"); err == nil {
		args = append([]string{ts, "-c", "1"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		res.Error = "start the readers: " + err.Error()
		return
	}
	defer func() { _ = cmd.Wait() }()
	conns := make([]net.Conn, 0, o.conns)
	defer func() {
		for _, c := range conns {
			c.Close() // the readers see EOF and exit
		}
	}()
	for len(conns) < o.conns {
		if d, ok := ctx.Deadline(); ok {
			_ = ln.(*net.TCPListener).SetDeadline(d)
		}
		c, err := ln.Accept()
		if err != nil {
			res.Error = fmt.Sprintf("accept %d of %d: %v", len(conns), o.conns, err)
			return
		}
		conns = append(conns, c)
	}
	res.Connected = len(conns)
	msg := make([]byte, rawMessage)
	t0 := time.Now()
	for i := 0; i < o.events; i++ {
		if _, err := conns[(i*7919)%len(conns)].Write(msg); err != nil {
			res.Error = "write: " + err.Error()
			return
		}
		if i%4096 == 0 && ctx.Err() != nil {
			res.Error = ctx.Err().Error()
			return
		}
	}
	d := time.Since(t0)
	res.Seconds = d.Seconds()
	res.WriteRate = float64(o.events) / d.Seconds()
	res.MicrosPerWrite = d.Seconds() * 1e6 / float64(o.events)
}

// RawReader is the reader role of the rawwrite scenario: args are ADDR,
// CONNS and PER-SOURCE. It reports whether args named this role (then the
// process should exit with the returned error).
func RawReader(args []string) (bool, error) {
	if len(args) < 1 || args[0] != rawReaderFlag {
		return false, nil
	}
	if len(args) != 4 {
		return true, errors.New(rawReaderFlag + " ADDR CONNS PER-SOURCE")
	}
	n, err1 := strconv.Atoi(args[2])
	per, err2 := strconv.Atoi(args[3])
	if err1 != nil || err2 != nil || n < 1 || n > maxConns || per < 1 || !strings.HasPrefix(args[1], "127.") {
		return true, errors.New(rawReaderFlag + ": bad arguments")
	}
	if err := raiseFileLimit(); err != nil {
		return true, err
	}
	done := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceAddr(i, per)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", args[1])
		if err != nil {
			return true, fmt.Errorf("dial %d: %w", i, err)
		}
		go func() {
			_, _ = io.Copy(io.Discard, bufio.NewReaderSize(c, 4096))
			c.Close()
			done <- struct{}{}
		}()
	}
	for i := 0; i < n; i++ {
		<-done
	}
	return true, nil
}
