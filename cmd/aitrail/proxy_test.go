package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/aitrail/aitrail/internal/fakeprovider"
)

// Provider keys the server holds; callers never see or send them.
const (
	openaiKey    = "sk-upstream-openai-secret"
	anthropicKey = "sk-ant-upstream-secret"
)

// proxyEnv is a running server with both proxies in front of a fake
// provider, and tokens for a calling application and for readers.
type proxyEnv struct {
	t        *testing.T
	s        *server
	up       *fakeprovider.Upstream
	app      string // ingest on tenant acme, named chat-backend
	reader   string // read on acme
	investig string // read and read_content on acme
}

// startProxy starts the server with a 1 s upstream timeout and a 64 KiB
// body limit. The OpenAI upstream comes from the flag, the Anthropic one
// from the environment, the keys from the environment.
func startProxy(t *testing.T) *proxyEnv {
	t.Helper()
	up := fakeprovider.New()
	t.Cleanup(up.Close)
	// The long access window keeps the records of refused requests out of
	// the log until the test is over (TestProxyRefusesBadCalls counts it).
	cfg := writeConfig(t, "access_window: 1h\ncapture:\n  openai:\n    timeout: 1s\n  anthropic:\n    timeout: 1s\nlimits:\n  max_body_bytes: 65536\n")
	s := startServerEnv(t, t.TempDir(), []string{"AITRAIL_ADMIN_TOKEN=" + adminToken,
		"AITRAIL_OPENAI_API_KEY=" + openaiKey, "AITRAIL_ANTHROPIC_API_KEY=" + anthropicKey, "AITRAIL_ANTHROPIC_UPSTREAM=" + up.URL},
		"--config", cfg, "--openai-upstream", up.URL+"/v1")
	e := &proxyEnv{t: t, s: s, up: up}
	_, _, e.app = mint(t, s, adminToken, `{"name":"chat-backend","roles":["ingest"],"tenants":["acme"]}`)
	_, _, e.reader = mint(t, s, adminToken, `{"name":"auditor","roles":["read"],"tenants":["acme"]}`)
	_, _, e.investig = mint(t, s, adminToken, `{"name":"investigator","roles":["read","read_content"],"tenants":["acme"]}`)
	return e
}

func (e *proxyEnv) openai(opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{option.WithBaseURL(e.s.url + "/openai/v1"),
		option.WithAPIKey(e.app), option.WithMaxRetries(0)}, opts...)...)
}

func (e *proxyEnv) anthropic() anthropic.Client {
	return anthropic.NewClient(aoption.WithBaseURL(e.s.url+"/anthropic"), aoption.WithAPIKey(e.app),
		aoption.WithMaxRetries(0))
}

