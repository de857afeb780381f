package sqlstore

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/gokeys/apikey"
)

// backfillBatch is the number of owners one round of the backfill reads
// and writes.
const backfillBatch = 500

// BackfillCustomers creates a customer record for each owner of stored
// keys that has none, and returns the owners whose keys have different
// plans while Options.PlanMap is not set. Migrate calls it when it
// upgrades a keys table made by an earlier release. Call it yourself
// after running Dialect.Upgrade's statements with your own tool.
//
// A record it creates has no scope ceiling (nil Scopes), so no key loses a
// scope. It has no key cap, no limits and no credits. Its plan is the plan
// of the owner's keys when they all have the same. When they differ, its
// plan is the one Options.PlanMap chooses. Without PlanMap it gets none
// (the Manager's DefaultPlan), never silently the widest. The owner is
// then logged to Options.Logger and returned. Keys without owner, whose
// customer is their lineage, get no record. It works in rounds of 500
// owners, each a few statements. It is idempotent. An owner that has a
// record keeps it untouched, also one created concurrently.
func (s *Store) BackfillCustomers(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ambiguous, err := s.backfill(ctx, s.db)
	if err != nil {
		return ambiguous, s.fail(ctx, "backfill customers", err)
	}
	return ambiguous, nil
}

func (s *Store) backfill(ctx context.Context, q querier) ([]string, error) {
	now := apikey.UTCMicro(time.Now())
	var ambiguous []string
	for after := ""; ; {
		owners, err := queryIDs(ctx, q, s.q.owners, after, backfillBatch)
		if err != nil || len(owners) == 0 {
			return ambiguous, err
		}
		in := placeholders(len(owners))
		args := make([]any, len(owners))
		for i, o := range owners {
			args[i] = o
		}
		have, err := queryIDs(ctx, q, s.d.rebind("SELECT id FROM "+s.customers.quoted(s.d)+" WHERE id IN ("+in+")"), args...)
		if err != nil {
			return ambiguous, err
		}
		plans, err := s.ownerPlans(ctx, q, in, args)
		if err != nil {
			return ambiguous, err
		}
		var rows []any
		n := 0
		for _, o := range owners {
			if slices.Contains(have, o) {
				continue
			}
			plan, ok := s.customerPlan(o, plans[o])
			if !ok {
				ambiguous = append(ambiguous, o)
				if s.log != nil {
					s.log.LogAttrs(ctx, slog.LevelWarn, "sqlstore: the keys of an owner have different plans and Options.PlanMap is not set: "+
						"its customer record gets no plan (the Manager's DefaultPlan)",
						slog.String("owner", o), slog.Any("plans", plans[o]))
				}
			}
			row, err := s.customerArgs(&apikey.Customer{ID: o, Plan: plan, CreatedAt: now, UpdatedAt: now}, 1)
			if err != nil {
				return ambiguous, err
			}
			rows = append(rows, row...)
			n++
		}
		if n > 0 {
			if _, err := q.ExecContext(ctx, s.insertCustomersIfAbsent(n), rows...); err != nil {
				return ambiguous, err
			}
		}
		if len(owners) < backfillBatch {
			return ambiguous, nil
		}
		after = owners[len(owners)-1]
	}
}

// ownerPlans returns the distinct plans of the keys of the owners args
// (in the placeholders in), sorted, by owner.
func (s *Store) ownerPlans(ctx context.Context, q querier, in string, args []any) (map[string][]string, error) {
	rows, err := q.QueryContext(ctx, s.d.rebind("SELECT owner, plan FROM "+s.table.quoted(s.d)+
		" WHERE owner IN ("+in+") GROUP BY owner, plan"), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	plans := map[string][]string{}
	for rows.Next() {
		var owner, plan string
		if err := rows.Scan(&owner, &plan); err != nil {
			return nil, err
		}
		plans[owner] = append(plans[owner], plan)
	}
	for _, p := range plans {
		slices.Sort(p)
	}
	return plans, rows.Err()
}

// customerPlan returns the plan of the record of owner, whose keys have
// plans, and false when they differ and no PlanMap chooses.
func (s *Store) customerPlan(owner string, plans []string) (string, bool) {
	switch {
	case len(plans) <= 1:
		return firstOrEmpty(plans), true
	case s.planMap != nil:
		return s.planMap(owner, slices.Clone(plans)), true
	}
	return "", false
}

func firstOrEmpty(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// insertCustomersIfAbsent returns an INSERT of n customer rows that skips
// the ids that exist.
func (s *Store) insertCustomersIfAbsent(n int) string {
	row := "(" + placeholders(numCustomerColumns) + ")"
	q := "INSERT INTO " + s.customers.quoted(s.d) + " (" + customerColumns + ") VALUES " + row + strings.Repeat(", "+row, n-1)
	if s.d == MySQL {
		q += " ON DUPLICATE KEY UPDATE id = id"
	} else {
		q += " ON CONFLICT (id) DO NOTHING"
	}
	return s.d.rebind(q)
}
