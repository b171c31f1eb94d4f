package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/registry"
)

// Models is what the API needs of the model deployment registry.
type Models interface {
	ModelPage(f registry.Filter, after registry.ModelKey, limit int) ([]registry.Model, bool)
}

// modelParams are the parameters GET /v1/models accepts.
var modelParams = map[string]bool{"tenant": true, "name": true, "environment": true, "limit": true, "cursor": true}

// defaultModelLimit is how many models a page holds unless limit says.
const defaultModelLimit = 100

// listModels handles GET /v1/models and GET /v1/models/{name}: the current
// deployments and the deployment history of the models of the tenants the
// caller may see. A named model that none of them has deployed is 404.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	named := r.URL.Path != "/v1/models" // GET /v1/models/{name}
	if named && r.PathValue("name") == "" {
		s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "no such endpoint: the model name is empty"))
		return
	}
	allowed := modelParams
	if named {
		allowed = map[string]bool{"tenant": true, "environment": true, "limit": true, "cursor": true} // the name is in the path
	}
	if err := checkParams(v, allowed); err != nil {
		s.writeError(w, r, err)
		return
	}
	f := registry.Filter{Tenants: principalFrom(r.Context()).VisibleTenants(), Tenant: v.Get("tenant"),
		Name: v.Get("name"), Environment: v.Get("environment")}
	if named {
		f.Name = r.PathValue("name")
	}
	limit, err := uintParam(r, "limit", defaultModelLimit, false)
	if err != nil || limit < 1 || limit > index.MaxLimit {
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("limit must be an integer from 1 to %d", index.MaxLimit)))
		return
	}
	var after registry.ModelKey
	if c, ok := v["cursor"]; ok {
		if after, err = parseModelCursor(c[0]); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	models, more := s.Models.ModelPage(f, after, int(limit))
	if models == nil {
		if named && after == (registry.ModelKey{}) {
			s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "no deployments of that model"))
			return
		}
		models = []registry.Model{}
	}
	out := map[string]any{"models": models}
	if more {
		last := models[len(models)-1]
		out["next_cursor"] = modelCursor(registry.ModelKey{Tenant: last.Tenant, Name: last.Name, Provider: last.Provider})
	}
	writeJSON(w, http.StatusOK, out)
}

// modelCursor is the cursor of the page after the model k: k itself,
// which names nothing the page did not.
func modelCursor(k registry.ModelKey) string {
	b, _ := json.Marshal([]string{k.Tenant, k.Name, k.Provider})
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseModelCursor reads a cursor modelCursor made.
func parseModelCursor(c string) (registry.ModelKey, error) {
	var parts []string
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		err = json.Unmarshal(b, &parts)
	}
	if err != nil || len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return registry.ModelKey{}, errorf(http.StatusBadRequest, "invalid_query", "cursor is not one a page of GET /v1/models gave")
	}
	return registry.ModelKey{Tenant: parts[0], Name: parts[1], Provider: parts[2]}, nil
}
