package openairecord_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/client/openairecord"
	"github.com/aitrail/aitrail/internal/fakeprovider"
)

func ExampleMiddleware() {
	// Stand-ins for aitrail and for the OpenAI API.
	events := &collector{}
	aitrail := httptest.NewServer(events)
	defer aitrail.Close()
	upstream := fakeprovider.New()
	defer upstream.Close()

	rec := client.NewRecorder(client.New(aitrail.URL, "atr_…"), client.RecorderOptions{})
	oai := openai.NewClient(
		option.WithBaseURL(upstream.URL+"/v1/"), // leave out to call OpenAI itself
		option.WithAPIKey("sk-…"),
		option.WithMiddleware(openairecord.Middleware(rec, openairecord.Options{Tenant: "acme"})),
	)

	ctx := openairecord.WithActor(context.Background(), client.Actor{ID: "u-42", Type: "user"})
	stream := oai.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4o,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
	})
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 {
			fmt.Print(c.Choices[0].Delta.Content)
		}
	}
	stream.Close()
	fmt.Println()

	rec.Close(context.Background()) // sends the events
	for _, e := range events.events {
		fmt.Println(e.Type, e.Actor.ID, e.Model.Name, e.Attributes["gen_ai.response.model"], e.Attributes["gen_ai.response.finish_reasons"], e.Outcome)
	}
	// Output:
	// Hello from upstream
	// ai.inference u-42 gpt-4o gpt-4o-2025-01-01 stop success
}
