package detect

import (
	"encoding/json"
	"fmt"
	"maps"
)

// snapshotVersion changes when the snapshot format does.
const snapshotVersion = 1

type snapshot struct {
	Version  int                     `json:"version"`
	Next     uint64                  `json:"next"`
	Now      int64                   `json:"now"`
	LastTick int64                   `json:"last_tick"`
	Rules    map[string]ruleSnapshot `json:"rules"`
}

type ruleSnapshot struct {
	Hash  string     `json:"hash"`
	State *ruleState `json:"state"`
}

// Snapshot returns the engine's whole state (every window, baseline and
// firing alert, and Next) as bytes for Restore. A detector persists it
// together with, and no later than, the transitions it reported up to
// Next, so that after a restart the records from Next on are applied
// exactly once.
func (e *Engine) Snapshot() ([]byte, error) {
	s := snapshot{Version: snapshotVersion, Next: e.next, Now: e.now, LastTick: e.lastTick, Rules: map[string]ruleSnapshot{}}
	for i, r := range e.rules {
		s.Rules[r.ID] = ruleSnapshot{Hash: r.Hash, State: e.states[i]}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("couldn't encode the detector state: %w", err)
	}
	return b, nil
}

// Restore replaces the engine's state with a snapshot. The state of a rule
// whose text changed since the snapshot (a different hash) or that was
// removed is dropped: a changed rule starts afresh.
func (e *Engine) Restore(b []byte) error {
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("couldn't decode the detector state: %w", err)
	}
	if s.Version != snapshotVersion {
		return fmt.Errorf("couldn't restore the detector state: version %d, want %d", s.Version, snapshotVersion)
	}
	e.next, e.now, e.lastTick = s.Next, s.Now, s.LastTick
	for i, r := range e.rules {
		e.states[i] = newRuleState()
		if rs, ok := s.Rules[r.ID]; ok && rs.Hash == r.Hash && rs.State != nil {
			st := rs.State
			if st.Groups == nil {
				st.Groups = map[string]*group{}
			}
			// A damaged or edited file may hold null groups.
			maps.DeleteFunc(st.Groups, func(_ string, g *group) bool { return g == nil })
			if st.Seen == nil {
				st.Seen = map[string]int64{}
			}
			e.states[i] = st
		}
	}
	return nil
}
