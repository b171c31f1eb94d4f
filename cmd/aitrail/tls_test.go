package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	dir                           string
	caFile, certFile, keyFile     string
	clientCertFile, clientKeyFile string
	pool                          *x509.CertPool
	clientCert                    tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	p := testPKI{dir: t.TempDir()}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", caDER)
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p.certFile, p.keyFile = issue(2, "server", x509.ExtKeyUsageServerAuth)
	p.clientCertFile, p.clientKeyFile = issue(3, "client", x509.ExtKeyUsageClientAuth)
	var err2 error
	p.clientCert, err2 = tls.LoadX509KeyPair(p.clientCertFile, p.clientKeyFile)
	if err2 != nil {
		t.Fatal(err2)
	}
	return p
}

func (p testPKI) write(t *testing.T, name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p testPKI) client(cert bool, maxVersion uint16) *http.Client {
	tc := &tls.Config{RootCAs: p.pool, MaxVersion: maxVersion}
	if cert {
		tc.Certificates = []tls.Certificate{p.clientCert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
}

// TestTLSListener serves over TLS and checks what a client sees: HTTPS
// works with the server's CA, plain HTTP and TLS 1.1 do not, and the CLI
// reaches the server with --ca-cert.
func TestTLSListener(t *testing.T) {
	p := newTestPKI(t)
	s := startServerClient(t, t.TempDir(), []string{"AITRAIL_ADMIN_TOKEN=" + adminToken}, p.client(false, 0),
		"--tls-cert", p.certFile, "--tls-key", p.keyFile)
	s.post(map[string]any{"type": "api.call", "id": "over-tls"})
	s.waitIndexed()

	plain := strings.Replace(s.url, "https://", "http://", 1)
	if resp, err := http.Get(plain + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200 on a TLS listener")
		}
	}
	if resp, err := p.client(false, tls.VersionTLS11).Get(s.url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a TLS 1.1 client connected")
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(s.url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a client that does not trust the CA connected")
	}
	// TLS 1.2 with AEAD suites only: a client offering CBC ones alone is
	// refused, one offering AES-GCM is served.
	tls12 := func(suites ...uint16) error {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: p.pool, MaxVersion: tls.VersionTLS12, CipherSuites: suites}}}
		resp, err := c.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA) == nil {
		t.Fatal("a TLS 1.2 client with CBC cipher suites only connected")
	}
	if err := tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256); err != nil {
		t.Fatalf("a TLS 1.2 client with AES-GCM: %v", err)
	}

	code, out, errOut := runCLI("query", "--url", s.url, "--token", adminToken, "--ca-cert", p.caFile)
	if code != 0 || !strings.Contains(out, "over-tls") {
		t.Fatalf("query over TLS: exit %d %s %s", code, out, errOut)
	}
	_, key := s.do("GET", "/log/key", "", "", nil)
	code, out, errOut = runCLI("verify", "--url", s.url, "--key", strings.TrimSpace(string(key)), "--ca-cert", p.caFile)
	if code != 0 || !strings.HasPrefix(out, "OK") {
		t.Fatalf("verify over TLS: exit %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI("query", "--url", s.url, "--token", adminToken); code == 0 {
		t.Fatalf("query without the CA succeeded: %s", errOut)
	}
}

