package hub_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

// rssBytes reads the process's resident set size from /proc/self/status
// (0 where there is none).
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// amplifyPayload is a 50,000-byte JSON string: the payload of issue 15's
// amplification case.
func amplifyPayload() []byte {
	return append(append([]byte(`"`), bytes.Repeat([]byte("x"), 50000-2)...), '"')
}

// TestAmplificationStoredOnce is issue 15's memory amplification case: one
// request to 3,000 short user ids with a 50 KB payload, on a hub with the
// default history settings. The event is stored once, not once per user,
// so the heap it leaves behind is the payload and a few hundred bytes of
// bookkeeping per user, not 3,000 copies (about 300 MB before). It logs the
// heap and RSS growth (docs/SECURITY.md quotes them; docs/BENCHMARKS.md
// says how they are taken).
func TestAmplificationStoredOnce(t *testing.T) {
	const users = 3000
	ids := make([]string, users)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	payload := amplifyPayload()
	h := newHub(t, hub.Options{HistorySize: 1000, HistoryTTL: 10 * time.Minute})

	heap0, rss0 := heapAlloc(), rssBytes()
	if _, err := h.Publish(ctx, ids, "BIG", payload); err != nil {
		t.Fatal(err)
	}
	heap1, rss1 := heapAlloc(), rssBytes()
	runtime.KeepAlive(h)
	grew := int64(heap1) - int64(heap0)
	t.Logf("one publish of %d bytes to %d users: heap +%s, RSS +%s", len(payload), users, mib(grew), mib(int64(rss1)-int64(rss0)))
	// the envelope once (~50 KB) plus per-user bookkeeping (history ring,
	// user entry); 3,000 copies would be 150 MB at the very least
	if limit := int64(4 << 20); grew > limit {
		t.Fatalf("the heap grew by %s after one publish to %d users, want at most %s: the event is stored per user", mib(grew), users, mib(limit))
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
