package keyshttp

import (
	"context"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gokeys/apikey"
)

// create serves POST /api-keys.
func (h *Handler) create(w http.ResponseWriter, r *http.Request, owner string) {
	var req createRequest
	if err := h.decode(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	p, f := h.issueParams(r, owner, &req)
	if f != nil {
		h.fail(w, r, f)
		return
	}
	if h.maxKeys != nil {
		if max := h.maxKeys(r, owner); max > 0 {
			mu := h.ownerLock(owner)
			mu.Lock()
			defer mu.Unlock()
			n, err := h.usable(r, owner)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			if n >= max {
				writeProblem(w, http.StatusConflict, fmt.Sprintf("You already have %d usable keys, the most allowed; revoke one before creating another.", n), "")
				return
			}
		}
	}
	token, k, err := h.m.Issue(r.Context(), p)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, createdView{keyView: view(k), Key: token, Note: tokenNote})
}

// issueParams checks a creation request and translates it.
func (h *Handler) issueParams(r *http.Request, owner string, req *createRequest) (apikey.IssueParams, *fieldError) {
	p := apikey.IssueParams{Owner: owner, Name: req.Name.v, Scopes: req.Scopes.v, Metadata: req.Metadata.v, Plan: h.plan}
	if f := checkText("name", p.Name, apikey.MaxNameLength); f != nil {
		return p, f
	}
	if f := h.checkScopes(r, owner, p.Scopes); f != nil {
		return p, f
	}
	if req.Plan.set && !req.Plan.null {
		if f := checkPlan(req.Plan.v); f != nil {
			return p, f
		}
		p.Plan = req.Plan.v
	}
	if p.Plan != "" {
		if f := h.planAllowed(r, owner, p.Plan); f != nil {
			return p, f
		}
	}
	if f := checkMetadata(p.Metadata); f != nil {
		return p, f
	}
	switch {
	case req.ExpiresAt.set && !req.ExpiresAt.null:
		if f := checkExpiry(req.ExpiresAt.v, h.m.Now()); f != nil {
			return p, f
		}
		p.ExpiresAt = req.ExpiresAt.v
	case req.TTLSeconds.set && !req.TTLSeconds.null:
		if n := req.TTLSeconds.v; n < 1 || n > maxTTLSeconds {
			return p, badField("ttl_seconds", fmt.Sprintf("ttl_seconds must be between 1 and %d.", maxTTLSeconds))
		}
		p.TTL = time.Duration(req.TTLSeconds.v) * time.Second
	case req.ExpiresInDays.set && !req.ExpiresInDays.null:
		if n := req.ExpiresInDays.v; n < 1 || n > maxExpiresInDays {
			return p, badField("expires_in_days", fmt.Sprintf("expires_in_days must be between 1 and %d.", maxExpiresInDays))
		}
		p.TTL = time.Duration(req.ExpiresInDays.v) * 24 * time.Hour
	default:
		p.TTL = h.ttl
	}
	if req.Credits.set && !req.Credits.null {
		if f := checkCredits(req.Credits.v); f != nil {
			return p, f
		}
		p.Limits = setCredits(nil, req.Credits.v)
	}
	return p, nil
}

// ownerLock returns the lock that serializes owner's creations while
// MaxKeys is checked.
func (h *Handler) ownerLock(owner string) *sync.Mutex {
	return &h.locks[maphash.String(h.seed, owner)%uint64(len(h.locks))]
}

// usable counts owner's keys that are neither revoked nor expired.
func (h *Handler) usable(r *http.Request, owner string) (int, error) {
	now := h.m.Now()
	n := 0
	for opts := (apikey.ListOptions{Limit: apikey.MaxListLimit}); ; {
		page, err := h.m.List(r.Context(), owner, opts)
		if err != nil {
			return 0, err
		}
		for _, k := range page {
			if !k.Revoked(now) && !k.Expired(now) {
				n++
			}
		}
		if len(page) < opts.PageSize() {
			return n, nil
		}
		opts.After = page[len(page)-1].ID
	}
}

// list serves GET /api-keys.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, owner string) {
	q := r.URL.Query()
	limit := apikey.ListOptions{}.PageSize() // the default page
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > apikey.MaxListLimit {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer between 1 and %d.", apikey.MaxListLimit), "limit")
			return
		}
		limit = n
	}
	after := q.Get("after")
	if after != "" && !validID(after) {
		writeProblem(w, http.StatusBadRequest, "after must be the id of the last key of the previous page (the next cursor).", "after")
		return
	}
	// Ask for one more than a page, to know whether there is a next one.
	ask := min(limit+1, apikey.MaxListLimit)
	page, err := h.m.List(r.Context(), owner, apikey.ListOptions{After: after, Limit: ask})
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
		next := page[len(page)-1].ID
		out.Next = &next
		v := url.Values{"limit": {strconv.Itoa(limit)}, "after": {next}}
		w.Header().Set("Link", "<?"+v.Encode()+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, out)
}

