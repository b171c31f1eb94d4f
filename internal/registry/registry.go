// Package registry is the model deployment registry: which versions of which
// models each tenant has deployed, where, when and by whom. It is derived
// from the model.deploy and model.retire records in the log and can always be
// rebuilt from it; the log stays the only source of truth.
//
// The registry does three things with records on their way into the log:
// Check refuses malformed deploy and retire events (and producer-set
// attributes in the reserved aitrail.model. namespace), Resolve fills in the
// model version of an ai.* event that names only the model and marks events
// that name a version never deployed, and Committed learns from records once
// they are durable, so that an event sent after a deploy was acknowledged
// sees it. As a ledger.Handler it also follows the log with a persisted
// cursor, which makes it restart-safe and lets it catch up with records it
// did not see at ingest.
//
// Its state depends only on the set of deploy and retire records, never on
// the order in which it learns of them: every fact carries its log index, a
// fact already known is ignored, and the current deployments are recomputed
// in log order. Applying a record twice, or out of order, is therefore
// harmless, and the state rebuilt from the log equals the live state.
//
// The package never logs and never sees event content.
package registry

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/aitrail/aitrail/internal/event"
)

// Event types the registry follows.
const (
	TypeDeploy = "model.deploy"
	TypeRetire = "model.retire"
)

// Attributes the registry reads from deploy and retire events (OpenTelemetry
// resource attribute names) to tell deployment targets apart, and from other
// events to pick the target they were served by.
const (
	// AttrEnvironment names the environment, such as "production".
	AttrEnvironment = "deployment.environment.name"
	// AttrEnvironmentOld is the older OpenTelemetry name of
	// AttrEnvironment, read when AttrEnvironment is absent.
	AttrEnvironmentOld = "deployment.environment"
	// AttrService names the service or endpoint serving the model.
	AttrService = "service.name"
)

// Attributes the registry adds to the records it completes. Producers may
// not set attributes starting with ReservedPrefix.
const (
	ReservedPrefix = "aitrail.model."
	// AttrVersionSource is "registry" when the server filled in
	// model.version from the registry, "unresolved" when it could not.
	AttrVersionSource = ReservedPrefix + "version_source"
	// AttrDeployed tells whether the model version an event names (or was
	// given) was ever deployed in the event's tenant.
	AttrDeployed = ReservedPrefix + "deployed"
)

// Values of AttrVersionSource.
const (
	SourceRegistry   = "registry"
	SourceUnresolved = "unresolved"
)

// Actions of a Deployment.
const (
	ActionDeploy = "deploy"
	ActionRetire = "retire"
)

