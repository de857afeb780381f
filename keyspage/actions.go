package keyspage

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gokeys/apikey"
)

// create issues a key from the create form and shows its token once.
func (p *Page) create(w http.ResponseWriter, r *http.Request, owner string) {
	f := createForm{
		Name:     strings.TrimSpace(r.PostForm.Get("name")),
		Scopes:   r.PostForm["scope"],
		Plan:     r.PostForm.Get("plan"),
		Lifetime: r.PostForm.Get("expires"),
	}
	invalid := func(msg string) {
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: msg, Form: f})
	}
	if msg := checkName(f.Name); msg != "" {
		invalid(msg)
		return
	}
	var scopes []string
	for _, s := range f.Scopes {
		if !slices.Contains(p.scopes, s) {
			invalid("Choose scopes from the list.")
			return
		}
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	if len(p.plans) == 0 && f.Plan != "" || len(p.plans) > 0 && !slices.Contains(p.plans, f.Plan) {
		invalid("Choose a plan from the list.")
		return
	}
	lifetime, ok := pick(p.lifetimes, f.Lifetime)
	if !ok {
		invalid("Choose an expiry from the list.")
		return
	}
	token, k, err := p.m.Issue(r.Context(), apikey.IssueParams{
		Name: f.Name, Owner: owner, Scopes: scopes, Plan: f.Plan, TTL: lifetime,
	})
	if err != nil {
		p.fail(w, r, owner, "created", err)
		return
	}
	p.list(w, r, owner, http.StatusCreated, &view{
		Message: "The key “" + k.Name + "” was created.",
		Token:   &once{Token: token, Name: k.Name, Hint: k.Hint},
	})
}

// checkName returns what is wrong with a key name, or "".
func checkName(name string) string {
	switch {
	case name == "":
		return "Give the key a name."
	case !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl):
		return "The name may not contain control characters."
	case utf8.RuneCountInString(name) > MaxNameLength:
		return "The name is too long: at most 100 characters."
	case len(name) > apikey.MaxNameLength:
		return "The name is too long: at most 100 characters, fewer with emoji or other characters that take much space."
	}
	return ""
}

// rename sets the name of a key.
func (p *Page) rename(w http.ResponseWriter, r *http.Request, owner string) {
	k, ok := p.owned(w, r, owner, "renamed")
	if !ok {
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if msg := checkName(name); msg != "" {
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: msg})
		return
	}
	if _, err := p.m.Update(r.Context(), k.ID, func(k *apikey.Key) error { k.Name = name; return nil }); err != nil {
		p.fail(w, r, owner, "renamed", err)
		return
	}
	seeOther(w, "./?done=renamed")
}

// rotate replaces a key with a successor and shows the successor's token
// once; the old key keeps working for the chosen grace period.
func (p *Page) rotate(w http.ResponseWriter, r *http.Request, owner string) {
	k, ok := p.owned(w, r, owner, "rotated")
	if !ok {
		return
	}
	grace, ok := pick(p.graces, r.PostForm.Get("grace"))
	if !ok {
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: "Choose a grace period from the list."})
		return
	}
	token, succ, until, err := p.rotateKey(r.Context(), k.ID, grace)
	if err != nil {
		p.fail(w, r, owner, "rotated", err)
		return
	}
	note := "The old key " + k.Hint + " stopped working."
	if now := p.m.Now(); until.After(now) {
		note = "The old key " + k.Hint + " keeps working until " + until.UTC().Format("2006-01-02 15:04 UTC") +
			" (" + relative(until, now) + "): replace it everywhere before then."
	}
	p.list(w, r, owner, http.StatusOK, &view{
		Message: "The key “" + succ.Name + "” was rotated.",
		Token:   &once{Token: token, Name: succ.Name, Hint: succ.Hint, Note: note},
	})
}

// rotateKey rotates the key id and returns the successor's token and
// record and when the old key stops working.
func (p *Page) rotateKey(ctx context.Context, id string, grace time.Duration) (string, *apikey.Key, time.Time, error) {
	rot, err := p.m.Rotate(ctx, id, grace)
	if err != nil {
		return "", nil, time.Time{}, err
	}
	return rot.Token, rot.Key, rot.Previous.ExpiresAt, nil
}

// disable suspends a key.
func (p *Page) disable(w http.ResponseWriter, r *http.Request, owner string) {
	k, ok := p.owned(w, r, owner, "disabled")
	if !ok {
		return
	}
	if _, err := p.m.Disable(r.Context(), k.ID); err != nil {
		p.fail(w, r, owner, "disabled", err)
		return
	}
	seeOther(w, "./?done=disabled")
}

// enable lifts the suspension of a key.
func (p *Page) enable(w http.ResponseWriter, r *http.Request, owner string) {
	k, ok := p.owned(w, r, owner, "enabled")
	if !ok {
		return
	}
	if _, err := p.m.Enable(r.Context(), k.ID); err != nil {
		p.fail(w, r, owner, "enabled", err)
		return
	}
	seeOther(w, "./?done=enabled")
}

// confirmRevoke asks whether to revoke the key named in the query.
func (p *Page) confirmRevoke(w http.ResponseWriter, r *http.Request, owner string) {
	if err := r.ParseForm(); err != nil {
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: "The address could not be read."})
		return
	}
	k, ok := p.owned(w, r, owner, "revoked")
	if !ok {
		return
	}
	c := rowOf(k, p.m.Now())
	p.render(w, http.StatusOK, &view{Confirm: &c})
}

// revoke revokes a key once the revocation is confirmed; without
// confirm=yes it asks first.
func (p *Page) revoke(w http.ResponseWriter, r *http.Request, owner string) {
	k, ok := p.owned(w, r, owner, "revoked")
	if !ok {
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		c := rowOf(k, p.m.Now())
		p.render(w, http.StatusOK, &view{Confirm: &c})
		return
	}
	if err := p.m.Revoke(r.Context(), k.ID); err != nil {
		p.fail(w, r, owner, "revoked", err)
		return
	}
	seeOther(w, "./?done=revoked")
}
