package crypto

// QueuedKeyWrites reports how many callers wait for the next key write.
func QueuedKeyWrites(k *Keyring) int {
	k.creating.mu.Lock()
	defer k.creating.mu.Unlock()
	return len(k.creating.queue)
}