// get returns the event with id as a token sees it.
func (e *proxyEnv) get(id, token string) map[string]any {
	e.t.Helper()
	e.s.waitIndexed()
	code, body := e.s.do("GET", "/v1/events/"+id, token, "", nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /v1/events/%s: %d %s", id, code, body)
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// outcome returns the outcome event of the request event reqID, waiting
// for it: it is appended once the answer has been passed on.
func (e *proxyEnv) outcome(reqID string) map[string]any {
	e.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		e.s.waitIndexed()
		for _, ev := range e.s.allEvents("tenant=acme") {
			if attrs, _ := ev["attributes"].(map[string]any); attrs["aitrail.proxy.request_event_id"] == reqID {
				return e.get(ev["id"].(string), e.investig)
			}
		}
	}
	e.t.Fatalf("no outcome event for request event %s", reqID)
	return nil
}

// check compares fields of an event, by dotted path, with what they should be.
func check(t *testing.T, what string, ev map[string]any, want map[string]any) {
	t.Helper()
	for path, w := range want {
		var v any = ev
		for _, k := range strings.Split(path, "/") {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		if pw, ok := w.(pseudonym); ok {
			// Stored as a pseudonym: check the server still finds it by
			// the plaintext.
			if s, _ := v.(string); !strings.HasPrefix(s, "hmac-sha256:") {
				t.Errorf("%s: %s = %#v, want the pseudonym of %q", what, path, v, string(pw))
			}
			continue
		}
		if w == nil && v != nil || w != nil && !equalJSON(v, w) {
			t.Errorf("%s: %s = %#v, want %#v", what, path, v, w)
		}
	}
}

// pseudonym, as a wanted value in check, is a personal identifier the
// record must hold only as a keyed pseudonym.
type pseudonym string

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// lastUpstream is the last request the provider received.
func (e *proxyEnv) lastUpstream() fakeprovider.Request {
	e.t.Helper()
	reqs := e.up.Requests()
	if len(reqs) == 0 {
		e.t.Fatal("the provider received nothing")
	}
	return reqs[len(reqs)-1]
}

// TestOpenAIProxy drives the proxy with the official OpenAI SDK through
// every supported call, plain and streamed, and upstream failures, and
// checks what the provider received and what the log recorded.
func TestOpenAIProxy(t *testing.T) {
	e := startProxy(t)
	ctx := context.Background()
	client := e.openai()

	t.Run("chat", func(t *testing.T) {
		var resp *http.Response
		cc, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:       "gpt-fake",
			Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("PROMPT-MARKER-chat-4711")},
			User:        openai.String("end-user-7"),
			Temperature: openai.Float(0.25),
			Seed:        openai.Int(42),
		}, option.WithHeader("X-Aitrail-Session", "conv-1"), option.WithResponseInto(&resp))
		if err != nil {
			t.Fatal(err)
		}
		if cc.Choices[0].Message.Content != fakeprovider.Reply || cc.Usage.CompletionTokens != 4 {
			t.Fatalf("answer %+v", cc)
		}
		up := e.lastUpstream()
		if up.Path != "/v1/chat/completions" || up.Header.Get("Authorization") != "Bearer "+openaiKey ||
			up.Header.Get("X-Aitrail-Session") != "" || !bytes.Contains(up.Body, []byte("PROMPT-MARKER-chat-4711")) {
			t.Fatalf("the provider received %s %v %s", up.Path, up.Header, up.Body)
		}
		id := resp.Header.Get("X-Aitrail-Event-Id")
		req := e.get(id, e.investig)
		check(t, "request event", req, map[string]any{
			"type": "ai.inference", "tenant": "acme", "action": "chat.completions.create", "outcome": nil,
			"actor/id": pseudonym("end-user-7"), "actor/type": "user", "actor/session_id": pseudonym("conv-1"),
			"model/provider": "openai", "model/name": "gpt-fake",
			"attributes/gen_ai.operation.name": "chat", "attributes/gen_ai.provider.name": "openai",
			"attributes/gen_ai.request.model": "gpt-fake", "attributes/gen_ai.request.temperature": 0.25,
			"attributes/gen_ai.request.seed": 42, "attributes/gen_ai.conversation.id": pseudonym("conv-1"),
			"attributes/aitrail.proxy.stream": false, "attributes/aitrail.proxy.phase": "request",
			"decrypted_content/messages": []any{map[string]any{"role": "user", "content": "PROMPT-MARKER-chat-4711"}},
		})
		out := e.outcome(id)
		check(t, "outcome event", out, map[string]any{
			"type": "ai.inference", "tenant": "acme", "action": "chat.completions.create", "outcome": "success",
			"trace_id": req["trace_id"], "span_id": req["span_id"], "actor/id": pseudonym("end-user-7"),
			"model/name":                    "gpt-fake-2025-01-01",
			"attributes/gen_ai.response.id": "chatcmpl-fake", "attributes/gen_ai.response.model": "gpt-fake-2025-01-01",
			"attributes/gen_ai.response.finish_reasons": "stop", "attributes/gen_ai.usage.input_tokens": 7,
			"attributes/gen_ai.usage.output_tokens": 4, "attributes/http.response.status_code": 200,
			"attributes/aitrail.proxy.upstream_request_id": fakeprovider.RequestID,
		})
		if found := e.s.allEvents("type=ai.*&q=" + id); len(found) != 2 {
			t.Errorf("q=<request event id> finds %d events, want the call's 2", len(found))
		}
		if found := e.s.allEvents("type=ai.*&actor=end-user-7"); len(found) != 2 {
			t.Errorf("a search for the end user finds %d events, want the call's 2", len(found))
		}
		if got := out["decrypted_content"].(map[string]any)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]; got != fakeprovider.Reply {
			t.Errorf("outcome content holds %v", got)
		}

		// Content is readable through the API only, and only with read_content.
		code, body := e.s.do("GET", "/v1/events/"+id, e.reader, "", nil)
		if code != 200 || bytes.Contains(body, []byte("MARKER")) || bytes.Contains(body, []byte("decrypted_content")) {
			t.Fatalf("a read token sees %d %s", code, body)
		}
		filepath.WalkDir(e.s.data, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if b, _ := os.ReadFile(path); bytes.Contains(b, []byte("PROMPT-MARKER-chat-4711")) || bytes.Contains(b, []byte(fakeprovider.Reply)) {
					t.Errorf("%s holds content in plaintext", path)
				}
			}
			return nil
		})
	})

	t.Run("chat stream", func(t *testing.T) {
		var resp *http.Response
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         "gpt-fake",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream please")},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		}, option.WithHeader("X-Aitrail-User", "header-user"), option.WithResponseInto(&resp))
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			acc.AddChunk(stream.Current())
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if acc.Choices[0].Message.Content != fakeprovider.Reply || chunks != len(fakeprovider.ReplyPieces)+3 {
			t.Fatalf("streamed %d chunks: %q", chunks, acc.Choices[0].Message.Content)
		}
		id := resp.Header.Get("X-Aitrail-Event-Id")
		check(t, "request event", e.get(id, e.investig), map[string]any{
			"actor/id": pseudonym("header-user"), "attributes/aitrail.proxy.stream": true})
		out := e.outcome(id)
		check(t, "outcome event", out, map[string]any{
			"outcome": "success", "attributes/gen_ai.response.finish_reasons": "stop",
			"attributes/gen_ai.usage.input_tokens": 7, "attributes/gen_ai.usage.output_tokens": 4,
			"decrypted_content/object": "chat.completion", "decrypted_content/id": "chatcmpl-fake",
		})
		if _, ok := out["attributes"].(map[string]any)["aitrail.proxy.time_to_first_chunk_ms"]; !ok {
			t.Error("no time to first chunk")
		}
		msg := out["decrypted_content"].(map[string]any)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
		if msg["content"] != fakeprovider.Reply || msg["role"] != "assistant" {
			t.Errorf("assembled message %v", msg)
		}
	})

	t.Run("responses", func(t *testing.T) {
		var resp *http.Response
		r, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-fake",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}}, option.WithResponseInto(&resp))
		if err != nil || r.OutputText() != fakeprovider.Reply {
			t.Fatalf("%v %+v", err, r)
		}
		out := e.outcome(resp.Header.Get("X-Aitrail-Event-Id"))
		check(t, "outcome event", out, map[string]any{"action": "responses.create", "outcome": "success",
			"attributes/gen_ai.response.id": "resp_fake", "attributes/gen_ai.usage.output_tokens": 4,
			"attributes/gen_ai.response.finish_reasons": "completed", "decrypted_content/object": "response"})
	})

	t.Run("responses stream", func(t *testing.T) {
		var resp *http.Response
		stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "gpt-fake",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}}, option.WithResponseInto(&resp))
		var text strings.Builder
		for stream.Next() {
			if ev := stream.Current(); ev.Type == "response.output_text.delta" {
				text.WriteString(ev.Delta)
			}
		}
		if err := stream.Err(); err != nil || text.String() != fakeprovider.Reply {
			t.Fatalf("%v %q", err, text.String())
		}
		out := e.outcome(resp.Header.Get("X-Aitrail-Event-Id"))
		check(t, "outcome event", out, map[string]any{"outcome": "success", "attributes/gen_ai.response.id": "resp_fake",
			"attributes/gen_ai.usage.input_tokens": 7, "decrypted_content/status": "completed"})
	})

	t.Run("embeddings", func(t *testing.T) {
		var resp *http.Response
		em, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "emb-fake",
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("embed me")}}, option.WithResponseInto(&resp))
		if err != nil || len(em.Data) != 1 || len(em.Data[0].Embedding) != 2 {
			t.Fatalf("%v %+v", err, em)
		}
		id := resp.Header.Get("X-Aitrail-Event-Id")
		check(t, "request event", e.get(id, e.investig), map[string]any{"type": "ai.embedding", "action": "embeddings.create",
			"attributes/gen_ai.operation.name": "embeddings", "decrypted_content/input": "embed me"})
		check(t, "outcome event", e.outcome(id), map[string]any{"type": "ai.embedding", "outcome": "success",
			"attributes/gen_ai.usage.input_tokens": 3})
	})

	t.Run("models", func(t *testing.T) {
		var resp *http.Response
		page, err := client.Models.List(ctx, option.WithResponseInto(&resp))
		if err != nil || len(page.Data) != 1 || page.Data[0].ID != "gpt-fake" {
			t.Fatalf("%v %+v", err, page)
		}
		id := resp.Header.Get("X-Aitrail-Event-Id")
		check(t, "request event", e.get(id, e.investig), map[string]any{"type": "api.call", "action": "models.list",
			"actor/id": "chat-backend", "actor/type": "service", "content": nil})
		check(t, "outcome event", e.outcome(id), map[string]any{"type": "api.call", "outcome": "success"})
	})

	for _, tc := range []struct {
		model  string
		status int
	}{{fakeprovider.ModelFail400, 400}, {fakeprovider.ModelFail500, 500}} {
		t.Run("upstream "+tc.model, func(t *testing.T) {
			var resp *http.Response
			_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: tc.model,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}, option.WithResponseInto(&resp))
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tc.status || !strings.Contains(apiErr.Message, "fake failure") ||
				apiErr.Response.Header.Get("X-Request-Id") != fakeprovider.RequestID {
				t.Fatalf("got %v, want the provider's %d passed through", err, tc.status)
			}
			out := e.outcome(apiErr.Response.Header.Get("X-Aitrail-Event-Id"))
			check(t, "outcome event", out, map[string]any{"outcome": "failure",
				"attributes/http.response.status_code": tc.status, "attributes/error.type": strings.TrimPrefix(tc.model, "fail-"),
				"decrypted_content/error/code": "fake"})
		})
	}

	t.Run("upstream timeout", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: fakeprovider.ModelHang,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusGatewayTimeout || !strings.Contains(apiErr.RawJSON(), "upstream_timeout") {
			t.Fatalf("got %v, want 504 upstream_timeout", err)
		}
		out := e.outcome(apiErr.Response.Header.Get("X-Aitrail-Event-Id"))
		check(t, "outcome event", out, map[string]any{"outcome": "failure", "attributes/error.type": "timeout",
			"attributes/http.response.status_code": nil})
	})

	t.Run("stream fails after its status", func(t *testing.T) {
		var resp *http.Response
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: fakeprovider.ModelFailMidStream,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}, option.WithResponseInto(&resp))
		for stream.Next() {
		}
		if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "fake failure mid-stream") {
			t.Fatalf("the client saw %v, want the provider's error", err)
		}
		check(t, "outcome event", e.outcome(resp.Header.Get("X-Aitrail-Event-Id")), map[string]any{
			"outcome": "failure", "attributes/error.type": fakeprovider.StreamErrorType,
			"attributes/http.response.status_code": 200, "decrypted_content/error/type": fakeprovider.StreamErrorType})
	})

	t.Run("client disconnects mid-stream", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		var resp *http.Response
		stream := client.Chat.Completions.NewStreaming(cctx, openai.ChatCompletionNewParams{Model: fakeprovider.ModelHangMidStream,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}, option.WithResponseInto(&resp))
		if !stream.Next() {
			t.Fatalf("no first chunk: %v", stream.Err())
		}
		cancel()
		for stream.Next() {
		}
		stream.Close()
		out := e.outcome(resp.Header.Get("X-Aitrail-Event-Id"))
		check(t, "outcome event", out, map[string]any{"outcome": "failure", "attributes/error.type": "client_disconnected",
			"attributes/http.response.status_code": 200, "decrypted_content/id": "chatcmpl-fake"})
	})
}

