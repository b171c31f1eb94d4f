package merkle

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// EntriesLevel is the Level of a TileID naming an entry bundle.
const EntriesLevel = -1

// TileID names one hash tile or entry bundle.
type TileID struct {
	// Level is the tile level (0 holds leaf hashes), or EntriesLevel for an
	// entry bundle.
	Level int
	// N is the tile's index within its level.
	N uint64
	// W is the number of hashes (or entries) in the tile: TileWidth for a
	// full tile, fewer for a partial one.
	W int
}

// ErrBadPath reports a path that is not a C2SP tile or entry bundle path.
var ErrBadPath = errors.New("not a tile path")

// Path returns the C2SP path of the tile relative to the log prefix, for
// example "tile/0/x001/234" or "tile/entries/005.p/17".
func (t TileID) Path() string {
	var b strings.Builder
	b.WriteString("tile/")
	if t.Level == EntriesLevel {
		b.WriteString("entries")
	} else {
		b.WriteString(strconv.Itoa(t.Level))
	}
	b.WriteByte('/')
	b.WriteString(formatIndex(t.N))
	if t.W < TileWidth {
		b.WriteString(".p/")
		b.WriteString(strconv.Itoa(t.W))
	}
	return b.String()
}

// formatIndex encodes n in groups of three decimal digits, every group but
// the last prefixed with "x", as C2SP tlog-tiles requires.
func formatIndex(n uint64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n /= 1000; n > 0; n /= 1000 {
		s = fmt.Sprintf("x%03d/%s", n%1000, s)
	}
	return s
}

// ParseTilePath parses a C2SP tile path such as "tile/1/x002/003.p/10".
// It accepts exactly the paths Path produces.
func ParseTilePath(path string) (TileID, error) {
	bad := func(why string) (TileID, error) {
		return TileID{}, fmt.Errorf("%w: %q: %s", ErrBadPath, path, why)
	}
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok {
		return bad("missing tile/ prefix")
	}
	level, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("missing index")
	}
	var t TileID
	if level == "entries" {
		t.Level = EntriesLevel
	} else {
		l, err := strconv.Atoi(level)
		if err != nil || l < 0 || l > 63 || strconv.Itoa(l) != level {
			return bad("bad level")
		}
		t.Level = l
	}
	t.W = TileWidth
	if i := strings.Index(rest, ".p/"); i >= 0 {
		w, err := strconv.Atoi(rest[i+3:])
		if err != nil || w < 1 || w >= TileWidth || strconv.Itoa(w) != rest[i+3:] {
			return bad("bad partial width")
		}
		t.W = w
		rest = rest[:i]
	}
	groups := strings.Split(rest, "/")
	for i, g := range groups {
		last := i == len(groups)-1
		if !last {
			if !strings.HasPrefix(g, "x") {
				return bad("bad index group")
			}
			g = g[1:]
		}
		if len(g) != 3 || strings.Trim(g, "0123456789") != "" {
			return bad("bad index group")
		}
		d, _ := strconv.ParseUint(g, 10, 64)
		if t.N > (1<<63)/1000 {
			return bad("index too large")
		}
		t.N = t.N*1000 + d
	}
	if t.Path() != path {
		return bad("not in canonical form")
	}
	return t, nil
}
