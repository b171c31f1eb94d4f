package httpapi

import (
	"os"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestOpenAPIParameters keeps docs/openapi.yaml well formed where YAML
// alone does not: a flow mapping whose unquoted description holds ", "
// parses, as a parameter with an extra key, which OpenAPI refuses.
func TestOpenAPIParameters(t *testing.T) {
	data, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if doc.OpenAPI == "" || len(doc.Paths) == 0 {
		t.Fatalf("docs/openapi.yaml has no openapi version or no paths")
	}
	allowed := []string{"name", "in", "description", "required", "deprecated", "schema", "style", "explode", "example", "$ref"}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			params, _ := op["parameters"].([]any)
			for _, p := range params {
				for k := range p.(map[string]any) {
					if !slices.Contains(allowed, k) {
						t.Errorf("%s %s: a parameter has the key %q", method, path, k)
					}
				}
			}
		}
	}
}
