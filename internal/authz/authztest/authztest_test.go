package authztest_test

import (
	"testing"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/authz/authztest"
)

func TestMemTokenStore(t *testing.T) {
	authztest.TestTokenStore(t, func(*testing.T) authz.TokenStore { return new(authztest.MemTokenStore) })
}
