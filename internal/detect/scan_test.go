package detect

import "testing"

// TestScanKeywords: a pattern with keywords is not tried on content that
// holds none of them, and is on content that holds one.
func TestScanKeywords(t *testing.T) {
	s, err := NewScanner([]Pattern{{Name: "p", Regexp: `(?i)secret\d`, Keywords: []string{"SECRET"}}, {Name: "q", Regexp: `x{3}`}})
	if err != nil {
		t.Fatal(err)
	}
	if got := MarkerNames(s.ScanContent("t", []byte("a Secret7 and xxx"))); got != "p,q" {
		t.Errorf("markers %q; want p,q", got)
	}
	if got := MarkerNames(s.ScanContent("t", []byte("nothing but xxx"))); got != "q" {
		t.Errorf("markers %q; want q", got)
	}

	// Only ASCII letters fold: a keyword's other letters must appear as
	// written, as its pattern will then see them.
	s, err = NewScanner([]Pattern{{Name: "e", Regexp: `ÉCOLE`, Keywords: []string{"ÉCOLE"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := MarkerNames(s.ScanContent("t", []byte("une ÉCOLE"))); got != "e" {
		t.Errorf("markers %q for a keyword with a non-ASCII capital; want e", got)
	}
}
