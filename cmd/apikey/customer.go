package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// operatorCommand returns the flags and runner of the operator's
// subcommands (customer, purge, revoke-chain, usage), or false for another
// name.
func operatorCommand(name string, fs *flag.FlagSet) (runner, bool) {
	switch name {
	case "customer":
		return customerCommand(fs), true
	case "purge":
		return purgeCommand(fs), true
	case "revoke-chain":
		return runRevokeChain, true
	case "usage":
		return usageCommand(fs), true
	case "webhook":
		return webhookCommand(fs), true
	}
	return nil, false
}

// customerJSON is a customer record as the CLI prints it, in the shape of
// adminhttp's answers. Scopes null means no ceiling.
type customerJSON struct {
	ID        string            `json:"id"`
	Plan      string            `json:"plan"`
	Scopes    []string          `json:"scopes"`
	MaxKeys   int               `json:"max_keys"`
	Limits    []grantJSON       `json:"limits"`
	Credits   int64             `json:"credits"`
	Suspended bool              `json:"suspended"`
	Metadata  map[string]string `json:"metadata"`
	// AllowedIPs are the customer's IP ranges; empty: any address.
	AllowedIPs []string   `json:"allowed_ips"`
	CreatedAt  *time.Time `json:"created_at"`
	UpdatedAt  *time.Time `json:"updated_at"`
	Revision   int64      `json:"revision"`
}

// grantJSON is a limit granted to a customer.
type grantJSON struct {
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	Count         int64  `json:"count"`
	PeriodSeconds *int64 `json:"period_seconds,omitempty"`
	Burst         *int64 `json:"burst,omitempty"`
	Window        string `json:"window,omitempty"`
}

func customerView(c *apikey.Customer) customerJSON {
	v := customerJSON{ID: c.ID, Plan: c.Plan, Scopes: c.Scopes, MaxKeys: c.MaxKeys, Limits: []grantJSON{},
		Credits: c.Credits, Suspended: c.Suspended, Metadata: c.Metadata, AllowedIPs: ipStrings(c.AllowedIPs),
		CreatedAt: optTime(c.CreatedAt), UpdatedAt: optTime(c.UpdatedAt), Revision: c.Revision}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	for _, l := range c.Limits {
		g := grantJSON{Name: l.Name, Kind: l.Kind.String(), Count: l.Count}
		switch l.Kind {
		case limits.KindRate:
			p, b := int64(l.Period/time.Second), l.Burst
			if b == 0 {
				b = l.Count
			}
			g.PeriodSeconds, g.Burst = &p, &b
		default:
			g.Window = l.Window.String()
		}
		v.Limits = append(v.Limits, g)
	}
	return v
}

// customerRows fills a table with one customer, a field a row.
func customerRows(t *table, c *apikey.Customer) {
	t.row("CUSTOMER", c.ID)
	plan := c.Plan
	if plan == "" {
		plan = "(default)"
	}
	t.row("PLAN", plan)
	t.row("SCOPES", scopeCeiling(c.Scopes))
	keys := "no cap"
	if c.MaxKeys > 0 {
		keys = strconv.Itoa(c.MaxKeys)
	}
	t.row("MAX KEYS", keys)
	t.row("CREDITS", strconv.FormatInt(c.Credits, 10))
	for _, l := range c.Limits {
		t.row("LIMIT", grantSpec(l))
	}
	t.row("SUSPENDED", map[bool]string{true: "yes", false: "no"}[c.Suspended])
	ips := "(any address)"
	if len(c.AllowedIPs) > 0 {
		ips = strings.Join(ipStrings(c.AllowedIPs), " ")
	}
	t.row("ALLOWED IPS", ips)
	if len(c.Metadata) > 0 {
		var kv []string
		for _, n := range slices.Sorted(maps.Keys(c.Metadata)) {
			kv = append(kv, n+"="+c.Metadata[n])
		}
		t.row("METADATA", strings.Join(kv, " "))
	}
	t.row("CREATED", when(c.CreatedAt))
	t.row("UPDATED", when(c.UpdatedAt))
	t.row("REVISION", strconv.FormatInt(c.Revision, 10))
}

