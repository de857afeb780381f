package keyspage

import (
	"bytes"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/selfservice"
)

// view is what the template renders.
type view struct {
	Title   string
	Error   string   // shown in an alert
	Message string   // shown in a status note
	Token   *once    // a token to show this one time
	Confirm *confirm // a key to confirm the revocation of
	Full    bool     // whether the table and the create form are shown
	Keys    []row

	// Suspended reports that the service suspended the user's account. He
	// may revoke his keys, nothing else.
	Suspended bool
	// All reports that revoked and expired keys are shown.
	All bool
	// Newest and Older link to the first page and to the next page of
	// older keys. Toggle shows or hides revoked and expired keys. Empty
	// when there is no such page.
	Newest, Older, Toggle string

	// Usage is the owner's usage of the last 30 days, nil when the store
	// keeps none. Sparks reports that the table has a column of
	// sparklines.
	Usage  *usageView
	Sparks bool

	Form      createForm
	Scopes    []choice
	Lifetimes []choice
	Graces    []choice
}

// once is a new token, shown in the response that made it and never again.
type once struct {
	Token, Name, Hint, Note string
}

// confirm is a revocation to confirm, of one key or of its whole chain.
type confirm struct {
	row
	Chain bool
}

// createForm holds what the user entered, to fill the form again after an
// error.
type createForm struct {
	Name       string
	Scopes     []string
	Lifetime   string
	AllowedIPs string
}

type choice struct {
	Value, Label string
	Selected     bool
}

// row is one key in the table.
type row struct {
	ID, Name, Hint, Plan string
	Scopes               []string
	// IPs are the key's own IP ranges, comma-separated; "" for none.
	IPs                       string
	Created, LastUsed, Expiry when
	// State is the CSS class and StateText the words. The states are
	// active, grace ("in grace until" Until), paused, disabled (by the
	// service), revoked (Until is when) and expired.
	State, StateText string
	Until            *when
	// Spark is the key's usage of the last 30 days, nil when it could
	// not be read.
	Spark *spark

	CanRename, CanRotate, CanPause, CanResume, CanRevoke, CanRevokeChain bool
}

// Actions reports whether any action is possible on the key.
func (r row) Actions() bool {
	return r.CanRename || r.CanRotate || r.CanPause || r.CanResume || r.CanRevoke || r.CanRevokeChain
}

// when is a time shown relative to now, with the exact time in a title.
type when struct {
	Zero             bool
	Text, Exact, ISO string
}

func at(t, now time.Time, zero string) when {
	if t.IsZero() {
		return when{Zero: true, Text: zero}
	}
	return when{
		Text:  relative(t, now),
		Exact: t.UTC().Format("2006-01-02 15:04:05 UTC"),
		ISO:   t.UTC().Format(time.RFC3339),
	}
}

// relative says how long ago or how far ahead t is: "3 minutes ago",
// "in 2 days", "just now".
func relative(t, now time.Time) string {
	d := now.Sub(t)
	ago := d >= 0
	if !ago {
		d = -d
	}
	if d < 45*time.Second {
		return "just now"
	}
	var n int64
	var unit string
	switch {
	case d < 45*time.Minute:
		n, unit = int64((d+30*time.Second)/time.Minute), "minute"
	case d < 36*time.Hour:
		n, unit = int64((d+30*time.Minute)/time.Hour), "hour"
	case d < 45*day:
		n, unit = int64((d+12*time.Hour)/day), "day"
	case d < 320*day:
		n, unit = int64((d+15*day)/(30*day)), "month"
	default:
		n, unit = int64((d+182*day)/(365*day)), "year"
	}
	s := strconv.FormatInt(n, 10) + " " + unit
	if n != 1 {
		s += "s"
	}
	if ago {
		return s + " ago"
	}
	return "in " + s
}

// span names a duration in words: "1 hour", "7 days", "90 minutes".
func span(d time.Duration) string {
	n, unit := int64(d/time.Minute), "minute"
	switch {
	case d%day == 0:
		n, unit = int64(d/day), "day"
	case d%time.Hour == 0:
		n, unit = int64(d/time.Hour), "hour"
	case d%time.Minute != 0:
		return d.String()
	}
	if n == 365 && unit == "day" {
		return "1 year"
	}
	s := strconv.FormatInt(n, 10) + " " + unit
	if n != 1 {
		s += "s"
	}
	return s
}

func seconds(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }

// pick returns the duration of ds whose seconds are value.
func pick(ds []time.Duration, value string) (time.Duration, bool) {
	for _, d := range ds {
		if seconds(d) == value {
			return d, true
		}
	}
	return 0, false
}

