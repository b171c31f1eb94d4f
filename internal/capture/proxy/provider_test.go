package proxy

import (
	"errors"
	"net/http"
	"testing"

	"github.com/aitrail/aitrail/internal/apierr"
)

func TestRoute(t *testing.T) {
	for _, tc := range []struct {
		p                   *provider
		method, path        string
		action, rest, allow string
		wantErr             bool
	}{
		{p: openAI, method: "POST", path: "/openai/v1/chat/completions", action: "chat.completions.create", rest: "/chat/completions"},
		{p: openAI, method: "GET", path: "/openai/v1/models/gpt-4o", action: "models.retrieve", rest: "/models/gpt-4o"},
		{p: openAI, method: "HEAD", path: "/openai/v1/models", action: "models.list", rest: "/models"},
		{p: openAI, method: "GET", path: "/openai/v1/models/meta-llama/Llama-3.1-8B", action: "models.retrieve", rest: "/models/meta-llama/Llama-3.1-8B"},
		{p: openAI, method: "GET", path: "/openai/v1/models/", wantErr: true},
		{p: openAI, method: "GET", path: "/openai/v1/models/a//b", wantErr: true},
		{p: openAI, method: "GET", path: "/openai/v1/models/a/", wantErr: true},
		{p: openAI, method: "GET", path: "/openai/v1/models/a/../../files", wantErr: true},
		{p: openAI, method: "GET", path: "/openai/v1/models/./a", wantErr: true},
		{p: openAI, method: "POST", path: "/openai/v1", wantErr: true},
		{p: openAI, method: "POST", path: "/openai/v1x/chat/completions", wantErr: true},
		{p: openAI, method: "GET", path: "/openai/v1/chat/completions", allow: "POST", wantErr: true},
		{p: anthropic, method: "POST", path: "/anthropic/v1/messages", action: "messages.create", rest: "/v1/messages"},
		{p: anthropic, method: "DELETE", path: "/anthropic/v1/messages", allow: "POST", wantErr: true},
		{p: anthropic, method: "POST", path: "/anthropic/v1/complete", wantErr: true},
	} {
		op, rest, allow, err := tc.p.route(tc.method, tc.path)
		action := ""
		if op != nil {
			action = op.action
		}
		if action != tc.action || rest != tc.rest || allow != tc.allow || (err != nil) != tc.wantErr {
			t.Errorf("%s %s: %q %q %q %v", tc.method, tc.path, action, rest, allow, err)
		}
	}
}

// TestParseRequest checks what the record takes from a request body, and
// that a body the record could read differently from the provider is
// refused with a message naming the problem.
func TestParseRequest(t *testing.T) {
	var f requestFields
	if err := f.parse([]byte(`{"model":"gpt-4o","temperature":0.5,"metadata":{"user_id":"u-1"},"Extra":[1]}`)); err != nil {
		t.Fatal(err)
	}
	if f.Model != "gpt-4o" || f.Temperature == nil || *f.Temperature != 0.5 || f.user() != "u-1" {
		t.Fatalf("parsed %+v", f)
	}
	for _, tc := range []struct{ body, msg string }{
		{`{"model":`, "the body is not valid JSON"},
		{`{"model":"gpt-4o","model":"gpt-3.5"}`, "the body names a field twice"},
		{"{\"model\":\"gpt\xff\"}", "the body is not valid JSON"},
		{`{"model":7}`, "field model has the wrong type"},
		{`{"metadata":{"user_id":true}}`, "field metadata.user_id has the wrong type"},
		{`[1,2]`, "the body is not a JSON object with the expected field types"},
		{` null `, "the body is not a JSON object"},
	} {
		var f requestFields
		err := f.parse([]byte(tc.body))
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Message != tc.msg {
			t.Errorf("%s: got %v, want 400 %q", tc.body, err, tc.msg)
		}
	}
}
