package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/merkle"
)

// queryFlags are the filters shared by query and tail.
type queryFlags struct {
	url, token                                                *string
	tls                                                       tlsFlags
	tenant, typ, actor, model, outcome, resource, from, to, q *string
}

func addQueryFlags(fs *flag.FlagSet) *queryFlags {
	return &queryFlags{
		url:      fs.String("url", "http://127.0.0.1:8080", "server URL"),
		tls:      addTLSFlags(fs),
		token:    tokenFlag(fs, "`token` with the read role (default $AITRAIL_TOKEN)"),
		tenant:   fs.String("tenant", "", "only this tenant"),
		typ:      fs.String("type", "", "event type; a trailing * matches a prefix (ai.*)"),
		actor:    fs.String("actor", "", "actor id"),
		model:    fs.String("model", "", "model name or name@version"),
		outcome:  fs.String("outcome", "", "success, failure or denied"),
		resource: fs.String("resource", "", "resource id or type:id"),
		from:     fs.String("from", "", "events at or after this RFC 3339 time"),
		to:       fs.String("to", "", "events before this RFC 3339 time"),
		q:        fs.String("q", "", "text search"),
	}
}

// check refuses filter values the server would refuse, as usage errors.
func (f *queryFlags) check() error {
	for name, p := range map[string]*string{"from": f.from, "to": f.to} {
		if _, ok := event.ParseTime(*p); *p != "" && !ok {
			return usageError{fmt.Sprintf("--%s %q is not an RFC 3339 time (2026-01-02T15:04:05Z)", name, *p)}
		}
	}
	if *f.token == "" {
		return usageError{"--token (or $AITRAIL_TOKEN) is required"}
	}
	return nil
}

func (f *queryFlags) values() url.Values {
	v := url.Values{}
	for k, p := range map[string]*string{"tenant": f.tenant, "type": f.typ, "actor": f.actor, "model": f.model,
		"outcome": f.outcome, "resource": f.resource, "from": f.from, "to": f.to, "q": f.q} {
		if *p != "" {
			v.Set(k, *p)
		}
	}
	return v
}

// client returns a client for the server the flags name.
func (f *queryFlags) client() (*client.Client, error) {
	hc, err := f.tls.httpClient()
	if err != nil {
		return nil, err
	}
	return f.clientWith(hc), nil
}

// clientWith returns a client for the server the flags name, over hc.
func (f *queryFlags) clientWith(hc *http.Client) *client.Client {
	return client.New(*f.url, *f.token).WithHTTPClient(hc)
}

func runQuery(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("query", stderr)
	qf := addQueryFlags(fs)
	limit := fs.Int("limit", 100, "most events to print (0 = all)")
	order := fs.String("order", "desc", "asc (oldest first) or desc (newest first)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *limit < 0:
		return usageError{"--limit must be 0 (all) or more"}
	case *order != "asc" && *order != "desc":
		return usageError{fmt.Sprintf("--order must be asc or desc, not %q", *order)}
	}
	if err := qf.check(); err != nil {
		return err
	}
	c, err := qf.client()
	if err != nil {
		return err
	}
	v := qf.values()
	v.Set("order", *order)
	printed := 0
	for {
		page := 1000
		if *limit > 0 {
			page = min(page, *limit-printed)
		}
		v.Set("limit", fmt.Sprint(page))
		p, err := queryPage(c, v, stderr)
		if err != nil {
			return err
		}
		for _, e := range p.Events {
			fmt.Fprintln(stdout, string(e))
		}
		printed += len(p.Events)
		if p.NextCursor == "" || (*limit > 0 && printed >= *limit) {
			return nil
		}
		v.Set("cursor", p.NextCursor)
	}
}

// pushbackPatience is how long query retries a page the server pushes
// back.
const pushbackPatience = time.Minute