// rowOf shows k at now; a suspended owner may only revoke it.
func rowOf(k *apikey.Key, now time.Time, suspended bool) row {
	r := row{
		ID: k.ID, Name: k.Name, Hint: k.Hint, Plan: k.Plan, Scopes: k.Scopes, IPs: joinIPs(k.AllowedIPs),
		Created:  at(k.CreatedAt, now, "—"),
		LastUsed: at(k.LastUsedAt, now, "never"),
		Expiry:   at(k.ExpiresAt, now, "never"),
	}
	chain := k.RotatedFrom != "" || k.RotatedTo != ""
	switch {
	case k.Revoked():
		// A revoked key never expires any more: no expiry to show.
		revoked := at(k.RevokedAt, now, "")
		r.State, r.StateText, r.Until, r.Expiry = "revoked", "revoked", &revoked, when{Zero: true, Text: "—"}
	case k.Expired(now):
		r.State, r.StateText = "expired", "expired"
	case k.Disabled:
		r.State, r.StateText = "disabled", "disabled by the service"
		r.CanRename, r.CanRevoke, r.CanRevokeChain = true, true, chain
	case k.Paused:
		r.State, r.StateText = "paused", "paused"
		r.CanRename, r.CanResume, r.CanRevoke, r.CanRevokeChain = true, true, true, chain
	case k.InGrace(now):
		until := at(k.ExpiresAt, now, "")
		r.State, r.StateText, r.Until = "grace", "in grace until", &until
		r.Until.Text = until.Exact
		r.CanRename, r.CanPause, r.CanRevoke, r.CanRevokeChain = true, true, true, chain
	default:
		r.State, r.StateText = "active", "active"
		r.CanRename, r.CanRotate, r.CanPause, r.CanRevoke, r.CanRevokeChain = true, true, true, true, chain
	}
	if suspended {
		r.CanRename, r.CanRotate, r.CanPause, r.CanResume = false, false, false, false
	}
	return r
}

// joinIPs writes ranges as the IP ranges field takes them.
func joinIPs(ips []netip.Prefix) string {
	s := make([]string, len(ips))
	for i, p := range ips {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// list renders the page with one page of the owner's keys, newest first:
// the keys after the cursor in the query's after parameter, and only
// usable ones unless the query has all=1. It reads one page from the
// store, the owner's allowance, and usage: the owner's and each listed
// key's.
func (p *Page) list(w http.ResponseWriter, r *http.Request, owner string, status int, v *view) {
	q := r.URL.Query()
	v.All = q.Get("all") == "1"
	after, err := selfservice.ParseCursor(q.Get("after"))
	if err != nil {
		after, status, v.Error = apikey.Cursor{}, http.StatusBadRequest, "That page of keys does not exist: here are your newest keys."
	}
	ctx := r.Context()
	now := p.m.Now()
	a, err := p.policy.Allowance(ctx, owner)
	var keys []*apikey.Key
	if err == nil {
		opts := apikey.ListOptions{After: after, Size: p.pageSize + 1} // one more: is there an older page?
		if !v.All {
			opts.UsableAt = now
		}
		keys, err = p.policy.List(ctx, owner, opts)
	}
	if err != nil {
		if p.log != nil {
			p.log.ErrorContext(ctx, "keyspage: key store failed", "op", "listed", "error", err)
		}
		if v.Token != nil {
			// The key exists: its token is shown, if not the list.
			v.Error = "Your keys cannot be listed right now; reload the page in a moment to see them."
			p.render(w, status, v)
			return
		}
		w.Header().Set("Retry-After", "5")
		p.render(w, http.StatusServiceUnavailable, &view{Error: "The key store is unavailable. Try again in a moment."})
		return
	}
	more := len(keys) > p.pageSize
	keys = keys[:min(len(keys), p.pageSize)]
	v.Suspended = a.Suspended
	v.Keys = make([]row, 0, len(keys))
	for _, k := range keys {
		v.Keys = append(v.Keys, rowOf(k, now, a.Suspended))
	}
	link := func(after apikey.Cursor, all bool) string {
		u := url.Values{}
		if !after.IsZero() {
			u.Set("after", selfservice.FormatCursor(after))
		}
		if all {
			u.Set("all", "1")
		}
		if len(u) == 0 {
			return "./"
		}
		return "./?" + u.Encode()
	}
	if more {
		v.Older = link(keys[len(keys)-1].Cursor(), v.All)
	}
	if !after.IsZero() {
		v.Newest = link(apikey.Cursor{}, v.All)
	}
	v.Toggle = link(apikey.Cursor{}, !v.All)
	p.readUsage(ctx, owner, keys, now, v)
	v.Full = true
	p.fillForm(v, a.Scopes)
	p.render(w, status, v)
}

// fillForm sets the choices of the create and rotate forms, keeping what
// the user entered in v.Form; scopes are those the user may grant.
func (p *Page) fillForm(v *view, scopes []string) {
	f := v.Form
	for _, s := range scopes {
		v.Scopes = append(v.Scopes, choice{Value: s, Label: s, Selected: slices.Contains(f.Scopes, s)})
	}
	for i, d := range p.lifetimes {
		value := seconds(d)
		v.Lifetimes = append(v.Lifetimes, choice{Value: value, Label: "In " + span(d), Selected: value == f.Lifetime || f.Lifetime == "" && i == 0})
	}
	for i, d := range p.graces {
		label := "No: it stops at once"
		if d > 0 {
			label = "For " + span(d)
		}
		v.Graces = append(v.Graces, choice{Value: seconds(d), Label: label, Selected: i == 0})
	}
}

// render writes the page with status.
func (p *Page) render(w http.ResponseWriter, status int, v *view) {
	v.Title = p.title
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, v); err != nil {
		if p.log != nil {
			p.log.Error("keyspage: template failed", "error", err)
		}
		http.Error(w, "The page could not be shown.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
