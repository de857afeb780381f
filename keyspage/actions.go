package keyspage

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/selfservice"
)

// create issues a key from the create form and shows its token once.
func (p *Page) create(w http.ResponseWriter, r *http.Request, owner string) {
	f := createForm{
		Name:       strings.TrimSpace(r.PostForm.Get("name")),
		Scopes:     r.PostForm["scope"],
		Lifetime:   r.PostForm.Get("expires"),
		AllowedIPs: strings.TrimSpace(r.PostForm.Get("allowed_ips")),
	}
	if err := fields(r, "name", "scope", "expires", "allowed_ips"); err != nil {
		p.fail(w, r, owner, "created", err)
		return
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
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	lifetime, ok := pick(p.lifetimes, f.Lifetime)
	if !ok {
		invalid("Choose an expiry from the list.")
		return
	}
	ips, msg := parseIPs(f.AllowedIPs)
	if msg != "" {
		invalid(msg)
		return
	}
	c := selfservice.Create{Name: f.Name, Scopes: scopes, TTL: lifetime, Fields: []string{selfservice.FieldName, selfservice.FieldExpiresAt}}
	if len(scopes) > 0 {
		c.Fields = append(c.Fields, selfservice.FieldScopes)
	}
	if len(ips) > 0 {
		c.Fields, c.AllowedIPs = append(c.Fields, selfservice.FieldAllowedIPs), ips
	}
	token, k, err := p.policy.Create(r.Context(), owner, c)
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
	case len(name) > 256:
		return "The name is too long: at most 100 characters, fewer with emoji or other characters that take much space."
	}
	return ""
}

// rename sets the name of a key.
func (p *Page) rename(w http.ResponseWriter, r *http.Request, owner string) {
	if err := fields(r, "id", "name"); err != nil {
		p.fail(w, r, owner, "renamed", err)
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if msg := checkName(name); msg != "" {
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: msg})
		return
	}
	c := selfservice.Change{Fields: []string{selfservice.FieldName}, Name: name}
	if _, err := p.policy.Update(r.Context(), owner, r.PostForm.Get("id"), c); err != nil {
		p.fail(w, r, owner, "renamed", err)
		return
	}
	seeOther(w, "./?done=renamed")
}

// parseIPs reads the IP ranges of a form field: CIDR ranges or single
// addresses separated by commas, spaces or line breaks. It returns what is
// wrong with them, or "".
func parseIPs(s string) ([]netip.Prefix, string) {
	list := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(list) > apikey.MaxAllowedIPs {
		return nil, "At most " + strconv.Itoa(apikey.MaxAllowedIPs) + " IP ranges."
	}
	ips, err := ipallow.Parse(list...)
	if err != nil {
		return nil, "Allowed IP ranges: " + strings.TrimPrefix(err.Error(), ipallow.ErrInvalidRange.Error()+": ") +
			". Write ranges such as 203.0.113.0/24 or single addresses, separated by commas."
	}
	return ips, ""
}

// restrict sets the IP ranges a key may be used from; none lifts the
// key's own restriction.
func (p *Page) restrict(w http.ResponseWriter, r *http.Request, owner string) {
	if err := fields(r, "id", "allowed_ips"); err != nil {
		p.fail(w, r, owner, "restricted", err)
		return
	}
	ips, msg := parseIPs(r.PostForm.Get("allowed_ips"))
	if msg != "" {
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: msg})
		return
	}
	c := selfservice.Change{Fields: []string{selfservice.FieldAllowedIPs}, AllowedIPs: ips}
	if _, err := p.policy.Update(r.Context(), owner, r.PostForm.Get("id"), c); err != nil {
		p.fail(w, r, owner, "restricted", err)
		return
	}
	seeOther(w, "./?done=restricted")
}