// TestTLSClientCertificates requires client certificates: connections
// without one are refused before any request is read; with one, requests
// still need a bearer token.
func TestTLSClientCertificates(t *testing.T) {
	p := newTestPKI(t)
	s := startServerClient(t, t.TempDir(), []string{"AITRAIL_ADMIN_TOKEN=" + adminToken}, p.client(true, 0),
		"--tls-cert", p.certFile, "--tls-key", p.keyFile, "--tls-client-ca", p.caFile)
	s.post(map[string]any{"type": "api.call", "id": "mutual"})
	s.waitIndexed()
	if code, _ := s.do("GET", "/v1/events", "", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("client certificate without token: %d; want 401", code)
	}
	if resp, err := p.client(false, 0).Get(s.url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate connected")
	}
	code, out, errOut := runCLI("query", "--url", s.url, "--token", adminToken, "--ca-cert", p.caFile,
		"--client-cert", p.clientCertFile, "--client-key", p.clientKeyFile)
	if code != 0 || !strings.Contains(out, "mutual") {
		t.Fatalf("query with a client certificate: exit %d %s %s", code, out, errOut)
	}
	// Every command that talks to a server takes the same TLS flags.
	for _, args := range [][]string{{"models"}, {"alerts"}} {
		args = append(args, "--url", s.url, "--token", adminToken, "--ca-cert", p.caFile, "--client-cert", p.clientCertFile, "--client-key", p.clientKeyFile)
		if code, out, errOut := runCLI(args...); code != 0 {
			t.Fatalf("%s with a client certificate: exit %d %s %s", args[0], code, out, errOut)
		}
	}
	// The load generator has its own HTTP client.
	code, out, errOut = runCLI("bench", "--url", s.url, "--token", adminToken, "--ca-cert", p.caFile,
		"--client-cert", p.clientCertFile, "--client-key", p.clientKeyFile, "--clients", "2", "--batch", "5", "--duration", "300ms")
	if code != 0 || !strings.Contains(out, "events/s") || strings.Contains(out, " 0 events in") {
		t.Fatalf("bench with a client certificate: exit %d %s %s", code, out, errOut)
	}
	if code, out, _ := runCLI("bench", "--url", s.url, "--token", adminToken, "--ca-cert", p.caFile, "--duration", "200ms"); code != 1 {
		t.Fatalf("bench without a client certificate: exit %d %s; want 1", code, out)
	}
	if code, _, errOut := runCLI("query", "--url", s.url, "--token", adminToken, "--ca-cert", p.caFile, "--client-cert", p.clientCertFile); code != 2 {
		t.Fatalf("--client-cert without --client-key: exit %d %s; want 2", code, errOut)
	}
}

func TestTLSFlagsAreChecked(t *testing.T) {
	p := newTestPKI(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--tls-cert", p.certFile}, 2, "cert_file and key_file go together"},
		{[]string{"--tls-client-ca", p.caFile}, 2, "needs tls.cert_file"},
		{[]string{"--tls-cert", p.certFile, "--tls-key", p.clientKeyFile}, 1, "couldn't load the TLS certificate"},
		{[]string{"--tls-cert", p.certFile, "--tls-key", p.keyFile, "--tls-client-ca", p.keyFile}, 1, "no PEM certificate"},
	} {
		code, _, errOut := runCLI(append([]string{"serve", "--data", t.TempDir(), "--addr", freeAddr(t)}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("serve %v: exit %d, %q; want %d mentioning %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

// TestCommandsGiveUpOnServersThatStopAnswering: a server that takes the
// connection and never answers (or answers a byte at a time) makes verify
// --url and the other remote commands fail with a message, not wait for
// ever (an auditor's cron job that never ends raises no alarm either).
func TestCommandsGiveUpOnServersThatStopAnswering(t *testing.T) {
	defer func(d time.Duration) { requestTimeout = d }(requestTimeout)
	requestTimeout = time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns sync.WaitGroup
	stop := make(chan struct{})
	defer func() { close(stop); conns.Wait() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				// The request is read; then the status line, then a byte
				// now and then.
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"))
				for {
					select {
					case <-stop:
						return
					case <-time.After(300 * time.Millisecond):
						c.Write([]byte("x"))
					}
				}
			}()
		}
	}()
	url := "http://" + ln.Addr().String()
	_, vkey, _ := note.GenerateKey(rand.Reader, "example/log")
	for _, args := range [][]string{
		{"verify", "--url", url, "--key", vkey},
		{"query", "--url", url, "--token", "t"},
		{"alerts", "--url", url, "--token", "t"},
	} {
		start := time.Now()
		code, _, errOut := runCLI(args...)
		if code == 0 || !strings.Contains(errOut, "Timeout") || time.Since(start) > 20*time.Second {
			t.Errorf("%s: exit %d after %v: %s; want a timeout", args[0], code, time.Since(start).Round(time.Millisecond), errOut)
		}
	}
}
