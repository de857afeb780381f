// Package keyspage serves a self-service "API keys" page that a service
// mounts next to its own pages, for its signed-in users. The page shows a
// table of the user's keys, newest first and a page at a time. Plain HTML
// forms create, rename, restrict to IP ranges, rotate, pause, resume and
// revoke them (one key or a whole rotation chain). What a user may do is decided by a
// selfservice.Policy, the same one the management API (keyshttp) uses. It
// uses the standard library only.
//
//	policy, err := selfservice.New(manager, selfservice.Options{Scopes: []string{"read", "write"}})
//	if err != nil { ... }
//	page, err := keyspage.New(manager, keyspage.Options{
//		Owner:  currentUser, // the same hook as keyshttp.Options.Owner
//		Policy: policy,
//	})
//	if err != nil { ... }
//	mux.Handle("/keys/", requireSignIn(page))
//
// The page works without JavaScript, since every action is a form post.
// The only script is a few lines, allowed by its hash in the
// Content-Security-Policy. It adds a copy button beside a new token. A new
// token is rendered in the response to the form post that created it,
// with a Cache-Control of no-store. It is never stored, put in a URL or
// shown again. The script turns that response into a plain view of the
// page, so that a reload does not post the form again.
//
// Each request reads at most one page of keys from the store (PageSize
// keys, 50 by default). Revoked and expired keys are left out unless the
// user asks for them, and older keys are a link away.
//
// When the store keeps usage (usage.Store), the page shows the owner's
// requests of the last 30 UTC days. A bar chart shows those allowed and
// those limited (429) per day, drawn on the server as inline SVG. It draws
// the plan's daily quota as a line when Options.DailyQuota says it. A
// table shows the same numbers, and a sparkline sits beside each key. The
// page reads them with one Manager.Usage call for the owner and one per
// key shown.
//
// Every response carries a strict Content-Security-Policy (no source but
// the page's own inline style and script, by hash). It also carries
// frame-ancestors 'none' and an X-Frame-Options of DENY. Every form post
// must come from the page's own origin. http.CrossOriginProtection refuses
// cross-origin posts. A post that carries neither Sec-Fetch-Site nor
// Origin, so that its origin cannot be told, is refused as well. Every key
// id in a form is checked against the signed-in owner. Another owner's key
// answers 404 like an unknown one.
// A form field the page does not offer (a plan, credits, anything else) is
// refused with 403 naming it.
package keyspage

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/selfservice"
)

// Options configures a Page. Owner is required. Every other field has a
// safe default.
type Options struct {
	// Owner returns the signed-in user whose keys the page shows and
	// manages. It is the same hook as the management JSON API's, so a
	// service passes one function to both. An error or an empty owner
	// answers 401. The service's own sign-in (a session, HTTP Basic) runs
	// before the page and decides who the user is. Required.
	Owner func(*http.Request) (string, error)

	// Policy decides what the user may do, and which scopes the create form
	// offers (those granted to him). Pass the same one to keyshttp. When nil,
	// it is selfservice.New(m, selfservice.Options{}), which offers no scopes
	// beyond a customer's ceiling and keys that live at most 366 days. It must
	// act through the Page's Manager.
	Policy *selfservice.Policy

	// Challenge, if set, is the WWW-Authenticate header of a 401, e.g.
	// `Basic realm="api-keys"`, so that a browser asks for credentials.
	// None is sent when empty.
	Challenge string

	// Lifetimes are the expiry choices of the create form, the first one
	// preselected. Each is positive and at most the policy's MaxLifetime.
	// The default is 90 days, 30 days and 1 year, those within MaxLifetime
	// (MaxLifetime itself if none is).
	Lifetimes []time.Duration

	// Graces are the grace periods offered when rotating a key, the first
	// one preselected. A grace period is how long the old key keeps
	// working beside its successor. 0 stops it at once. Each is at most the
	// policy's MaxGrace. The default is 1 day, 1 hour, 7 days and none.
	Graces []time.Duration

	// PageSize is how many keys a page shows, 50 when 0, at most 500.
	PageSize int

	// Title is the page's heading, "API keys" when empty.
	Title string

	// TrustedOrigins are origins, besides the page's own, whose form
	// posts are accepted (for example "https://console.example.com" when
	// a proxy rewrites the Host header). See
	// http.CrossOriginProtection.AddTrustedOrigin.
	TrustedOrigins []string

	// DailyQuota, if set, returns the daily quota of customer's plan, in
	// requests, and whether he has one. The usage chart draws it as a
	// line. The chart counts requests, not their cost, so give a quota
	// that counts requests (a plan's limits.Quota with Window limits.Day
	// when each request costs 1). Nil draws no line.
	DailyQuota func(ctx context.Context, customer string) (int64, bool)

	// Logger, if set, logs failures of the key store. Nil logs nothing.
	Logger *slog.Logger
}

