package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/aitrail/aitrail/internal/merkle"
)

// fuzzLog is a genuine log of n records, served as C2SP tiles.
type fuzzLog struct {
	records [][]byte
	hashes  []tlog.Hash // stored hashes
}

func (l *fuzzLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(l.hashes)) {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = l.hashes[x]
	}
	return out, nil
}

func newFuzzLog(n int) *fuzzLog {
	l := &fuzzLog{}
	for i := 0; i < n; i++ {
		rec := []byte(fmt.Sprintf(`{"id":"%d"}`, i))
		l.records = append(l.records, rec)
		hs, err := tlog.StoredHashes(int64(i), rec, l)
		if err != nil {
			panic(err)
		}
		l.hashes = append(l.hashes, hs...)
	}
	return l
}

// serve returns what a C2SP log of l's records serves at path under
// /log/tile/: an entry bundle or a hash tile; false for anything else.
func (l *fuzzLog) serve(path string) ([]byte, bool) {
	n := uint64(len(l.records))
	id, err := merkle.ParseTilePath(strings.TrimPrefix(path, "/log/"))
	if err != nil {
		return nil, false
	}
	var data []byte
	if id.Level == merkle.EntriesLevel {
		first := id.N * merkle.TileWidth
		if first+uint64(id.W) > n {
			return nil, false
		}
		for i := first; i < first+uint64(id.W); i++ {
			data = binary.BigEndian.AppendUint16(data, uint16(len(l.records[i])))
			data = append(data, l.records[i]...)
		}
		return data, true
	}
	if (id.N*merkle.TileWidth+uint64(id.W))<<(uint(id.Level)*merkle.TileHeight) > n {
		return nil, false
	}
	data, err = tlog.ReadTileData(tlog.Tile{H: merkle.TileHeight, L: id.Level, N: int64(id.N), W: id.W}, l)
	return data, err == nil
}

// FuzzVerify: verify --url reads a checkpoint and tiles from a server it
// does not trust (beyond the log's key). Whatever the (signed) checkpoint
// says and however one served byte is corrupted, Verify must not panic, and
// must fail whenever a response it read was corrupted or the checkpoint is
// not the genuine tree's.
func FuzzVerify(f *testing.F) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "fuzz.example/log")
	if err != nil {
		f.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	const maxN = 700
	full := newFuzzLog(maxN)
	f.Add(uint16(300), uint64(300), uint64(0), int32(-1), byte(0), true)
	f.Add(uint16(300), uint64(257), uint64(100), int32(-1), byte(0), true)
	f.Add(uint16(600), uint64(600), uint64(0), int32(5), byte(1), true)
	f.Add(uint16(10), uint64(1)<<63, uint64(0), int32(-1), byte(0), false)
	f.Add(uint16(10), uint64(1)<<62, uint64(0), int32(-1), byte(0), false)
	f.Fuzz(func(t *testing.T, n16 uint16, size, trustedSize uint64, corrupt int32, flip byte, entries bool) {
		n := int(n16) % (maxN + 1)
		l := &fuzzLog{records: full.records[:n], hashes: full.hashes[:tlog.StoredHashIndex(0, int64(n))]}
		root := func(s uint64) tlog.Hash {
			if s <= uint64(n) {
				h, err := tlog.TreeHash(int64(s), l)
				if err != nil {
					t.Fatal(err)
				}
				return h
			}
			return tlog.Hash{1, 2, 3} // no tree of that size
		}
		cp, _ := merkle.Checkpoint{Origin: "fuzz.example/log", Size: size, Hash: root(size)}.Sign(signer)
		// A trusted checkpoint was verified before: it is one of the
		// genuine tree's.
		trustedSize %= uint64(n) + 1
		var trusted []byte
		if trustedSize > 0 {
			trusted, _ = merkle.Checkpoint{Origin: "fuzz.example/log", Size: trustedSize, Hash: root(trustedSize)}.Sign(signer)
		}
		var served, corrupted atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/log/checkpoint" {
				w.Write(cp)
				return
			}
			data, ok := l.serve(r.URL.Path)
			if !ok {
				http.NotFound(w, r)
				return
			}
			k := served.Add(1) - 1
			if corrupt >= 0 && int(k) == int(corrupt)%8 && len(data) > 0 && flip != 0 {
				data[int(corrupt)%len(data)] ^= flip
				corrupted.Add(1)
			}
			w.Write(data)
		}))
		defer srv.Close()
		c := New(srv.URL, "")
		res, err := c.Verify(context.Background(), verifier, VerifyOptions{Trusted: trusted, Entries: entries})
		if err != nil {
			return
		}
		if corrupted.Load() > 0 {
			t.Fatalf("Verify accepted a corrupted response (n=%d size=%d trusted=%d corrupt=%d)", n, size, trustedSize, corrupt)
		}
		if size > uint64(n) {
			t.Fatalf("Verify accepted a checkpoint of %d records for a log of %d", size, n)
		}
		if trustedSize > size {
			t.Fatalf("Verify accepted a log that shrank from %d to %d", trustedSize, size)
		}
		if res.Size != size {
			t.Fatalf("result size %d, want %d", res.Size, size)
		}
	})
}