// scopeCeiling describes a scope ceiling for people.
func scopeCeiling(scopes []string) string {
	switch {
	case scopes == nil:
		return "(unrestricted)"
	case len(scopes) == 0:
		return "(none)"
	}
	return strings.Join(scopes, " ")
}

// printCustomers prints customers, one block each (table) or JSON (one
// object for one customer, else an array).
func (s *session) printCustomers(cs []*apikey.Customer) error {
	if s.cfg.json {
		views := make([]customerJSON, 0, len(cs))
		for _, c := range cs {
			views = append(views, customerView(c))
		}
		if len(views) == 1 {
			return s.print(views[0], nil)
		}
		return s.print(views, nil)
	}
	return s.print(nil, func(t *table) {
		for i, c := range cs {
			if i > 0 {
				fmt.Fprintln(t.w)
			}
			customerRows(t, c)
			if c.Revision == 0 {
				t.note(c.ID + " has no record: the defaults apply (the default plan, no ceiling, no cap)")
			}
		}
	})
}

// customerCommand runs "apikey customer ACTION": set, show, list, suspend
// or resume. Errors name the action: "apikey customer set: ...".
func customerCommand(fs *flag.FlagSet) runner {
	var plan, scopes, after, allowedIPs string
	var unrestricted, noGrants, noMetadata, noIPs, all bool
	var maxKeys, limit int
	var credits int64
	var grants, metadata multi
	fs.StringVar(&plan, "plan", "", "set: the customer's plan, one of --plans (empty: the services' default plan)")
	fs.StringVar(&scopes, "scopes", "", "set: the scope ceiling, comma-separated (empty: no scope at all)")
	fs.BoolVar(&unrestricted, "unrestricted", false, "set: no scope ceiling")
	fs.IntVar(&maxKeys, "max-keys", 0, "set: the most usable keys (0: no cap)")
	fs.Int64Var(&credits, "credits", 0, "set: credits granted, never refilled (0: none)")
	fs.Var(&grants, "grant", "set: a granted `limit`: NAME=rate:N/DURATION[:BURST], NAME=quota:N/WINDOW or NAME=credits:N[/REFILL] (repeatable; replaces them all)")
	fs.BoolVar(&noGrants, "no-grants", false, "set: remove every granted limit")
	fs.Var(&metadata, "metadata", "set: key=value metadata (repeatable; replaces it all)")
	fs.BoolVar(&noMetadata, "no-metadata", false, "set: remove all metadata")
	fs.StringVar(&allowedIPs, "allowed-ips", "", "set: the IP ranges the customer's keys may be used from, comma-separated CIDR")
	fs.BoolVar(&noIPs, "no-allowed-ips", false, "set: any address")
	fs.StringVar(&after, "after", "", "list: start after this customer id (the next cursor)")
	fs.IntVar(&limit, "limit", apikey.ListOptions{}.PageSize(), "list: page size")
	fs.BoolVar(&all, "all", false, "list: every page")
	setFlags := []string{"plan", "scopes", "unrestricted", "max-keys", "credits", "grant", "no-grants", "metadata", "no-metadata",
		"allowed-ips", "no-allowed-ips"}
	listFlags := []string{"after", "limit", "all"}

	return func(ctx context.Context, s *session, args []string) error {
		if len(args) == 0 {
			return usageError("customer needs an action: set, show, list, suspend or resume")
		}
		action, ids := args[0], args[1:]
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		refuse := func(names []string) error {
			for _, n := range names {
				if set[n] {
					return usageError(fmt.Sprintf("customer %s takes no --%s", action, n))
				}
			}
			return nil
		}
		var err error
		switch action {
		case "set":
			if err = refuse(listFlags); err == nil {
				err = s.setCustomer(ctx, ids, set, customerChange{plan: plan, scopes: scopes, unrestricted: unrestricted,
					maxKeys: maxKeys, credits: credits, grants: grants, noGrants: noGrants, metadata: metadata, noMetadata: noMetadata,
					allowedIPs: allowedIPs, noIPs: noIPs})
			}
		case "show", "suspend", "resume":
			if err = refuse(append(setFlags, listFlags...)); err == nil {
				err = s.eachCustomer(ctx, action, ids)
			}
		case "list":
			if err = refuse(setFlags); err == nil {
				err = s.listCustomers(ctx, ids, after, limit, all)
			}
		default:
			err = usageError(fmt.Sprintf("unknown customer action %q: set, show, list, suspend or resume", action))
		}
		if err == nil || errors.As(err, &quiet{}) {
			return err
		}
		fmt.Fprintf(s.stderr, "apikey customer %s: %s\n", action, message(err))
		return quiet{err}
	}
}

