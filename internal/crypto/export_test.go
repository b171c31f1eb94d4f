package crypto

// QueuedKeyWrites reports how many callers wait for the next key write.
func QueuedKeyWrites(k *Keyring) int {
	k.creating.mu.Lock()
	defer k.creating.mu.Unlock()
	return len(k.creating.queue)
}

// SetMaxCachedKeys sets the bound of a Keyring's key cache for a test and
// returns what restores it.
func SetMaxCachedKeys(n int64) (restore func()) {
	old := maxCachedKeys
	maxCachedKeys = n
	return func() { maxCachedKeys = old }
}

// CachedKeys returns how many keys kr holds in memory.
func CachedKeys(kr *Keyring) int {
	n := 0
	kr.byID.Range(func(any, any) bool { n++; return true })
	return n
}
