// Package sse splits a server-sent event stream (the WHATWG format model
// providers stream in) into events as its bytes arrive. The recording proxy
// and the SDK's OpenAI middleware both read streams with it.
package sse

import "bytes"

// Parser splits a stream into events, in whatever pieces its bytes come.
// It buffers at most one event; the caller bounds the stream.
type Parser struct {
	// Emit receives each event that has data: its name ("" when it has no
	// event field) and its data lines joined by "\n". data is valid only
	// during the call.
	Emit func(name string, data []byte)

	line    []byte
	name    string
	data    []byte
	hasData bool
}

// Write takes the next piece of the stream.
func (p *Parser) Write(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.line = append(p.line, b...)
			return
		}
		p.line = append(p.line, b[:i]...)
		b = b[i+1:]
		p.field(bytes.TrimSuffix(p.line, []byte("\r")))
		p.line = p.line[:0]
	}
}

// field handles one complete line.
func (p *Parser) field(line []byte) {
	if len(line) == 0 {
		if p.hasData {
			p.Emit(p.name, p.data)
		}
		p.name, p.data, p.hasData = "", p.data[:0], false
		return
	}
	name, value, _ := bytes.Cut(line, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	switch string(name) {
	case "event":
		p.name = string(value)
	case "data":
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data, p.hasData = append(p.data, value...), true
	}
}