const (
	day = 24 * time.Hour
	// MaxNameLength is the longest key name the page accepts, in
	// characters.
	MaxNameLength = 100
	maxForm       = 64 << 10
	// defaultPageSize and maxPageSize bound Options.PageSize.
	defaultPageSize = 50
	maxPageSize     = 500
)

//go:embed page.html
var pageHTML string

//go:embed page.css
var pageCSS string

//go:embed page.js
var pageJS string

// Page is the http.Handler of the keys page. Build it with New. It is safe
// for concurrent use.
//
// It serves the routes below under the path it is mounted at, with or
// without http.StripPrefix. The page's URL ends in "/" and every link in
// it is relative.
//
//	GET  .../               the page: ?after= an older page, ?all=1 with revoked and expired keys
//	POST .../create         issue a key; the response shows its token once
//	POST .../rename         set a key's name
//	POST .../ips            set the IP ranges a key may be used from
//	POST .../rotate         rotate a key with the chosen grace period; the
//	                        response shows the successor's token once
//	POST .../pause          pause a key
//	POST .../resume         lift the pause (never a suspension by the service)
//	GET  .../revoke         ask for confirmation
//	POST .../revoke         revoke a key (with confirm=yes)
//	GET  .../revoke-chain   ask for confirmation
//	POST .../revoke-chain   revoke a key and its whole rotation chain (with confirm=yes)
type Page struct {
	m         *apikey.Manager
	policy    *selfservice.Policy
	owner     func(*http.Request) (string, error)
	challenge string
	lifetimes []time.Duration
	graces    []time.Duration
	pageSize  int
	title     string
	quota     func(context.Context, string) (int64, bool)
	log       *slog.Logger
	tmpl      *template.Template
	csp       string
	cop       *http.CrossOriginProtection
}

