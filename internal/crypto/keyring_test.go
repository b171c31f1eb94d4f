package crypto_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
)

func newKEK(t testing.TB, b byte) crypto.KEK {
	t.Helper()
	kek, err := crypto.NewLocalKEK("", bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

func aad(tenant, id string) []byte { return crypto.ContentAAD(tenant, id) }

func TestSealOpenRoundTrip(t *testing.T) {
	ctx := context.Background()
	kr := crypto.NewKeyring(newKEK(t, 1), new(cryptotest.MemKeyStore))
	for _, size := range []int{0, 1, 1024, 1 << 20} {
		pt := bytes.Repeat([]byte("x"), size)
		blob, keyID, err := kr.Seal(ctx, "acme", pt, aad("acme", "rec-1"))
		if err != nil {
			t.Fatalf("Seal(%d bytes): %v", size, err)
		}
		if len(blob) != 1+12+size+16 {
			t.Errorf("blob for %d bytes has %d bytes, want %d", size, len(blob), 1+12+size+16)
		}
		if size > 16 && bytes.Contains(blob, pt[:16]) {
			t.Errorf("blob contains plaintext")
		}
		got, err := kr.Open(ctx, keyID, blob, aad("acme", "rec-1"))
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open(%d bytes) = %d bytes, %v; want the plaintext", size, len(got), err)
		}
	}
}

func TestSealIsRandomizedAndScoped(t *testing.T) {
	ctx := context.Background()
	store := new(cryptotest.MemKeyStore)
	kr := crypto.NewKeyring(newKEK(t, 1), store)
	b1, k1, _ := kr.Seal(ctx, "acme", []byte("same"), aad("acme", "r"))
	b2, k2, _ := kr.Seal(ctx, "acme", []byte("same"), aad("acme", "r"))
	_, k3, _ := kr.Seal(ctx, "globex", []byte("same"), aad("acme", "r"))
	if bytes.Equal(b1, b2) || crypto.Digest(b1) == crypto.Digest(b2) {
		t.Errorf("sealing the same plaintext twice gave the same blob")
	}
	if k1 != k2 {
		t.Errorf("one scope used two keys: %s, %s", k1, k2)
	}
	if k3 == k1 || store.Len() != 2 {
		t.Errorf("two scopes: key ids %s, %s, %d keys stored; want distinct keys, 2 stored", k1, k3, store.Len())
	}
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(crypto.Digest(b1)) {
		t.Errorf("Digest = %q, want sha256:<64 hex>", crypto.Digest(b1))
	}
}

func TestOpenFails(t *testing.T) {
	ctx := context.Background()
	kr := crypto.NewKeyring(newKEK(t, 1), new(cryptotest.MemKeyStore))
	pt := []byte("the prompt: what is the secret?")
	blob, keyID, err := kr.Seal(ctx, "acme", pt, aad("acme", "rec-1"))
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := kr.Seal(ctx, "globex", []byte("other"), aad("globex", "rec-2"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(blob)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name     string
		keyID    string
		blob     []byte
		aad      []byte
		notFound bool
	}{
		{"wrong record id", keyID, blob, aad("acme", "rec-2"), false},
		{"wrong tenant", keyID, blob, aad("globex", "rec-1"), false},
		{"no aad", keyID, blob, nil, false},
		{"flipped version", keyID, flip(0), aad("acme", "rec-1"), false},
		{"flipped nonce", keyID, flip(5), aad("acme", "rec-1"), false},
		{"flipped ciphertext", keyID, flip(20), aad("acme", "rec-1"), false},
		{"flipped tag", keyID, flip(len(blob) - 1), aad("acme", "rec-1"), false},
		{"truncated", keyID, blob[:len(blob)-1], aad("acme", "rec-1"), false},
		{"empty", keyID, nil, aad("acme", "rec-1"), false},
		{"another scope's key", otherKey, blob, aad("acme", "rec-1"), false},
		{"unknown key", "dk-000000000000000000000000", blob, aad("acme", "rec-1"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kr.Open(ctx, tt.keyID, tt.blob, tt.aad)
			if !errors.Is(err, crypto.ErrDecrypt) {
				t.Fatalf("Open = %q, %v; want ErrDecrypt", got, err)
			}
			if errors.Is(err, crypto.ErrNotFound) != tt.notFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v, want %v (err %v)", !tt.notFound, tt.notFound, err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q leaks plaintext", err)
			}
		})
	}
}

