package keyshttp

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/selfservice"
)

// create serves POST /api-keys.
func (h *Handler) create(w http.ResponseWriter, r *http.Request, owner string) {
	var req createRequest
	fields, err := h.decode(w, r, &req, createField)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	c, f := h.createParams(&req, fields)
	if f != nil {
		h.fail(w, r, f)
		return
	}
	token, k, err := h.p.Create(r.Context(), owner, c)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, createdView{keyView: view(k), Key: token, Note: tokenNote})
}

// createField maps a member of a creation request to the policy's field.
func createField(name string) error {
	switch name {
	case "ttl_seconds", "expires_in_days":
		name = selfservice.FieldExpiresAt
	}
	return selfservice.CheckFields(name)
}

// createParams checks a creation request and translates it.
func (h *Handler) createParams(req *createRequest, fields []string) (selfservice.Create, *fieldError) {
	c := selfservice.Create{Name: req.Name.v, Scopes: req.Scopes.v}
	for _, f := range fields {
		switch f {
		case "ttl_seconds", "expires_in_days":
			f = selfservice.FieldExpiresAt
		}
		c.Fields = append(c.Fields, f)
	}
	if f := checkText("name", c.Name, apikey.MaxNameLength); f != nil {
		return c, f
	}
	if f := checkScopes(c.Scopes); f != nil {
		return c, f
	}
	var f *fieldError
	if c.AllowedIPs, f = checkIPs(req.AllowedIPs.v); f != nil {
		return c, f
	}
	switch {
	case req.ExpiresAt.set && !req.ExpiresAt.null:
		if f := checkExpiry(req.ExpiresAt.v, h.m.Now()); f != nil {
			return c, f
		}
		c.ExpiresAt = req.ExpiresAt.v
	case req.TTLSeconds.set && !req.TTLSeconds.null:
		if n := req.TTLSeconds.v; n < 1 || n > maxTTLSeconds {
			return c, badField("ttl_seconds", fmt.Sprintf("ttl_seconds must be between 1 and %d.", maxTTLSeconds))
		}
		c.TTL = time.Duration(req.TTLSeconds.v) * time.Second
		if c.TTL > h.p.MaxLifetime() {
			return c, badField("ttl_seconds", fmt.Sprintf("ttl_seconds must be at most %d, the longest life of a key.", int64(h.p.MaxLifetime()/time.Second)))
		}
	case req.ExpiresInDays.set && !req.ExpiresInDays.null:
		if n := req.ExpiresInDays.v; n < 1 || n > maxExpiresInDays {
			return c, badField("expires_in_days", fmt.Sprintf("expires_in_days must be between 1 and %d.", maxExpiresInDays))
		}
		c.TTL = time.Duration(req.ExpiresInDays.v) * 24 * time.Hour
		if c.TTL > h.p.MaxLifetime() {
			return c, badField("expires_in_days", fmt.Sprintf("expires_in_days must be at most %d, the longest life of a key.", int64(h.p.MaxLifetime()/(24*time.Hour))))
		}
	}
	return c, nil
}

