package event

import (
	"strings"
	"testing"
)

var benchText = strings.Repeat("some plain text ", 44)

func BenchmarkHasControl(b *testing.B) {
	for i := 0; i < b.N; i++ {
		hasControl(benchText, true)
	}
}

func BenchmarkAppendString(b *testing.B) {
	buf := make([]byte, 0, 1024)
	for i := 0; i < b.N; i++ {
		buf, _ = appendString(buf[:0], benchText)
	}
}
