package crypto_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
)

func TestSubjectPseudonymsAndErasure(t *testing.T) {
	ctx := context.Background()
	store := new(cryptotest.MemKeyStore)
	kr := crypto.NewKeyring(newKEK(t, 1), store)
	alice, err := kr.Subject(ctx, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	p := alice.Pseudonym("alice")
	if !strings.HasPrefix(p, crypto.PseudonymPrefix) || len(p) != len(crypto.PseudonymPrefix)+64 || strings.Contains(p, "alice") {
		t.Fatalf("pseudonym %q", p)
	}
	// Stable for the subject, across Keyrings and a master key rotation;
	// different for other subjects and other tenants.
	if _, err := crypto.RotateMasterKey(ctx, store, newKEK(t, 1), newKEK(t, 2)); err != nil {
		t.Fatal(err)
	}
	kr = crypto.NewKeyring(newKEK(t, 2), store)
	again, ok, err := kr.LookupSubject(ctx, "acme", "alice")
	if err != nil || !ok || again.Pseudonym("alice") != p {
		t.Fatalf("after a new Keyring and a rotation: %v %v, pseudonym %q; want %q", ok, err, again.Pseudonym("alice"), p)
	}
	bob, _ := kr.Subject(ctx, "acme", "bob")
	other, _ := kr.Subject(ctx, "globex", "alice")
	if bob.Pseudonym("alice") == p || other.Pseudonym("alice") == p {
		t.Fatal("another subject's salt gives the same pseudonym")
	}
	if alice.ContentScope() == bob.ContentScope() || alice.ContentScope() == "acme" {
		t.Fatalf("content scopes %q, %q", alice.ContentScope(), bob.ContentScope())
	}
	anon, _ := kr.Subject(ctx, "acme", "")
	if anon.ContentScope() != "acme" {
		t.Fatalf("anonymous content scope %q; want the tenant's", anon.ContentScope())
	}
	if _, ok, _ := kr.LookupSubject(ctx, "acme", "carol"); ok {
		t.Fatal("LookupSubject found a subject never seen")
	}

	// A Subject seals under its content scope's current key, as the
	// keyring does, and remembers the key.
	blob, keyID, err := again.Seal(ctx, []byte("alice's prompt"), crypto.ContentAAD("acme", "e1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, viaScope, err := kr.Seal(ctx, again.ContentScope(), []byte("x"), nil); err != nil || viaScope != keyID {
		t.Fatalf("Subject.Seal used key %s, Keyring.Seal of its scope %s (%v)", keyID, viaScope, err)
	}
	if _, second, _ := again.Seal(ctx, []byte("more"), nil); second != keyID {
		t.Fatalf("second Subject.Seal used key %s, the first %s", second, keyID)
	}
	if pt, err := kr.Open(ctx, keyID, blob, crypto.ContentAAD("acme", "e1")); err != nil || string(pt) != "alice's prompt" {
		t.Fatalf("Open of Subject.Seal's blob: %q, %v", pt, err)
	}
	bobBlob, bobKey, _ := kr.Seal(ctx, bob.ContentScope(), []byte("bob's prompt"), crypto.ContentAAD("acme", "e2"))

	e, err := kr.EraseSubject(ctx, "acme", "alice", "dpo", "tok-1")
	if err != nil || e.Pseudonym != p || e.KeysDestroyed != 2 || e.ID == "" || e.Tenant != "acme" ||
		e.Requester != "dpo" || e.TokenID != "tok-1" || time.Since(e.At) > time.Minute {
		t.Fatalf("EraseSubject = %+v, %v; want the pseudonym, 2 keys (salt, content), an id, who and when", e, err)
	}
	for name, k := range map[string]*crypto.Keyring{"same keyring": kr, "fresh keyring": crypto.NewKeyring(newKEK(t, 2), store)} {
		if _, err := k.Open(ctx, keyID, blob, crypto.ContentAAD("acme", "e1")); !errors.Is(err, crypto.ErrDecrypt) {
			t.Errorf("%s: erased content opens: %v", name, err)
		}
		if _, ok, _ := k.LookupSubject(ctx, "acme", "alice"); ok {
			t.Errorf("%s: erased subject still found", name)
		}
		if pt, err := k.Open(ctx, bobKey, bobBlob, crypto.ContentAAD("acme", "e2")); err != nil || string(pt) != "bob's prompt" {
			t.Errorf("%s: another subject's content: %q, %v", name, pt, err)
		}
	}
	second, err := kr.EraseSubject(ctx, "acme", "alice", "dpo", "tok-1")
	if err != nil || second.KeysDestroyed != 0 || second.ID == e.ID {
		t.Errorf("second erasure = %+v, %v; want nothing destroyed, no error, an id of its own", second, err)
	}
	// Both wait to be recorded in the log, each as it was made.
	if pending, err := kr.PendingErasures(ctx); err != nil || !reflect.DeepEqual(pending, []crypto.Erasure{e, second}) {
		t.Errorf("PendingErasures = %+v, %v; want %+v", pending, err, []crypto.Erasure{e, second})
	}
	if err := kr.ErasureRecorded(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if pending, _ := kr.PendingErasures(ctx); len(pending) != 1 || pending[0].ID != second.ID {
		t.Errorf("PendingErasures after the first was recorded = %+v", pending)
	}
	// New events of the same person start a new, unlinkable pseudonym.
	fresh, _ := kr.Subject(ctx, "acme", "alice")
	if fresh.Pseudonym("alice") == p {
		t.Error("after erasure the subject got its old pseudonym back")
	}
}

// TestPseudonymsOfManyValues: a subject gives each value its own pseudonym,
// the same every time, whatever came before it and from however many
// goroutines, also for values beyond those it remembers.
func TestPseudonymsOfManyValues(t *testing.T) {
	ctx := context.Background()
	kr := crypto.NewKeyring(newKEK(t, 1), new(cryptotest.MemKeyStore))
	s, err := kr.Subject(ctx, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := range 40 {
		v := fmt.Sprintf("value-%d", i)
		want[v] = s.Pseudonym(v)
	}
	seen := map[string]bool{}
	for _, p := range want {
		if seen[p] {
			t.Fatalf("two values share pseudonym %s", p)
		}
		seen[p] = true
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 400 {
				v := fmt.Sprintf("value-%d", (i*(g+1))%40)
				if p := s.Pseudonym(v); p != want[v] {
					t.Errorf("pseudonym of %s: %s, then %s", v, want[v], p)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestPrepareSubjects: the salts and content keys of a batch's new
// subjects are stored in one write; Subject and Seal then store nothing,
// and give what they give without preparing (the same keys, found by
// another Keyring over the store). A failed write leaves nothing behind
// that is used.
func TestPrepareSubjects(t *testing.T) {
	ctx := context.Background()
	store := &countingStore{KeyStore: new(cryptotest.MemKeyStore)}
	kr := crypto.NewKeyring(newKEK(t, 1), store)
	var uses []crypto.SubjectUse
	for i := range 200 {
		// 100 users, each twice; content for users 0-49; one anonymous use.
		uses = append(uses, crypto.SubjectUse{Tenant: "acme", Subject: fmt.Sprintf("user-%d", i%100), Content: i%100 < 50})
	}
	uses = append(uses, crypto.SubjectUse{Tenant: "acme", Content: true}, crypto.SubjectUse{Tenant: "bad|tenant", Subject: "x"})
	if err := kr.PrepareSubjects(ctx, uses); err != nil {
		t.Fatal(err)
	}
	// One write for the tenant's reference key; one with 100 salts, 50
	// content keys, the anonymous subject's salt and the tenant's key.
	if writes := store.puts + store.batches; writes != 2 || store.keys != 1+100+50+2 {
		t.Fatalf("prepare stored %d keys with %d writes; want 153 with 2", store.keys, writes)
	}
	pseudonyms := map[string]string{}
	for _, u := range uses[:len(uses)-1] {
		s, err := kr.Subject(ctx, u.Tenant, u.Subject)
		if err != nil {
			t.Fatal(err)
		}
		pseudonyms[u.Subject] = s.Pseudonym(u.Subject)
		if u.Content {
			if _, _, err := s.Seal(ctx, []byte("prompt"), crypto.ContentAAD("acme", "e")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if store.keys != 153 {
		t.Fatalf("Subject and Seal after prepare stored %d more keys", store.keys-153)
	}
	if err := kr.PrepareSubjects(ctx, uses); err != nil || store.keys != 153 {
		t.Fatalf("preparing again: %v, %d more keys; want none", err, store.keys-153)
	}
	other := crypto.NewKeyring(newKEK(t, 1), store)
	for _, u := range uses[:len(uses)-1] {
		s, ok, err := other.LookupSubject(ctx, u.Tenant, u.Subject)
		if err != nil || !ok || s.Pseudonym(u.Subject) != pseudonyms[u.Subject] {
			t.Fatalf("subject %q through another keyring: %v %v, pseudonym differs", u.Subject, ok, err)
		}
	}
	if _, err := kr.Subject(ctx, "bad|tenant", "x"); err == nil {
		t.Fatal("Subject accepted a tenant with '|'")
	}

	failing := &countingStore{KeyStore: new(cryptotest.MemKeyStore)}
	kr = crypto.NewKeyring(newKEK(t, 1), failing)
	if _, err := kr.Subject(ctx, "acme", "first"); err != nil { // the reference key
		t.Fatal(err)
	}
	failing.fail = errors.New("disk full")
	if err := kr.PrepareSubjects(ctx, uses[:10]); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("prepare with a failing store: %v", err)
	}
	failing.fail = nil
	s, err := kr.Subject(ctx, "acme", "user-3")
	if err != nil {
		t.Fatal(err)
	}
	// The reference key and first's salt, then user-3's salt.
	if failing.keys != 3 {
		t.Fatalf("after a failed prepare, %d keys stored, want 3 (Subject's own salt the third)", failing.keys)
	}
	if got, ok, err := crypto.NewKeyring(newKEK(t, 1), failing).LookupSubject(ctx, "acme", "user-3"); err != nil || !ok || got.Pseudonym("user-3") != s.Pseudonym("user-3") {
		t.Fatalf("the salt Subject made after a failed prepare is not the stored one: %v %v", ok, err)
	}
}

// blockingStore, once armed, holds the next PutKeys until release is
// closed, and closes entered when it starts holding it.
type blockingStore struct {
	countingStore
	armed            atomic.Bool
	entered, release chan struct{}
}

func (s *blockingStore) PutKeys(ctx context.Context, keys []crypto.WrappedKey) error {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return s.countingStore.PutKeys(ctx, keys)
}

// TestNewSubjectsOfConcurrentCallsShareAWrite: callers that need new keys
// while a key write is under way share the next write (a group commit),
// instead of each waiting for a write of its own.
func TestNewSubjectsOfConcurrentCallsShareAWrite(t *testing.T) {
	ctx := context.Background()
	store := &blockingStore{countingStore: countingStore{KeyStore: new(cryptotest.MemKeyStore)},
		entered: make(chan struct{}), release: make(chan struct{})}
	kr := crypto.NewKeyring(newKEK(t, 1), store)
	if _, err := kr.Subject(ctx, "acme", "first"); err != nil { // the tenant's reference key
		t.Fatal(err)
	}
	before := store.batches
	store.armed.Store(true)
	const n = 32
	subjects := make([]*crypto.Subject, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	subject := func(i int) { subjects[i], errs[i] = kr.Subject(ctx, "acme", fmt.Sprintf("user-%d", i)) }
	// The first one's salt is written, and held in the store; the others
	// queue meanwhile.
	wg.Go(func() { subject(0) })
	<-store.entered
	for i := 1; i < n; i++ {
		wg.Go(func() { subject(i) })
	}
	for deadline := time.Now().Add(10 * time.Second); crypto.QueuedKeyWrites(kr) != n-1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			close(store.release)
			t.Fatalf("%d callers queued behind the key write, want %d", crypto.QueuedKeyWrites(kr), n-1)
		}
	}
	close(store.release)
	wg.Wait()
	for i, err := range errs {
		if err != nil || subjects[i] == nil {
			t.Fatalf("subject %d: %v", i, err)
		}
	}
	if writes := store.batches - before; writes != 2 {
		t.Fatalf("%d new subjects took %d key writes; want 2 (one, then the %d queued meanwhile together)", n, writes, n-1)
	}
	other := crypto.NewKeyring(newKEK(t, 1), store)
	for i := range n {
		again, ok, err := other.LookupSubject(ctx, "acme", fmt.Sprintf("user-%d", i))
		if err != nil || !ok || again.Pseudonym("x") != subjects[i].Pseudonym("x") {
			t.Fatalf("subject %d is not the stored one: %v %v", i, ok, err)
		}
	}
}

// pausingStore holds the first read that matches (GetKey of a key id, or
// CurrentKey of a scope with a prefix) after it has read the key, until
// release is closed; it closes read when it starts holding it.
type pausingStore struct {
	crypto.KeyStore
	id, scopePrefix string
	once            sync.Once
	read, release   chan struct{}
}

func (s *pausingStore) hold() {
	s.once.Do(func() {
		close(s.read)
		<-s.release
	})
}

func (s *pausingStore) GetKey(ctx context.Context, id string) (crypto.WrappedKey, error) {
	k, err := s.KeyStore.GetKey(ctx, id)
	if s.id != "" && id == s.id {
		s.hold()
	}
	return k, err
}

func (s *pausingStore) CurrentKey(ctx context.Context, scope string) (crypto.WrappedKey, bool, error) {
	k, ok, err := s.KeyStore.CurrentKey(ctx, scope)
	if s.scopePrefix != "" && strings.HasPrefix(scope, s.scopePrefix) {
		s.hold()
	}
	return k, ok, err
}

// TestErasureWhileAKeyIsRead: a key read from the catalog just before an
// erasure destroyed it, and cached just after, must not stay in memory:
// once EraseSubject has returned and the read has finished, the subject's
// content no longer opens and its scope no longer seals under the
// destroyed key.
func TestErasureWhileAKeyIsRead(t *testing.T) {
	ctx := context.Background()
	mem := new(cryptotest.MemKeyStore)
	alice, err := crypto.NewKeyring(newKEK(t, 1), mem).Subject(ctx, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	aad := crypto.ContentAAD("acme", "e1")
	blob, keyID, err := alice.Seal(ctx, []byte("alice's prompt"), aad)
	if err != nil {
		t.Fatal(err)
	}

	// eraseDuring starts read on a Keyring that has nothing in memory,
	// erases alice while the read is held after reading her key, and
	// returns that Keyring once both have finished.
	eraseDuring := func(t *testing.T, store *pausingStore, read func(*crypto.Keyring)) *crypto.Keyring {
		store.KeyStore, store.read, store.release = mem, make(chan struct{}), make(chan struct{})
		kr := crypto.NewKeyring(newKEK(t, 1), store)
		var wg sync.WaitGroup
		wg.Go(func() { read(kr) })
		<-store.read
		if _, err := kr.EraseSubject(ctx, "acme", "alice", "dpo", "tok-1"); err != nil {
			close(store.release)
			t.Fatal(err)
		}
		close(store.release)
		wg.Wait()
		return kr
	}

	t.Run("open", func(t *testing.T) {
		kr := eraseDuring(t, &pausingStore{id: keyID}, func(kr *crypto.Keyring) {
			kr.Open(ctx, keyID, blob, aad) // the read began before the erasure: either answer
		})
		if _, err := kr.Open(ctx, keyID, blob, aad); !errors.Is(err, crypto.ErrDecrypt) {
			t.Fatalf("content of an erased subject opens after the erasure: %v", err)
		}
	})

	t.Run("seal", func(t *testing.T) {
		// alice again, erased again while her content key is looked up
		// for a Seal.
		alice, err := crypto.NewKeyring(newKEK(t, 1), mem).Subject(ctx, "acme", "alice")
		if err != nil {
			t.Fatal(err)
		}
		_, erased, err := alice.Seal(ctx, []byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		kr := eraseDuring(t, &pausingStore{scopePrefix: "content|"}, func(kr *crypto.Keyring) {
			kr.Seal(ctx, alice.ContentScope(), []byte("y"), nil)
		})
		blob, used, err := kr.Seal(ctx, alice.ContentScope(), []byte("after"), aad)
		if err != nil {
			t.Fatal(err)
		}
		if used == erased {
			t.Fatalf("content sealed after the erasure under the destroyed key %s", erased)
		}
		if pt, err := crypto.NewKeyring(newKEK(t, 1), mem).Open(ctx, used, blob, aad); err != nil || string(pt) != "after" {
			t.Fatalf("content sealed after the erasure: %q, %v", pt, err)
		}
	})
}
