package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/httpbody"
)

type tokenRequest struct {
	Name    string   `json:"name"`
	Roles   []string `json:"roles"`
	Tenants []string `json:"tenants"`
}

type tokenJSON struct {
	ID        string    `json:"id"`
	Token     string    `json:"token,omitempty"`
	Name      string    `json:"name"`
	Roles     []string  `json:"roles"`
	Tenants   []string  `json:"tenants"`
	CreatedAt time.Time `json:"created_at"`
	Root      bool      `json:"root,omitempty"`
}

func tokenView(t authz.Token) tokenJSON {
	roles := make([]string, len(t.Roles))
	for i, r := range t.Roles {
		roles[i] = string(r)
	}
	return tokenJSON{ID: t.ID, Name: t.Name, Roles: roles, Tenants: t.Tenants, CreatedAt: t.CreatedAt, Root: t.Root}
}

// maxTokenBody bounds a token request.
const maxTokenBody = 64 << 10

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	body, _, err := httpbody.Read(w, r, maxTokenBody, "application/json")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req tokenRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_request", "body must be {\"name\":…,\"roles\":[…],\"tenants\":[…]}: "+jsonProblem(err)))
		return
	}
	if dec.More() {
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_request", "unexpected data after the JSON object"))
		return
	}
	roles := make([]authz.Role, 0, len(req.Roles))
	for _, name := range req.Roles {
		role, err := authz.ParseRole(name)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		roles = append(roles, role)
	}
	tok, secret, err := s.Auth.Mint(r.Context(), p, req.Name, roles, req.Tenants)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token created", "id", tok.ID, "by", p.TokenID)
	v := tokenView(tok)
	v.Token = secret
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := s.Auth.List(r.Context(), principalFrom(r.Context()))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]tokenJSON, len(toks))
	for i, t := range toks {
		out[i] = tokenView(t)
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if err := s.Auth.Revoke(r.Context(), p, r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token revoked", "id", r.PathValue("id"), "by", p.TokenID)
	w.WriteHeader(http.StatusNoContent)
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "malformed JSON"
	case errors.As(err, &te):
		return "field " + te.Field + " has the wrong type"
	case errors.Is(err, io.EOF):
		return "empty body"
	}
	return err.Error()
}
