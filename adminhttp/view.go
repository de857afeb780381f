package adminhttp

import (
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// customerView is a customer record as the API shows it. Every member is
// always present. Scopes null means no ceiling, and unset times are null.
type customerView struct {
	ID        string            `json:"id"`
	Plan      string            `json:"plan"`
	Scopes    []string          `json:"scopes"`
	MaxKeys   int               `json:"max_keys"`
	Limits    []limitView       `json:"limits"`
	Credits   int64             `json:"credits"`
	Suspended bool              `json:"suspended"`
	Metadata  map[string]string `json:"metadata"`
	// AllowedIPs are the IP ranges (CIDR) the customer's keys may be used
	// from; empty: any address.
	AllowedIPs []string   `json:"allowed_ips"`
	CreatedAt  *time.Time `json:"created_at"`
	UpdatedAt  *time.Time `json:"updated_at"`
	Revision   int64      `json:"revision"`
}

// detailView is the answer to GET /admin/customers/{id}. It holds the
// record and the balance of its limits.
type detailView struct {
	customerView
	Balance *balanceView `json:"balance"`
}

// balanceView is the state of a customer's limits, read without
// spending.
type balanceView struct {
	// Allowed reports whether a request of the customer would pass now.
	Allowed bool `json:"allowed"`
	// Limit and Remaining are those of the tightest limit. They tell what it
	// admits now, before the next request. ResetSeconds is the time until it
	// would be whole again after one more request. Limit is null without any
	// limit.
	Limit        *string `json:"limit"`
	Remaining    int64   `json:"remaining"`
	ResetSeconds int64   `json:"reset_seconds"`
	// Credits is what remains now of the customer's credits grant, null
	// without one.
	Credits *int64 `json:"credits"`
}

// limitView is one limit granted to a customer, in limitRequest's shape.
type limitView struct {
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	Count         int64  `json:"count"`
	PeriodSeconds *int64 `json:"period_seconds,omitempty"`
	Burst         *int64 `json:"burst,omitempty"`
	Window        string `json:"window,omitempty"`
}

// listView is a page of customers.
type listView struct {
	Customers []customerView `json:"customers"`
	Next      *string        `json:"next"`
}

func view(c *apikey.Customer) customerView {
	v := customerView{
		ID: c.ID, Plan: c.Plan, Scopes: c.Scopes, MaxKeys: c.MaxKeys, Limits: limitViews(c.Limits),
		Credits: c.Credits, Suspended: c.Suspended, Metadata: c.Metadata,
		CreatedAt: optTime(c.CreatedAt), UpdatedAt: optTime(c.UpdatedAt), Revision: c.Revision,
	}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	v.AllowedIPs = make([]string, len(c.AllowedIPs))
	for i, p := range c.AllowedIPs {
		v.AllowedIPs[i] = p.String()
	}
	return v
}

func limitViews(ls []limits.Limit) []limitView {
	out := make([]limitView, 0, len(ls))
	for _, l := range ls {
		lv := limitView{Name: l.Name, Kind: l.Kind.String(), Count: l.Count}
		switch l.Kind {
		case limits.KindRate:
			p, b := int64(l.Period/time.Second), l.Burst
			if b == 0 {
				b = l.Count
			}
			lv.PeriodSeconds, lv.Burst = &p, &b
		case limits.KindQuota, limits.KindCredits:
			lv.Window = l.Window.String()
		}
		out = append(out, lv)
	}
	return out
}

// balanceOf reads the answer of Middleware.Balance for c: what each limit
// has left now. The credits grant is the last limit Balance reads when c
// has one (the plan's limits come first, then the grants).
func balanceOf(c *apikey.Customer, res limits.Result) *balanceView {
	b := &balanceView{Allowed: res.Allowed}
	if res.Limit.Name == "" { // no limits
		return b
	}
	name := res.Limit.Name
	b.Limit, b.Remaining, b.ResetSeconds = &name, res.Remaining, ceilSeconds(res.Reset)
	if c.Credits > 0 {
		n := res.Remaining // a single limit: the result is its state
		if len(res.States) > 0 {
			n = res.States[len(res.States)-1].Remaining
		}
		b.Credits = &n
	}
	return b
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