// rotate replaces a key with a successor and shows the successor's token
// once; the old key keeps working for the chosen grace period.
func (p *Page) rotate(w http.ResponseWriter, r *http.Request, owner string) {
	if err := fields(r, "id", "grace"); err != nil {
		p.fail(w, r, owner, "rotated", err)
		return
	}
	grace, ok := pick(p.graces, r.PostForm.Get("grace"))
	if !ok {
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: "Choose a grace period from the list."})
		return
	}
	rot, err := p.policy.Rotate(r.Context(), owner, r.PostForm.Get("id"), grace)
	if err != nil {
		p.fail(w, r, owner, "rotated", err)
		return
	}
	prev, succ := rot.Previous, rot.Key
	note := "The old key " + prev.Hint + " stopped working."
	if now := p.m.Now(); prev.ExpiresAt.After(now) {
		note = "The old key " + prev.Hint + " keeps working until " + prev.ExpiresAt.UTC().Format("2006-01-02 15:04 UTC") +
			" (" + relative(prev.ExpiresAt, now) + "): replace it everywhere before then."
	}
	p.list(w, r, owner, http.StatusOK, &view{
		Message: "The key “" + succ.Name + "” was rotated.",
		Token:   &once{Token: rot.Token, Name: succ.Name, Hint: succ.Hint, Note: note},
	})
}

// pause pauses a key.
func (p *Page) pause(w http.ResponseWriter, r *http.Request, owner string) {
	p.state(w, r, owner, "paused", p.policy.Pause)
}

// resume lifts the pause of a key.
func (p *Page) resume(w http.ResponseWriter, r *http.Request, owner string) {
	p.state(w, r, owner, "resumed", p.policy.Resume)
}

func (p *Page) state(w http.ResponseWriter, r *http.Request, owner, done string, change func(ctx context.Context, owner, id string) (*apikey.Key, error)) {
	if err := fields(r, "id"); err != nil {
		p.fail(w, r, owner, done, err)
		return
	}
	if _, err := change(r.Context(), owner, r.PostForm.Get("id")); err != nil {
		p.fail(w, r, owner, done, err)
		return
	}
	seeOther(w, "./?done="+done)
}

// confirmRevoke asks whether to revoke the key named in the query, or its
// whole chain.
func (p *Page) confirmRevoke(w http.ResponseWriter, r *http.Request, owner string, chain bool) {
	if err := r.ParseForm(); err != nil {
		p.list(w, r, owner, http.StatusBadRequest, &view{Error: "The address could not be read."})
		return
	}
	k, ok := p.owned(w, r, owner, "revoked")
	if !ok {
		return
	}
	c := rowOf(k, p.m.Now(), false)
	p.render(w, http.StatusOK, &view{Confirm: &confirm{row: c, Chain: chain}})
}

// revoke revokes a key once the revocation is confirmed; without
// confirm=yes it asks first.
func (p *Page) revoke(w http.ResponseWriter, r *http.Request, owner string) {
	p.revokeKeys(w, r, owner, false)
}

// revokeChain revokes a key and every key of its rotation chain once the
// revocation is confirmed; without confirm=yes it asks first.
func (p *Page) revokeChain(w http.ResponseWriter, r *http.Request, owner string) {
	p.revokeKeys(w, r, owner, true)
}

func (p *Page) revokeKeys(w http.ResponseWriter, r *http.Request, owner string, chain bool) {
	if err := fields(r, "id", "confirm"); err != nil {
		p.fail(w, r, owner, "revoked", err)
		return
	}
	k, ok := p.owned(w, r, owner, "revoked")
	if !ok {
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		c := rowOf(k, p.m.Now(), false)
		p.render(w, http.StatusOK, &view{Confirm: &confirm{row: c, Chain: chain}})
		return
	}
	done := "revoked"
	var err error
	if chain {
		done = "chain-revoked"
		_, err = p.policy.RevokeChain(r.Context(), owner, k.ID)
	} else {
		err = p.policy.Revoke(r.Context(), owner, k.ID)
	}
	if err != nil {
		p.fail(w, r, owner, "revoked", err)
		return
	}
	seeOther(w, "./?done="+done)
}
