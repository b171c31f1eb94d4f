// Package client is the Go client for aitrail's HTTP API: send events,
// query them, and verify the log independently of the server.
//
// To record events from an application, use a Recorder: Record queues
// events and sends them in the background, batched and retried with stable
// ids so that none is stored twice, within bounded memory; Flush and Close
// tell when they are durable; RecordSync waits for the receipt.
// HTTPMiddleware records every request a net/http server answers, and the
// openairecord subpackage every call made with the OpenAI Go client.
//
// Verification trusts only the log's public key: checkpoints are checked
// against it, tiles against the checkpoint, entries against the tiles, and
// each new checkpoint is proved consistent with the last one trusted.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Client talks to one aitrail server. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client for the server at baseURL (such as
// "http://127.0.0.1:8080") authenticating with token (may be empty for the
// public log endpoints).
func New(baseURL, token string) *Client {
	return &Client{
		base:  strings.TrimRight(baseURL, "/"),
		token: token,
		http:  &http.Client{Timeout: 60 * time.Second, CheckRedirect: CheckRedirect},
	}
}

// errRedirected is why a request was not sent on: sending it again would
// be redirected again.
var errRedirected = errors.New("the request was redirected")

// CheckRedirect is the redirect policy of the clients New makes, and of
// those given to WithHTTPClient without one. It follows a redirect only of
// a read (GET, HEAD) and only within the same scheme, host and port: net/http
// would turn POST /v1/events into GET /v1/events, whose answer (a page of
// events) is no receipt, and would send the token on to another port, or
// from https to http.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	first := via[0]
	if m := first.Method; m != http.MethodGet && m != http.MethodHead {
		return fmt.Errorf("aitrail: %w: %s %s to %s; use the server's own address", errRedirected, m, first.URL.Path, req.URL.Redacted())
	}
	if req.URL.Scheme != first.URL.Scheme || req.URL.Host != first.URL.Host {
		return fmt.Errorf("aitrail: %w: %s to another address, %s; use the server's own address", errRedirected, first.URL.Path, req.URL.Redacted())
	}
	if len(via) >= 10 {
		return errors.New("aitrail: stopped after 10 redirects")
	}
	return nil
}

// WithHTTPClient replaces the underlying *http.Client. One without a
// CheckRedirect gets the package's (a copy of h is changed).
func (c *Client) WithHTTPClient(h *http.Client) *Client {
	cc := *c
	cc.http = h
	if h.CheckRedirect == nil {
		hc := *h
		hc.CheckRedirect = CheckRedirect
		cc.http = &hc
	}
	return &cc
}

// APIError is an error response from the server.
type APIError struct {
	Status  int
	Code    string
	Message string
	Details []json.RawMessage
	// RetryAfter is set for 429 and 503 answers.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("aitrail: %d %s: %s", e.Status, e.Code, e.Message)
}

// Temporary reports whether retrying the same request later may succeed.
func (e *APIError) Temporary() bool {
	return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests
}

// maxAnswer bounds an answer of the API (a page of events with content,
// say); the log's endpoints have tighter bounds (Checkpoint, fetchTile).
const maxAnswer = 256 << 20

func (c *Client) do(ctx context.Context, method, path string, body []byte, contentType string) ([]byte, error) {
	return c.send(ctx, method, path, body, contentType, maxAnswer, true)
}

// send makes a request and returns its successful answer, of at most limit
// bytes. The token goes with it when withToken.
func (c *Client) send(ctx context.Context, method, path string, body []byte, contentType string, limit int64, withToken bool) ([]byte, error) {
	data, _, err := c.exchange(ctx, method, path, body, contentType, limit, withToken)
	return data, err
}

