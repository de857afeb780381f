package keyspage

import (
	"bytes"
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gokeys/apikey"
)

// view is what the template renders.
type view struct {
	Title   string
	Error   string // shown in an alert
	Message string // shown in a status note
	Token   *once  // a token to show this one time
	Confirm *row   // a key to confirm the revocation of
	Full    bool   // whether the table and the create form are shown
	Keys    []row

	Form      createForm
	Scopes    []choice
	Plans     []choice
	Lifetimes []choice
	Graces    []choice
}

// once is a new token, shown in the response that made it and never again.
type once struct {
	Token, Name, Hint, Note string
}

// createForm holds what the user entered, to fill the form again after an
// error.
type createForm struct {
	Name     string
	Scopes   []string
	Plan     string
	Lifetime string
}

type choice struct {
	Value, Label string
	Selected     bool
}

// row is one key in the table.
type row struct {
	ID, Name, Hint, Plan      string
	Scopes                    []string
	Created, LastUsed, Expiry when
	// State is the CSS class and StateText the words: active, grace
	// ("in grace until" Until), disabled, revoked, expired.
	State, StateText string
	Until            *when

	CanRename, CanRotate, CanDisable, CanEnable, CanRevoke bool
}

// Actions reports whether any action is possible on the key.
func (r row) Actions() bool {
	return r.CanRename || r.CanRotate || r.CanDisable || r.CanEnable || r.CanRevoke
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

func rowOf(k *apikey.Key, now time.Time) row {
	r := row{
		ID: k.ID, Name: k.Name, Hint: k.Hint, Plan: k.Plan, Scopes: k.Scopes,
		Created:  at(k.CreatedAt, now, "—"),
		LastUsed: at(k.LastUsedAt, now, "never"),
		Expiry:   at(k.ExpiresAt, now, "never"),
	}
	switch {
	case k.Revoked(now):
		r.State, r.StateText = "revoked", "revoked"
	case k.Expired(now):
		r.State, r.StateText = "expired", "expired"
	case k.Disabled:
		r.State, r.StateText = "disabled", "disabled"
		r.CanRename, r.CanEnable, r.CanRevoke = true, true, true
	case k.InGrace(now):
		until := at(k.ExpiresAt, now, "")
		r.State, r.StateText, r.Until = "grace", "in grace until", &until
		r.Until.Text = until.Exact
		r.CanRename, r.CanDisable, r.CanRevoke = true, true, true
	default:
		r.State, r.StateText = "active", "active"
		r.CanRename, r.CanRotate, r.CanDisable, r.CanRevoke = true, true, true, true
	}
	return r
}

// list renders the page with the owner's keys, newest first.
func (p *Page) list(w http.ResponseWriter, r *http.Request, owner string, status int, v *view) {
	var keys []*apikey.Key
	for opts := (apikey.ListOptions{Limit: apikey.MaxListLimit}); ; {
		page, err := p.m.List(r.Context(), owner, opts)
		if err != nil && v.Token != nil {
			// The key exists: its token is shown, if not the list.
			if p.log != nil {
				p.log.ErrorContext(r.Context(), "keyspage: key store failed", "op", "listed", "error", err)
			}
			v.Error = "Your keys cannot be listed right now; reload the page in a moment to see them."
			p.render(w, status, v)
			return
		}
		if err != nil {
			p.fail(w, r, owner, "listed", err)
			return
		}
		keys = append(keys, page...)
		if len(page) < opts.PageSize() {
			break
		}
		opts.After = page[len(page)-1].ID
	}
	slices.SortFunc(keys, func(a, b *apikey.Key) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	now := p.m.Now()
	v.Keys = make([]row, 0, len(keys))
	for _, k := range keys {
		v.Keys = append(v.Keys, rowOf(k, now))
	}
	v.Full = true
	p.fillForm(v)
	p.render(w, status, v)
}

// fillForm sets the choices of the create and rotate forms, keeping what
// the user entered in v.Form.
func (p *Page) fillForm(v *view) {
	f := v.Form
	for _, s := range p.scopes {
		v.Scopes = append(v.Scopes, choice{Value: s, Label: s, Selected: slices.Contains(f.Scopes, s)})
	}
	for i, s := range p.plans {
		v.Plans = append(v.Plans, choice{Value: s, Label: s, Selected: s == f.Plan || f.Plan == "" && i == 0})
	}
	for i, d := range p.lifetimes {
		label := "Never"
		if d > 0 {
			label = "In " + span(d)
		}
		value := seconds(d)
		v.Lifetimes = append(v.Lifetimes, choice{Value: value, Label: label, Selected: value == f.Lifetime || f.Lifetime == "" && i == 0})
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
