package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

// usageHeader is the header of the CSV export, in the order of
// usageRow's fields.
var usageHeader = []string{"customer", "key_id", "period_start", "period_end", "allowed", "limited", "refused", "cost"}

// usageRow is one row of the usage export. It tells what one key consumed
// in one period. With --total it tells what all of a customer's keys
// consumed, and key_id is empty.
type usageRow struct {
	Customer    string    `json:"customer"`
	KeyID       string    `json:"key_id"`
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
	Allowed     int64     `json:"allowed"`
	Limited     int64     `json:"limited"`
	Refused     int64     `json:"refused"`
	Cost        int64     `json:"cost"`
}

// cells returns the row as CSV cells.
func (r *usageRow) cells() []string {
	return []string{r.Customer, r.KeyID, r.PeriodStart.Format(time.RFC3339), r.PeriodEnd.Format(time.RFC3339),
		strconv.FormatInt(r.Allowed, 10), strconv.FormatInt(r.Limited, 10), strconv.FormatInt(r.Refused, 10), strconv.FormatInt(r.Cost, 10)}
}

// add adds the counts of rec to r.
func (r *usageRow) add(rec *usage.Record) {
	r.Allowed += rec.Allowed
	r.Limited += rec.Limited
	r.Refused += rec.Refused
	r.Cost += rec.Cost
}

// usageFlags are the flags of apikey usage.
type usageFlags struct {
	customer, key, from, to, step, format string
	total                                 bool
}

// usageCommand exports usage: of one key (--key) or of every key of a
// customer (--customer), one row per key and period; with --total, one
// row per period for the customer's keys together, key_id empty.
//
// The per-key rows of a customer are rolled up from the store's hourly
// records (usage.Store.Usage) of the periods Manager.Usage computes for
// the range, so both share the rounding of from (down to its period) and
// to (up to a period's end) and the 1,000-period bound. A key appears
// in every period of the range, empty ones included, when it has any
// usage in the range, and in none otherwise. Rows are ordered by period,
// then key id.
func usageCommand(fs *flag.FlagSet) runner {
	var f usageFlags
	fs.StringVar(&f.customer, "customer", "", "the customer whose keys' usage to export")
	fs.StringVar(&f.key, "key", "", "the key whose usage to export")
	fs.StringVar(&f.from, "from", "", "start (RFC 3339), rounded down to its period (default: 24h, 30 days or 12 months before --to, by --step)")
	fs.StringVar(&f.to, "to", "", "end (RFC 3339), exclusive, rounded up to a period's end (default: now)")
	fs.StringVar(&f.step, "step", "day", "the period: hour, day or month (UTC)")
	fs.StringVar(&f.format, "format", "", "table, csv (for billing import) or jsonl (default table; jsonl with --json)")
	fs.BoolVar(&f.total, "total", false, "with --customer: one row per period for all of his keys, key_id empty")
	return func(ctx context.Context, s *session, args []string) error {
		q, format, err := f.query(s, args)
		if err != nil {
			return err
		}
		rows, err := s.usageRows(ctx, q, f.total)
		if err != nil {
			return err
		}
		return s.printUsage(format, rows)
	}
}

// query checks the flags and returns the query and the output format.
func (f *usageFlags) query(s *session, args []string) (usage.Query, string, error) {
	var q usage.Query
	switch {
	case len(args) > 0:
		return q, "", usageError("usage takes no arguments; use --customer or --key")
	case (f.customer == "") == (f.key == ""):
		return q, "", usageError("usage needs --customer or --key, not both")
	case f.total && f.key != "":
		return q, "", usageError("--total goes with --customer")
	}
	format := f.format
	switch {
	case format == "" && s.cfg.json:
		format = "jsonl"
	case format == "":
		format = "table"
	case s.cfg.json && format != "jsonl":
		return q, "", usageError("--json with --format " + format)
	}
	if format != "table" && format != "csv" && format != "jsonl" {
		return q, "", usageError(fmt.Sprintf("--format %q: table, csv or jsonl", f.format))
	}
	switch f.step {
	case "hour":
		q.Step = usage.Hour
	case "day":
		q.Step = usage.Day
	case "month":
		q.Step = usage.Month
	default:
		return q, "", usageError(fmt.Sprintf("--step %q: hour, day or month", f.step))
	}
	q.Customer, q.KeyID = f.customer, f.key
	q.To = s.m.Now()
	var err error
	if f.to != "" {
		if q.To, err = parseTime("to", f.to); err != nil {
			return q, "", err
		}
	}
	switch {
	case f.from != "":
		if q.From, err = parseTime("from", f.from); err != nil {
			return q, "", err
		}
	case q.Step == usage.Hour:
		q.From = q.To.Add(-24 * time.Hour)
	case q.Step == usage.Day:
		q.From = q.To.AddDate(0, 0, -30)
	default:
		q.From = q.To.AddDate(-1, 0, 0)
	}
	return q, format, nil
}