// exchange is send that returns the answer's header too.
func (c *Client) exchange(ctx context.Context, method, path string, body []byte, contentType string, limit int64, withToken bool) ([]byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" && withToken {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(data)) > limit {
		return nil, nil, fmt.Errorf("aitrail: the answer to %s %s is larger than %d bytes", method, path, limit)
	}
	if resp.StatusCode/100 != 2 {
		ae := &APIError{Status: resp.StatusCode, Code: "http_error", Message: resp.Status}
		var eb struct {
			Error struct {
				Code    string            `json:"code"`
				Message string            `json:"message"`
				Details []json.RawMessage `json:"details"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			ae.Code, ae.Message, ae.Details = eb.Error.Code, eb.Error.Message, eb.Error.Details
		} else if line := plainLine(data); line != "" {
			// Not aitrail's answer (a proxy's, or a TLS port spoken to in
			// plain HTTP): its first line says what went wrong.
			ae.Message += ": " + line
		}
		ae.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
		return nil, nil, ae
	}
	return data, resp.Header, nil
}

// plainLine returns the first line of a text answer, cut to 200 bytes, or
// "" when it is not printable text.
func plainLine(b []byte) string {
	line, _, _ := strings.Cut(string(b[:min(len(b), 200)]), "\n")
	// The cut may split a character: what is not UTF-8 is dropped.
	line = strings.TrimSpace(strings.ToValidUTF8(line, ""))
	if strings.ContainsFunc(line, unicode.IsControl) {
		return ""
	}
	return line
}

// maxRetryAfter bounds the wait a Retry-After header can ask for: a value
// of centuries (or one that overflows) from a server or anything between
// must not stop a client for good.
const maxRetryAfter = time.Hour

// retryAfter reads a Retry-After header: delay seconds or an HTTP date,
// at most maxRetryAfter.
func retryAfter(h string) time.Duration {
	if secs, err := strconv.Atoi(h); err == nil && secs > 0 {
		return time.Duration(min(secs, int(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return min(max(time.Until(t), 0), maxRetryAfter)
	}
	return 0
}

// Result is where one event went.
type Result struct {
	ID        string `json:"id"`
	Index     uint64 `json:"index"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

// Receipt acknowledges events: they are durable.
type Receipt struct {
	Results []Result `json:"results"`
	// Checkpoint is a signed checkpoint covering every result.
	Checkpoint string `json:"checkpoint"`
}

// ErrNotReceipt is wrapped by the error of an append whose successful
// answer is not a receipt for the events sent: something other than
// aitrail answered (a proxy's page, a misconfigured address), and the
// events may not be stored. Sending the same request again would not help.
var ErrNotReceipt = errors.New("the answer is not a receipt for the events sent")

// Append sends events (any values that marshal to event objects) as one
// atomic batch. The receipt has one result per event.
func (c *Client) Append(ctx context.Context, events ...any) (Receipt, error) {
	body, err := json.Marshal(map[string]any{"events": events})
	if err != nil {
		return Receipt{}, err
	}
	r, err := c.AppendRaw(ctx, body, "application/json")
	if err == nil && len(r.Results) != len(events) {
		return Receipt{}, notReceipt(fmt.Sprintf("%d results for %d events", len(r.Results), len(events)))
	}
	return r, err
}

// AppendRaw sends a prepared body (JSON or NDJSON). It returns an error
// wrapping ErrNotReceipt when a successful answer holds no checkpoint or
// no results; counting them against the events sent is the caller's.
func (c *Client) AppendRaw(ctx context.Context, body []byte, contentType string) (Receipt, error) {
	data, err := c.do(ctx, http.MethodPost, "/v1/events", body, contentType)
	if err != nil {
		return Receipt{}, err
	}
	var r Receipt
	if err := json.Unmarshal(data, &r); err != nil {
		return Receipt{}, notReceipt(err.Error())
	}
	if r.Checkpoint == "" || len(r.Results) == 0 {
		return Receipt{}, notReceipt("no checkpoint or no results")
	}
	return r, nil
}

func notReceipt(why string) error {
	return fmt.Errorf("aitrail: %w (%s): is the URL the aitrail server's?", ErrNotReceipt, why)
}

// Page is one page of query results. Each event is the stored record with
// its "index".
type Page struct {
	Events     []json.RawMessage `json:"events"`
	NextCursor string            `json:"next_cursor"`
	// TokenID is the token id the server recorded the query under: the
	// aitrail.token_id of its log.access records (header Aitrail-Token-Id).
	TokenID string `json:"-"`
}

// Query runs GET /v1/events with the given filters (see the API docs).
func (c *Client) Query(ctx context.Context, filters url.Values) (Page, error) {
	path := "/v1/events"
	if len(filters) > 0 {
		path += "?" + filters.Encode()
	}
	data, h, err := c.exchange(ctx, http.MethodGet, path, nil, "", maxAnswer, true)
	if err != nil {
		return Page{}, err
	}
	var p Page
	if err := json.Unmarshal(data, &p); err != nil {
		return Page{}, fmt.Errorf("aitrail: bad query response: %w", err)
	}
	p.TokenID = h.Get("Aitrail-Token-Id")
	return p, nil
}

// Get returns one event by id (GET /v1/events/{id}), with an inclusion
// proof when proof is true.
func (c *Client) Get(ctx context.Context, id string, proof bool) (json.RawMessage, error) {
	path := "/v1/events/" + url.PathEscape(id)
	if proof {
		path += "?proof=true"
	}
	return c.do(ctx, http.MethodGet, path, nil, "")
}

// Checkpoint returns the log's current signed checkpoint, unverified.
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	return c.send(ctx, http.MethodGet, "/log/checkpoint", nil, "", maxCheckpoint, false)
}

// maxCheckpoint bounds a checkpoint: a few lines and signatures.
const maxCheckpoint = 64 << 10

// fetchTile returns a tile or entry bundle by its C2SP path, of at most
// limit bytes. Entry bundles (withToken) need the token; the checkpoint and
// hash tiles are public and are fetched without it.
func (c *Client) fetchTile(ctx context.Context, path string, limit int64, withToken bool) ([]byte, error) {
	give := time.Now().Add(tilePatience)
	for {
		data, err := c.send(ctx, http.MethodGet, "/log/"+path, nil, "", limit, withToken)
		var ae *APIError
		if err == nil || !errors.As(err, &ae) || !ae.Temporary() {
			return data, err
		}
		// Pushed back (an entry bundle is a large answer): wait as told,
		// unless that is longer than the patience left.
		wait := max(ae.RetryAfter, DefaultMinBackoff)
		if wait > time.Until(give) {
			return nil, err
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// tilePatience is how long fetching a tile or entry bundle retries while
// the server pushes back.
const tilePatience = time.Minute

// Deployment is one deploy or retire of a model version, as the server's
// model registry reports it.
type Deployment struct {
	// Index is the log index of the model.deploy or model.retire record.
	Index       uint64          `json:"index"`
	EventID     string          `json:"event_id"`
	Action      string          `json:"action"` // "deploy" or "retire"
	Tenant      string          `json:"tenant"`
	Provider    string          `json:"provider,omitempty"`
	Name        string          `json:"name"`
	Version     string          `json:"version"`
	Digest      string          `json:"digest,omitempty"`
	Environment string          `json:"environment,omitempty"`
	Service     string          `json:"service,omitempty"`
	Resource    json.RawMessage `json:"resource,omitempty"`
	Actor       string          `json:"actor,omitempty"`
	Time        time.Time       `json:"time"`
}

// DeployedModel is one model of one tenant in the deployment registry: the
// deployments in force and the deployment history.
type DeployedModel struct {
	Tenant   string       `json:"tenant"`
	Provider string       `json:"provider,omitempty"`
	Name     string       `json:"name"`
	Current  []Deployment `json:"current"`
	History  []Deployment `json:"history"`
}

// getJSON GETs path with the query filters and decodes the answer into v.
func (c *Client) getJSON(ctx context.Context, path string, filters url.Values, v any) error {
	if len(filters) > 0 {
		path += "?" + filters.Encode()
	}
	data, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// Models runs GET /v1/models with the given filters (tenant, name,
// environment), following its pages to the last.
func (c *Client) Models(ctx context.Context, filters url.Values) ([]DeployedModel, error) {
	v := url.Values{}
	for k, vs := range filters {
		v[k] = vs
	}
	var all []DeployedModel
	for {
		var r struct {
			Models     []DeployedModel `json:"models"`
			NextCursor string          `json:"next_cursor"`
		}
		if err := c.getJSON(ctx, "/v1/models", v, &r); err != nil {
			return nil, err
		}
		all = append(all, r.Models...)
		if r.NextCursor == "" {
			return all, nil
		}
		if len(r.Models) == 0 || r.NextCursor == v.Get("cursor") {
			return nil, fmt.Errorf("aitrail: GET /v1/models gave a page that does not move on (cursor %q)", r.NextCursor)
		}
		v.Set("cursor", r.NextCursor)
	}
}
