package event

import "strings"

// renamedAttributes maps attribute names of earlier OpenTelemetry GenAI
// semantic conventions to the names that replaced them. Producers and
// instrumentations still send the old names; records store the current
// ones, so that one query finds both (docs/events.md lists them).
var renamedAttributes = map[string]string{
	"gen_ai.system":                             "gen_ai.provider.name",
	"gen_ai.usage.prompt_tokens":                "gen_ai.usage.input_tokens",
	"gen_ai.usage.completion_tokens":            "gen_ai.usage.output_tokens",
	"gen_ai.openai.request.seed":                "gen_ai.request.seed",
	"gen_ai.openai.request.service_tier":        "openai.request.service_tier",
	"gen_ai.openai.response.service_tier":       "openai.response.service_tier",
	"gen_ai.openai.response.system_fingerprint": "openai.response.system_fingerprint",
}

// CurrentAttribute returns the current name of attribute name: the name it
// was renamed to in the OpenTelemetry GenAI conventions, or name itself.
func CurrentAttribute(name string) string {
	if strings.HasPrefix(name, "gen_ai.") {
		if to, ok := renamedAttributes[name]; ok {
			return to
		}
	}
	return name
}

// renameLegacy moves attributes stored under a legacy name to the current
// one. When both are present the current name's value wins and the legacy
// one is dropped: it was sent for older readers and says the same thing.
func renameLegacy(attrs map[string]any) {
	for k, v := range attrs {
		to := CurrentAttribute(k)
		if to == k {
			continue
		}
		delete(attrs, k)
		if _, ok := attrs[to]; !ok {
			attrs[to] = v
		}
	}
}