// customerChange holds the flags of "customer set".
type customerChange struct {
	plan, scopes         string
	unrestricted         bool
	maxKeys              int
	credits              int64
	grants, metadata     []string
	noGrants, noMetadata bool
	allowedIPs           string
	noIPs                bool
}

// setCustomer runs "customer set ID": every flag given replaces its field.
func (s *session) setCustomer(ctx context.Context, ids []string, set map[string]bool, ch customerChange) error {
	if len(ids) != 1 {
		return usageError("customer set takes one customer id")
	}
	if !set["plan"] && !set["scopes"] && !ch.unrestricted && !set["max-keys"] && !set["credits"] &&
		!set["grant"] && !ch.noGrants && !set["metadata"] && !ch.noMetadata && !set["allowed-ips"] && !ch.noIPs {
		return usageError("customer set: nothing to change; see apikey help")
	}
	if set["scopes"] && ch.unrestricted || set["grant"] && ch.noGrants || set["metadata"] && ch.noMetadata ||
		set["allowed-ips"] && ch.noIPs {
		return usageError("a value and its --no- flag (or --unrestricted and --scopes) together")
	}
	if set["plan"] && ch.plan != "" {
		if s.plans == nil {
			return usageError("customer set --plan needs --plans (APIKEY_PLANS), the services' plans, so that an unknown plan is refused")
		}
		if err := s.checkPlan(s.cfg, ch.plan); err != nil {
			return err
		}
	}
	var ceiling []string
	if set["scopes"] {
		ceiling = []string{}
		for sc := range strings.SplitSeq(ch.scopes, ",") {
			if sc = strings.TrimSpace(sc); sc != "" {
				ceiling = append(ceiling, sc)
			}
		}
	}
	var ls []limits.Limit
	for _, g := range ch.grants {
		l, err := parseGrant(g)
		if err != nil {
			return err
		}
		ls = append(ls, l)
	}
	md, err := metadataFlag(ch.metadata)
	if err != nil {
		return err
	}
	ips, err := ipsFlag("allowed-ips", ch.allowedIPs)
	if err != nil {
		return err
	}
	c, err := s.m.SetCustomer(ctx, ids[0], func(c *apikey.Customer) error {
		if set["plan"] {
			c.Plan = ch.plan
		}
		if set["scopes"] {
			c.Scopes = ceiling
		}
		if ch.unrestricted {
			c.Scopes = nil
		}
		if set["max-keys"] {
			c.MaxKeys = ch.maxKeys
		}
		if set["credits"] {
			c.Credits = ch.credits
		}
		if set["grant"] || ch.noGrants {
			c.Limits = ls
		}
		if set["metadata"] || ch.noMetadata {
			c.Metadata = md
		}
		if set["allowed-ips"] || ch.noIPs {
			c.AllowedIPs = ips
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.printCustomers([]*apikey.Customer{c})
}

// eachCustomer runs show, suspend or resume on every id, reporting each
// failure on its own line.
func (s *session) eachCustomer(ctx context.Context, action string, ids []string) error {
	if len(ids) == 0 {
		return usageError(fmt.Sprintf("customer %s needs at least one customer id", action))
	}
	var cs []*apikey.Customer
	var firstErr error
	for _, id := range ids {
		var c *apikey.Customer
		var err error
		switch action {
		case "show":
			c, err = s.m.Customer(ctx, id)
		default:
			c, err = s.m.SetCustomer(ctx, id, func(c *apikey.Customer) error { c.Suspended = action == "suspend"; return nil })
		}
		if err != nil {
			fmt.Fprintf(s.stderr, "apikey customer %s: %s: %s\n", action, id, message(err))
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		cs = append(cs, c)
	}
	if err := s.printCustomers(cs); err != nil {
		return err
	}
	if firstErr != nil {
		return quiet{firstErr}
	}
	return nil
}

// listCustomers runs "customer list": the stored customers by id.
func (s *session) listCustomers(ctx context.Context, args []string, after string, limit int, all bool) error {
	if len(args) > 0 {
		return usageError("customer list takes no arguments")
	}
	if limit < 1 || limit > apikey.MaxPageSize {
		return usageError(fmt.Sprintf("--limit must be between 1 and %d", apikey.MaxPageSize))
	}
	var cs []*apikey.Customer
	next := ""
	for {
		page, err := s.m.Customers(ctx, after, limit)
		if err != nil {
			return err
		}
		cs = append(cs, page...)
		next = ""
		if len(page) < limit {
			break
		}
		next = page[len(page)-1].ID
		if !all {
			break
		}
		after = next
	}
	views := make([]customerJSON, 0, len(cs))
	for _, c := range cs {
		views = append(views, customerView(c))
	}
	var nextp *string
	if next != "" {
		nextp = &next
	}
	return s.print(struct {
		Customers []customerJSON `json:"customers"`
		Next      *string        `json:"next"`
	}{views, nextp}, func(t *table) {
		t.row("CUSTOMER", "PLAN", "SCOPES", "MAX KEYS", "CREDITS", "SUSPENDED", "UPDATED")
		for _, c := range cs {
			plan := c.Plan
			if plan == "" {
				plan = "(default)"
			}
			t.row(c.ID, plan, scopeCeiling(c.Scopes), strconv.Itoa(c.MaxKeys), strconv.FormatInt(c.Credits, 10),
				map[bool]string{true: "yes", false: "no"}[c.Suspended], when(c.UpdatedAt))
		}
		if next != "" {
			t.note("more: --after " + next)
		}
	})
}

// parseGrant parses a --grant value: NAME=rate:N/DURATION[:BURST],
// NAME=quota:N/WINDOW or NAME=credits:N[/REFILL]. The Manager checks the
// limit itself.
func parseGrant(v string) (limits.Limit, error) {
	bad := func(why string) (limits.Limit, error) {
		return limits.Limit{}, usageError(fmt.Sprintf("--grant %q: %s; e.g. burst=rate:10/1s:20, monthly=quota:9000/month, extra=credits:100", v, why))
	}
	name, spec, ok := strings.Cut(v, "=")
	kind, rest, ok2 := strings.Cut(spec, ":")
	if !ok || !ok2 || name == "" {
		return bad("not NAME=KIND:COUNT...")
	}
	count, per, hasPer := strings.Cut(rest, "/")
	var burst string
	if kind == "rate" {
		per, burst, _ = strings.Cut(per, ":")
	}
	n, err := strconv.ParseInt(count, 10, 64)
	if err != nil {
		return bad("the count is not an integer")
	}
	switch kind {
	case "rate":
		d, err := time.ParseDuration(per)
		if !hasPer || err != nil {
			return bad("a rate needs a period, e.g. 10/1s")
		}
		var b int64
		if burst != "" {
			if b, err = strconv.ParseInt(burst, 10, 64); err != nil {
				return bad("the burst is not an integer")
			}
		}
		return limits.Rate(name, n, d, b), nil
	case "quota", "credits":
		var w limits.Window
		if kind == "quota" && !hasPer {
			return bad("a quota needs a window: minute, hour, day or month")
		}
		if hasPer {
			if err := w.UnmarshalText([]byte(per)); err != nil {
				return bad("the window must be minute, hour, day or month (credits: never, day or month)")
			}
		}
		if kind == "quota" {
			return limits.Quota(name, n, w), nil
		}
		return limits.Credits(name, n, w), nil
	}
	return bad("the kind must be rate, quota or credits")
}

// grantSpec writes a limit as --grant takes it.
func grantSpec(l limits.Limit) string {
	switch l.Kind {
	case limits.KindRate:
		s := fmt.Sprintf("%s=rate:%d/%s", l.Name, l.Count, l.Period)
		if l.Burst != 0 {
			s += ":" + strconv.FormatInt(l.Burst, 10)
		}
		return s
	case limits.KindQuota:
		return fmt.Sprintf("%s=quota:%d/%s", l.Name, l.Count, l.Window)
	}
	return fmt.Sprintf("%s=credits:%d/%s", l.Name, l.Count, l.Window)
}
