package crypto_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
)

// TestRotateMasterKey seals content, rotates the master key twice with
// content sealed in between, and reads all of it back with the newest key:
// three data key versions per scope, one master key.
func TestRotateMasterKey(t *testing.T) {
	ctx := context.Background()
	store := new(cryptotest.MemKeyStore)
	keks := []crypto.KEK{newKEK(t, 1), newKEK(t, 2), newKEK(t, 3)}
	type sealed struct {
		tenant, id, keyID string
		blob              []byte
	}
	var all []sealed
	for v, kek := range keks {
		if v > 0 {
			rep, err := crypto.RotateMasterKey(ctx, store, keks[v-1], kek)
			if err != nil {
				t.Fatalf("rotation %d: %v", v, err)
			}
			if rep.From.Version != v || rep.To.Version != v+1 || rep.To.KEKID != kek.ID() || rep.NewDataKey != 2 {
				t.Fatalf("rotation %d report %+v", v, rep)
			}
		}
		kr := crypto.NewKeyring(kek, store)
		if err := kr.CheckKEK(ctx); err != nil {
			t.Fatalf("version %d: %v", v+1, err)
		}
		for _, tenant := range []string{"acme", "globex"} {
			id := fmt.Sprintf("e-%d-%s", v, tenant)
			blob, keyID, err := kr.Seal(ctx, tenant, []byte("secret "+id), crypto.ContentAAD(tenant, id))
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, sealed{tenant, id, keyID, blob})
		}
	}
	kr := crypto.NewKeyring(keks[2], store)
	keyIDs := map[string]bool{}
	for _, s := range all {
		pt, err := kr.Open(ctx, s.keyID, s.blob, crypto.ContentAAD(s.tenant, s.id))
		if err != nil || string(pt) != "secret "+s.id {
			t.Errorf("content %s under key %s after rotations: %q, %v", s.id, s.keyID, pt, err)
		}
		keyIDs[s.keyID] = true
	}
	if len(keyIDs) != 6 {
		t.Errorf("content was sealed under %d data keys; want 3 versions × 2 tenants", len(keyIDs))
	}
	vs, _ := store.KEKVersions(ctx)
	if len(vs) != 3 || vs[2].KEKID != keks[2].ID() {
		t.Errorf("history %+v; want three versions ending with the newest key", vs)
	}
	// The replaced master keys no longer open the catalog.
	for _, old := range keks[:2] {
		if err := crypto.NewKeyring(old, store).CheckKEK(ctx); !errors.Is(err, crypto.ErrWrongMasterKey) {
			t.Errorf("old master key %s: CheckKEK = %v; want ErrWrongMasterKey", old.ID(), err)
		}
	}
}

func TestRotateMasterKeyRefuses(t *testing.T) {
	ctx := context.Background()
	store := new(cryptotest.MemKeyStore)
	k1, k2, k3 := newKEK(t, 1), newKEK(t, 2), newKEK(t, 3)
	if _, _, err := crypto.NewKeyring(k1, store).Seal(ctx, "acme", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	crypto.NewKeyring(k1, store).CheckKEK(ctx)
	if _, err := crypto.RotateMasterKey(ctx, store, k2, k3); !errors.Is(err, crypto.ErrWrongMasterKey) {
		t.Errorf("rotation from a key that is not current: %v; want ErrWrongMasterKey", err)
	}
	if _, err := crypto.RotateMasterKey(ctx, store, k1, k1); err == nil {
		t.Error("rotation to the same key succeeded")
	}
	if _, err := crypto.RotateMasterKey(ctx, store, k1, k2); err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.RotateMasterKey(ctx, store, k2, k1); err == nil {
		t.Error("rotation back to a retired key succeeded")
	}
}