// queryPage is c.Query, retried after the server's Retry-After while it
// pushes back (503 and 429 answers: it is holding as many large answers
// as its memory allows), for at most pushbackPatience.
func queryPage(c *client.Client, v url.Values, stderr io.Writer) (client.Page, error) {
	give := time.Now().Add(pushbackPatience)
	for {
		p, err := c.Query(context.Background(), v)
		var ae *client.APIError
		if err == nil || !errors.As(err, &ae) || !ae.Temporary() || time.Now().After(give) {
			return p, err
		}
		wait := max(ae.RetryAfter, 100*time.Millisecond)
		fmt.Fprintf(stderr, "aitrail query: %v (retrying in %s)\n", err, wait)
		time.Sleep(wait)
	}
}

// refused reports whether err is the server refusing the request for
// good (a bad token, a filter it does not take): a 4xx answer other than
// 408 and 429, which retrying does not change. Other errors (the server
// down or restarting, pushback) pass.
func refused(err error) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 &&
		ae.Status != http.StatusRequestTimeout && ae.Status != http.StatusTooManyRequests
}

// tokenID returns the id of a token: the id part of an atr_<id>_<secret>
// token; any other token that works is the root token, whose id is "root".
// A root token can have the atr_ shape too: what the server answers
// (client.Page.TokenID) prevails.
func tokenID(token string) string {
	parts := strings.SplitN(token, "_", 3)
	if len(parts) != 3 || parts[0] != "atr" {
		return "root"
	}
	return parts[1]
}

// runTail prints events as they arrive, oldest first, starting with the
// newest existing one (or all of them with --all).
func runTail(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tail", stderr)
	qf := addQueryFlags(fs)
	all := fs.Bool("all", false, "print every existing matching event first")
	interval := fs.Duration("interval", time.Second, "poll interval (at least 10ms)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *interval < 10*time.Millisecond {
		return usageError{fmt.Sprintf("--interval %s is too short: each poll is itself recorded; use 10ms or more", *interval)}
	}
	if err := qf.check(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	c, err := qf.client()
	if err != nil {
		return err
	}
	v := qf.values()
	v.Set("order", "asc")
	v.Set("limit", "1000")
	if !*all {
		// Start after the log's newest record: a search for the newest
		// matching event could end its page at the server's scan limit
		// before finding one, and what matched before is not for tail.
		var cp []byte
		for {
			if cp, err = c.Checkpoint(ctx); err == nil || refused(err) || ctx.Err() != nil {
				break
			}
			fmt.Fprintf(stderr, "aitrail tail: %v (retrying)\n", err)
			select {
			case <-ctx.Done():
			case <-time.After(*interval):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		body, _, _ := bytes.Cut(cp, []byte("\n\n"))
		head, err := merkle.ParseCheckpoint(append(body, '\n'))
		if err != nil {
			return fmt.Errorf("the server's checkpoint: %w", err)
		}
		if head.Size > 0 {
			v.Set("after", fmt.Sprint(head.Size-1))
		}
	}
	own := tokenID(*qf.token)
	var last uint64
	var seen bool
	for {
		p, err := c.Query(ctx, v)
		if ctx.Err() != nil {
			return nil
		}
		if refused(err) {
			return err
		}
		if err != nil {
			fmt.Fprintf(stderr, "aitrail tail: %v (retrying)\n", err)
		}
		if p.TokenID != "" {
			own = p.TokenID // as the server records this token's reads
		}
		for _, e := range p.Events {
			var ix struct {
				Index      uint64         `json:"index"`
				Type       string         `json:"type"`
				Attributes map[string]any `json:"attributes"`
			}
			json.Unmarshal(e, &ix)
			last, seen = ix.Index, true
			// Every poll is itself recorded; tail does not print the
			// records of its own polling.
			if ix.Type == "log.access" && ix.Attributes["aitrail.token_id"] == own {
				continue
			}
			fmt.Fprintln(stdout, string(e))
		}
		// A page that ends before the log does (full, or a search that
		// reached the server's scan limit, even with nothing found) goes
		// on from its cursor, with the same filters; then from the last
		// event printed.
		if err == nil && p.NextCursor != "" {
			v.Set("cursor", p.NextCursor)
			continue
		}
		v.Del("cursor")
		if seen {
			v.Set("after", fmt.Sprint(last))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}
