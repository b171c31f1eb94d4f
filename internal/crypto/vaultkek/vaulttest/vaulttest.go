// Package vaulttest is a stand-in for HashiCorp Vault's transit secrets
// engine, for tests where no Vault server can run: it speaks the
// encrypt/decrypt endpoints' wire format (paths, X-Vault-Token, base64
// plaintext and associated_data, "vault:v1:" ciphertexts, error bodies) and
// records each request so that tests can check what was sent.
package vaulttest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

// Request is one request the server received.
type Request struct {
	Method, Path, Token string
	Body                map[string]any
}

// Server is a running stand-in. Close it when done.
type Server struct {
	*httptest.Server
	Token string // the only token accepted

	mu       sync.Mutex
	keys     map[string]cipher.AEAD // transit key name → key
	requests []Request
}

// NewServer starts a stand-in on 127.0.0.1 that accepts token and creates a
// transit key under mount "transit" the first time a name is used.
func NewServer(token string) *Server {
	s := &Server{Token: token, keys: map[string]cipher.AEAD{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Token: r.Header.Get("X-Vault-Token"), Body: body})
	s.mu.Unlock()
	if r.Header.Get("X-Vault-Token") != s.Token {
		fail(w, http.StatusForbidden, "permission denied")
		return
	}
	op, name, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/transit/"), "/")
	if !ok || (r.Method != http.MethodPut && r.Method != http.MethodPost) || (op != "encrypt" && op != "decrypt") {
		fail(w, http.StatusNotFound, "no handler for route")
		return
	}
	aead := s.key(name)
	aad, err := base64.StdEncoding.DecodeString(str(body["associated_data"]))
	if err != nil {
		fail(w, http.StatusBadRequest, "failed to base64-decode associated data")
		return
	}
	var data map[string]any
	switch op {
	case "encrypt":
		pt, err := base64.StdEncoding.DecodeString(str(body["plaintext"]))
		if err != nil {
			fail(w, http.StatusBadRequest, "failed to base64-decode plaintext")
			return
		}
		nonce := make([]byte, aead.NonceSize())
		rand.Read(nonce)
		ct := aead.Seal(nonce, nonce, pt, aad)
		data = map[string]any{"ciphertext": "vault:v1:" + base64.StdEncoding.EncodeToString(ct), "key_version": 1}
	case "decrypt":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(str(body["ciphertext"]), "vault:v1:"))
		if err != nil || len(raw) < aead.NonceSize() {
			fail(w, http.StatusBadRequest, "invalid ciphertext: unable to decode")
			return
		}
		pt, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], aad)
		if err != nil {
			fail(w, http.StatusBadRequest, "cipher: message authentication failed")
			return
		}
		data = map[string]any{"plaintext": base64.StdEncoding.EncodeToString(pt)}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"request_id": "test", "data": data})
}

func (s *Server) key(name string) cipher.AEAD {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[name]; ok {
		return k
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	block, _ := aes.NewCipher(raw)
	aead, _ := cipher.NewGCM(block)
	s.keys[name] = aead
	return aead
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