// TestAnthropicProxy drives the Anthropic proxy with the official SDK,
// which sends its key (here an aitrail token) in X-Api-Key.
func TestAnthropicProxy(t *testing.T) {
	e := startProxy(t)
	ctx := context.Background()
	client := e.anthropic()
	params := func(model string) anthropic.MessageNewParams {
		return anthropic.MessageNewParams{Model: anthropic.Model(model), MaxTokens: 64,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("PROMPT-MARKER-ant"))},
			Metadata: anthropic.MetadataParam{UserID: anthropic.String("ant-user-1")}}
	}

	t.Run("message", func(t *testing.T) {
		var resp *http.Response
		m, err := client.Messages.New(ctx, params("claude-fake"), aoption.WithResponseInto(&resp))
		if err != nil || len(m.Content) != 1 || m.Content[0].Text != fakeprovider.Reply {
			t.Fatalf("%v %+v", err, m)
		}
		up := e.lastUpstream()
		if up.Path != "/v1/messages" || up.Header.Get("X-Api-Key") != anthropicKey || up.Header.Get("Authorization") != "" ||
			up.Header.Get("Anthropic-Version") == "" {
			t.Fatalf("the provider received %s %v", up.Path, up.Header)
		}
		id := resp.Header.Get("X-Aitrail-Event-Id")
		check(t, "request event", e.get(id, e.investig), map[string]any{"type": "ai.inference", "action": "messages.create",
			"actor/id": pseudonym("ant-user-1"), "model/provider": "anthropic", "attributes/gen_ai.provider.name": "anthropic",
			"attributes/gen_ai.request.max_tokens": 64, "api/version": up.Header.Get("Anthropic-Version")})
		check(t, "outcome event", e.outcome(id), map[string]any{"outcome": "success",
			"attributes/gen_ai.response.finish_reasons": "end_turn", "attributes/gen_ai.usage.input_tokens": 7,
			"attributes/gen_ai.usage.output_tokens": 4, "decrypted_content/stop_reason": "end_turn"})
	})

	t.Run("message stream", func(t *testing.T) {
		var resp *http.Response
		stream := client.Messages.NewStreaming(ctx, params("claude-fake"), aoption.WithResponseInto(&resp))
		var m anthropic.Message
		for stream.Next() {
			if err := m.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil || m.Content[0].Text != fakeprovider.Reply {
			t.Fatalf("%v %+v", err, m)
		}
		out := e.outcome(resp.Header.Get("X-Aitrail-Event-Id"))
		check(t, "outcome event", out, map[string]any{"outcome": "success", "attributes/gen_ai.response.id": "msg_fake",
			"attributes/gen_ai.response.finish_reasons": "end_turn", "attributes/gen_ai.usage.output_tokens": 4,
			"decrypted_content/stop_reason": "end_turn"})
		if text := out["decrypted_content"].(map[string]any)["content"].([]any)[0].(map[string]any)["text"]; text != fakeprovider.Reply {
			t.Errorf("assembled text %v", text)
		}
	})

	t.Run("stream fails after its status", func(t *testing.T) {
		var resp *http.Response
		stream := client.Messages.NewStreaming(ctx, params(fakeprovider.ModelFailMidStream), aoption.WithResponseInto(&resp))
		for stream.Next() {
		}
		if err := stream.Err(); err == nil || !strings.Contains(err.Error(), fakeprovider.StreamErrorType) {
			t.Fatalf("the client saw %v, want the provider's error", err)
		}
		check(t, "outcome event", e.outcome(resp.Header.Get("X-Aitrail-Event-Id")), map[string]any{
			"outcome": "failure", "attributes/error.type": fakeprovider.StreamErrorType,
			"decrypted_content/error/type": fakeprovider.StreamErrorType})
	})

	t.Run("upstream 400", func(t *testing.T) {
		_, err := client.Messages.New(ctx, params(fakeprovider.ModelFail400))
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.RawJSON(), "fake failure") {
			t.Fatalf("got %v, want the provider's 400", err)
		}
		check(t, "outcome event", e.outcome(apiErr.Response.Header.Get("X-Aitrail-Event-Id")), map[string]any{
			"outcome": "failure", "attributes/error.type": "400", "decrypted_content/error/type": "invalid_request_error"})
	})

	t.Run("client disconnects mid-stream", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		var resp *http.Response
		stream := client.Messages.NewStreaming(cctx, params(fakeprovider.ModelHangMidStream), aoption.WithResponseInto(&resp))
		// The first event arrives while the provider holds back the rest:
		// nothing is buffered on the way.
		if !stream.Next() || stream.Current().Type != "message_start" {
			t.Fatalf("no first event: %v", stream.Err())
		}
		cancel()
		for stream.Next() {
		}
		stream.Close()
		check(t, "outcome event", e.outcome(resp.Header.Get("X-Aitrail-Event-Id")), map[string]any{
			"outcome": "failure", "attributes/error.type": "client_disconnected", "decrypted_content/id": "msg_fake"})
	})

	t.Run("upstream timeout", func(t *testing.T) {
		_, err := client.Messages.New(ctx, params(fakeprovider.ModelHang))
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("got %v, want 504", err)
		}
		check(t, "outcome event", e.outcome(apiErr.Response.Header.Get("X-Aitrail-Event-Id")), map[string]any{
			"outcome": "failure", "attributes/error.type": "timeout"})
	})
}

