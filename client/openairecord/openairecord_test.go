package openairecord_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/client/openairecord"
	"github.com/aitrail/aitrail/internal/fakeprovider"
)

// collector stands in for aitrail's POST /v1/events and keeps what it
// receives.
type collector struct {
	mu     sync.Mutex
	events []client.Event
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := client.Receipt{Checkpoint: "collector\n"}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(nil, 16<<20)
	c.mu.Lock()
	for sc.Scan() {
		var e client.Event
		json.Unmarshal(sc.Bytes(), &e)
		rc.Results = append(rc.Results, client.Result{ID: e.ID, Index: uint64(len(c.events))})
		c.events = append(c.events, e)
	}
	c.mu.Unlock()
	json.NewEncoder(w).Encode(rc)
}

// setup returns an OpenAI client talking to upstream (a new fake provider
// if nil) and recording through a Recorder, and a function that flushes the
// Recorder and returns the events recorded.
func setup(t *testing.T, upstream *fakeprovider.Upstream, opts openairecord.Options) (openai.Client, func() []client.Event) {
	t.Helper()
	col := &collector{}
	audit := httptest.NewServer(col)
	t.Cleanup(audit.Close)
	if upstream == nil {
		upstream = fakeprovider.New()
	}
	t.Cleanup(upstream.Close)
	rec := client.NewRecorder(client.New(audit.URL, "tok"), client.RecorderOptions{})
	t.Cleanup(func() { rec.Close(context.Background()) })
	oai := openai.NewClient(
		option.WithBaseURL(upstream.URL+"/v1/"),
		option.WithAPIKey("sk-test"),
		option.WithMaxRetries(0),
		option.WithMiddleware(openairecord.Middleware(rec, opts)),
	)
	return oai, func() []client.Event {
		if err := rec.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		col.mu.Lock()
		defer col.mu.Unlock()
		return append([]client.Event(nil), col.events...)
	}
}

func chatParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:               openai.ChatModelGPT4o,
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
		Temperature:         openai.Float(0.2),
		TopP:                openai.Float(0.9),
		Seed:                openai.Int(42),
		MaxCompletionTokens: openai.Int(100),
		User:                openai.String("end-user-9"),
	}
}

// only returns the one event recorded.
func only(t *testing.T, evs []client.Event) client.Event {
	t.Helper()
	if len(evs) != 1 {
		t.Fatalf("%d events recorded, want 1: %+v", len(evs), evs)
	}
	return evs[0]
}

// checkAttrs compares the attributes a test cares about.
func checkAttrs(t *testing.T, got client.Attributes, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("attribute %s = %v (%T), want %v", k, got[k], got[k], v)
		}
	}
}

// content decodes an event's content.
func content(t *testing.T, e client.Event) (req map[string]any, resp map[string]any) {
	t.Helper()
	var c struct {
		Request  map[string]any `json:"request"`
		Response map[string]any `json:"response"`
	}
	if err := json.Unmarshal(e.Content, &c); err != nil {
		t.Fatalf("content %s: %v", e.Content, err)
	}
	return c.Request, c.Response
}

func completionText(resp map[string]any) string {
	choices, _ := resp["choices"].([]any)
	if len(choices) == 0 {
		return ""
	}
	msg, _ := choices[0].(map[string]any)["message"].(map[string]any)
	s, _ := msg["content"].(string)
	return s
}

func wantAttrs() map[string]any {
	return map[string]any{
		"gen_ai.operation.name":          "chat",
		"gen_ai.provider.name":           "openai",
		"gen_ai.request.model":           "gpt-4o",
		"gen_ai.response.model":          fakeprovider.ResponseModel("gpt-4o"),
		"gen_ai.response.id":             fakeprovider.ChatID,
		"gen_ai.usage.input_tokens":      float64(fakeprovider.InputTokens),
		"gen_ai.usage.output_tokens":     float64(fakeprovider.OutputTokens),
		"gen_ai.response.finish_reasons": "stop",
		"gen_ai.request.temperature":     0.2,
		"gen_ai.request.top_p":           0.9,
		"gen_ai.request.seed":            float64(42),
		"gen_ai.request.max_tokens":      float64(100),
		"http.response.status_code":      float64(200),
	}
}

func TestChatCompletionIsRecorded(t *testing.T) {
	oai, recorded := setup(t, nil, openairecord.Options{Tenant: "acme"})
	res, err := oai.Chat.Completions.New(context.Background(), chatParams())
	if err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].Message.Content != fakeprovider.Reply {
		t.Fatalf("the application got %q", res.Choices[0].Message.Content)
	}
	e := only(t, recorded())
	if e.Type != "ai.inference" || e.Action != "chat.completions.create" || e.Outcome != "success" || e.Tenant != "acme" {
		t.Errorf("event %+v", e)
	}
	if *e.Model != (client.Model{Provider: "openai", Name: "gpt-4o", Version: fakeprovider.ResponseModel("gpt-4o")}) {
		t.Errorf("model %+v", *e.Model)
	}
	if e.Actor == nil || *e.Actor != (client.Actor{ID: "end-user-9", Type: "user"}) {
		t.Errorf("actor %+v, want the request's user", e.Actor)
	}
	checkAttrs(t, e.Attributes, wantAttrs())
	req, resp := content(t, e)
	if !strings.Contains(mustJSON(req["messages"]), "Say hello") || completionText(resp) != fakeprovider.Reply {
		t.Errorf("content %s", e.Content)
	}
}

