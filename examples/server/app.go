package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gokeys/apikey"
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
		Plans:                  plans(),
		LegacyRateLimitHeaders: true,
		Logger:                 cfg.log,
	}
	if cfg.fallback != nil {
		opts.OnLimiterFailure, opts.FallbackLimiter = apikey.FailFallback, cfg.fallback
	}
	mw, err := apikey.NewMiddleware(cfg.manager, opts)
	if err != nil {
		return nil, err
	}
	a := &app{m: cfg.manager, mw: mw, users: map[string][32]byte{}, log: cfg.log}
	for name, pw := range cfg.users {
		a.users[name] = sha256.Sum256([]byte(pw))
	}
	return a, nil
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })

	mux.Handle("POST /api-keys", a.user(a.createKey))
	mux.Handle("GET /api-keys", a.user(a.listKeys))
	mux.Handle("POST /api-keys/{id}/rotate", a.user(a.rotateKey))
	mux.Handle("DELETE /api-keys/{id}", a.user(a.revokeKey))

	mux.Handle("GET /protected", a.mw.Handler(http.HandlerFunc(a.protected)))
	mux.Handle("GET /data", a.mw.Handler(http.HandlerFunc(a.getData)))
	mux.Handle("POST /data", a.mw.Handler(a.mw.RequireScopes("write")(http.HandlerFunc(a.postData))))
	return mux
}

// user authenticates the management API's caller with HTTP Basic.
func (a *app) user(next func(w http.ResponseWriter, r *http.Request, user string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, pw, ok := r.BasicAuth()
		want, known := a.users[name]
		got := sha256.Sum256([]byte(pw))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !known {
			w.Header().Set("WWW-Authenticate", `Basic realm="api-keys", charset="UTF-8"`)
			problem(w, http.StatusUnauthorized, "Valid user credentials are required.")
			return
		}
		next(w, r, name)
	})
}

type createRequest struct {
	Name          string     `json:"name"`
	Scopes        []string   `json:"scopes"`
	Plan          string     `json:"plan"`
	ExpiresInDays *int       `json:"expires_in_days"`
	ExpiresAt     *time.Time `json:"expires_at"`
}

