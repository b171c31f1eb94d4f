// Package aitrail_test holds repository-wide checks.
package aitrail_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/aitrail/aitrail"

// TestDependenciesPointOneWay keeps the architecture: pure packages do no
// I/O, nothing below cmd picks a storage backend, and storage knows nothing
// of the layers above it.
func TestDependenciesPointOneWay(t *testing.T) {
	// Standard library packages are checked among direct imports (a
	// library may use os internally); the project's own among all.
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-f", "{{join .Imports \" \"}}", module+"/"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		all, err := exec.Command("go", "list", "-deps", module+"/"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		var own []string
		for _, d := range strings.Fields(string(all)) {
			if strings.HasPrefix(d, module) {
				own = append(own, d)
			}
		}
		return append(strings.Fields(string(out)), own...)
	}
	for _, tc := range []struct {
		pkg       string
		forbidden []string
	}{
		// Pure: no file system, network or database.
		{"internal/event", []string{"os", "net", "database/sql", module + "/internal/ledger"}},
		{"internal/merkle", []string{"os", "net", "database/sql"}},
		{"internal/detect", []string{"os", "net", "net/http", "database/sql", module + "/internal/ledger", module + "/internal/httpapi", module + "/internal/index"}},
		// Domain packages never import transport, wiring or a backend.
		{"internal/ledger", []string{module + "/internal/httpapi", module + "/internal/index", module + "/internal/store/sqlite", "database/sql"}},
		{"internal/index", []string{module + "/internal/httpapi", module + "/cmd/aitrail"}},
		{"internal/crypto", []string{module + "/internal/httpapi", module + "/internal/store/sqlite", "database/sql"}},
		{"internal/authz", []string{module + "/internal/httpapi", module + "/internal/store/sqlite", "database/sql"}},
		{"internal/registry", []string{module + "/internal/httpapi", module + "/internal/ingest", module + "/internal/store/sqlite", "database/sql", "os", "net"}},
		{"internal/ingest", []string{module + "/internal/registry", module + "/internal/store/sqlite", "database/sql"}},
		{"internal/httpapi", []string{module + "/internal/store/sqlite", module + "/cmd/aitrail"}},
		{"internal/capture/otlp", []string{module + "/internal/httpapi", module + "/cmd/aitrail", module + "/internal/store/sqlite", "database/sql"}},
		{"client", []string{module + "/internal/ledger", module + "/internal/httpapi", "database/sql",
			// Only the openairecord subpackage may need the OpenAI library.
			"github.com/openai/openai-go/v3", "github.com/openai/openai-go/v3/option"}},
		{"internal/capture/proxy", []string{module + "/internal/httpapi", module + "/cmd/aitrail", module + "/internal/store/sqlite", "database/sql"}},
		// Alert delivery is handed alerts; it stores nothing.
		{"internal/notify", []string{module + "/internal/httpapi", module + "/cmd/aitrail", module + "/internal/store/sqlite", "database/sql"}},
	} {
		have := map[string]bool{}
		for _, d := range deps(tc.pkg) {
			have[d] = true
		}
		for _, f := range tc.forbidden {
			if have[f] {
				t.Errorf("%s depends on %s", tc.pkg, f)
			}
		}
	}
}
