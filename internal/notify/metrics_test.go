package notify

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// TestMetricsPassPromtool checks the delivery metrics, after a delivery, a
// failure and a drop, with `promtool check metrics` (Debian's prometheus
// package; scripts/install-test-deps.sh installs it).
func TestMetricsPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not on PATH; run scripts/install-test-deps.sh, which installs it, then the tests again")
	}
	ok := httptest.NewServer(&receiver{})
	defer ok.Close()
	down := httptest.NewServer(&receiver{answer: func(int, http.ResponseWriter) {}})
	down.Close()
	reg := prometheus.NewRegistry()
	n := start(t, Config{QueueSize: 1, Alertmanagers: []AlertmanagerConfig{{URL: ok.URL}}, Webhooks: []WebhookConfig{{Name: "down", URL: down.URL}}},
		Options{Registerer: reg})
	n.Send(alert("DeniedBurst", "api-1"))
	n.Send(alert("DeniedBurst", "api-2"))
	waitFor(t, "a delivery and a failure", func() bool {
		s := n.Status()
		return s[0].Delivered > 0 && s[1].Failed > 0
	})

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"aitrail_alert_deliveries_total", "aitrail_alert_deliveries_dropped_total", "aitrail_alert_delivery_queue", "aitrail_alerts_firing"} {
		if !strings.Contains(text.String(), "# TYPE "+name+" ") {
			t.Errorf("the registry lacks %s", name)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &text
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n%s", err, out, text.String())
	}
}
