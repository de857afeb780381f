package adminhttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gokeys/apikey"
)

// customerID decodes and checks the {id} path segment: 1 to
// apikey.MaxOwnerLength bytes of UTF-8 text without control characters,
// as the Manager takes an owner.
func customerID(segment string) (string, error) {
	id, err := url.PathUnescape(segment)
	if err != nil || !utf8.ValidString(id) {
		return "", &apikey.InputError{Field: "id", Reason: "not a percent-encoded UTF-8 customer id"}
	}
	if id == "" || len(id) > apikey.MaxOwnerLength {
		return "", &apikey.InputError{Field: "id", Reason: fmt.Sprintf("must be 1 to %d bytes", apikey.MaxOwnerLength)}
	}
	for _, c := range id {
		if c < 0x20 || c >= 0x7f && c <= 0x9f {
			return "", &apikey.InputError{Field: "id", Reason: "contains a control character"}
		}
	}
	return id, nil
}

// list serves GET /admin/customers.
func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
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
	after := q.Get("after")
	if len(after) > apikey.MaxOwnerLength || !utf8.ValidString(after) {
		writeProblem(w, http.StatusBadRequest, "after must be the id of the last customer of the previous page (the next cursor).", "after")
		return
	}
	// Ask for one more than a page, to know whether there is a next one.
	ask := min(limit+1, apikey.MaxPageSize)
	page, err := h.m.Customers(r.Context(), after, ask)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	more := len(page) > limit || (ask == limit && len(page) == limit)
	if len(page) > limit {
		page = page[:limit]
	}
	out := listView{Customers: make([]customerView, 0, len(page))}
	for _, c := range page {
		out.Customers = append(out.Customers, view(c))
	}
	if more && len(page) > 0 {
		next := page[len(page)-1].ID
		out.Next = &next
	}
	writeJSON(w, http.StatusOK, out)
}

// get serves GET /admin/customers/{id}.
func (h *Handler) get(w http.ResponseWriter, r *http.Request, id string) {
	c, err := h.m.Customer(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(c.Revision))
	writeJSON(w, http.StatusOK, detailView{customerView: view(c), Balance: h.balance(r.Context(), c)})
}

// balance returns the state of c's limits without spending, or nil when
// it cannot be known.
func (h *Handler) balance(ctx context.Context, c *apikey.Customer) *balanceView {
	if h.mw == nil {
		return nil
	}
	res, err := h.mw.Balance(ctx, c.ID)
	if err != nil {
		if h.log != nil && !errors.Is(err, errors.ErrUnsupported) && ctx.Err() == nil {
			h.log.ErrorContext(ctx, "adminhttp: balance unavailable", "customer", c.ID, "error", err.Error())
		}
		return nil
	}
	return balanceOf(c, res)
}

// put serves PUT /admin/customers/{id}.
func (h *Handler) put(w http.ResponseWriter, r *http.Request, id string) {
	var req putRequest
	if err := h.decode(w, r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	ch, err := req.change()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	match, err := parseIfMatch(r.Header.Values("If-Match"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	c, err := h.m.SetCustomer(r.Context(), id, func(c *apikey.Customer) error {
		if match != nil && !match(c.Revision) {
			return errPrecondition
		}
		ch(c)
		return nil
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if h.log != nil {
		h.log.InfoContext(r.Context(), "adminhttp: customer changed", "customer", id,
			"fields", strings.Join(req.fields(), ","), "revision", c.Revision)
	}
	w.Header().Set("ETag", etag(c.Revision))
	writeJSON(w, http.StatusOK, view(c))
}

// errPrecondition reports an If-Match that the stored record does not
// match.
var errPrecondition = errors.New("adminhttp: the customer changed since it was read")

// etag is the entity tag of a record's revision.
func etag(rev int64) string { return `"` + strconv.FormatInt(rev, 10) + `"` }

// parseIfMatch returns a test of a record's revision against If-Match
// header values, or nil without one. "*" matches a stored record;
// otherwise each entity tag is a revision as ETag gives it. Weak tags
// never match (RFC 9110 compares If-Match strongly).
func parseIfMatch(values []string) (func(int64) bool, error) {
	if len(values) == 0 {
		return nil, nil
	}
	var revs []int64
	star := false
	for _, v := range values {
		for tag := range strings.SplitSeq(v, ",") {
			tag = strings.TrimSpace(tag)
			switch {
			case tag == "":
			case tag == "*":
				star = true
			case strings.HasPrefix(tag, `W/"`):
				// never matches
			case len(tag) >= 2 && tag[0] == '"' && tag[len(tag)-1] == '"':
				if n, err := strconv.ParseInt(tag[1:len(tag)-1], 10, 64); err == nil {
					revs = append(revs, n)
				}
			default:
				return nil, &apikey.InputError{Field: "If-Match", Reason: "not a list of entity tags"}
			}
		}
	}
	return func(rev int64) bool { return star && rev > 0 || slices.Contains(revs, rev) }, nil
}

// fields names the members a request sent, sorted.
func (req *putRequest) fields() []string {
	var out []string
	for name, set := range map[string]bool{
		"plan": req.Plan.set, "scopes": req.Scopes.set, "max_keys": req.MaxKeys.set, "limits": req.Limits.set,
		"credits": req.Credits.set, "suspended": req.Suspended.set, "metadata": req.Metadata.set,
		"allowed_ips": req.AllowedIPs.set,
	} {
		if set {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
