package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/internal/config"
)

// serverTLS returns the listener's TLS configuration, or nil when TLS is
// off. TLS 1.2 is the floor, with only its AEAD cipher suites with forward
// secrecy (Go's defaults still include CBC ones; TLS 1.3's are all AEAD).
// With a client CA, every connection must present a certificate that CA
// signed (mutual TLS); bearer tokens are still required on top.
func serverTLS(c config.TLS) (*tls.Config, error) {
	if c.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("couldn't load the TLS certificate and key: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		NextProtos: []string{"h2", "http/1.1"}, CipherSuites: aeadSuites}
	if c.ClientCAFile != "" {
		pool, err := certPool(c.ClientCAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// aeadSuites are the TLS 1.2 cipher suites the server offers: ECDHE key
// exchange (forward secrecy) with AES-GCM or ChaCha20-Poly1305.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func certPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("couldn't read CA certificates: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate found in %s", path)
	}
	return pool, nil
}

// tlsFlags are the TLS flags of the commands that talk to a server.
type tlsFlags struct {
	ca, cert, key *string
}

func addTLSFlags(fs *flag.FlagSet) tlsFlags {
	return tlsFlags{
		ca:   fs.String("ca-cert", "", "PEM file of the CA that signed the server's certificate (default: the system's CAs, or $SSL_CERT_FILE)"),
		cert: fs.String("client-cert", "", "PEM client certificate, for a server that requires one (--tls-client-ca)"),
		key:  fs.String("client-key", "", "PEM key of --client-cert"),
	}
}

// transport returns base (or a new transport) set up with the flags.
func (f tlsFlags) transport(base *http.Transport) (*http.Transport, error) {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	tc, err := f.config()
	if err != nil || tc == nil {
		return base, err
	}
	base.TLSClientConfig = tc
	return base, nil
}

// config returns the TLS configuration the flags ask for, or nil if they
// ask for none.
func (f tlsFlags) config() (*tls.Config, error) {
	if *f.ca == "" && *f.cert == "" && *f.key == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if *f.ca != "" {
		pool, err := certPool(*f.ca)
		if err != nil {
			return nil, usageError{err.Error()}
		}
		tc.RootCAs = pool
	}
	if (*f.cert == "") != (*f.key == "") {
		return nil, usageError{"--client-cert and --client-key go together"}
	}
	if *f.cert != "" {
		cert, err := tls.LoadX509KeyPair(*f.cert, *f.key)
		if err != nil {
			return nil, usageError{fmt.Sprintf("couldn't load the client certificate: %v", err)}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// httpClient returns an HTTP client set up with the flags, with the SDK's
// redirect policy and a bound on each request, so that a server that stops
// answering cannot hold a command (a verify run by cron, say) for ever.
func (f tlsFlags) httpClient() (*http.Client, error) {
	tr, err := f.transport(nil)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: tr, Timeout: requestTimeout, CheckRedirect: client.CheckRedirect}, nil
}

// requestTimeout bounds each request of the CLI's, its answer read whole.
var requestTimeout = 2 * time.Minute