// TestProxyRefusesBadCalls checks that calls the proxy cannot or may not
// record get a clear JSON error and never reach the provider.
func TestProxyRefusesBadCalls(t *testing.T) {
	e := startProxy(t)
	_, _, reader := mint(t, e.s, adminToken, `{"name":"r","roles":["read"],"tenants":["acme"]}`)
	before := e.s.settledSize() // the token's creation and its alert
	chat := []byte(`{"model":"gpt-fake","messages":[{"role":"user","content":"hi"}]}`)
	big := append([]byte(`{"model":"gpt-fake","messages":[{"role":"user","content":"`), bytes.Repeat([]byte("x"), 70<<10)...)
	big = append(big, `"}]}`...)
	for _, tc := range []struct {
		name, method, path, token string
		body                      []byte
		hdr                       []string
		status                    int
		code                      string
	}{
		{"malformed JSON", "POST", "/openai/v1/chat/completions", e.app, []byte(`{"model":`), nil, 400, "invalid_request"},
		{"wrong field type", "POST", "/openai/v1/chat/completions", e.app, []byte(`{"model":7}`), nil, 400, "invalid_request"},
		{"field named twice", "POST", "/openai/v1/chat/completions", e.app, []byte(`{"model":"gpt-fake","model":"gpt-other"}`), nil, 400, "invalid_request"},
		{"not JSON", "POST", "/openai/v1/chat/completions", e.app, chat, []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type"},
		{"body over the limit", "POST", "/openai/v1/chat/completions", e.app, big, nil, 413, "too_large"},
		{"unknown version", "POST", "/openai/v2/x", e.app, chat, nil, 404, "not_found"},
		{"unknown endpoint", "POST", "/openai/v1/files", e.app, chat, nil, 404, "not_found"},
		{"unknown anthropic endpoint", "POST", "/anthropic/v1/nope", e.app, chat, nil, 404, "not_found"},
		{"wrong method", "GET", "/openai/v1/chat/completions", e.app, nil, nil, 405, "method_not_allowed"},
		{"wrong method on models", "POST", "/openai/v1/models", e.app, chat, nil, 405, "method_not_allowed"},
		{"no token", "POST", "/openai/v1/chat/completions", "", chat, nil, 401, "unauthenticated"},
		{"invalid token", "POST", "/openai/v1/chat/completions", "atr_nope", chat, nil, 401, "unauthenticated"},
		{"token without ingest", "POST", "/openai/v1/chat/completions", reader, chat, nil, 403, "forbidden"},
		{"another tenant", "POST", "/openai/v1/chat/completions", e.app, chat, []string{"X-Aitrail-Tenant", "globex"}, 403, "forbidden"},
		{"user too long to record", "POST", "/anthropic/v1/messages", e.app, chat, []string{"X-Aitrail-User", strings.Repeat("u", 2000)}, 400, "invalid_event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.up.Requests())
			hdr := append([]string{"Content-Type", "application/json"}, tc.hdr...)
			code, body := e.s.do(tc.method, tc.path, tc.token, "", tc.body, hdr...)
			var resp struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &resp); err != nil || code != tc.status || resp.Error.Code != tc.code || resp.Error.Message == "" {
				t.Fatalf("got %d %s, want %d %s", code, body, tc.status, tc.code)
			}
			if len(e.up.Requests()) != before {
				t.Fatal("the call was forwarded")
			}
		})
	}
	if n := e.s.size() - before; n != 0 {
		t.Errorf("refused calls left %d records", n)
	}
}

// TestProxyNotConfigured checks the answer of a proxy without upstream.
func TestProxyNotConfigured(t *testing.T) {
	s := startServer(t, t.TempDir())
	for _, path := range []string{"/openai/v1/chat/completions", "/anthropic/v1/messages"} {
		code, body := s.do("POST", path, adminToken, "application/json", []byte(`{"model":"m"}`))
		if code != http.StatusNotFound || !strings.Contains(string(body), `"code":"not_configured"`) {
			t.Errorf("%s: %d %s, want 404 not_configured", path, code, body)
		}
	}
}