// Deployment is one effective model.deploy or model.retire record: a fact
// of the registry, identified by its log index.
type Deployment struct {
	// Index is the record's position in the log.
	Index uint64 `json:"index"`
	// EventID is the record's id.
	EventID string `json:"event_id"`
	// Action is ActionDeploy or ActionRetire.
	Action   string `json:"action"`
	Tenant   string `json:"tenant"`
	Provider string `json:"provider,omitempty"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Digest   string `json:"digest,omitempty"`
	// Environment and Service identify the deployment target; either may
	// be empty.
	Environment string `json:"environment,omitempty"`
	Service     string `json:"service,omitempty"`
	// Resource is the record's resource (such as the endpoint), as sent.
	Resource *event.Resource `json:"resource,omitempty"`
	// Actor is the id of who deployed or retired.
	Actor string `json:"actor,omitempty"`
	// Time is the event time.
	Time time.Time `json:"time"`
}

// FromRecord returns the fact that the record at index states, and false
// when the record is not an effective deploy or retire: another type, an
// outcome other than success, or no model name or version.
func FromRecord(index uint64, rec *event.Record) (Deployment, bool) {
	var action string
	switch rec.Type {
	case TypeDeploy:
		action = ActionDeploy
	case TypeRetire:
		action = ActionRetire
	default:
		return Deployment{}, false
	}
	if m := rec.Model; m == nil || m.Name == "" || m.Version == "" || (rec.Outcome != "" && rec.Outcome != "success") {
		return Deployment{}, false
	}
	env, svc, _ := target(rec.Attributes) // Check refused others
	d := Deployment{Index: index, EventID: rec.ID, Action: action, Tenant: rec.Tenant,
		Provider: rec.Model.Provider, Name: rec.Model.Name, Version: rec.Model.Version, Digest: rec.Model.Digest,
		Environment: env, Service: svc, Resource: rec.Resource, Time: rec.Time}
	if rec.Actor != nil {
		d.Actor = rec.Actor.ID
	}
	return d, true
}

// target reads the deployment target an event names; ok is false when an
// attribute naming it is not a string.
func target(attrs map[string]any) (env, service string, ok bool) {
	ok = true
	str := func(k string) string {
		v, present := attrs[k]
		s, isString := v.(string)
		ok = ok && (!present || isString)
		return s
	}
	if env = str(AttrEnvironment); env == "" {
		env = str(AttrEnvironmentOld)
	}
	return env, str(AttrService), ok
}

// Model is what the registry knows of one model of one tenant.
type Model struct {
	Tenant   string `json:"tenant"`
	Provider string `json:"provider,omitempty"`
	Name     string `json:"name"`
	// Current holds the deploy facts in force, one per target, ordered by
	// environment and service.
	Current []Deployment `json:"current"`
	// History holds every deploy and retire fact, in log order.
	History []Deployment `json:"history"`
}

// Filter selects models in Models. Empty fields match everything.
type Filter struct {
	// Tenants are the tenants the caller may see; nil means all.
	Tenants []string
	Tenant  string
	Name    string
	// Environment keeps only the facts of that environment, and the models
	// that have any.
	Environment string
}

// Store persists the registry's facts and its follower cursor. It is used
// by one Registry at a time.
type Store interface {
	// Load returns every stored fact, in log order, and the cursor: the
	// index of the next log entry the registry needs.
	Load(ctx context.Context) ([]Deployment, uint64, error)
	// Save adds facts and moves the cursor forward to cursor, atomically:
	// when it returns nil both are stored, on error neither is. A fact
	// whose Index is already stored is left as it is, and the cursor never
	// moves backwards. A store may lose the last Saves in a power cut, as
	// long as it loses facts and cursor together: the follower delivers
	// those entries again.
	Save(ctx context.Context, facts []Deployment, cursor uint64) error
}

type nameKey struct{ tenant, name string }

type targetKey struct{ env, service string }

// model is the state of one model name of one tenant, of every provider: a
// deploy or retire acts on the deployments whose provider matches its own
// (the same, or either empty), as events are resolved.
type model struct {
	facts []Deployment // by Index
	// effective tells, for each fact, whether it changed what is in
	// force: a deploy always does, a retire when it ended a deployment.
	effective []bool
	applied   int          // facts[:applied] are reflected in current
	current   []Deployment // in force, by provider, environment, service
	// deployed holds, for each version ever deployed, the providers its
	// deploys named; providers holds every provider a deploy named.
	deployed  map[string][]string
	providers map[string]bool
}

// Registry is the deployment registry. It is safe for concurrent use.
type Registry struct {
	store Store

	mu     sync.RWMutex
	cursor uint64
	models map[nameKey]*model
}

// Open loads the registry from store. Follow the log with it (it is a
// ledger.Handler) until it has caught up before relying on Resolve.
func Open(ctx context.Context, store Store) (*Registry, error) {
	facts, cursor, err := store.Load(ctx)
	if err != nil {
		return nil, err
	}
	r := &Registry{store: store, cursor: cursor, models: map[nameKey]*model{}}
	r.add(facts...)
	return r, nil
}

// Committed tells the registry that rec is durable at index. Call it, in any
// order, for every record once its append succeeded and before the append is
// acknowledged, so that later events see a deploy as soon as its producer
// does. It does not move the cursor: the follower persists the fact.
func (r *Registry) Committed(index uint64, rec *event.Record) {
	if d, ok := FromRecord(index, rec); ok {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.add(d)
	}
}

// add inserts the facts not yet known and brings the models they concern up
// to date. The caller holds mu (or is Open).
func (r *Registry) add(facts ...Deployment) {
	changed := map[*model]bool{}
	for _, d := range facts {
		k := nameKey{d.Tenant, d.Name}
		m := r.models[k]
		if m == nil {
			m = &model{deployed: map[string][]string{}, providers: map[string]bool{}}
			r.models[k] = m
		}
		i, found := slices.BinarySearchFunc(m.facts, d.Index, func(f Deployment, idx uint64) int { return cmp.Compare(f.Index, idx) })
		if found {
			continue
		}
		m.facts = slices.Insert(m.facts, i, d)
		m.effective = slices.Insert(m.effective, i, false)
		if i < m.applied {
			m.applied = 0 // a fact before those applied: replay them all
			m.current = m.current[:0]
			clear(m.deployed)
			clear(m.providers)
		}
		changed[m] = true
	}
	for m := range changed {
		m.update()
	}
}

// update applies the facts not yet applied, in log order (a fact learned
// after later ones makes add replay them all): a deploy makes its version
// the one in force at its target (environment, service) in place of the
// one there of a matching provider; a retire ends its version at every
// target it matches, where an empty environment or service on the retire
// matches any, and for every matching provider.
func (m *model) update() {
	for ; m.applied < len(m.facts); m.applied++ {
		f := m.facts[m.applied]
		n := len(m.current)
		m.current = slices.DeleteFunc(m.current, func(c Deployment) bool {
			if !match(f.Provider, c.Provider) {
				return false
			}
			if f.Action == ActionDeploy {
				return c.Environment == f.Environment && c.Service == f.Service
			}
			return c.Version == f.Version && (f.Environment == "" || f.Environment == c.Environment) &&
				(f.Service == "" || f.Service == c.Service)
		})
		m.effective[m.applied] = f.Action == ActionDeploy || len(m.current) < n
		if f.Action == ActionDeploy {
			m.current = append(m.current, f)
			if ps := m.deployed[f.Version]; !slices.Contains(ps, f.Provider) {
				m.deployed[f.Version] = append(ps, f.Provider)
			}
			m.providers[f.Provider] = true
		}
	}
	slices.SortFunc(m.current, func(a, b Deployment) int {
		return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Environment, b.Environment), cmp.Compare(a.Service, b.Service))
	})
}

// Check returns the problems that make rec unacceptable to the registry,
// with Index 0 and Field relative to the event (".model.version"): a
// model.deploy or model.retire without model.name or model.version, an
// environment or service attribute that is not a string on one (or holds
// control characters: they are shown in tables), and on any
// event an attribute in the reserved aitrail.model. namespace.
func (r *Registry) Check(rec *event.Record) []event.Problem {
	var ps []event.Problem
	add := func(field, msg string) { ps = append(ps, event.Problem{Field: field, Message: msg}) }
	if rec.Type == TypeDeploy || rec.Type == TypeRetire {
		if rec.Model == nil || rec.Model.Name == "" {
			add(".model.name", "is required for "+rec.Type)
		}
		if rec.Model == nil || rec.Model.Version == "" {
			add(".model.version", "is required for "+rec.Type)
		}
		for _, k := range []string{AttrEnvironment, AttrEnvironmentOld, AttrService} {
			if v, ok := rec.Attributes[k]; ok {
				if s, ok := v.(string); !ok {
					add(`.attributes["`+k+`"]`, "must be a string on "+rec.Type)
				} else if strings.ContainsFunc(s, unicode.IsControl) {
					add(`.attributes["`+k+`"]`, "must not contain control characters on "+rec.Type)
				}
			}
		}
	}
	for k := range rec.Attributes {
		if strings.HasPrefix(k, ReservedPrefix) {
			add(`.attributes["`+k+`"]`, "attributes starting with "+ReservedPrefix+" are set by the server")
		}
	}
	slices.SortFunc(ps, func(a, b event.Problem) int { return cmp.Compare(a.Field, b.Field) })
	return ps
}

// Resolve completes an ai.* record that names a model, when its tenant has
// deployed a model of that name (of a matching provider); other records are left alone, so tenants that do not use the
// registry see no change.
//
// Without model.version, the record is served by the versions in force at
// the targets it matches. Providers, environments and services match when
// they are equal or either is empty. If that is exactly one version, it is set (with its digest
// when the record has none and the targets agree on one), and the record gets
// AttrVersionSource "registry" and AttrDeployed true; otherwise
// AttrVersionSource "unresolved". With model.version, the record gets
// AttrDeployed: whether that version was ever deployed in the tenant.
func (r *Registry) Resolve(rec *event.Record) {
	if !strings.HasPrefix(rec.Type, "ai.") || rec.Model == nil || rec.Model.Name == "" {
		return
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	m := r.models[nameKey{rec.Tenant, rec.Model.Name}]
	if m == nil || !m.hasDeployed(rec.Model.Provider, "") {
		return
	}
	if rec.Attributes == nil {
		rec.Attributes = map[string]any{}
	}
	if v := rec.Model.Version; v != "" {
		rec.Attributes[AttrDeployed] = m.hasDeployed(rec.Model.Provider, v)
		return
	}
	env, svc, ok := target(rec.Attributes)
	if !ok {
		// A target that is not a string names none the registry knows.
		rec.Attributes[AttrVersionSource] = SourceUnresolved
		return
	}
	var version string
	digests := map[string]bool{}
	for _, c := range m.current {
		if !match(rec.Model.Provider, c.Provider) || !match(env, c.Environment) || !match(svc, c.Service) {
			continue
		}
		if version != "" && c.Version != version {
			rec.Attributes[AttrVersionSource] = SourceUnresolved
			return
		}
		version = c.Version
		digests[c.Digest] = true
	}
	if version == "" {
		rec.Attributes[AttrVersionSource] = SourceUnresolved
		return
	}
	rec.Model.Version = version
	if len(digests) == 1 && rec.Model.Digest == "" {
		for d := range digests {
			rec.Model.Digest = d
		}
	}
	rec.Attributes[AttrVersionSource] = SourceRegistry
	rec.Attributes[AttrDeployed] = true
}

// hasDeployed reports whether a deploy of a provider matching provider was
// ever in force: of version, or of any version when version is empty.
func (m *model) hasDeployed(provider, version string) bool {
	if version != "" {
		return slices.ContainsFunc(m.deployed[version], func(p string) bool { return match(p, provider) })
	}
	return len(m.providers) > 0 && (provider == "" || m.providers[provider] || m.providers[""])
}

// match reports whether two names of a provider, environment or service
// agree, an empty one agreeing with any.
func match(a, b string) bool { return a == "" || b == "" || a == b }

// Models returns the models f selects, ordered by tenant, name and provider,
// with copies of their facts: a model of each provider its deploys and
// retires named, holding those facts. A model whose facts all changed
// nothing (retires of versions not in force) is left out.
func (r *Registry) Models(f Filter) []Model {
	out, _ := r.ModelPage(f, ModelKey{}, 0)
	return out
}

// ModelKey is where a model stands in the order Models gives.
type ModelKey struct {
	Tenant, Name, Provider string
}

func (k ModelKey) compare(o ModelKey) int {
	return cmp.Or(cmp.Compare(k.Tenant, o.Tenant), cmp.Compare(k.Name, o.Name), cmp.Compare(k.Provider, o.Provider))
}

// ModelPage returns the models Models would, but only those after the key
// after (all when it is the zero key), and at most limit of them (all when
// limit is 0); more reports whether others follow. Only the models
// returned are copied.
func (r *Registry) ModelPage(f Filter, after ModelKey, limit int) (out []Model, more bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var keys []nameKey
	for k := range r.models {
		if (f.Tenants != nil && !slices.Contains(f.Tenants, k.tenant)) ||
			(f.Tenant != "" && f.Tenant != k.tenant) || (f.Name != "" && f.Name != k.name) ||
			cmp.Or(cmp.Compare(k.tenant, after.Tenant), cmp.Compare(k.name, after.Name)) < 0 {
			continue
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b nameKey) int {
		return cmp.Or(cmp.Compare(a.tenant, b.tenant), cmp.Compare(a.name, b.name))
	})
	// A fact without environment acts on every environment.
	keep := func(d Deployment) bool { return f.Environment == "" || match(d.Environment, f.Environment) }
	for _, k := range keys {
		m := r.models[k]
		byProvider := map[string]*Model{}
		of := func(provider string) *Model {
			mo := byProvider[provider]
			if mo == nil {
				mo = &Model{Tenant: k.tenant, Provider: provider, Name: k.name, Current: []Deployment{}, History: []Deployment{}}
				byProvider[provider] = mo
			}
			return mo
		}
		for i, d := range m.facts {
			if m.effective[i] && keep(d) && (ModelKey{k.tenant, k.name, d.Provider}).compare(after) > 0 {
				mo := of(d.Provider)
				mo.History = append(mo.History, d)
			}
		}
		for _, d := range m.current {
			if keep(d) && (ModelKey{k.tenant, k.name, d.Provider}).compare(after) > 0 {
				mo := of(d.Provider)
				mo.Current = append(mo.Current, d)
			}
		}
		for _, p := range slices.Sorted(maps.Keys(byProvider)) {
			if limit > 0 && len(out) == limit {
				return out, true
			}
			out = append(out, *byProvider[p])
		}
	}
	return out, false
}