// list serves GET /api-keys: a page of the caller's keys, newest first.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, owner string) {
	q := r.URL.Query()
	limit := apikey.ListOptions{}.PageSize() // the default page
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > apikey.MaxPageSize {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer between 1 and %d.", apikey.MaxPageSize), "limit")
			return
		}
		limit = n
	}
	after, err := selfservice.ParseCursor(q.Get("after"))
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "after must be the next cursor of the previous page.", "after")
		return
	}
	usable := false
	if s := q.Get("usable"); s != "" {
		if usable, err = strconv.ParseBool(s); err != nil {
			writeProblem(w, http.StatusBadRequest, "usable must be true or false.", "usable")
			return
		}
	}
	// Ask for one more than a page, to know whether there is a next one.
	ask := min(limit+1, apikey.MaxPageSize)
	opts := apikey.ListOptions{After: after, Size: ask}
	if usable {
		opts.UsableAt = h.m.Now()
	}
	page, err := h.p.List(r.Context(), owner, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := listView{Keys: make([]keyView, 0, min(len(page), limit))}
	more := len(page) > limit || (ask == limit && len(page) == limit)
	if len(page) > limit {
		page = page[:limit]
	}
	for _, k := range page {
		out.Keys = append(out.Keys, view(k))
	}
	if more && len(page) > 0 {
		next := selfservice.FormatCursor(page[len(page)-1].Cursor())
		out.Next = &next
		v := url.Values{"limit": {strconv.Itoa(limit)}, "after": {next}}
		if usable {
			v.Set("usable", "true")
		}
		w.Header().Set("Link", "<?"+v.Encode()+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, out)
}

// get serves GET /api-keys/{id}.
func (h *Handler) get(w http.ResponseWriter, r *http.Request, owner, id string) {
	k, err := h.p.Get(r.Context(), owner, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(k))
}

// patch serves PATCH /api-keys/{id}.
func (h *Handler) patch(w http.ResponseWriter, r *http.Request, owner, id string) {
	var req patchRequest
	fields, err := h.decode(w, r, &req, func(name string) error { return selfservice.CheckFields(name) })
	if err != nil {
		h.fail(w, r, err)
		return
	}
	c := selfservice.Change{Fields: fields, Name: req.Name.v, Scopes: req.Scopes.v}
	if f := checkText("name", c.Name, apikey.MaxNameLength); f != nil {
		h.fail(w, r, f)
		return
	}
	if f := checkScopes(c.Scopes); f != nil {
		h.fail(w, r, f)
		return
	}
	var f *fieldError
	if c.AllowedIPs, f = checkIPs(req.AllowedIPs.v); f != nil {
		h.fail(w, r, f)
		return
	}
	if req.ExpiresAt.set && !req.ExpiresAt.null {
		if f := checkExpiry(req.ExpiresAt.v, h.m.Now()); f != nil {
			h.fail(w, r, f)
			return
		}
		c.ExpiresAt = req.ExpiresAt.v
	}
	k, err := h.p.Update(r.Context(), owner, id, c)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(k))
}

// rotate serves POST /api-keys/{id}/rotate.
func (h *Handler) rotate(w http.ResponseWriter, r *http.Request, owner, id string) {
	var req rotateRequest
	if _, err := h.decode(w, r, &req, only("grace_seconds")); err != nil {
		h.fail(w, r, err)
		return
	}
	maxGrace := int64(h.p.MaxGrace() / time.Second)
	if req.GraceSeconds.v < 0 || req.GraceSeconds.v > maxGrace {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("grace_seconds must be between 0 and %d.", maxGrace), "grace_seconds")
		return
	}
	rot, err := h.p.Rotate(r.Context(), owner, id, time.Duration(req.GraceSeconds.v)*time.Second)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	token, succ, prev := rot.Token, rot.Key, rot.Previous
	writeJSON(w, http.StatusOK, rotatedView{
		createdView: createdView{keyView: view(succ), Key: token, Note: tokenNote},
		Status:      "rotated", OldKeyID: prev.ID, OldKeyExpiresAt: optTime(prev.ExpiresAt), Previous: view(prev),
	})
}

// pause serves POST /api-keys/{id}/pause (and /disable).
func (h *Handler) pause(w http.ResponseWriter, r *http.Request, owner, id string) {
	h.state(w, r, owner, id, h.p.Pause)
}

// resume serves POST /api-keys/{id}/resume (and /enable).
func (h *Handler) resume(w http.ResponseWriter, r *http.Request, owner, id string) {
	h.state(w, r, owner, id, h.p.Resume)
}

func (h *Handler) state(w http.ResponseWriter, r *http.Request, owner, id string, change func(ctx context.Context, owner, id string) (*apikey.Key, error)) {
	if _, err := h.decode(w, r, &struct{}{}, only()); err != nil {
		h.fail(w, r, err)
		return
	}
	k, err := change(r.Context(), owner, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(k))
}

// revoke serves DELETE /api-keys/{id}.
func (h *Handler) revoke(w http.ResponseWriter, r *http.Request, owner, id string) {
	if err := h.p.Revoke(r.Context(), owner, id); err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// revokeChain serves POST /api-keys/{id}/revoke-chain.
func (h *Handler) revokeChain(w http.ResponseWriter, r *http.Request, owner, id string) {
	if _, err := h.decode(w, r, &struct{}{}, only()); err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.p.RevokeChain(r.Context(), owner, id); err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
