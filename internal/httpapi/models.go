package httpapi

import (
	"net/http"

	"github.com/aitrail/aitrail/internal/registry"
)

// Models is what the API needs of the model deployment registry.
type Models interface {
	Models(f registry.Filter) []registry.Model
}

// modelParams are the parameters GET /v1/models accepts.
var modelParams = map[string]bool{"tenant": true, "name": true, "environment": true}

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
		allowed = map[string]bool{"tenant": true, "environment": true} // the name is in the path
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
	models := s.Models.Models(f)
	if models == nil {
		if named {
			s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "no deployments of that model"))
			return
		}
		models = []registry.Model{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": models})
}
