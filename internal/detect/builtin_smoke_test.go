package detect

import "testing"

func TestBuiltinLoads(t *testing.T) {
	if _, err := builtinRules(); err != nil {
		t.Fatal(err)
	}
}
