package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/httpbody"
	"github.com/aitrail/aitrail/internal/merkle"
)

func (s *Server) logKey(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, s.PublicKey)
}

func (s *Server) logCheckpoint(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(s.Ledger.Checkpoint())
}

// logTile serves C2SP hash tiles (public) and entry bundles (role audit on
// all tenants, since they hold every tenant's records).
func (s *Server) logTile(w http.ResponseWriter, r *http.Request) {
	id, err := merkle.ParseTilePath(strings.TrimPrefix(r.URL.Path, "/log/"))
	if err != nil {
		s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "not a tile path"))
		return
	}
	var data []byte
	if id.Level == merkle.EntriesLevel {
		p, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !p.Has(authz.RoleAudit) || !p.AllTenants() {
			s.writeError(w, r, errorf(http.StatusForbidden, "forbidden", "entry bundles need the audit role on all tenants"))
			return
		}
		data, err = s.Ledger.Bundle(id.N, id.W)
		if err == nil {
			err = httpbody.ChargeAnswer(r.Context(), int64(len(data)))
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.countBundle(p, id.N*merkle.TileWidth, id.N*merkle.TileWidth+uint64(id.W)-1)
	} else {
		data, err = s.Ledger.Tile(id)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if id.W == merkle.TileWidth && id.Level != merkle.EntriesLevel {
		// Full tiles never change.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	w.Write(data)
}

// uintParam returns the query parameter name as a number, def when it is
// not given (an error when it is required).
func uintParam(r *http.Request, name string, def uint64, required bool) (uint64, error) {
	vs, given := r.URL.Query()[name]
	if !given {
		if required {
			return 0, errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("%s is required", name))
		}
		return def, nil
	}
	// Written one way only: "size=" is not the default, nor "01" one.
	v := vs[0]
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil || len(v) > 1 && v[0] == '0' {
		return 0, errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("%s must be a non-negative integer, in decimal without leading zeros", name))
	}
	return n, nil
}

// inclusionProof handles GET /v1/proof/inclusion?index=N&size=M.
func (s *Server) inclusionProof(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r.URL.Query(), map[string]bool{"index": true, "size": true}); err != nil {
		s.writeError(w, r, err)
		return
	}
	n := s.Ledger.Size()
	idx, err := uintParam(r, "index", 0, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	size, err := uintParam(r, "size", n, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if size == 0 || idx >= size || size > n {
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("need index < size ≤ %d", n)))
		return
	}
	hashes, err := s.Ledger.InclusionProof(idx, size)
	s.writeProof(w, r, hashes, err, map[string]any{"index": idx, "size": size})
}

// consistencyProof handles GET /v1/proof/consistency?from=A&to=B.
func (s *Server) consistencyProof(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r.URL.Query(), map[string]bool{"from": true, "to": true}); err != nil {
		s.writeError(w, r, err)
		return
	}
	n := s.Ledger.Size()
	from, err := uintParam(r, "from", 0, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	to, err := uintParam(r, "to", n, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if from > to || to > n {
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("need from ≤ to ≤ %d", n)))
		return
	}
	hashes, err := s.Ledger.ConsistencyProof(from, to)
	s.writeProof(w, r, hashes, err, map[string]any{"from": from, "to": to})
}

// writeProof answers with a proof and the parameters it was made for: a
// size left out is the log's size when the proof was made, which the
// caller needs in order to check it.
func (s *Server) writeProof(w http.ResponseWriter, r *http.Request, hashes []merkle.Hash, err error, params map[string]any) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	params["hashes"] = b64s(hashes)
	writeJSON(w, http.StatusOK, params)
}
