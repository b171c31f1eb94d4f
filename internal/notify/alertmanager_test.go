package notify

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// alertmanagerBinary finds Alertmanager on PATH: "alertmanager" upstream,
// "prometheus-alertmanager" in Debian's package.
func alertmanagerBinary(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"alertmanager", "prometheus-alertmanager"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Prometheus Alertmanager is not on PATH (neither alertmanager nor prometheus-alertmanager); " +
		"run scripts/install-test-deps.sh, which installs it, then the tests again")
	return ""
}

// startAlertmanager runs a real Alertmanager on loopback that notifies
// webhookURL quickly, and returns its base URL once it is ready.
func startAlertmanager(t *testing.T, webhookURL string) string {
	t.Helper()
	bin := alertmanagerBinary(t)
	dir := t.TempDir()
	config := fmt.Sprintf(`route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: %s
        send_resolved: true
`, webhookURL)
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	out, err := os.Create(filepath.Join(dir, "alertmanager.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child keeps its own copy
	cmd := exec.Command(bin, "--web.listen-address="+addr, "--cluster.listen-address=",
		"--storage.path="+filepath.Join(dir, "data"), "--config.file="+filepath.Join(dir, "alertmanager.yml"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("couldn't start Alertmanager: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	base := "http://" + addr
	output := func() string { b, _ := os.ReadFile(out.Name()); return string(b) }
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		select {
		case <-exited:
			t.Fatalf("Alertmanager exited while starting:\n%s", output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Alertmanager not ready after 30s:\n%s", output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gettableAlert is what Alertmanager's GET /api/v2/alerts lists: what
// was posted, and what Alertmanager adds.
type gettableAlert struct {
	postableAlert
	Fingerprint string `json:"fingerprint"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

func listAlerts(t *testing.T, base string) []gettableAlert {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var alerts []gettableAlert
	if err := json.NewDecoder(resp.Body).Decode(&alerts); err != nil {
		t.Fatalf("GET /api/v2/alerts: %v", err)
	}
	return alerts
}

// TestRealAlertmanager delivers an alert to a real Alertmanager, checks it
// through Alertmanager's own API and through the notification Alertmanager
// sends on, then resolves it and checks that Alertmanager resolves it with
// the end time aitrail gave. It also checks that Alertmanager's own webhook
// payload has exactly the fields of the one aitrail's webhooks send.
func TestRealAlertmanager(t *testing.T) {
	hook := &receiver{}
	hookSrv := httptest.NewServer(hook)
	defer hookSrv.Close()
	base := startAlertmanager(t, hookSrv.URL+"/am-hook")

	n := start(t, Config{Alertmanagers: []AlertmanagerConfig{{URL: base}}}, Options{})
	a := alert("DeniedBurst", "api-1")
	a.StartsAt = time.Now().Add(-time.Minute).Truncate(time.Second).UTC()
	if err := n.Send(a); err != nil {
		t.Fatal(err)
	}

	var got gettableAlert
	waitFor(t, "Alertmanager to list the alert", func() bool {
		for _, g := range listAlerts(t, base) {
			if g.Labels["instance"] == "api-1" {
				got = g
				return true
			}
		}
		return false
	})
	if got.Fingerprint != a.Fingerprint() || !got.StartsAt.Equal(a.StartsAt) || got.GeneratorURL != a.GeneratorURL ||
		got.Annotations["summary"] != a.Annotations["summary"] || len(got.Labels) != len(a.Labels) || got.Status.State != "active" {
		t.Errorf("Alertmanager lists %+v; want the alert sent (fingerprint %s), active", got, a.Fingerprint())
	}
	if !got.EndsAt.After(time.Now()) {
		t.Errorf("Alertmanager gave the firing alert endsAt %v, in the past", got.EndsAt)
	}
	// Alertmanager may list the alert before its answer reaches aitrail.
	waitFor(t, "the status to show the delivery", func() bool {
		st := n.Status()[0]
		return st.Delivered > 0 && st.Pending == 0
	})

	firing := waitNotification(t, hook, "firing")
	compareShape(t, firing, "testdata/webhook-v4.json")

	a.EndsAt = time.Now().Truncate(time.Second).UTC()
	if err := n.Send(a); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Alertmanager to drop the resolved alert from its active alerts", func() bool {
		for _, g := range listAlerts(t, base) {
			if g.Labels["instance"] == "api-1" {
				return false
			}
		}
		return true
	})
	resolved := waitNotification(t, hook, "resolved")
	var m webhookMessage
	if err := json.Unmarshal(resolved, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Alerts) != 1 || !m.Alerts[0].EndsAt.Equal(a.EndsAt) || m.Alerts[0].Status != StatusResolved || m.Alerts[0].Fingerprint != a.Fingerprint() {
		t.Errorf("Alertmanager's resolved notification holds %+v; want the alert ending at %v", m.Alerts, a.EndsAt)
	}
}

// waitNotification waits for Alertmanager to notify rcv of a group with
// the given status, and returns the payload.
func waitNotification(t *testing.T, rcv *receiver, status string) []byte {
	t.Helper()
	var body []byte
	waitFor(t, "a "+status+" notification from Alertmanager", func() bool {
		for _, r := range rcv.requests() {
			var m webhookMessage
			if json.Unmarshal(r.body, &m) == nil && m.Status == status {
				body = r.body
				return true
			}
		}
		return false
	})
	return body
}

// compareShape checks that payload has exactly the fields, at the top and
// in its alerts, of the golden file.
func compareShape(t *testing.T, payload []byte, golden string) {
	t.Helper()
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	var g, w map[string]any
	if err := json.Unmarshal(payload, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if g["version"] != w["version"] {
		t.Errorf("Alertmanager sent payload version %v, ours is %v", g["version"], w["version"])
	}
	sameKeys(t, "payload", g, w)
	ga, _ := g["alerts"].([]any)
	wa, _ := w["alerts"].([]any)
	if len(ga) == 0 || len(wa) == 0 {
		t.Fatalf("no alerts in Alertmanager's payload %s", payload)
	}
	sameKeys(t, "alert", ga[0].(map[string]any), wa[0].(map[string]any))
}

func sameKeys(t *testing.T, what string, got, want map[string]any) {
	t.Helper()
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("Alertmanager's %s lacks %q, which ours has", what, k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("Alertmanager's %s has %q, which ours lacks", what, k)
		}
	}
}
