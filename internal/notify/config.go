package notify

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults for what Config leaves zero.
const (
	// DefaultResendInterval is how often alerts still firing are sent to
	// Alertmanager again. Alertmanager resolves an alert it has not heard
	// of for a while, so firing alerts must be repeated.
	DefaultResendInterval = time.Minute
	// DefaultQueueSize is how many alerts may wait for one target.
	DefaultQueueSize = 10000
	// DefaultTimeout bounds one delivery request.
	DefaultTimeout = 10 * time.Second
	// DefaultMinBackoff is the wait after the first failed delivery.
	DefaultMinBackoff = time.Second
	// DefaultMaxBackoff caps the wait between retries.
	DefaultMaxBackoff = time.Minute
)

// Config lists the targets alerts are delivered to. It is the `alerting:`
// section of the server's YAML configuration; zero values take the defaults
// above (see WithDefaults).
type Config struct {
	// Alertmanagers receive every alert through their v2 API.
	Alertmanagers []AlertmanagerConfig `yaml:"alertmanagers"`
	// Webhooks receive every alert in Alertmanager's v4 webhook payload.
	Webhooks []WebhookConfig `yaml:"webhooks"`
	// ResendInterval is how often firing alerts are sent to Alertmanagers
	// again.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// QueueSize is how many alerts may wait for one target before the
	// oldest is dropped.
	QueueSize int `yaml:"queue_size"`
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// retries of a failed delivery.
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// ExternalURL is aitrail's own address, written as externalURL in
	// webhook payloads.
	ExternalURL string `yaml:"external_url"`
}

// AlertmanagerConfig is one Prometheus Alertmanager.
type AlertmanagerConfig struct {
	// URL is Alertmanager's base address, such as http://alertmanager:9093;
	// alerts go to URL/api/v2/alerts.
	URL string `yaml:"url"`
	// Timeout bounds one request.
	Timeout time.Duration `yaml:"timeout"`
}

// WebhookConfig is one generic webhook receiver.
type WebhookConfig struct {
	// Name identifies the webhook in status, metrics and logs, and is the
	// payload's receiver.
	Name string `yaml:"name"`
	// URL receives the POSTed payloads. It is never logged: webhook URLs
	// often carry a secret.
	URL string `yaml:"url"`
	// BearerTokenFile holds a token sent as "Authorization: Bearer …". It is
	// read before every request, so that it can be rotated in place.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// Headers are sent with every request. Their values are never logged.
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one request.
	Timeout time.Duration `yaml:"timeout"`
}

// WithDefaults returns c with every zero setting replaced by its default.
func (c Config) WithDefaults() Config {
	setDefault(&c.ResendInterval, DefaultResendInterval)
	setDefault(&c.QueueSize, DefaultQueueSize)
	setDefault(&c.MinBackoff, DefaultMinBackoff)
	setDefault(&c.MaxBackoff, DefaultMaxBackoff)
	c.Alertmanagers = append([]AlertmanagerConfig(nil), c.Alertmanagers...)
	for i := range c.Alertmanagers {
		setDefault(&c.Alertmanagers[i].Timeout, DefaultTimeout)
	}
	c.Webhooks = append([]WebhookConfig(nil), c.Webhooks...)
	for i := range c.Webhooks {
		setDefault(&c.Webhooks[i].Timeout, DefaultTimeout)
	}
	return c
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate returns every problem with c, joined; call it on the result of
// WithDefaults.
func (c Config) Validate() error {
	var errs []string
	if c.ResendInterval <= 0 {
		errs = append(errs, "alerting.resend_interval: must be positive")
	}
	if c.QueueSize < 1 {
		errs = append(errs, "alerting.queue_size: must be at least 1")
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, "alerting.min_backoff and max_backoff: must be positive, min_backoff no greater than max_backoff")
	}
	if c.ExternalURL != "" {
		if err := checkURL(c.ExternalURL); err != "" {
			errs = append(errs, "alerting.external_url: "+err)
		}
	}
	for i, am := range c.Alertmanagers {
		key := fmt.Sprintf("alerting.alertmanagers[%d]", i)
		if err := checkURL(am.URL); err != "" {
			errs = append(errs, key+".url: "+err)
		} else if u, _ := url.Parse(am.URL); u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, key+".url: must have no query or fragment (the API path is added to it)")
		}
		if am.Timeout <= 0 {
			errs = append(errs, key+".timeout: must be positive")
		}
	}
	names := map[string]bool{}
	for i, w := range c.Webhooks {
		key := fmt.Sprintf("alerting.webhooks[%d]", i)
		switch {
		case w.Name == "":
			errs = append(errs, key+".name: must not be empty")
		case names[w.Name]:
			errs = append(errs, fmt.Sprintf("%s.name: %q is used by another webhook", key, w.Name))
		}
		names[w.Name] = true
		// The URL itself is not repeated in the message: it may hold a secret.
		if err := checkURL(w.URL); err != "" {
			errs = append(errs, key+".url: "+err)
		}
		for h := range w.Headers {
			if !validHeaderName(h) {
				errs = append(errs, fmt.Sprintf("%s.headers: %q is not a valid header name", key, h))
			}
			if w.BearerTokenFile != "" && http.CanonicalHeaderKey(h) == "Authorization" {
				errs = append(errs, key+": give bearer_token_file or an Authorization header, not both")
			}
		}
		if w.Timeout <= 0 {
			errs = append(errs, key+".timeout: must be positive")
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid alerting configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// checkURL returns what is wrong with an http(s) URL, or "".
func checkURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "must be an http:// or https:// URL with a host"
	}
	return ""
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for _, r := range h {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}