// get serves GET /api-keys/{id}.
func (h *Handler) get(w http.ResponseWriter, r *http.Request, owner string, k *apikey.Key) {
	writeJSON(w, http.StatusOK, view(k))
}

// patch serves PATCH /api-keys/{id}.
func (h *Handler) patch(w http.ResponseWriter, r *http.Request, owner string, k *apikey.Key) {
	var req patchRequest
	if err := h.decode(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if f := h.checkPatch(r, owner, &req); f != nil {
		h.fail(w, r, f)
		return
	}
	if !req.Name.set && !req.Scopes.set && !req.Plan.set && !req.Metadata.set && !req.ExpiresAt.set && !req.Credits.set {
		writeJSON(w, http.StatusOK, view(k))
		return
	}
	updated, err := h.m.Update(r.Context(), k.ID, func(k *apikey.Key) error {
		if k.Owner != owner {
			return errNotOwned
		}
		if req.ExpiresAt.set && k.RotatedTo != "" {
			return &fieldError{status: http.StatusConflict, field: "expires_at", detail: "The key has been rotated: its expiry is the end of its grace period and cannot change."}
		}
		if req.Name.set {
			k.Name = req.Name.v
		}
		if req.Scopes.set {
			k.Scopes = slices.Clone(req.Scopes.v)
		}
		if req.Plan.set {
			k.Plan = h.plan
			if !req.Plan.null {
				k.Plan = req.Plan.v
			}
		}
		if req.Metadata.set {
			k.Metadata = req.Metadata.v
		}
		if req.ExpiresAt.set {
			k.ExpiresAt = time.Time{}
			if !req.ExpiresAt.null {
				k.ExpiresAt = req.ExpiresAt.v.UTC().Truncate(time.Microsecond)
			}
		}
		if req.Credits.set {
			n := int64(-1)
			if !req.Credits.null {
				n = req.Credits.v
			}
			k.Limits = setCredits(k.Limits, n)
		}
		return nil
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(updated))
}

// checkPatch checks the members of a patch that are set.
func (h *Handler) checkPatch(r *http.Request, owner string, req *patchRequest) *fieldError {
	if req.Name.set {
		if f := checkText("name", req.Name.v, apikey.MaxNameLength); f != nil {
			return f
		}
	}
	if req.Scopes.set {
		if f := h.checkScopes(r, owner, req.Scopes.v); f != nil {
			return f
		}
	}
	if req.Plan.set && !req.Plan.null {
		if f := h.planAllowed(r, owner, req.Plan.v); f != nil {
			return f
		}
	}
	if req.Metadata.set {
		if f := checkMetadata(req.Metadata.v); f != nil {
			return f
		}
	}
	if req.ExpiresAt.set && !req.ExpiresAt.null {
		if f := checkExpiry(req.ExpiresAt.v, h.m.Now()); f != nil {
			return f
		}
	}
	if req.Credits.set && !req.Credits.null {
		if f := checkCredits(req.Credits.v); f != nil {
			return f
		}
	}
	return nil
}

// rotate serves POST /api-keys/{id}/rotate.
func (h *Handler) rotate(w http.ResponseWriter, r *http.Request, owner string, k *apikey.Key) {
	var req rotateRequest
	if err := h.decode(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	grace := time.Duration(req.GraceSeconds.v) * time.Second
	if req.GraceSeconds.v < 0 || req.GraceSeconds.v > int64(h.maxGrace/time.Second) {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("grace_seconds must be between 0 and %d.", int64(h.maxGrace/time.Second)), "grace_seconds")
		return
	}
	rot, err := h.m.Rotate(r.Context(), k.ID, grace)
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

// disable serves POST /api-keys/{id}/disable.
func (h *Handler) disable(w http.ResponseWriter, r *http.Request, owner string, k *apikey.Key) {
	h.state(w, r, h.m.Disable, k)
}

// enable serves POST /api-keys/{id}/enable.
func (h *Handler) enable(w http.ResponseWriter, r *http.Request, owner string, k *apikey.Key) {
	h.state(w, r, h.m.Enable, k)
}

func (h *Handler) state(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, id string) (*apikey.Key, error), k *apikey.Key) {
	if err := h.decode(w, r, &struct{}{}); err != nil {
		h.fail(w, r, err)
		return
	}
	updated, err := change(r.Context(), k.ID)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(updated))
}

// revoke serves DELETE /api-keys/{id}.
func (h *Handler) revoke(w http.ResponseWriter, r *http.Request, owner string, k *apikey.Key) {
	if err := h.m.Revoke(r.Context(), k.ID); err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// planNames lists Plans in order.
func (h *Handler) planNames() []string {
	names := make([]string, 0, len(h.plans))
	for p := range h.plans {
		names = append(names, p)
	}
	sort.Strings(names)
	return names
}