type keyView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Hint       string     `json:"hint"`
	Scopes     []string   `json:"scopes"`
	Plan       string     `json:"plan"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

func view(k *apikey.Key) keyView {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return keyView{ID: k.ID, Name: k.Name, Hint: k.Hint, Scopes: scopes, Plan: k.Plan, CreatedAt: k.CreatedAt,
		ExpiresAt: optTime(k.ExpiresAt), LastUsedAt: optTime(k.LastUsedAt), RevokedAt: optTime(k.RevokedAt)}
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (a *app) createKey(w http.ResponseWriter, r *http.Request, user string) {
	var req createRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Plan == "" {
		req.Plan = "free"
	}
	if _, ok := plans()[req.Plan]; !ok {
		problem(w, http.StatusBadRequest, fmt.Sprintf("Unknown plan %q: use \"free\" or \"pro\".", req.Plan))
		return
	}
	p := apikey.IssueParams{Name: req.Name, Owner: user, Scopes: req.Scopes, Plan: req.Plan, TTL: defaultLifetime}
	switch {
	case req.ExpiresAt != nil:
		p.ExpiresAt = *req.ExpiresAt
	case req.ExpiresInDays != nil:
		if *req.ExpiresInDays <= 0 || *req.ExpiresInDays > 3650 {
			problem(w, http.StatusBadRequest, "expires_in_days must be between 1 and 3650.")
			return
		}
		p.TTL = time.Duration(*req.ExpiresInDays) * 24 * time.Hour
	}
	token, k, err := a.m.Issue(r.Context(), p)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	v := view(k)
	writeJSON(w, http.StatusCreated, struct {
		ID        string     `json:"id"`
		Key       string     `json:"key"`
		Name      string     `json:"name"`
		Hint      string     `json:"hint"`
		Scopes    []string   `json:"scopes"`
		Plan      string     `json:"plan"`
		CreatedAt time.Time  `json:"created_at"`
		ExpiresAt *time.Time `json:"expires_at"`
		Note      string     `json:"note"`
	}{v.ID, token, v.Name, v.Hint, v.Scopes, v.Plan, v.CreatedAt, v.ExpiresAt,
		"Save this key now; it won't be shown again."})
}

func (a *app) listKeys(w http.ResponseWriter, r *http.Request, user string) {
	keys := []keyView{}
	for opts := (apikey.ListOptions{Limit: apikey.MaxListLimit}); ; {
		page, err := a.m.List(r.Context(), user, opts)
		if err != nil {
			a.fail(w, err)
			return
		}
		for _, k := range page {
			keys = append(keys, view(k))
		}
		if len(page) < opts.PageSize() {
			break
		}
		opts.After = page[len(page)-1].ID
	}
	slices.SortFunc(keys, func(x, y keyView) int { return x.CreatedAt.Compare(y.CreatedAt) })
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

// owned returns the caller's key named in the path, or answers 404 (for an
// unknown id and for another user's key alike).
func (a *app) owned(w http.ResponseWriter, r *http.Request, user string) (*apikey.Key, bool) {
	k, err := a.m.Get(r.Context(), r.PathValue("id"))
	if err == nil && k.Owner != user {
		err = apikey.ErrNotFound
	}
	if err != nil {
		a.fail(w, err)
		return nil, false
	}
	return k, true
}

func (a *app) rotateKey(w http.ResponseWriter, r *http.Request, user string) {
	var req struct {
		GraceSeconds int64 `json:"grace_seconds"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.GraceSeconds < 0 || req.GraceSeconds > 30*86400 {
		problem(w, http.StatusBadRequest, "grace_seconds must be between 0 and 2592000.")
		return
	}
	old, ok := a.owned(w, r, user)
	if !ok {
		return
	}
	token, succ, err := a.m.Rotate(r.Context(), old.ID, time.Duration(req.GraceSeconds)*time.Second)
	if err != nil {
		a.fail(w, err)
		return
	}
	updated, err := a.m.Get(r.Context(), old.ID)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"id": succ.ID, "key": token, "old_key_id": old.ID,
		"old_key_expires_at": updated.ExpiresAt, "status": "rotated",
	})
}

func (a *app) revokeKey(w http.ResponseWriter, r *http.Request, user string) {
	k, ok := a.owned(w, r, user)
	if !ok {
		return
	}
	if err := a.m.Revoke(r.Context(), k.ID); err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
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

// fail answers a management error with problem+json; it never shows a
// dependency's message.
func (a *app) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, apikey.ErrNotFound):
		problem(w, http.StatusNotFound, "No such key.")
	case errors.Is(err, apikey.ErrRevoked), errors.Is(err, apikey.ErrRotated), errors.Is(err, apikey.ErrExpired):
		problem(w, http.StatusConflict, "The key cannot be rotated: it is revoked, expired or already rotated.")
	case errors.Is(err, apikey.ErrInvalidOptions):
		problem(w, http.StatusBadRequest, "Invalid key parameters: scopes must be non-empty tokens and expires_at in the future.")
	default:
		if a.log != nil {
			a.log.Error("request failed", "error", err)
		}
		w.Header().Set("Retry-After", "5")
		problem(w, http.StatusServiceUnavailable, "The key store is unavailable.")
	}
}

// decode reads an optional JSON body into v, refusing unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return true // no body: every field is optional
	}
	if err == nil && dec.More() {
		err = errors.New("trailing data")
	}
	if err != nil {
		msg := "The body must be one JSON object with known fields."
		if strings.Contains(err.Error(), "unknown field") {
			msg = "Unknown field in the body: " + strings.TrimPrefix(err.Error(), "json: unknown field ") + "."
		}
		problem(w, http.StatusBadRequest, msg)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail})
}
