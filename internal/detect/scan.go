package detect

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/aitrail/aitrail/internal/fold"
)

// AttrContentMarkers is the attribute the ingest path sets, to the names
// of the patterns ScanContent found (MarkerNames), before it encrypts an
// event's content. The built-in rule prompt-injection-marker fires on it.
const AttrContentMarkers = "aitrail.content.markers"

// Pattern is a named regular expression (RE2 syntax) that marks content as
// suspicious, optionally only for some tenants.
type Pattern struct {
	Name    string   `yaml:"name"`
	Regexp  string   `yaml:"regexp"`
	Tenants []string `yaml:"tenants,omitempty"` // empty for every tenant
	// Keywords, if any, make the pattern tried only on content that holds
	// one of them (ASCII case-insensitively): a cheap test that spares most
	// content the regular expression. Every match must contain one.
	Keywords []string `yaml:"keywords,omitempty"`
}

// DefaultPatterns are common prompt-injection phrasings. They are markers
// for review, not proof: tune them per deployment. Their keywords avoid
// words that every chat request holds ("system" is a message role), so that
// most content is spared the regular expressions.
var DefaultPatterns = []Pattern{
	{Name: "ignore-instructions", Regexp: `(?i)\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier|all)\b.{0,20}\b(instructions|rules|prompts?|directions)\b`,
		Keywords: []string{"ignore", "disregard", "forget"}},
	{Name: "reveal-system-prompt", Regexp: `(?i)\b(reveal|show|print|repeat|leak)\b.{0,40}\b(system|hidden|initial)\s+(prompt|instructions|message)\b`,
		Keywords: []string{"reveal", "show", "print", "repeat", "leak"}},
	{Name: "role-override", Regexp: `(?i)\byou are now\b|\bact as (an? )?(unrestricted|jailbroken|dan)\b|\bdeveloper mode\b`,
		Keywords: []string{"you are now", "act as", "developer mode"}},
	{Name: "fake-delimiter", Regexp: `(?i)<\|?(im_start|im_end|system|endoftext)\|?>|\[/?INST\]|###\s*(system|instruction)s?\s*:`,
		Keywords: []string{"im_start", "im_end", "<system", "<|system", "endoftext", "inst]", "###"}},
}

// Marker is one pattern found in content.
type Marker struct {
	Pattern string `json:"pattern"`
	Offset  int    `json:"offset"` // byte offset of the first match
}

// Scanner finds prompt-injection markers in content. It is pure and safe
// for concurrent use.
type Scanner struct {
	patterns []Pattern
	res      []*regexp.Regexp
	keywords *fold.Set // every pattern's keywords
	of       [][]int   // each pattern's keywords, as indexes into keywords
}

// NewScanner compiles patterns; it reports every pattern that does not
// compile.
func NewScanner(patterns []Pattern) (*Scanner, error) {
	s := &Scanner{patterns: patterns}
	var errs []error
	var all []string
	for _, p := range patterns {
		re, err := regexp.Compile(p.Regexp)
		if err != nil {
			errs = append(errs, fmt.Errorf("couldn't compile pattern %q: %w", p.Name, err))
		}
		s.res = append(s.res, re)
		var of []int
		for _, k := range p.Keywords {
			of = append(of, len(all))
			all = append(all, k)
		}
		s.of = append(s.of, of)
	}
	s.keywords = fold.NewSet(all)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%v", errs)
	}
	return s, nil
}

// ScanContent returns the markers found in a tenant's plaintext content,
// in pattern order. The ingest path calls it before encrypting content and
// records the pattern names in AttrContentMarkers; the content itself never
// reaches the detector.
func (s *Scanner) ScanContent(tenant string, content []byte) []Marker {
	var ms []Marker
	var buf [64]bool
	found := buf[:0]
	if n := s.keywords.Len(); n > 0 {
		if n > len(buf) {
			found = make([]bool, n)
		} else {
			found = buf[:n]
		}
		s.keywords.Find(content, found)
	}
	for i, p := range s.patterns {
		if len(p.Tenants) > 0 && !slices.Contains(p.Tenants, tenant) {
			continue
		}
		if of := s.of[i]; len(of) > 0 && !slices.ContainsFunc(of, func(k int) bool { return found[k] }) {
			continue
		}
		if loc := s.res[i].FindIndex(content); loc != nil {
			ms = append(ms, Marker{Pattern: p.Name, Offset: loc[0]})
		}
	}
	return ms
}

// MarkerNames returns the names of markers as the comma-separated value of
// AttrContentMarkers (attributes are flat), or "" for none.
func MarkerNames(ms []Marker) string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Pattern
	}
	return strings.Join(names, ",")
}
