package cryptotest_test

import (
	"testing"

	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
)

func TestMemKeyStore(t *testing.T) {
	cryptotest.TestKeyStore(t, func(*testing.T) crypto.KeyStore { return new(cryptotest.MemKeyStore) })
}
