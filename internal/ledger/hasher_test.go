package ledger

// testHasher hashes keys in tests as a ledger would.
var testHasher = keyHasher{0x0123456789abcdef, 0xfedcba9876543210}
