package proxy

import "bytes"

// sseParser splits a server-sent event stream (the WHATWG format the
// providers stream in) into events as its bytes arrive, in whatever pieces.
// Once an event grows beyond limit bytes it stops, sets over and drops the
// rest of the stream.
type sseParser struct {
	limit int
	emit  func(name string, data []byte)
	over  bool

	line    []byte
	name    string
	data    []byte
	hasData bool
}

// write takes the next piece of the stream.
func (p *sseParser) write(b []byte) {
	for len(b) > 0 && !p.over {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.line = append(p.line, b...)
			p.over = len(p.line)+len(p.data) > p.limit
			return
		}
		p.line = append(p.line, b[:i]...)
		b = b[i+1:]
		p.field(bytes.TrimSuffix(p.line, []byte("\r")))
		p.line = p.line[:0]
		p.over = len(p.data) > p.limit
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