// New returns the page for m. It returns an error wrapping
// apikey.ErrInvalidOptions for a nil Manager, a nil Owner or a Policy over
// another Manager. So do a lifetime that is not positive or exceeds the
// policy's MaxLifetime, and a grace period that is negative or exceeds its
// MaxGrace. So do a negative or too large PageSize and a malformed trusted
// origin.
func New(m *apikey.Manager, opts Options) (*Page, error) {
	switch {
	case m == nil:
		return nil, fmt.Errorf("%w: keyspage: nil Manager", apikey.ErrInvalidOptions)
	case opts.Owner == nil:
		return nil, fmt.Errorf("%w: keyspage: Owner is required", apikey.ErrInvalidOptions)
	case opts.Policy != nil && opts.Policy.Manager() != m:
		return nil, fmt.Errorf("%w: keyspage: the Policy acts through another Manager", apikey.ErrInvalidOptions)
	case opts.PageSize < 0 || opts.PageSize > maxPageSize:
		return nil, fmt.Errorf("%w: keyspage: PageSize must be between 1 and %d", apikey.ErrInvalidOptions, maxPageSize)
	}
	p := &Page{
		m: m, policy: opts.Policy, owner: opts.Owner, challenge: opts.Challenge, title: opts.Title, log: opts.Logger,
		quota:     opts.DailyQuota,
		lifetimes: append([]time.Duration(nil), opts.Lifetimes...),
		graces:    append([]time.Duration(nil), opts.Graces...),
		pageSize:  opts.PageSize,
	}
	if p.policy == nil {
		var err error
		if p.policy, err = selfservice.New(m, selfservice.Options{}); err != nil {
			return nil, err
		}
	}
	if p.title == "" {
		p.title = "API keys"
	}
	if p.pageSize == 0 {
		p.pageSize = defaultPageSize
	}
	maxLife, maxGrace := p.policy.MaxLifetime(), p.policy.MaxGrace()
	if len(p.lifetimes) == 0 {
		for _, d := range []time.Duration{90 * day, 30 * day, 365 * day} {
			if d <= maxLife {
				p.lifetimes = append(p.lifetimes, d)
			}
		}
		if len(p.lifetimes) == 0 {
			p.lifetimes = []time.Duration{maxLife}
		}
	}
	if len(p.graces) == 0 {
		for _, d := range []time.Duration{day, time.Hour, 7 * day, 0} {
			if d <= maxGrace {
				p.graces = append(p.graces, d)
			}
		}
	}
	for _, d := range p.lifetimes {
		if d <= 0 || d > maxLife {
			return nil, fmt.Errorf("%w: keyspage: lifetime %v is not between 0 and the policy's MaxLifetime (%v)", apikey.ErrInvalidOptions, d, maxLife)
		}
	}
	for _, d := range p.graces {
		if d < 0 || d > maxGrace {
			return nil, fmt.Errorf("%w: keyspage: grace period %v is not between 0 and the policy's MaxGrace (%v)", apikey.ErrInvalidOptions, d, maxGrace)
		}
	}
	p.cop = http.NewCrossOriginProtection()
	for _, o := range opts.TrustedOrigins {
		if err := p.cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("%w: keyspage: %w", apikey.ErrInvalidOptions, err)
		}
	}
	p.cop.SetDenyHandler(http.HandlerFunc(p.crossOrigin))
	var err error
	p.tmpl, err = template.New("page").Funcs(template.FuncMap{
		"css": func() template.CSS { return template.CSS(pageCSS) },
		"js":  func() template.JS { return template.JS(pageJS) },
	}).Parse(pageHTML)
	if err != nil {
		return nil, err
	}
	p.csp = "default-src 'none'; style-src " + hash(pageCSS) + "; script-src " + hash(pageJS) +
		"; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	return p, nil
}

// hash is the CSP source expression of an inline element's content.
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// ServeHTTP serves the page and its form posts.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")

	action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	post := p.post(action)
	confirm := action == "revoke" || action == "revoke-chain"
	if action != "" && post == nil {
		p.render(w, http.StatusNotFound, &view{Error: "There is no such page."})
		return
	}
	if r.Method == http.MethodPost {
		// Refused before anything else, even the owner, is looked at.
		if err := p.cop.Check(r); err != nil {
			p.crossOrigin(w, r)
			return
		}
		if r.Header.Get("Sec-Fetch-Site") == "" && r.Header.Get("Origin") == "" {
			p.crossOrigin(w, r)
			return
		}
	}
	owner, err := p.owner(r)
	if err != nil || owner == "" {
		if p.challenge != "" {
			h.Set("WWW-Authenticate", p.challenge)
		}
		p.render(w, http.StatusUnauthorized, &view{Error: "Sign in to manage your API keys."})
		return
	}
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case get && action == "":
		p.list(w, r, owner, http.StatusOK, &view{Message: message(r.URL.Query().Get("done"))})
	case get && confirm:
		p.confirmRevoke(w, r, owner, action == "revoke-chain")
	case get:
		// A form's URL opened directly, or reloaded: show the page.
		seeOther(w, "./")
	case r.Method == http.MethodPost && post != nil:
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			p.list(w, r, owner, http.StatusBadRequest, &view{Error: "The form could not be read."})
			return
		}
		post(w, r, owner)
	default:
		h.Set("Allow", "GET, HEAD, POST")
		if action == "" {
			h.Set("Allow", "GET, HEAD")
		}
		p.render(w, http.StatusMethodNotAllowed, &view{Error: "That method is not allowed here."})
	}
}

