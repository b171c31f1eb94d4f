package client

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
)

// Erasure is the server's answer to EraseSubject.
type Erasure struct {
	Tenant string `json:"tenant"`
	// Pseudonym is the subject's former pseudonym of its own id: the records
	// that named the subject carry it, and nothing links it to the subject
	// any more. Empty if the subject was unknown or already erased.
	Pseudonym         string `json:"pseudonym"`
	KeysDestroyed     int    `json:"keys_destroyed"`
	IndexRowsScrubbed int    `json:"index_rows_scrubbed"`
	// Event is the privacy.erasure record that documents the erasure.
	Event struct {
		ID    string `json:"id"`
		Index uint64 `json:"index"`
	} `json:"event"`
	Checkpoint string `json:"checkpoint"`
}

// EraseSubject destroys the keys of subject (an actor id) in tenant: its
// content can no longer be decrypted and its pseudonyms no longer linked to
// it. It needs a token with the erase role on the tenant. Erasing cannot be
// undone.
func (c *Client) EraseSubject(ctx context.Context, tenant, subject string) (Erasure, error) {
	var e Erasure
	body, err := c.do(ctx, "POST", "/v1/subjects/"+url.PathEscape(tenant)+"/"+pathSegment(subject)+"/erase", nil, "")
	if err != nil {
		return e, err
	}
	return e, json.Unmarshal(body, &e)
}

// pathSegment escapes s as one path segment, dots too when it is "." or
// "..", which a path would otherwise take as a step (the server reads such
// paths as not canonical).
func pathSegment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}
