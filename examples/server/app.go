package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/keyspage"
)

// plans are the article's tiers: free is 100 requests per UTC day; pro is
// 10,000 per UTC day and at most 100 per second.
func plans() apikey.Plans {
	return apikey.Plans{
		"free": {apikey.Quota("daily", 100, apikey.Day)},
		"pro":  {apikey.Quota("daily", 10_000, apikey.Day), apikey.Rate("per-second", 100, time.Second, 0)},
	}
}

const defaultLifetime = 90 * 24 * time.Hour

// app is the example service: a management API for the current user's keys
// (HTTP Basic) and routes protected by API keys.
type app struct {
	m     *apikey.Manager
	mw    *apikey.Middleware
	keys  *keyshttp.Handler
	page  *keyspage.Page
	users map[string][32]byte // name -> SHA-256 of the password
	log   *slog.Logger
}

type appConfig struct {
	manager  *apikey.Manager
	limiter  apikey.Limiter
	fallback apikey.Limiter // used when limiter fails; nil: fail closed
	users    map[string]string
	log      *slog.Logger
}

func newApp(cfg appConfig) (*app, error) {
	opts := apikey.MiddlewareOptions{
		Realm:                  "example",
		AllowQuery:             true, // as in the article; see the README for why it is off by default
		HideCredentials:        true,
		Limiter:                cfg.limiter,
		LegacyRateLimitHeaders: true,
		Logger:                 cfg.log,
	}
	if cfg.fallback != nil {
		opts.FallbackLimiter = cfg.fallback
	}
	mw, err := apikey.NewMiddleware(cfg.manager, opts)
	if err != nil {
		return nil, err
	}
	a := &app{m: cfg.manager, mw: mw, users: map[string][32]byte{}, log: cfg.log}
	for name, pw := range cfg.users {
		a.users[name] = sha256.Sum256([]byte(pw))
	}
	a.keys, err = keyshttp.New(cfg.manager, keyshttp.Options{
		Owner:       a.user,
		Challenge:   `Basic realm="api-keys", charset="UTF-8"`,
		Plans:       slices.Sorted(maps.Keys(plans())),
		DefaultPlan: "free",
		DefaultTTL:  defaultLifetime,
		Logger:      cfg.log,
	})
	if err != nil {
		return nil, err
	}
	// The self-service keys page, for the same users, with the same hook.
	a.page, err = keyspage.New(cfg.manager, keyspage.Options{
		Owner:     a.user,
		Challenge: `Basic realm="api-keys", charset="UTF-8"`,
		Scopes:    []string{"read", "write"},
		Plans:     slices.Sorted(maps.Keys(plans())),
		Lifetimes: []time.Duration{defaultLifetime, 30 * 24 * time.Hour, 365 * 24 * time.Hour},
		Logger:    cfg.log,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })

	// The management API for the current user's keys, and its OpenAPI
	// document (served without credentials).
	mux.Handle("/api-keys", a.keys)
	mux.Handle("/api-keys/", a.keys)
	mux.Handle("GET /openapi.json", a.keys)
	// The self-service page for the same keys.
	mux.Handle("/keys/", a.page)

	// /protected checks the key but spends nothing; /data spends the
	// owner's plan, and only once the key is authorized (the scope check
	// comes before Limit).
	mux.Handle("GET /protected", a.mw.Handler(http.HandlerFunc(a.protected)))
	mux.Handle("GET /data", a.mw.Handler(a.mw.Limit(http.HandlerFunc(a.getData))))
	mux.Handle("POST /data", a.mw.Handler(a.mw.RequireScopes("write")(a.mw.Limit(http.HandlerFunc(a.postData)))))
	return mux
}

// errBadUser refuses a management request without valid user credentials.
var errBadUser = errors.New("invalid user credentials")

// user authenticates the management API's caller with HTTP Basic and names
// them as the owner of the keys they manage.
func (a *app) user(r *http.Request) (string, error) {
	name, pw, ok := r.BasicAuth()
	want, known := a.users[name]
	got := sha256.Sum256([]byte(pw))
	if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !known {
		return "", errBadUser
	}
	return name, nil
}

func (a *app) protected(w http.ResponseWriter, r *http.Request) {
	k := apikey.FromContext(r.Context())
	writeJSON(w, http.StatusOK, map[string]string{"message": "Hello " + k.Owner, "key_id": k.ID, "key_name": k.Name})
}

func (a *app) getData(w http.ResponseWriter, r *http.Request) {
	k := apikey.FromContext(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"data": []int{1, 2, 3}, "plan": k.Plan})
}

func (a *app) postData(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusCreated, map[string]string{"status": "stored"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
