package openairecord

import (
	"encoding/json"
	"testing"
)

// TestStreamAssemblyDoesNotDependOnReadSizes feeds streams one byte at a
// time, as a slow network might deliver them, and checks the assembled
// response.
func TestStreamAssemblyDoesNotDependOnReadSizes(t *testing.T) {
	for _, tc := range []struct {
		name, stream, want string
	}{
		{
			name: "chat completion with a tool call and CRLF line ends",
			stream: "data: {\"id\":\"c1\",\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Let me \"}}]}\r\n\r\n" +
				"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"check.\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"ci\"}}]}}]}\r\n\r\n" +
				": a comment line\r\n" +
				"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ty\\\":\\\"Oslo\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\r\n\r\n" +
				"data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9}}\r\n\r\n" +
				"data: [DONE]\r\n\r\n",
			want: `{"id":"c1","model":"m-1","choices":[{"index":0,"message":{"role":"assistant","content":"Let me check.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":9}}`,
		},
		{
			name: "responses API",
			stream: "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\n" +
				"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n" +
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"model\":\"m-2\",\"status\":\"completed\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
			want: `{"id":"resp_1","model":"m-2","status":"completed","usage":{"input_tokens":3,"output_tokens":1}}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s streamState
			for i := range len(tc.stream) {
				s.write([]byte{tc.stream[i]})
			}
			if !s.done {
				t.Error("the end of the stream was not seen")
			}
			var got, want any
			json.Unmarshal(s.assemble(), &got)
			json.Unmarshal([]byte(tc.want), &want)
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(want)
			if string(gb) != string(wb) {
				t.Errorf("assembled\n%s\nwant\n%s", gb, wb)
			}
		})
	}
}

// FuzzStreamState checks that any stream is taken in without panicking and
// that how it is split into reads does not change what is assembled.
func FuzzStreamState(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"), 3)
	f.Add([]byte("data: {\"choices\":[{\"index\":-1,\"delta\":{\"tool_calls\":[{\"index\":99999999}]}}]}\n\n"), 1)
	f.Add([]byte("event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n"), 7)
	f.Fuzz(func(t *testing.T, stream []byte, split int) {
		var whole, pieces streamState
		whole.write(stream)
		if split < 1 {
			split = 1
		}
		for len(stream) > 0 {
			n := min(split, len(stream))
			pieces.write(stream[:n])
			stream = stream[n:]
		}
		if a, b := string(whole.assemble()), string(pieces.assemble()); a != b || whole.done != pieces.done {
			t.Errorf("in one read: %s (done %v); in pieces: %s (done %v)", a, whole.done, b, pieces.done)
		}
	})
}
