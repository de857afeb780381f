package memstore

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/gokeys/apikey/usage"
)

var (
	_ usage.Store         = (*Store)(nil)
	_ usage.LastUsedStore = (*Store)(nil)
)

// hourUsage is the usage of one key in one hour.
type hourUsage struct {
	allowed, limited, refused, cost int64
}

// keyUsage is the stored usage of one key, by Unix hour.
type keyUsage struct {
	customer string
	hours    map[int64]*hourUsage
}

// usageTable holds usage by key and, for the queries of a customer, the
// keys of each customer. Its fields are guarded by Store.umu.
type usageTable struct {
	keys      map[string]*keyUsage
	customers map[string]map[string]*keyUsage
}

// AddUsage implements usage.Store. Each record's counts are added to
// those of its (KeyID, Start) hour, under one lock, so that concurrent
// calls sum exactly. A Start that is not a whole UTC hour counts in the
// hour that holds it.
func (s *Store) AddUsage(ctx context.Context, records []usage.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.umu.Lock()
	defer s.umu.Unlock()
	t := &s.usage
	if t.keys == nil {
		t.keys = map[string]*keyUsage{}
		t.customers = map[string]map[string]*keyUsage{}
	}
	for i := range records {
		r := &records[i]
		k := t.keys[r.KeyID]
		if k == nil {
			k = &keyUsage{customer: r.Customer, hours: map[int64]*hourUsage{}}
			t.keys[r.KeyID] = k
			byKey := t.customers[r.Customer]
			if byKey == nil {
				byKey = map[string]*keyUsage{}
				t.customers[r.Customer] = byKey
			}
			byKey[r.KeyID] = k
		}
		hour := floorDiv(r.Start.Unix(), 3600)
		h := k.hours[hour]
		if h == nil {
			h = &hourUsage{}
			k.hours[hour] = h
		}
		h.allowed += r.Allowed
		h.limited += r.Limited
		h.refused += r.Refused
		h.cost += r.Cost
	}
	return nil
}

// Usage implements usage.Store. It returns the hours of q.KeyID when set,
// and only if the key is q.Customer's when that is set too. Otherwise it
// returns the hours of every key of q.Customer. It returns those with
// q.From <= Start < q.To, ordered by Start then KeyID.
func (s *Store) Usage(ctx context.Context, q usage.Query) ([]usage.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.umu.RLock()
	defer s.umu.RUnlock()
	var keys map[string]*keyUsage
	switch k := s.usage.keys[q.KeyID]; {
	case q.KeyID == "":
		keys = s.usage.customers[q.Customer]
	case k != nil && (q.Customer == "" || q.Customer == k.customer):
		keys = map[string]*keyUsage{q.KeyID: k}
	}
	out := []usage.Record{}
	from, to := q.From.UTC(), q.To.UTC()
	for id, k := range keys {
		for hour, h := range k.hours {
			start := time.Unix(hour*3600, 0).UTC()
			if start.Before(from) || !start.Before(to) {
				continue
			}
			out = append(out, usage.Record{
				Customer: k.customer, KeyID: id, Start: start,
				Allowed: h.allowed, Limited: h.limited, Refused: h.refused, Cost: h.cost,
			})
		}
	}
	slices.SortFunc(out, func(a, b usage.Record) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return cmp.Compare(a.KeyID, b.KeyID)
	})
	return out, nil
}

// PurgeUsage implements usage.Store.
func (s *Store) PurgeUsage(ctx context.Context, before time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.umu.Lock()
	defer s.umu.Unlock()
	n := 0
	for id, k := range s.usage.keys {
		for hour := range k.hours {
			if time.Unix(hour*3600, 0).Before(before) {
				delete(k.hours, hour)
				n++
			}
		}
		if len(k.hours) == 0 {
			delete(s.usage.keys, id)
			byKey := s.usage.customers[k.customer]
			delete(byKey, id)
			if len(byKey) == 0 {
				delete(s.usage.customers, k.customer)
			}
		}
	}
	return n, nil
}

// floorDiv is a/b rounded down.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
