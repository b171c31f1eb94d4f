package proxy

import "bytes"

// sseParser splits a server-sent event stream (the WHATWG format the
// providers stream in) into events as its bytes arrive, in whatever pieces.
// It buffers at most one event; the caller bounds the stream.
type sseParser struct {
	emit func(name string, data []byte)

	line    []byte
	name    string
	data    []byte
	hasData bool
}

// write takes the next piece of the stream.
func (p *sseParser) write(b []byte) {
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
func (p *sseParser) field(line []byte) {
	if len(line) == 0 {
		if p.hasData {
			p.emit(p.name, p.data)
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
