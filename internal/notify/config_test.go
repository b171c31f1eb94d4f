package notify

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestDocumentedConfig decodes the example in docs/alerts.md strictly, as
// the server decodes its YAML file, so that the documented keys are the
// real ones.
func TestDocumentedConfig(t *testing.T) {
	doc, err := os.ReadFile("../../docs/alerts.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	if !ok {
		t.Fatal("docs/alerts.md has no YAML example")
	}
	var file struct {
		Alerting Config `yaml:"alerting"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(block)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("the documented example does not decode: %v", err)
	}
	c := file.Alerting.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("the documented example is invalid: %v", err)
	}
	if c.ResendInterval != time.Minute || c.QueueSize != 10000 || len(c.Alertmanagers) != 1 || c.Alertmanagers[0].Timeout != 10*time.Second ||
		len(c.Webhooks) != 1 || c.Webhooks[0].Headers["X-Team"] != "security" || c.Webhooks[0].BearerTokenFile == "" {
		t.Errorf("the documented example decodes to %+v", c)
	}
}

// TestConfigValidate checks that every problem is reported at once, and
// that webhook URLs (which may hold secrets) are not repeated.
func TestConfigValidate(t *testing.T) {
	c := Config{
		QueueSize:     -1,
		Alertmanagers: []AlertmanagerConfig{{URL: "alertmanager:9093"}, {URL: "http://am:9093/?x=1"}},
		Webhooks: []WebhookConfig{
			{Name: "a", URL: "ftp://hooks/s3cret"},
			{Name: "a", URL: "https://hooks/x", BearerTokenFile: "/t", Headers: map[string]string{"authorization": "x", "Bad Header": "y"}},
			{URL: "https://hooks/y"},
		},
	}.WithDefaults()
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted an invalid configuration")
	}
	for _, want := range []string{
		"alerting.queue_size", "alertmanagers[0].url", "alertmanagers[1].url: must have no query",
		"webhooks[0].url", `webhooks[1].name: "a" is used`, "webhooks[1]: give bearer_token_file or an Authorization header",
		`"Bad Header" is not a valid header name`, "webhooks[2].name: must not be empty",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Validate repeated a webhook URL:\n%v", err)
	}
	if err := (Config{Alertmanagers: []AlertmanagerConfig{{URL: "http://am:9093"}}}).WithDefaults().Validate(); err != nil {
		t.Errorf("Validate refused a minimal configuration: %v", err)
	}
}
