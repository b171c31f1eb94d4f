package client_test

import (
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
