package crypto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// KEKVersion is one master key in a catalog's history. Versions count up
// from 1; only the newest one wraps keys.
type KEKVersion struct {
	Version   int
	KEKID     string
	CreatedAt time.Time
}

// Rotation is everything a master key rotation changes, applied by
// KeyStore.Rotate in one atomic step.
type Rotation struct {
	// Rewrapped holds every existing data key, wrapped by the new master key
	// (same ID, Scope and CreatedAt; new KEKID and Wrapped).
	Rewrapped []WrappedKey
	// Added holds a new data key for each scope, wrapped by the new master
	// key, which becomes the scope's current key.
	Added []WrappedKey
	// Check is the new check value.
	Check []byte
	// Version is the new master key's entry in the history; Previous is the
	// old one's, recorded too if the history does not have it yet.
	Version, Previous KEKVersion
}

// RotationReport says what RotateMasterKey did.
type RotationReport struct {
	From, To   KEKVersion
	Rewrapped  int // data keys re-wrapped
	NewDataKey int // scopes given a new current data key
}

// RotateMasterKey re-wraps every data key in store from master key old to
// master key new, gives every content scope a new data key wrapped by new
// (so that content sealed from now on uses fresh keys; pseudonym salts are
// kept, so pseudonyms do not change), and makes new the catalog's
// master key — all in one atomic step: if it fails, the catalog is as
// before and old is still its master key. Content sealed under any earlier
// data key stays readable: data key ids and the keys themselves do not
// change, only their wrapping.
//
// old must be the catalog's current master key (ErrWrongMasterKey if not),
// and new a different one. The process must be the catalog's only user
// while it runs (aitrail takes the data directory lock).
func RotateMasterKey(ctx context.Context, store KeyStore, old, new KEK) (RotationReport, error) {
	var rep RotationReport
	if old.ID() == new.ID() {
		return rep, errors.New("crypto: the new master key is the current one")
	}
	if err := NewKeyring(old, store).CheckKEK(ctx); err != nil {
		return rep, err
	}
	keys, err := store.AllKeys(ctx)
	if err != nil {
		return rep, fmt.Errorf("crypto: couldn't list data keys: %w", err)
	}
	versions, err := store.KEKVersions(ctx)
	if err != nil {
		return rep, fmt.Errorf("crypto: couldn't read the master key history: %w", err)
	}
	from := KEKVersion{Version: 1, KEKID: old.ID(), CreatedAt: time.Now().UTC()}
	if n := len(versions); n > 0 {
		from = versions[n-1]
		if from.KEKID != old.ID() {
			return rep, fmt.Errorf("crypto: the master key history ends with %s, not the current master key %s", from.KEKID, old.ID())
		}
	}
	to := KEKVersion{Version: from.Version + 1, KEKID: new.ID(), CreatedAt: time.Now().UTC()}
	if slices.ContainsFunc(versions, func(v KEKVersion) bool { return v.KEKID == new.ID() }) {
		return rep, fmt.Errorf("crypto: master key %s was used before (version history); use a new key", new.ID())
	}

	rot := Rotation{Version: to, Previous: from}
	var scopes []string
	for _, wk := range keys {
		if wk.KEKID != old.ID() {
			return rep, fmt.Errorf("%w: data key %s was wrapped by master key %s, not the current %s", ErrWrongMasterKey, wk.ID, wk.KEKID, old.ID())
		}
		raw, err := old.Unwrap(wk.Wrapped, keyAAD(wk.ID, wk.Scope))
		if err != nil {
			return rep, fmt.Errorf("crypto: couldn't unwrap data key %s: %w", wk.ID, err)
		}
		wrapped, err := new.Wrap(raw, keyAAD(wk.ID, wk.Scope))
		clear(raw)
		if err != nil {
			return rep, fmt.Errorf("crypto: couldn't wrap data key %s: %w", wk.ID, err)
		}
		wk.KEKID, wk.Wrapped = new.ID(), wrapped
		rot.Rewrapped = append(rot.Rewrapped, wk)
		// Salts stay: a new one would change every pseudonym.
		if !macScope(wk.Scope) && !slices.Contains(scopes, wk.Scope) {
			scopes = append(scopes, wk.Scope)
		}
	}
	fresh := NewKeyring(new, nil)
	for _, scope := range scopes {
		wk, _, err := fresh.newKey(scope)
		if err != nil {
			return rep, err
		}
		rot.Added = append(rot.Added, wk)
	}
	if rot.Check, err = checkValue(new); err != nil {
		return rep, err
	}
	if err := store.Rotate(ctx, rot); err != nil {
		return rep, fmt.Errorf("crypto: couldn't store the rotated keys: %w", err)
	}
	return RotationReport{From: from, To: to, Rewrapped: len(rot.Rewrapped), NewDataKey: len(rot.Added)}, nil
}

// matchesCheck reports whether kek is the master key a catalog's check value
// was made with. An error means the KEK could not answer (a remote KEK that
// is unreachable, say), which says nothing about the key.
func matchesCheck(kek KEK, check []byte) (bool, error) {
	_, wrapped, found := bytes.Cut(check, []byte{0})
	if !found {
		return false, nil
	}
	pt, err := kek.Unwrap(wrapped, checkAAD)
	if errors.Is(err, ErrDecrypt) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("crypto: couldn't check the master key %s: %w", kek.ID(), err)
	}
	return bytes.Equal(pt, checkPlaintext), nil
}

// checkValue makes the check value of kek: its id, a NUL, and a known
// plaintext wrapped by it.
func checkValue(kek KEK) ([]byte, error) {
	wrapped, err := kek.Wrap(checkPlaintext, checkAAD)
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't wrap master key check value: %w", err)
	}
	return append([]byte(kek.ID()+"\x00"), wrapped...), nil
}