func TestRestartedKeyringOpensOldBlobs(t *testing.T) {
	ctx := context.Background()
	store := new(cryptotest.MemKeyStore)
	kr := crypto.NewKeyring(newKEK(t, 1), store)
	if err := kr.CheckKEK(ctx); err != nil {
		t.Fatal(err)
	}
	blob, keyID, err := kr.Seal(ctx, "acme", []byte("hello"), aad("acme", "r1"))
	if err != nil {
		t.Fatal(err)
	}

	kr2 := crypto.NewKeyring(newKEK(t, 1), store)
	if err := kr2.CheckKEK(ctx); err != nil {
		t.Fatalf("CheckKEK after restart with the same master key: %v", err)
	}
	got, err := kr2.Open(ctx, keyID, blob, aad("acme", "r1"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("Open after restart = %q, %v", got, err)
	}
	if _, k2, _ := kr2.Seal(ctx, "acme", []byte("x"), aad("acme", "r2")); k2 != keyID {
		t.Errorf("after restart the scope got a new key %s, want the stored one %s", k2, keyID)
	}
	if store.Len() != 1 {
		t.Errorf("%d keys stored, want 1", store.Len())
	}
}

func TestCheckKEKWrongMasterKey(t *testing.T) {
	ctx := context.Background()
	store := new(cryptotest.MemKeyStore)
	kek1, kek2 := newKEK(t, 1), newKEK(t, 2)
	if err := crypto.NewKeyring(kek1, store).CheckKEK(ctx); err != nil {
		t.Fatalf("first CheckKEK: %v", err)
	}
	blob, keyID, err := crypto.NewKeyring(kek1, store).Seal(ctx, "acme", []byte("hello"), aad("acme", "r1"))
	if err != nil {
		t.Fatal(err)
	}

	kr := crypto.NewKeyring(kek2, store)
	err = kr.CheckKEK(ctx)
	if !errors.Is(err, crypto.ErrWrongMasterKey) {
		t.Fatalf("CheckKEK with another master key: err = %v, want ErrWrongMasterKey", err)
	}
	for _, want := range []string{"is not this data directory's master key", kek1.ID(), kek2.ID()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Even without CheckKEK, the wrong master key reads and writes nothing.
	if _, err := kr.Open(ctx, keyID, blob, aad("acme", "r1")); !errors.Is(err, crypto.ErrWrongMasterKey) {
		t.Errorf("Open with another master key: err = %v, want ErrWrongMasterKey", err)
	}
	if _, _, err := kr.Seal(ctx, "acme", []byte("x"), aad("acme", "r2")); !errors.Is(err, crypto.ErrWrongMasterKey) {
		t.Errorf("Seal with another master key: err = %v, want ErrWrongMasterKey", err)
	}
}

// A wrapped data key moved to another scope in the catalog must not unwrap.
func TestMovedCatalogRowFails(t *testing.T) {
	ctx := context.Background()
	kek := newKEK(t, 1)
	store := new(cryptotest.MemKeyStore)
	blob, keyID, err := crypto.NewKeyring(kek, store).Seal(ctx, "acme", []byte("hello"), aad("acme", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	wk, err := store.GetKey(ctx, keyID)
	if err != nil {
		t.Fatal(err)
	}
	wk.Scope = "globex"
	moved := new(cryptotest.MemKeyStore)
	if err := moved.PutKey(ctx, wk); err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.NewKeyring(kek, moved).Open(ctx, keyID, blob, aad("acme", "r1")); !errors.Is(err, crypto.ErrDecrypt) {
		t.Errorf("Open via a moved key: err = %v, want ErrDecrypt", err)
	}
}

// countingStore counts PutKey and PutKeys calls (puts, batches) and the
// keys they store, and can fail them.
type countingStore struct {
	crypto.KeyStore
	mu      sync.Mutex
	puts    int
	batches int
	keys    int
	fail    error
}

func (s *countingStore) PutKeys(ctx context.Context, keys []crypto.WrappedKey) error {
	s.mu.Lock()
	s.batches++
	fail := s.fail
	if fail == nil {
		s.keys += len(keys)
	}
	s.mu.Unlock()
	if fail != nil {
		return fail
	}
	return s.KeyStore.PutKeys(ctx, keys)
}

func (s *countingStore) PutKey(ctx context.Context, k crypto.WrappedKey) error {
	s.mu.Lock()
	s.puts++
	fail := s.fail
	if fail == nil {
		s.keys++
	}
	s.mu.Unlock()
	if fail != nil {
		return fail
	}
	return s.KeyStore.PutKey(ctx, k)
}

func TestConcurrentSealNewScopeMakesOneKey(t *testing.T) {
	ctx := context.Background()
	store := &countingStore{KeyStore: new(cryptotest.MemKeyStore)}
	kr := crypto.NewKeyring(newKEK(t, 1), store)
	const n = 64
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			_, ids[i], err = kr.Seal(ctx, "new-tenant", []byte("x"), aad("new-tenant", "r"))
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if store.keys != 1 {
		t.Errorf("%d concurrent Seals on a new scope stored %d keys, want 1", n, store.keys)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent Seals used different keys: %s and %s", ids[0], id)
		}
	}
}

func TestSealFailsWhenKeyNotStored(t *testing.T) {
	ctx := context.Background()
	store := &countingStore{KeyStore: new(cryptotest.MemKeyStore), fail: errors.New("disk full")}
	kr := crypto.NewKeyring(newKEK(t, 1), store)
	blob, keyID, err := kr.Seal(ctx, "acme", []byte("hello"), aad("acme", "r1"))
	if err == nil || blob != nil || keyID != "" {
		t.Fatalf("Seal with a failing catalog = %d bytes, %q, %v; want an error and no blob", len(blob), keyID, err)
	}
	if !strings.Contains(err.Error(), "disk full") {
		t.Errorf("error %q hides the cause", err)
	}
	store.fail = nil
	if _, _, err := kr.Seal(ctx, "acme", []byte("hello"), aad("acme", "r1")); err != nil {
		t.Errorf("Seal after the catalog recovered: %v", err)
	}
}

func TestSealRefusesBadScope(t *testing.T) {
	kr := crypto.NewKeyring(newKEK(t, 1), new(cryptotest.MemKeyStore))
	for _, scope := range []string{"", strings.Repeat("a", 1025)} {
		if _, _, err := kr.Seal(context.Background(), scope, []byte("x"), nil); err == nil {
			t.Errorf("Seal accepted scope of %d bytes", len(scope))
		}
	}
}

func BenchmarkSeal1KiB(b *testing.B) {
	ctx := context.Background()
	kr := crypto.NewKeyring(newKEK(b, 1), new(cryptotest.MemKeyStore))
	pt := make([]byte, 1024)
	ad := aad("acme", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
	if _, _, err := kr.Seal(ctx, "acme", pt, ad); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := kr.Seal(ctx, "acme", pt, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal1KiBParallel(b *testing.B) {
	ctx := context.Background()
	kr := crypto.NewKeyring(newKEK(b, 1), new(cryptotest.MemKeyStore))
	pt := make([]byte, 1024)
	ad := aad("acme", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
	if _, _, err := kr.Seal(ctx, "acme", pt, ad); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := kr.Seal(ctx, "acme", pt, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkOpen1KiB(b *testing.B) {
	ctx := context.Background()
	kr := crypto.NewKeyring(newKEK(b, 1), new(cryptotest.MemKeyStore))
	ad := aad("acme", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
	blob, keyID, err := kr.Seal(ctx, "acme", make([]byte, 1024), ad)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kr.Open(ctx, keyID, blob, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKeyCacheIsBounded: a Keyring keeps at most its bound of data keys in
// memory however many scopes and subjects it serves, and keys it let go
// are read back from the store: every blob still opens, every subject keeps
// its pseudonym, and no scope gets a second key.
func TestKeyCacheIsBounded(t *testing.T) {
	defer crypto.SetMaxCachedKeys(10)()
	ctx := context.Background()
	store := new(cryptotest.MemKeyStore)
	kr := crypto.NewKeyring(newKEK(t, 1), store)
	type sealed struct {
		scope, keyID string
		blob         []byte
	}
	var all []sealed
	pseudonyms := map[string]string{}
	for i := range 40 {
		scope := fmt.Sprintf("tenant-%d", i)
		blob, keyID, err := kr.Seal(ctx, scope, []byte(scope), []byte(scope))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, sealed{scope, keyID, blob})
		user := fmt.Sprintf("user-%d", i)
		s, err := kr.Subject(ctx, "acme", user)
		if err != nil {
			t.Fatal(err)
		}
		pseudonyms[user] = s.Pseudonym(user)
		if n := crypto.CachedKeys(kr); n > 10 {
			t.Fatalf("%d keys in memory, bound 10", n)
		}
	}
	for _, s := range all {
		plain, err := kr.Open(ctx, s.keyID, s.blob, []byte(s.scope))
		if err != nil || string(plain) != s.scope {
			t.Fatalf("blob of %s after its key left the cache: %q, %v", s.scope, plain, err)
		}
		if _, keyID, err := kr.Seal(ctx, s.scope, []byte("again"), nil); err != nil || keyID != s.keyID {
			t.Fatalf("scope %s sealed again with key %s, %v; want its key %s", s.scope, keyID, err, s.keyID)
		}
	}
	// Callers making keys while others empty the cache still get theirs.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				scope := fmt.Sprintf("w%d-%d", w, i)
				if _, _, err := kr.Seal(ctx, scope, []byte("x"), nil); err != nil {
					t.Errorf("Seal in %s while the cache is emptied: %v", scope, err)
					return
				}
			}
		})
	}
	wg.Wait()
	fresh := crypto.NewKeyring(newKEK(t, 1), store) // nothing cached
	for user, p := range pseudonyms {
		s, ok, err := fresh.LookupSubject(ctx, "acme", user)
		if err != nil || !ok || s.Pseudonym(user) != p {
			t.Fatalf("%s: pseudonym %v %v, want %q", user, ok, err, p)
		}
	}
}
