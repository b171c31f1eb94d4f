package event

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchBody is a request like `aitrail bench` sends: 100 NDJSON events of
// about 1 KiB.
func benchBody() []byte {
	var b bytes.Buffer
	for j := 0; j < 100; j++ {
		fmt.Fprintf(&b, `{"id":"bench-0123456789abcdef-1-2-%d","type":"ai.inference","tenant":"bench","actor":{"id":"user-%d","type":"user"},"action":"chat.completions.create","outcome":"success","model":{"provider":"openai","name":"gpt-4o","version":"2024-08-06"},"attributes":{"gen_ai.usage.input_tokens":%d,"note":"%s"}}`+"\n",
			j, j, j, strings.Repeat("x", 700))
	}
	return b.Bytes()
}

func BenchmarkDecode100(b *testing.B) {
	body := benchBody()
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		if _, err := Decode(body, MediaTypeNDJSON, DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNormalize100(b *testing.B) {
	evs, err := Decode(benchBody(), MediaTypeNDJSON, DefaultLimits())
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := 0; i < b.N; i++ {
		if _, _, err := NormalizeAll(evs, now, DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
}
