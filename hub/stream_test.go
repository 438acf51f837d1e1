package hub

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestStreamAgainstModel pushes random keyed and plain events through a
// stream with count and byte bounds, and after every push compares it with
// a plain model: the events held (one per key, the newest), their bytes,
// the floor (raised only by the bounds, never by superseding), the key
// index, after() from every seq, and the ring's size.
func TestStreamAgainstModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			size := 1 + rng.IntN(12)
			maxBytes := int64(0)
			if rng.IntN(2) == 0 {
				maxBytes = int64(100 + rng.IntN(600))
			}
			var (
				s     stream
				ix    histIndex
				model []*Message // held, in order
				floor uint64
			)
			keys := 1 + rng.IntN(6)
			for seq := uint64(1); seq <= 2000; seq++ {
				var o EventOptions
				if rng.IntN(4) != 0 {
					o.Key = fmt.Sprint("k", rng.IntN(keys))
				}
				m := newEvent(formatID("E", seq), "T", o, []byte(fmt.Sprintf("%q", make([]byte, rng.IntN(80)))), time.Now(), seq)
				a := ix.stripe(0)
				a.start(m)
				s.push(m, size, maxBytes, a)
				ix.done(m, holders{}, a)

				// the model: supersede, append, drop the oldest over the bounds
				if o.Key != "" {
					model = slices.DeleteFunc(model, func(x *Message) bool { return x.key == o.Key })
				}
				model = append(model, m)
				var bytes int64
				for _, x := range model {
					bytes += int64(x.Size())
				}
				for len(model) > size || (maxBytes > 0 && bytes > maxBytes && len(model) > 0) {
					floor = max(floor, model[0].seq)
					bytes -= int64(model[0].Size())
					model = model[1:]
				}

				if got := s.after(0); !slices.Equal(got, model) && !(len(got) == 0 && len(model) == 0) {
					t.Fatalf("seq %d: held %v, want %v", seq, seqs(got), seqs(model))
				}
				if s.held() != len(model) || s.bytes != bytes || s.floor != floor {
					t.Fatalf("seq %d: held %d bytes %d floor %d; want %d %d %d", seq, s.held(), s.bytes, s.floor, len(model), bytes, floor)
				}
				for _, x := range model {
					if x.key != "" {
						if at, ok := s.keys[x.key]; !ok || s.at(int(at-s.base)) != x {
							t.Fatalf("seq %d: key %s does not index its event", seq, x.key)
						}
					}
				}
				if len(s.keys) != countKeyed(model) {
					t.Fatalf("seq %d: %d keys indexed, %d held", seq, len(s.keys), countKeyed(model))
				}
				if s.n > 0 && s.at(0) == nil {
					t.Fatalf("seq %d: a hole at the head", seq)
				}
				if len(s.buf) > 2*size+16 {
					t.Fatalf("seq %d: ring of %d slots for a bound of %d", seq, len(s.buf), size)
				}
				if seq%97 == 0 {
					for from := uint64(0); from <= seq; from++ {
						var want []*Message
						for _, x := range model {
							if x.seq > from {
								want = append(want, x)
							}
						}
						if got := s.after(from); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
							t.Fatalf("after(%d) = %v, want %v", from, seqs(got), seqs(want))
						}
					}
				}
			}
			var held int64
			for _, x := range model {
				held += int64(x.Size())
			}
			if ix.heldBytes() != held || ix.heldRefs() != int64(len(model)) {
				t.Fatalf("index: %d bytes %d refs, want %d %d", ix.heldBytes(), ix.heldRefs(), held, len(model))
			}
		})
	}
}

func countKeyed(ms []*Message) int {
	n := 0
	for _, m := range ms {
		if m.key != "" {
			n++
		}
	}
	return n
}

func seqs(ms []*Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.seq
	}
	return out
}

// TestCoalesce keeps the last event of each key and every plain one, in
// order.
func TestCoalesce(t *testing.T) {
	mk := func(seq uint64, key string) *Message {
		return newEvent(formatID("E", seq), "T", EventOptions{Key: key}, []byte("1"), time.Now(), seq)
	}
	in := []*Message{mk(1, "a"), mk(2, ""), mk(3, "b"), mk(4, "a"), mk(5, ""), mk(6, "b"), mk(7, "c")}
	if got := seqs(Coalesce(in)); !slices.Equal(got, []uint64{2, 4, 5, 6, 7}) {
		t.Fatalf("Coalesce = %v", got)
	}
	if got := seqs(Coalesce([]*Message{mk(1, ""), mk(2, "a")})); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("Coalesce without duplicates = %v", got)
	}
	if got := Coalesce(nil); len(got) != 0 {
		t.Fatalf("Coalesce(nil) = %v", got)
	}
}

// TestIdxQueueFIFO: the chunked eviction queue gives entries back in the
// order they were pushed, across chunk boundaries, interleaved pushes and
// pops, and after running empty.
func TestIdxQueueFIFO(t *testing.T) {
	var q idxQueue
	var next, want uint64
	push := func(k int) {
		for range k {
			next++
			q.push(idxEntry{m: &Message{seq: next}})
		}
	}
	pop := func(k int) {
		for range k {
			want++
			if e := q.pop(); e.m.seq != want {
				t.Fatalf("popped seq %d, want %d", e.m.seq, want)
			}
		}
	}
	for _, step := range [][2]int{{1, 1}, {idxChunk + 5, 3}, {2 * idxChunk, idxChunk}, {7, 2*idxChunk + 9}, {idxChunk, idxChunk}} {
		push(step[0])
		pop(step[1])
		if q.n != int(next-want) {
			t.Fatalf("n = %d, want %d", q.n, next-want)
		}
	}
	if q.n != 0 || len(q.chunks) != 1 {
		t.Fatalf("empty queue: n %d, %d chunks", q.n, len(q.chunks))
	}
}
