package apikey

import (
	"context"
	"log/slog"
	"sync"

	"github.com/gokeys/apikey/limits"
)

// planLimits is a plan's limits with what the request path needs precomputed.
type planLimits struct {
	limits []limits.Limit
	policy []string // the RateLimit-Policy value; nil when it depends on the date
}

// planSet decides which limits a request spends: those of its customer's
// plan, the customer's own and the key's own.
type planSet struct {
	byName  map[string]*planLimits // nil: no plans configured
	def     *planLimits            // DefaultPlan's, or nil
	unknown sync.Map               // plan names already logged as not configured
	log     *slog.Logger
}

// init compiles plans, def naming the default plan ("" for none).
func (ps *planSet) init(plans limits.Plans, def string, log *slog.Logger) {
	ps.log = log
	if plans == nil {
		return
	}
	ps.byName = make(map[string]*planLimits, len(plans))
	for name, ls := range plans {
		ps.byName[name] = &planLimits{limits: ls, policy: policyOf(ls)}
	}
	if def != "" {
		ps.def = ps.byName[def]
	}
}

// planOf returns the plan of a request of k whose customer record is c
// (nil without customer records), nil without plans.
func (ps *planSet) planOf(k *Key, c *Customer) (*planLimits, error) {
	if ps.byName == nil {
		return nil, nil
	}
	name := k.Plan // without customer records, or for a customer without one
	if c != nil && (c.Plan != "" || c.Revision != 0) {
		name = c.Plan
	}
	if p := ps.byName[name]; p != nil {
		return p, nil
	}
	if ps.def == nil {
		return nil, ErrUnknownPlan
	}
	return ps.def, nil
}

// limitsFor returns the plan (nil without plans) and the limits of a
// request of k whose customer record is c; they are the plan's limits
// themselves when neither the customer nor the key adds any. A plan that
// is not configured gives ErrUnknownPlan, logged once per plan.
func (ps *planSet) limitsFor(ctx context.Context, k *Key, c *Customer) (*planLimits, []limits.Limit, error) {
	p, err := ps.planOf(k, c)
	if err != nil {
		ps.logUnknown(ctx, k, c)
		return nil, nil, err
	}
	extra := c != nil && (len(c.Limits) > 0 || c.Credits > 0)
	if len(k.Limits) == 0 && !extra {
		if p == nil {
			return nil, nil, nil
		}
		return p, p.limits, nil
	}
	ls := make([]limits.Limit, 0, len(k.Limits)+8)
	line := lineage(k)
	for _, l := range k.Limits {
		l.Subject = line
		ls = append(ls, l)
	}
	if p != nil {
	plan:
		for _, l := range p.limits {
			if c != nil {
				for _, o := range c.Limits {
					if o.Name == l.Name {
						continue plan
					}
				}
				if c.Credits > 0 && l.Name == CreditsLimit {
					continue
				}
			}
			ls = append(ls, l)
		}
	}
	if c != nil {
		ls = append(ls, c.Limits...)
		if c.Credits > 0 {
			ls = append(ls, limits.Credits(CreditsLimit, c.Credits, limits.Never))
		}
	}
	return p, ls, nil
}

// policyFor returns the precomputed RateLimit-Policy of ls when ls are
// p's own limits, nil otherwise.
func (p *planLimits) policyFor(ls []limits.Limit) []string {
	if p != nil && len(ls) > 0 && len(p.limits) == len(ls) && &ls[0] == &p.limits[0] {
		return p.policy
	}
	return nil
}

// logUnknown logs, once per plan, that a request of k was refused for a
// plan that is not configured.
func (ps *planSet) logUnknown(ctx context.Context, k *Key, c *Customer) {
	name := k.Plan
	if c != nil {
		name = c.Plan
	}
	if _, logged := ps.unknown.LoadOrStore(name, true); !logged && ps.log != nil {
		ps.log.LogAttrs(ctx, slog.LevelError, "apikey: key refused: its customer's plan is not configured and there is no DefaultPlan",
			slog.String("plan", name), slog.String("key_id", k.ID), slog.String("customer", k.Customer()))
	}
}
