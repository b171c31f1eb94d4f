package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/aitrail/aitrail/client"
)

func ExampleRecorder_Record() {
	aitrail := startFake() // stands in for an aitrail server
	defer aitrail.Close()

	rec := client.NewRecorder(client.New(aitrail.URL, "atr_…"), client.RecorderOptions{})
	for _, user := range []string{"u-1", "u-2", "u-3"} {
		err := rec.Record(context.Background(), client.Event{
			Type:    "access.attempt",
			Tenant:  "acme",
			Actor:   &client.Actor{ID: user, Type: "user"},
			Action:  "login",
			Outcome: "success",
		})
		if err != nil {
			fmt.Println("not recorded:", err)
		}
	}
	// Close sends what is queued and returns once the server has
	// acknowledged it (the events are durable).
	if err := rec.Close(context.Background()); err != nil {
		fmt.Println(err)
	}
	s := rec.Stats()
	fmt.Printf("sent %d, failed %d, queued %d\n", s.Sent, s.Failed, s.Queued)
	// Output: sent 3, failed 0, queued 0
}

func ExampleRecorder_RecordSync() {
	aitrail := startFake()
	defer aitrail.Close()

	rec := client.NewRecorder(client.New(aitrail.URL, "atr_…"), client.RecorderOptions{})
	defer rec.Close(context.Background())
	receipt, err := rec.RecordSync(context.Background(), client.Event{
		ID:     "deploy-2025-01-17",
		Type:   "model.deploy",
		Tenant: "acme",
		Model:  &client.Model{Provider: "internal", Name: "fraud-scorer", Version: "4.2.0"},
	})
	if err != nil {
		fmt.Println("the deployment was not recorded:", err)
		return
	}
	// The receipt's checkpoint is signed by the log and covers the index:
	// keep it as proof.
	fmt.Println(receipt.Results[0].ID, "is at index", receipt.Results[0].Index)
	// Output: deploy-2025-01-17 is at index 0
}

func ExampleHTTPMiddleware() {
	aitrail := startFake()
	defer aitrail.Close()
	rec := client.NewRecorder(client.New(aitrail.URL, "atr_…"), client.RecorderOptions{})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /invoices/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "invoice", r.PathValue("id"))
	})
	handler := client.HTTPMiddleware(rec, client.HTTPOptions{
		Tenant:    "acme",
		SkipPaths: []string{"/healthz"},
		Principal: func(r *http.Request) client.Actor {
			// In a real application: the user your authentication verified.
			return client.Actor{ID: r.Header.Get("X-User"), Type: "user"}
		},
	})(mux)

	app := httptest.NewServer(handler)
	defer app.Close()
	req, _ := http.NewRequest("GET", app.URL+"/invoices/42", nil)
	req.Header.Set("X-User", "u-42")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()

	rec.Close(context.Background())
	for _, e := range aitrail.all() {
		fmt.Println(e.Type, e.Action, e.Actor.ID, e.Outcome, e.Attributes["http.response.status_code"])
	}
	// Output: api.call GET /invoices/{id} u-42 success 200
}