// usageRows returns the rows of q: of its key, of each key of its
// customer, or (total) of the customer's keys together.
func (s *session) usageRows(ctx context.Context, q usage.Query, total bool) ([]usageRow, error) {
	customer := q.Customer
	if q.KeyID != "" {
		k, err := s.m.Get(ctx, q.KeyID)
		if err != nil {
			return nil, err
		}
		customer = k.Customer()
	}
	series, err := s.m.Usage(ctx, q) // checks the range, and rounds it to the periods
	var ie *apikey.InputError
	if errors.As(err, &ie) {
		return nil, fmt.Errorf("--from %s --to %s by %s: %w", q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339), stepName(q.Step), err)
	}
	if err != nil {
		return nil, err
	}
	ends := make([]time.Time, len(series))
	for i := range series {
		if i+1 < len(series) {
			ends[i] = series[i+1].Start
		} else {
			ends[i] = periodAfter(series[i].Start, q.Step)
		}
	}
	if q.KeyID != "" || total {
		rows := make([]usageRow, len(series))
		for i := range series {
			rows[i] = usageRow{Customer: customer, KeyID: q.KeyID, PeriodStart: series[i].Start, PeriodEnd: ends[i]}
			rows[i].add(&series[i])
		}
		return rows, nil
	}
	hours, err := s.store.Usage(ctx, usage.Query{Customer: customer, From: series[0].Start, To: ends[len(ends)-1], Step: usage.Hour})
	if err != nil {
		return nil, err
	}
	// Each key's periods, rolled up from its hours.
	byKey := map[string][]usageRow{}
	for i := range hours {
		h := &hours[i]
		p, found := slices.BinarySearchFunc(series, h.Start, func(r usage.Record, t time.Time) int { return r.Start.Compare(t) })
		if !found {
			p-- // the period that holds the hour
		}
		if p < 0 || p >= len(series) {
			continue
		}
		rows := byKey[h.KeyID]
		if rows == nil {
			rows = make([]usageRow, len(series))
			for i := range rows {
				rows[i] = usageRow{Customer: customer, KeyID: h.KeyID, PeriodStart: series[i].Start, PeriodEnd: ends[i]}
			}
			byKey[h.KeyID] = rows
		}
		rows[p].add(h)
	}
	keys := make([]string, 0, len(byKey))
	for id := range byKey {
		keys = append(keys, id)
	}
	slices.Sort(keys)
	out := make([]usageRow, 0, len(keys)*len(series))
	for p := range series {
		for _, id := range keys {
			out = append(out, byKey[id][p])
		}
	}
	return out, nil
}

// stepName names a step as --step does.
func stepName(step usage.Step) string {
	switch step {
	case usage.Hour:
		return "hour"
	case usage.Day:
		return "day"
	}
	return "month"
}

// periodAfter is the start of the period of step after the one starting
// at t.
func periodAfter(t time.Time, step usage.Step) time.Time {
	switch step {
	case usage.Hour:
		return t.Add(time.Hour)
	case usage.Day:
		return t.AddDate(0, 0, 1)
	}
	return t.AddDate(0, 1, 0)
}

// printUsage writes rows in format: a table with a total, CSV with
// usageHeader, or one JSON object a line.
func (s *session) printUsage(format string, rows []usageRow) error {
	switch format {
	case "csv":
		w := csv.NewWriter(s.stdout)
		w.Write(usageHeader)
		for i := range rows {
			w.Write(rows[i].cells())
		}
		w.Flush()
		return w.Error()
	case "jsonl":
		w := bufio.NewWriter(s.stdout)
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for i := range rows {
			if err := enc.Encode(&rows[i]); err != nil {
				return err
			}
		}
		return w.Flush()
	}
	return s.cli.print(false, nil, func(t *table) {
		t.row("CUSTOMER", "KEY", "PERIOD START", "PERIOD END", "ALLOWED", "LIMITED", "REFUSED", "COST")
		var sum usageRow
		for i := range rows {
			t.row(rows[i].cells()...)
			sum.Allowed += rows[i].Allowed
			sum.Limited += rows[i].Limited
			sum.Refused += rows[i].Refused
			sum.Cost += rows[i].Cost
		}
		t.note(fmt.Sprintf("total: %d allowed, %d limited, %d refused, cost %d in %d rows",
			sum.Allowed, sum.Limited, sum.Refused, sum.Cost, len(rows)))
	})
}
