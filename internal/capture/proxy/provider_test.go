package proxy

import "testing"

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
		{p: openAI, method: "GET", path: "/openai/v1/models/a/b", wantErr: true},
		{p: openAI, method: "GET", path: "/openai/v1/models/", wantErr: true},
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
