package wsproto_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hubd/hub/internal/wsproto"
)

// envelope1K is a 1 KB event envelope of JSON records (like hubbench's
// --payload-kind json).
var envelope1K = func() []byte {
	var b strings.Builder
	b.WriteString(`{"id":"AbCdEf12-000123","type":"BENCH","payload":[`)
	for i := 0; b.Len() < 950; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"%08x","user":"user%d","ts":%d,"score":0.%03d}`, uint32(i*2654435761), i*7919%100000, 1765000000000+i*104729, i*37%1000)
	}
	b.WriteString(`],"timestamp":"2026-12-06T03:00:00.123Z"}`)
	return []byte(b.String())
}()

// BenchmarkDeflate1K: what compressing one event costs (once per event,
// whatever the number of its recipients).
func BenchmarkDeflate1K(b *testing.B) {
	b.SetBytes(int64(len(envelope1K)))
	var z []byte
	for b.Loop() {
		z = wsproto.Deflate(z[:0], envelope1K)
	}
	b.ReportMetric(float64(len(envelope1K))/float64(len(z)), "ratio")
}

// BenchmarkInflate1K: what a client message costs to inflate.
func BenchmarkInflate1K(b *testing.B) {
	z := wsproto.Deflate(nil, envelope1K)
	b.SetBytes(int64(len(envelope1K)))
	var out []byte
	for b.Loop() {
		var err *wsproto.Error
		if out, err = wsproto.Inflate(out[:0], z, 4096); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReaderText: a 1 KB text message through the Reader (parse,
// unmask, UTF-8).
func BenchmarkReaderText(b *testing.B) {
	f := wsproto.AppendClientFrame(nil, true, false, wsproto.OpText, [4]byte{1, 2, 3, 4}, envelope1K)
	buf := make([]byte, len(f))
	r := &wsproto.Reader{}
	r.Limit = 4096
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		copy(buf, f)
		if err := r.Feed(buf, func(wsproto.Event) bool { return true }); err != nil {
			b.Fatal(err)
		}
	}
}
