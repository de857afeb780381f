package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/adminhttp"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/keyspage"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/selfservice"
)

// plans are the article's tiers: free is 100 requests per UTC day; pro is
// 10,000 per UTC day and at most 100 per second. A customer's plan is the
// operator's to set (PUT /admin/customers/{id}); free is the default.
func plans() limits.Plans {
	return limits.Plans{
		"free": {limits.Quota("daily", 100, limits.Day)},
		"pro":  {limits.Quota("daily", 10_000, limits.Day), limits.Rate("per-second", 100, time.Second, 0)},
	}
}

const defaultLifetime = 90 * 24 * time.Hour

// app is the example service. It has a management API for the current
// user's keys (HTTP Basic) and routes protected by API keys. With operator
// credentials, it also has the operator API over customers.
type app struct {
	m         *apikey.Manager
	mw        *apikey.Middleware
	limits    apikey.LimitOptions // mw's: the RPC surfaces spend with the same
	keys      *keyshttp.Handler
	page      *keyspage.Page
	admin     *adminhttp.Handler  // nil without operator credentials
	leaks     *leaks              // POST /github/secret-scanning, POST /credentials/revoke
	users     map[string][32]byte // name -> SHA-256 of the password
	operators map[string][32]byte // the same for the operator API
	log       *slog.Logger
	proxies   *ipallow.Proxies
}

type appConfig struct {
	manager  *apikey.Manager
	limiter  limits.Limiter
	fallback limits.Limiter    // used when limiter fails; nil: fail closed
	users    map[string]string // name -> password of the users
	operator map[string]string // the operator's name -> password; none: no operator API
	log      *slog.Logger
	proxies  *ipallow.Proxies // -trusted-proxies; nil: the client is the peer
	keysURL  string           // GitHub's public keys for secret scanning alerts; GitHub's when empty
}

func newApp(ctx context.Context, cfg appConfig) (*app, error) {
	if err := defineCustomers(ctx, cfg.manager); err != nil {
		return nil, err
	}
	opts := apikey.MiddlewareOptions{
		Realm:           "example",
		AllowQuery:      true, // as in the article; see the README for why it is off by default
		HideCredentials: true,
		Limits:          apikey.LimitOptions{Limiter: cfg.limiter, LegacyHeaders: true},
		Logger:          cfg.log,
		TrustedProxies:  cfg.proxies, // for keys restricted to IP ranges
	}
	if cfg.fallback != nil {
		opts.Limits.Fallback = cfg.fallback
	}
	mw, err := apikey.NewMiddleware(cfg.manager, opts)
	if err != nil {
		return nil, err
	}
	a := &app{m: cfg.manager, mw: mw, limits: opts.Limits, users: hashed(cfg.users), log: cfg.log, proxies: cfg.proxies}
	if a.leaks, err = newLeaks(cfg.manager, cfg.keysURL, cfg.proxies, cfg.log); err != nil {
		return nil, err
	}
	// What a user may do to his own keys: never choose a plan, credits or
	// limits; those are his customer record's, set by the operator.
	policy, err := selfservice.New(cfg.manager, selfservice.Options{
		Scopes:          []string{"read", "write"},
		DefaultLifetime: defaultLifetime,
	})
	if err != nil {
		return nil, err
	}
	a.keys, err = keyshttp.New(cfg.manager, keyshttp.Options{
		Owner:     a.user,
		Policy:    policy,
		Challenge: `Basic realm="api-keys", charset="UTF-8"`,
		Logger:    cfg.log,
	})
	if err != nil {
		return nil, err
	}
	// The self-service keys page, for the same users, with the same hook
	// and policy. It offers no plan: the customer's plan applies.
	a.page, err = keyspage.New(cfg.manager, keyspage.Options{
		Owner:     a.user,
		Policy:    policy,
		Challenge: `Basic realm="api-keys", charset="UTF-8"`,
		Lifetimes: []time.Duration{defaultLifetime, 30 * 24 * time.Hour, 365 * 24 * time.Hour},
		Logger:    cfg.log,
		DailyQuota: func(ctx context.Context, customer string) (int64, bool) { // the chart's quota line
			c, err := cfg.manager.Customer(ctx, customer)
			if err != nil {
				return 0, false
			}
			for _, l := range plans()[cmp.Or(c.Plan, "free")] {
				if l.Kind == limits.KindQuota && l.Window == limits.Day {
					return l.Count, true
				}
			}
			return 0, false
		},
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.operator) > 0 {
		// The operator API checks no credentials itself: a.operatorOnly
		// does, with the operator's own.
		a.operators = hashed(cfg.operator)
		a.admin, err = adminhttp.New(cfg.manager, adminhttp.Options{Middleware: mw, Logger: cfg.log})
		if err != nil {
			return nil, err
		}
	}
	return a, nil
}

func hashed(users map[string]string) map[string][32]byte {
	out := make(map[string][32]byte, len(users))
	for name, pw := range users {
		out[name] = sha256.Sum256([]byte(pw))
	}
	return out
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })

	// The management API for the current user's keys, and its OpenAPI
	// document (served without credentials).
	mux.Handle("/api-keys", a.keys)
	mux.Handle("/api-keys/", a.keys)
	mux.Handle("GET /openapi.json", a.keys)
	// What the user's keys consumed, summed or key by key (GET
	// /api-keys/{id}/usage, above).
	mux.Handle("GET /usage", a.keys)
	// The self-service page for the same keys.
	mux.Handle("/keys/", a.page)
	// The operator API, only with operator credentials (-admin); else
	// /admin/ is 404.
	if a.admin != nil {
		mux.Handle("/admin/", a.operatorOnly(a.admin))
	}

	// /protected checks the key but spends nothing; /data spends the
	// owner's plan, and only once the key is authorized (the scope check
	// comes before Limit).
	mux.Handle("GET /protected", a.mw.Handler(http.HandlerFunc(a.protected)))
	mux.Handle("GET /data", a.mw.Handler(a.mw.Limit(http.HandlerFunc(a.getData))))
	mux.Handle("POST /data", a.mw.Handler(a.mw.RequireScopes("write")(a.mw.Limit(http.HandlerFunc(a.postData)))))

	// Leaked keys: GitHub's alerts and anyone's reports revoke them.
	a.leaks.mount(mux)
	return mux
}

// errBadUser refuses a management request without valid user credentials.
var errBadUser = errors.New("invalid user credentials")

// user authenticates the management API's caller with HTTP Basic and names
// them as the owner of the keys they manage.
func (a *app) user(r *http.Request) (string, error) { return basicUser(r, a.users) }

// basicUser returns the name of r's HTTP Basic credentials if they are
// those of one of users.
func basicUser(r *http.Request, users map[string][32]byte) (string, error) {
	name, pw, ok := r.BasicAuth()
	want, known := users[name]
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

// getData answers for the key's customer; the limits his plan spent are
// in the RateLimit-Policy and RateLimit headers.
func (a *app) getData(w http.ResponseWriter, r *http.Request) {
	k := apikey.FromContext(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"data": []int{1, 2, 3}, "customer": k.Customer()})
}

func (a *app) postData(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusCreated, map[string]string{"status": "stored"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