func TestStreamedChatCompletionIsRecordedAndStillStreams(t *testing.T) {
	pause := make(chan struct{})
	oai, recorded := setup(t, fakeprovider.NewPaused(pause), openairecord.Options{})
	params := chatParams()
	params.StreamOptions.IncludeUsage = openai.Bool(true)
	ctx := openairecord.WithActor(context.Background(), client.Actor{ID: "svc-chat", Type: "service"})
	stream := oai.Chat.Completions.NewStreaming(ctx, params)
	var got strings.Builder
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		chunk := stream.Current()
		acc.AddChunk(chunk)
		if len(chunk.Choices) > 0 {
			got.WriteString(chunk.Choices[0].Delta.Content)
		}
		if got.String() == fakeprovider.ReplyPieces[0] {
			// The upstream holds the rest until the application has seen
			// the first words: the middleware must not buffer the stream.
			close(pause)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	if got.String() != fakeprovider.Reply || acc.Usage.CompletionTokens != fakeprovider.OutputTokens {
		t.Fatalf("the application got %q, usage %+v", got.String(), acc.Usage)
	}
	e := only(t, recorded())
	if e.Outcome != "success" || *e.Actor != (client.Actor{ID: "svc-chat", Type: "service"}) {
		t.Errorf("event %+v actor %+v", e, e.Actor)
	}
	checkAttrs(t, e.Attributes, wantAttrs())
	_, resp := content(t, e)
	if completionText(resp) != fakeprovider.Reply {
		t.Errorf("recorded completion in %s", e.Content)
	}
}

func TestStreamClosedEarlyIsRecordedAsIncomplete(t *testing.T) {
	pause := make(chan struct{})
	oai, recorded := setup(t, fakeprovider.NewPaused(pause), openairecord.Options{})
	stream := oai.Chat.Completions.NewStreaming(context.Background(), chatParams())
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			break // the application stops reading after the first words
		}
	}
	stream.Close()
	close(pause)
	e := only(t, recorded())
	if e.Outcome != "failure" || e.Attributes["error.type"] != "stream_incomplete" {
		t.Errorf("outcome %s, attributes %v", e.Outcome, e.Attributes)
	}
}

// TestStreamsThatFailAfterTheirStatus: a stream the provider ends with an
// error, or ends before its last event, after answering 200, is recorded
// as a failure, with the provider's error type or stream_incomplete.
func TestStreamsThatFailAfterTheirStatus(t *testing.T) {
	for model, want := range map[string]string{
		fakeprovider.ModelFailMidStream: fakeprovider.StreamErrorType,
		fakeprovider.ModelEndMidStream:  "stream_incomplete",
	} {
		oai, recorded := setup(t, nil, openairecord.Options{})
		params := chatParams()
		params.Model = model
		stream := oai.Chat.Completions.NewStreaming(context.Background(), params)
		for stream.Next() {
		}
		stream.Close()
		e := only(t, recorded())
		if e.Outcome != "failure" || e.Attributes["error.type"] != want {
			t.Errorf("%s: outcome %s, error.type %v; want failure, %s", model, e.Outcome, e.Attributes["error.type"], want)
		}
	}
}

func TestEmbeddingIsRecordedWithoutVectors(t *testing.T) {
	oai, recorded := setup(t, nil, openairecord.Options{})
	_, err := oai.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Model: openai.EmbeddingModelTextEmbedding3Small,
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := only(t, recorded())
	if e.Type != "ai.embedding" || e.Action != "embeddings.create" || e.Model.Name != "text-embedding-3-small" {
		t.Errorf("event %+v", e)
	}
	checkAttrs(t, e.Attributes, map[string]any{"gen_ai.operation.name": "embeddings", "gen_ai.usage.input_tokens": float64(3)})
	req, resp := content(t, e)
	if req["input"] != "hello" || resp != nil {
		t.Errorf("content %s, want the input and no vectors", e.Content)
	}
}

func TestFailedCallIsRecorded(t *testing.T) {
	oai, recorded := setup(t, nil, openairecord.Options{OmitContent: true})
	params := chatParams()
	params.Model = fakeprovider.ModelFail400
	_, err := oai.Chat.Completions.New(context.Background(), params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest {
		t.Fatalf("the application got %v, want the upstream's 400", err)
	}
	e := only(t, recorded())
	if e.Outcome != "failure" || e.Attributes["error.type"] != "400" || e.Attributes["http.response.status_code"] != float64(400) {
		t.Errorf("event %+v", e)
	}
	if e.Content != nil {
		t.Errorf("content %s recorded with OmitContent", e.Content)
	}
}

func TestOtherRequestsAreNotRecorded(t *testing.T) {
	oai, recorded := setup(t, nil, openairecord.Options{})
	if _, err := oai.Models.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	if evs := recorded(); len(evs) != 0 {
		t.Errorf("recorded %+v", evs)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
