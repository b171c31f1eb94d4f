package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

// memStore is a Store in memory that can be made to fail.
type memStore struct {
	facts  map[uint64]Deployment
	cursor uint64
	fail   error
}

func newMemStore() *memStore { return &memStore{facts: map[uint64]Deployment{}} }

func (s *memStore) Load(context.Context) ([]Deployment, uint64, error) {
	var out []Deployment
	for _, d := range s.facts {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Deployment) int { return int(a.Index) - int(b.Index) })
	return out, s.cursor, nil
}

func (s *memStore) Save(_ context.Context, facts []Deployment, cursor uint64) error {
	if s.fail != nil {
		return s.fail
	}
	for _, d := range facts {
		if _, ok := s.facts[d.Index]; !ok {
			s.facts[d.Index] = d
		}
	}
	s.cursor = max(s.cursor, cursor)
	return nil
}

func open(t *testing.T, s Store) *Registry {
	t.Helper()
	r, err := Open(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// rec builds a record; attrs are key, value pairs.
func rec(tenant, typ, name, version string, attrs ...any) event.Record {
	r := event.Record{ID: typ + "-" + name + "-" + version, Type: typ, Tenant: tenant, Time: t0,
		Actor: &event.Actor{ID: "alice"}}
	if name != "" || version != "" {
		r.Model = &event.Model{Name: name, Version: version}
	}
	for i := 0; i+1 < len(attrs); i += 2 {
		if r.Attributes == nil {
			r.Attributes = map[string]any{}
		}
		r.Attributes[attrs[i].(string)] = attrs[i+1]
	}
	return r
}

func deploy(tenant, name, version string, attrs ...any) event.Record {
	return rec(tenant, TypeDeploy, name, version, attrs...)
}

func retire(tenant, name, version string, attrs ...any) event.Record {
	return rec(tenant, TypeRetire, name, version, attrs...)
}

// resolve runs Resolve on an inference record and returns the version,
// the version source and the deployed marker (nil when absent).
func resolve(r *Registry, tenant, name, version string, attrs ...any) (string, any, any) {
	e := rec(tenant, "ai.inference", name, version, attrs...)
	r.Resolve(&e)
	return e.Model.Version, e.Attributes[AttrVersionSource], e.Attributes[AttrDeployed]
}

func currentVersions(r *Registry, tenant, name string) []string {
	var out []string
	for _, m := range r.Models(Filter{Tenant: tenant, Name: name}) {
		for _, c := range m.Current {
			out = append(out, c.Environment+"/"+c.Service+"="+c.Version)
		}
	}
	return out
}

func TestDeployRedeployRetire(t *testing.T) {
	r := open(t, newMemStore())
	commit := func(i uint64, rec event.Record) { r.Committed(i, &rec) }

	// Unknown model: left alone.
	if v, src, dep := resolve(r, "acme", "fraud", ""); v != "" || src != nil || dep != nil {
		t.Fatalf("before any deploy: %q %v %v", v, src, dep)
	}
	commit(0, deploy("acme", "fraud", "v1"))
	if v, src, dep := resolve(r, "acme", "fraud", ""); v != "v1" || src != SourceRegistry || dep != true {
		t.Fatalf("after deploy v1: %q %v %v", v, src, dep)
	}
	commit(1, deploy("acme", "fraud", "v2"))
	if v, _, _ := resolve(r, "acme", "fraud", ""); v != "v2" {
		t.Fatalf("after redeploy: %q, want v2", v)
	}
	if got := currentVersions(r, "acme", "fraud"); !slices.Equal(got, []string{"/=v2"}) {
		t.Fatalf("current after redeploy: %v", got)
	}
	// A named version: deployed ever, or never.
	if _, src, dep := resolve(r, "acme", "fraud", "v1"); dep != true || src != nil {
		t.Fatalf("v1 (deployed before): %v %v", src, dep)
	}
	if _, _, dep := resolve(r, "acme", "fraud", "v9"); dep != false {
		t.Fatalf("v9 (never deployed): %v", dep)
	}
	// Retiring a version not in force changes nothing; retiring the one
	// in force leaves nothing to resolve to.
	commit(2, retire("acme", "fraud", "v1"))
	if v, _, _ := resolve(r, "acme", "fraud", ""); v != "v2" {
		t.Fatalf("after retiring v1: %q, want v2", v)
	}
	commit(3, retire("acme", "fraud", "v2"))
	if v, src, dep := resolve(r, "acme", "fraud", ""); v != "" || src != SourceUnresolved || dep != nil {
		t.Fatalf("after retiring v2: %q %v %v", v, src, dep)
	}
	// The history holds what changed something: not the retire of v1,
	// which was no longer in force.
	m := r.Models(Filter{})
	if len(m) != 1 || len(m[0].History) != 3 || len(m[0].Current) != 0 || m[0].History[0].Actor != "alice" ||
		m[0].History[2].Index != 3 {
		t.Fatalf("models: %+v", m)
	}
	// Failed deploys and other types are not facts.
	bad := deploy("acme", "fraud", "v3")
	bad.Outcome = "failure"
	commit(4, bad)
	commit(5, rec("acme", "ai.inference", "fraud", "v4"))
	if m := r.Models(Filter{}); len(m[0].History) != 3 {
		t.Fatalf("a failed deploy or an inference became a fact: %+v", m[0].History)
	}
}

func TestEnvironmentsAndAmbiguity(t *testing.T) {
	r := open(t, newMemStore())
	for i, rec := range []event.Record{
		deploy("acme", "fraud", "v1", AttrEnvironment, "production", AttrService, "scoring-a"),
		deploy("acme", "fraud", "v2", AttrEnvironment, "production", AttrService, "scoring-b"),
		deploy("acme", "fraud", "v3", AttrEnvironmentOld, "staging"),
	} {
		r.Committed(uint64(i), &rec)
	}
	for _, tc := range []struct {
		name    string
		attrs   []any
		version string
		source  any
	}{
		{"no target: three versions", nil, "", SourceUnresolved},
		{"production: two versions", []any{AttrEnvironment, "production"}, "", SourceUnresolved},
		{"production service a", []any{AttrEnvironment, "production", AttrService, "scoring-a"}, "v1", SourceRegistry},
		{"service b alone", []any{AttrService, "scoring-b"}, "", SourceUnresolved}, // v2, and v3 of staging (any service)
		{"staging", []any{AttrEnvironment, "staging"}, "v3", SourceRegistry},
		{"staging by the old attribute", []any{AttrEnvironmentOld, "staging", AttrService, "x"}, "v3", SourceRegistry},
		{"unknown environment", []any{AttrEnvironment, "dev"}, "", SourceUnresolved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, src, _ := resolve(r, "acme", "fraud", "", tc.attrs...)
			if v != tc.version || src != tc.source {
				t.Fatalf("got %q %v, want %q %v", v, src, tc.version, tc.source)
			}
		})
	}
	// The same version at two targets is not ambiguous.
	rec := deploy("acme", "fraud", "v1", AttrEnvironment, "production", AttrService, "scoring-b")
	r.Committed(3, &rec)
	if v, _, _ := resolve(r, "acme", "fraud", "", AttrEnvironment, "production"); v != "v1" {
		t.Fatalf("v1 at both production services: %q", v)
	}
	// A retire without a target ends the version everywhere.
	rec = retire("acme", "fraud", "v1")
	r.Committed(4, &rec)
	if got := currentVersions(r, "acme", "fraud"); !slices.Equal(got, []string{"staging/=v3"}) {
		t.Fatalf("after retiring v1 everywhere: %v", got)
	}
	// The filter keeps what acts on the environment, facts without one
	// included.
	m := r.Models(Filter{Environment: "production"})
	if len(m) != 1 || len(m[0].Current) != 0 || len(m[0].History) != 4 || m[0].History[3].Action != ActionRetire {
		t.Fatalf("environment filter: %+v", m)
	}
	// An environment that is not a string names no target.
	if v, src, _ := resolve(r, "acme", "fraud", "", AttrEnvironment, 7, AttrService, "x"); v != "" || src != SourceUnresolved {
		t.Fatalf("environment 7: %q %v", v, src)
	}
}

// TestProvidersMatchAsEventsDo: a deploy or retire naming no provider acts
// on deployments that named one, and the reverse, as an event naming no
// provider is resolved by deployments that named one; deployments naming
// two providers stand side by side.
func TestProvidersMatchAsEventsDo(t *testing.T) {
	r := open(t, newMemStore())
	commit := func(i uint64, rec event.Record, provider string) {
		rec.Model.Provider = provider
		r.Committed(i, &rec)
	}
	resolveFrom := func(provider string) (string, any) {
		e := rec("acme", "ai.inference", "gpt-x", "", AttrEnvironment, "production")
		e.Model.Provider = provider
		r.Resolve(&e)
		return e.Model.Version, e.Attributes[AttrVersionSource]
	}
	commit(0, deploy("acme", "gpt-x", "g1", AttrEnvironment, "production"), "openai")
	commit(1, retire("acme", "gpt-x", "g1", AttrEnvironment, "production"), "")
	if v, src := resolveFrom(""); v != "" || src != SourceUnresolved {
		t.Fatalf("after a retire without provider: %q %v, want nothing in force", v, src)
	}
	commit(2, deploy("acme", "gpt-x", "g2", AttrEnvironment, "production"), "")
	commit(3, deploy("acme", "gpt-x", "g3", AttrEnvironment, "production"), "openai")
	if got := currentVersions(r, "acme", "gpt-x"); !slices.Equal(got, []string{"production/=g3"}) {
		t.Fatalf("a deploy naming a provider did not replace one naming none: %v", got)
	}
	commit(4, deploy("acme", "gpt-x", "a1", AttrEnvironment, "production"), "azure")
	if got := currentVersions(r, "acme", "gpt-x"); !slices.Equal(got, []string{"production/=a1", "production/=g3"}) {
		t.Fatalf("two providers: %v", got)
	}
	for provider, want := range map[string]string{"openai": "g3", "azure": "a1", "": ""} {
		if v, _ := resolveFrom(provider); v != want {
			t.Fatalf("provider %q resolved to %q, want %q", provider, v, want)
		}
	}
	// Each fact is listed with the provider it named.
	var got []string
	for _, m := range r.Models(Filter{}) {
		for _, d := range m.History {
			got = append(got, fmt.Sprintf("%s:%s %s", m.Provider, d.Action, d.Version))
		}
	}
	if want := []string{":retire g1", ":deploy g2", "azure:deploy a1", "openai:deploy g1", "openai:deploy g3"}; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	// A model whose facts all changed nothing is not listed.
	rec := retire("acme", "never", "x1")
	r.Committed(5, &rec)
	if m := r.Models(Filter{Name: "never"}); len(m) != 0 {
		t.Fatalf("a retire of a version never deployed made a model: %+v", m)
	}
}

func TestTenantsProvidersAndDigests(t *testing.T) {
	r := open(t, newMemStore())
	d := deploy("acme", "gpt-4o", "2024-08-06")
	d.Model.Provider, d.Model.Digest = "openai", "sha256:abc"
	r.Committed(0, &d)

	// Another tenant knows nothing of acme's deployments.
	if v, src, dep := resolve(r, "globex", "gpt-4o", ""); v != "" || src != nil || dep != nil {
		t.Fatalf("other tenant: %q %v %v", v, src, dep)
	}
	if m := r.Models(Filter{Tenants: []string{"globex"}}); len(m) != 0 {
		t.Fatalf("globex sees %+v", m)
	}
	e := rec("acme", "ai.inference", "gpt-4o", "")
	e.Model.Provider = "openai"
	r.Resolve(&e)
	if e.Model.Version != "2024-08-06" || e.Model.Digest != "sha256:abc" {
		t.Fatalf("resolved model %+v", e.Model)
	}
	e = rec("acme", "ai.inference", "gpt-4o", "")
	e.Model.Provider = "azure"
	r.Resolve(&e)
	if e.Model.Version != "" || e.Attributes != nil {
		t.Fatalf("another provider's model was resolved: %+v %v", e.Model, e.Attributes)
	}
	// Only ai.* events are completed.
	e = rec("acme", "api.call", "gpt-4o", "")
	r.Resolve(&e)
	if e.Model.Version != "" || e.Attributes != nil {
		t.Fatalf("api.call was completed: %+v %v", e.Model, e.Attributes)
	}
}

func TestCheck(t *testing.T) {
	r := open(t, newMemStore())
	fields := func(rec event.Record) []string {
		var out []string
		for _, p := range r.Check(&rec) {
			out = append(out, p.Field)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		rec  event.Record
		want []string
	}{
		{"good deploy", deploy("acme", "m", "v1", AttrEnvironment, "prod"), nil},
		{"deploy without model", deploy("acme", "", ""), []string{".model.name", ".model.version"}},
		{"retire without version", retire("acme", "m", ""), []string{".model.version"}},
		{"numeric environment", deploy("acme", "m", "v1", AttrEnvironment, 3.0), []string{`.attributes["deployment.environment.name"]`}},
		{"environment holding a line break", deploy("acme", "m", "v1", AttrEnvironment, "prod\nacme\tv666"), []string{`.attributes["deployment.environment.name"]`}},
		{"service holding a tab", retire("acme", "m", "v1", AttrService, "a\tb"), []string{`.attributes["service.name"]`}},
		{"reserved attribute", rec("acme", "ai.inference", "m", "", AttrVersionSource, "registry"), []string{`.attributes["aitrail.model.version_source"]`}},
		{"inference without model", rec("acme", "ai.inference", "", ""), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fields(tc.rec); !slices.Equal(got, tc.want) {
				t.Fatalf("problems at %v, want %v", got, tc.want)
			}
		})
	}
}

// entries encodes records as log entries from index 0.
func entries(t *testing.T, recs []event.Record) []ledger.Entry {
	t.Helper()
	out := make([]ledger.Entry, len(recs))
	for i := range recs {
		data, err := event.Canonical(&recs[i])
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ledger.Entry{Index: uint64(i), Data: data}
	}
	return out
}

func history() []event.Record {
	var recs []event.Record
	for i := range 40 {
		env := []string{"production", "staging"}[i%2]
		switch i % 5 {
		case 0, 1, 2:
			recs = append(recs, deploy("acme", "fraud", "v"+string(rune('a'+i%7)), AttrEnvironment, env))
		case 3:
			recs = append(recs, retire("acme", "fraud", "v"+string(rune('a'+(i-1)%7))))
		case 4:
			recs = append(recs, rec("acme", "ai.inference", "fraud", ""), deploy("globex", "fraud", "g1"))
		}
		recs[len(recs)-1].ID = "evt-" + string(rune('A'+len(recs)))
		if m := recs[len(recs)-1].Model; i%4 == 1 && m != nil {
			m.Provider = "openai" // acts on, and is acted on by, facts naming none
		}
	}
	return recs
}

// TestRebuildEqualsLive checks that following the log (in batches, with
// entries delivered again) builds the same registry as learning the same
// records at ingest in any order, and that a registry reopened from its
// store equals both.
func TestRebuildEqualsLive(t *testing.T) {
	ctx := context.Background()
	recs := history()
	ents := entries(t, recs)

	live := open(t, newMemStore())
	for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(len(recs)) {
		live.Committed(uint64(i), &recs[i])
		live.Committed(uint64(i), &recs[i]) // twice: harmless
	}

	store := newMemStore()
	followed := open(t, store)
	for from := 0; from < len(ents); from += 7 {
		// Redeliver the previous batch together with the next one.
		if err := followed.Apply(ctx, ents[max(0, from-7):min(len(ents), from+7)]); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := followed.Cursor(ctx); c != uint64(len(ents)) {
		t.Fatalf("cursor %d, want %d", c, len(ents))
	}
	reopened := open(t, store)

	want := live.Models(Filter{})
	if len(want) != 4 || len(want[0].History) == 0 { // acme and globex, each with and without provider
		t.Fatalf("live registry: %+v", want)
	}
	for name, r := range map[string]*Registry{"followed": followed, "reopened": reopened} {
		if got := r.Models(Filter{}); !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			t.Errorf("%s registry differs from the live one:\n got %s\nwant %s", name, g, w)
		}
	}
}

func TestApplyFailuresAndGaps(t *testing.T) {
	ctx := context.Background()
	ents := entries(t, []event.Record{deploy("acme", "m", "v1"), deploy("acme", "m", "v2")})
	store := newMemStore()
	r := open(t, store)
	store.fail = errors.New("disk full")
	if err := r.Apply(ctx, ents); err == nil {
		t.Fatal("Apply succeeded although the store failed")
	}
	if c, _ := r.Cursor(ctx); c != 0 || len(r.Models(Filter{})) != 0 {
		t.Fatalf("a failed Apply moved the cursor to %d or kept facts", c)
	}
	store.fail = nil
	if err := r.Apply(ctx, ents[1:]); err == nil {
		t.Fatal("Apply accepted a gap after the cursor")
	}
	if err := r.Apply(ctx, []ledger.Entry{{Index: 0, Data: []byte(`{"type":"model.deploy",`)}}); err == nil {
		t.Fatal("Apply accepted a malformed record")
	}
	if err := r.Apply(ctx, ents); err != nil {
		t.Fatal(err)
	}
	if got := currentVersions(r, "acme", "m"); !slices.Equal(got, []string{"/=v2"}) {
		t.Fatalf("current: %v", got)
	}
}

// TestModelPages: the pages of ModelPage, followed from key to key, hold
// the models Models gives, in its order, each once, whatever the page size.
func TestModelPages(t *testing.T) {
	r := open(t, newMemStore())
	i := uint64(0)
	commit := func(rec event.Record, provider string) {
		rec.Model.Provider = provider
		r.Committed(i, &rec)
		i++
	}
	for _, tenant := range []string{"acme", "globex"} {
		for _, name := range []string{"a", "b", "c"} {
			commit(deploy(tenant, name, "1", AttrEnvironment, "production"), "")
			commit(deploy(tenant, name, "2", AttrEnvironment, "staging"), "openai")
			if name == "b" {
				commit(deploy(tenant, name, "3", AttrEnvironment, "production"), "azure")
			}
		}
	}
	for _, f := range []Filter{{}, {Environment: "staging"}, {Tenant: "globex"}} {
		want := r.Models(f)
		if len(want) == 0 {
			t.Fatalf("%+v: no models", f)
		}
		for limit := 1; limit <= len(want)+1; limit++ {
			var got []Model
			var after ModelKey
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatalf("%+v, limit %d: the pages do not end", f, limit)
				}
				page, more := r.ModelPage(f, after, limit)
				if len(page) > limit {
					t.Fatalf("%+v, limit %d: a page of %d", f, limit, len(page))
				}
				got = append(got, page...)
				if !more {
					break
				}
				last := page[len(page)-1]
				after = ModelKey{last.Tenant, last.Name, last.Provider}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%+v, limit %d: the pages hold\n%+v\nwant\n%+v", f, limit, got, want)
			}
		}
	}
}