// post returns the handler of the form post named by the last segment of
// its path, or nil.
func (p *Page) post(action string) func(http.ResponseWriter, *http.Request, string) {
	switch action {
	case "create":
		return p.create
	case "rename":
		return p.rename
	case "ips":
		return p.restrict
	case "rotate":
		return p.rotate
	case "pause":
		return p.pause
	case "resume":
		return p.resume
	case "revoke":
		return p.revoke
	case "revoke-chain":
		return p.revokeChain
	}
	return nil
}

// message is the note shown after a redirect, by its done parameter.
func message(done string) string {
	switch done {
	case "renamed":
		return "The key was renamed."
	case "restricted":
		return "The key's IP ranges were changed."
	case "paused":
		return "The key was paused: it is refused until you resume it."
	case "resumed":
		return "The key was resumed: it works again."
	case "revoked":
		return "The key was revoked: it is refused from now on, for good."
	case "chain-revoked":
		return "The key and every key of its rotation chain were revoked: they are refused from now on, for good."
	}
	return ""
}

// seeOther redirects to a URL relative to the request's, so that the page
// works wherever it is mounted.
func seeOther(w http.ResponseWriter, url string) {
	w.Header().Set("Location", url)
	w.WriteHeader(http.StatusSeeOther)
}

// crossOrigin answers a form post that did not come from the page's origin.
func (p *Page) crossOrigin(w http.ResponseWriter, r *http.Request) {
	p.render(w, http.StatusForbidden, &view{Error: "This form was not sent from this site, so it was refused. Open the page again and retry."})
}

// fail answers a failed call of the policy on the page, with a fixed
// message.
func (p *Page) fail(w http.ResponseWriter, r *http.Request, owner, op string, err error) {
	var forbidden *selfservice.FieldError
	switch {
	case errors.As(err, &forbidden):
		p.list(w, r, owner, http.StatusForbidden, &view{Error: "You may not set " + forbidden.Field + ": " + forbidden.Reason + "."})
	case errors.Is(err, apikey.ErrSuspended):
		p.list(w, r, owner, http.StatusForbidden, &view{Error: "Your account is suspended: you may revoke your keys, nothing else."})
	case errors.Is(err, apikey.ErrTooManyKeys):
		p.list(w, r, owner, http.StatusConflict, &view{Error: "You have the most keys allowed: revoke one before creating another."})
	case errors.Is(err, apikey.ErrNotFound):
		p.list(w, r, owner, http.StatusNotFound, &view{Error: "There is no such key."})
	case errors.Is(err, apikey.ErrRevoked), errors.Is(err, apikey.ErrRotated), errors.Is(err, apikey.ErrExpired):
		p.list(w, r, owner, http.StatusConflict, &view{Error: "The key cannot be " + op + ": it is revoked, expired or already rotated."})
	case errors.Is(err, apikey.ErrConflict):
		p.list(w, r, owner, http.StatusConflict, &view{Error: "The key was changing at the same moment, so it was not " + op + ". Try again."})
	case errors.Is(err, apikey.ErrInvalidInput), errors.Is(err, apikey.ErrInvalidOptions):
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: "The key cannot be " + op + " with these settings."})
	default:
		if p.log != nil {
			p.log.ErrorContext(r.Context(), "keyspage: key store failed", "op", op, "error", err)
		}
		w.Header().Set("Retry-After", "5")
		p.render(w, http.StatusServiceUnavailable, &view{Error: "The key store is unavailable. Try again in a moment."})
	}
}

// fields refuses a form that carries a field other than those named: a
// field the page does not offer is never silently ignored.
func fields(r *http.Request, names ...string) error {
	for name := range r.PostForm {
		if !slices.Contains(names, name) {
			return &selfservice.FieldError{Field: name, Reason: "the form has no such field"}
		}
	}
	return nil
}

// owned returns the owner's key named by the form's id field; another
// owner's key is not found, like an unknown one.
func (p *Page) owned(w http.ResponseWriter, r *http.Request, owner, op string) (*apikey.Key, bool) {
	id := r.Form.Get("id")
	if id == "" {
		p.fail(w, r, owner, op, apikey.ErrNotFound)
		return nil, false
	}
	k, err := p.policy.Get(r.Context(), owner, id)
	if err != nil {
		p.fail(w, r, owner, op, err)
		return nil, false
	}
	return k, true
}
