package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/internal/event"
)

// TestEventMatchesTheServer keeps the public Event in step with the event
// the server accepts: same JSON fields, same nested objects.
func TestEventMatchesTheServer(t *testing.T) {
	for _, pair := range [][2]any{
		{client.Event{}, event.Event{}},
		{client.Actor{}, event.Actor{}},
		{client.Resource{}, event.Resource{}},
		{client.Model{}, event.Model{}},
		{client.Dataset{}, event.Dataset{}},
		{client.API{}, event.API{}},
		{client.Prompt{}, event.Prompt{}},
	} {
		got, want := jsonTags(reflect.TypeOf(pair[0])), jsonTags(reflect.TypeOf(pair[1]))
		if !slices.Equal(got, want) {
			t.Errorf("%T has JSON fields %v, the server's %T has %v", pair[0], got, pair[1], want)
		}
	}
}

func jsonTags(t reflect.Type) []string {
	var tags []string
	for i := range t.NumField() {
		if t.Field(i).IsExported() { // JSON has only those
			tags = append(tags, t.Field(i).Tag.Get("json"))
		}
	}
	return tags
}

// TestEraseSubjectNamedWithDots: subjects "." and ".." (actor ids the
// server accepts) are sent as one escaped path segment, which the server
// reads as canonical, not as a step of the path.
func TestEraseSubjectNamedWithDots(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.EscapedPath())
		w.Write([]byte(`{"tenant":"acme"}`))
	}))
	defer srv.Close()
	for _, subject := range []string{".", "..", "a/b", "..."} {
		if _, err := client.New(srv.URL, "tok").EraseSubject(context.Background(), "acme", subject); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"/v1/subjects/acme/%2E/erase", "/v1/subjects/acme/%2E%2E/erase", "/v1/subjects/acme/a%2Fb/erase", "/v1/subjects/acme/.../erase"}
	if !slices.Equal(paths, want) {
		t.Errorf("paths %q; want %q", paths, want)
	}
}

// TestModelsFollowsPages: Models asks for page after page, keeping the
// filters, until one names no next, and gives up on a server whose pages
// do not move on.
func TestModelsFollowsPages(t *testing.T) {
	var asked []string
	pages := map[string]string{
		"":   `{"models":[{"tenant":"acme","name":"a"}],"next_cursor":"c1"}`,
		"c1": `{"models":[{"tenant":"acme","name":"b"}],"next_cursor":"c2"}`,
		"c2": `{"models":[{"tenant":"globex","name":"a"}]}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.RawQuery)
		w.Write([]byte(pages[r.URL.Query().Get("cursor")]))
	}))
	defer srv.Close()
	ms, err := client.New(srv.URL, "tok").Models(context.Background(), url.Values{"environment": {"production"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Tenant+"/"+m.Name)
	}
	if !slices.Equal(got, []string{"acme/a", "acme/b", "globex/a"}) ||
		!slices.Equal(asked, []string{"environment=production", "cursor=c1&environment=production", "cursor=c2&environment=production"}) {
		t.Errorf("Models gave %v after asking %v", got, asked)
	}

	pages["c2"] = `{"models":[{"tenant":"globex","name":"a"}],"next_cursor":"c2"}`
	if _, err := client.New(srv.URL, "tok").Models(context.Background(), nil); err == nil {
		t.Error("Models followed a page that names itself as the next without end")
	}
}
