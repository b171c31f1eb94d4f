package ingest

import (
	"context"
	"errors"
	"testing"
)

// TestSpaceReserve: a reserve larger than any disk refuses appends with
// ErrLowSpace and says so once; no reserve, or one the disk has room for,
// admits them.
func TestSpaceReserve(t *testing.T) {
	dir := t.TempDir()
	var changes []bool
	s := &SpaceReserve{Dir: dir, Min: 1 << 62, OnChange: func(refusing bool, free uint64) { changes = append(changes, refusing) }}
	s.Check()
	for range 3 {
		if err := s.Admit(context.Background()); !errors.Is(err, ErrLowSpace) {
			t.Fatalf("Admit with a reserve of 4 EiB: %v, want ErrLowSpace", err)
		}
	}
	free, refusing, err := s.Status()
	if free == 0 || !refusing || err != nil {
		t.Fatalf("Status: %d bytes free, refusing %v, %v", free, refusing, err)
	}
	if len(changes) != 1 || !changes[0] {
		t.Fatalf("OnChange calls %v, want one saying appends are refused", changes)
	}
	for _, min := range []uint64{0, 1} {
		s := &SpaceReserve{Dir: dir, Min: min}
		s.Check()
		if err := s.Admit(context.Background()); err != nil {
			t.Fatalf("Admit with a reserve of %d bytes: %v", min, err)
		}
	}
	// A directory that cannot be measured admits appends (the log reports
	// failing writes itself) and reports why.
	s = &SpaceReserve{Dir: dir + "/missing", Min: 1}
	s.Check()
	if err := s.Admit(context.Background()); err != nil {
		t.Fatalf("Admit with no measure: %v", err)
	}
	if _, _, err := s.Status(); err == nil {
		t.Fatal("Status of a missing directory gave no error")
	}
}
