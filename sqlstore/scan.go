package sqlstore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// keyArgs returns the arguments of the insert query for k, in the order
// of columns.
func (s *Store) keyArgs(k *apikey.Key) ([]any, error) {
	scopes, meta, err := encodeJSON(k)
	if err != nil {
		return nil, err
	}
	limits, err := encodeLimits(k.Limits)
	if err != nil {
		return nil, err
	}
	return []any{
		k.ID, k.Prefix, k.Hint, hashArg(k.Hash), k.HashVersion, k.Name, k.Owner, scopes, k.Plan, meta,
		s.d.timeArg(k.CreatedAt), s.d.timeArg(k.ExpiresAt), s.d.timeArg(k.LastUsedAt), s.d.timeArg(k.RevokedAt),
		k.RotatedFrom, k.RotatedTo, int64(1), k.Disabled, s.d.timeArg(k.RotatedAt), k.Lineage, limits, k.Paused,
		encodeIPs(k.AllowedIPs),
	}, nil
}

// updateArgs returns the arguments of the update query for k.
func (s *Store) updateArgs(k *apikey.Key) ([]any, error) {
	scopes, meta, err := encodeJSON(k)
	if err != nil {
		return nil, err
	}
	limits, err := encodeLimits(k.Limits)
	if err != nil {
		return nil, err
	}
	used := s.d.timeArg(k.LastUsedAt)
	return []any{
		k.Prefix, k.Hint, hashArg(k.Hash), k.HashVersion, k.Name, k.Owner, scopes, k.Plan, meta,
		s.d.timeArg(k.CreatedAt), s.d.timeArg(k.ExpiresAt), s.d.timeArg(k.RevokedAt),
		k.RotatedFrom, k.RotatedTo, s.d.timeArg(k.RotatedAt), k.Lineage, k.Disabled, limits, k.Paused,
		encodeIPs(k.AllowedIPs), used, used, k.ID, k.Revision,
	}, nil
}

// hashArg keeps a nil digest from becoming NULL in the NOT NULL column.
func hashArg(h []byte) []byte {
	if h == nil {
		return []byte{}
	}
	return h
}

// encodeJSON encodes scopes and metadata as JSON text; nil encodes as
// "null" so that nil and empty survive the round trip.
func encodeJSON(k *apikey.Key) (string, string, error) {
	scopes, err := marshal(k.Scopes)
	if err != nil {
		return "", "", fmt.Errorf("sqlstore: encode scopes: %w", err)
	}
	meta, err := marshal(k.Metadata)
	if err != nil {
		return "", "", fmt.Errorf("sqlstore: encode metadata: %w", err)
	}
	return scopes, meta, nil
}

// encodeLimits encodes limits as JSON text, or NULL when there are none.
func encodeLimits(l []limits.Limit) (any, error) {
	if l == nil {
		return nil, nil
	}
	s, err := marshal(l)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: encode limits: %w", err)
	}
	return s, nil
}

// encodeIPs encodes IP ranges as a JSON array of CIDR strings, or NULL
// when there are none.
func encodeIPs(ips []netip.Prefix) any {
	if len(ips) == 0 {
		return nil
	}
	b := make([]byte, 0, 2+len(ips)*24)
	b = append(b, '[')
	for i, p := range ips {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, p.String())
	}
	return string(append(b, ']'))
}

// marshal encodes v as JSON without HTML escaping, so that text at the
// Manager's input limits (at most doubled by escaping '"' and '\') fits
// MySQL's 64 KiB TEXT columns.
func marshal(v any) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// timeCol scans a time column in a dialect-aware way into t.
type timeCol struct {
	d Dialect
	t *time.Time
}

// Scan implements sql.Scanner.
func (c *timeCol) Scan(src any) error {
	t, err := c.d.scanTime(src)
	*c.t = t
	return err
}

// keyScanner reads rows of the columns list into keys. One scanner serves
// every row of a result set.
type keyScanner struct {
	scopes, meta, limits, ips sql.RawBytes
	times                     [5]timeCol
	dest                      [numColumns]any
}

func newKeyScanner(d Dialect) *keyScanner {
	ks := &keyScanner{}
	for i := range ks.times {
		ks.times[i].d = d
	}
	return ks
}

// scan reads the current row of rows into a new key.
func (ks *keyScanner) scan(rows *sql.Rows) (*apikey.Key, error) {
	k := new(apikey.Key)
	ks.times[0].t, ks.times[1].t, ks.times[2].t, ks.times[3].t = &k.CreatedAt, &k.ExpiresAt, &k.LastUsedAt, &k.RevokedAt
	ks.times[4].t = &k.RotatedAt
	ks.dest = [numColumns]any{
		&k.ID, &k.Prefix, &k.Hint, &k.Hash, &k.HashVersion, &k.Name, &k.Owner, &ks.scopes, &k.Plan, &ks.meta,
		&ks.times[0], &ks.times[1], &ks.times[2], &ks.times[3], &k.RotatedFrom, &k.RotatedTo,
		&k.Revision, &k.Disabled, &ks.times[4], &k.Lineage, &ks.limits, &k.Paused, &ks.ips,
	}
	if err := rows.Scan(ks.dest[:]...); err != nil {
		return nil, err
	}
	if err := decodeJSON(ks.scopes, &k.Scopes); err != nil {
		return nil, fmt.Errorf("scopes of key %s: %w", k.ID, err)
	}
	if err := decodeJSON(ks.meta, &k.Metadata); err != nil {
		return nil, fmt.Errorf("metadata of key %s: %w", k.ID, err)
	}
	if err := decodeJSON(ks.limits, &k.Limits); err != nil {
		return nil, fmt.Errorf("limits of key %s: %w", k.ID, err)
	}
	if err := decodeJSON(ks.ips, &k.AllowedIPs); err != nil {
		return nil, fmt.Errorf("allowed_ips of key %s: %w", k.ID, err)
	}
	return k, nil
}

func decodeJSON(b []byte, v any) error {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, v)
}

// customerArgs returns the arguments of the customer insert query for c,
// in the order of customerColumns, with the given revision.
func (s *Store) customerArgs(c *apikey.Customer, revision int64) ([]any, error) {
	scopes, err := marshal(c.Scopes)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: encode scopes: %w", err)
	}
	meta, err := marshal(c.Metadata)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: encode metadata: %w", err)
	}
	limits, err := encodeLimits(c.Limits)
	if err != nil {
		return nil, err
	}
	return []any{
		c.ID, c.Plan, scopes, c.MaxKeys, limits, c.Credits, c.Suspended, meta,
		s.d.timeArg(c.CreatedAt), s.d.timeArg(c.UpdatedAt), encodeIPs(c.AllowedIPs), revision,
	}, nil
}

// scanCustomer reads the current row of rows, of the customerColumns,
// into a new record.
func scanCustomer(d Dialect, rows *sql.Rows) (*apikey.Customer, error) {
	c := new(apikey.Customer)
	var scopes, meta, limits, ips sql.RawBytes
	created, updated := timeCol{d: d, t: &c.CreatedAt}, timeCol{d: d, t: &c.UpdatedAt}
	if err := rows.Scan(&c.ID, &c.Plan, &scopes, &c.MaxKeys, &limits, &c.Credits, &c.Suspended, &meta,
		&created, &updated, &ips, &c.Revision); err != nil {
		return nil, err
	}
	if err := decodeJSON(scopes, &c.Scopes); err != nil {
		return nil, fmt.Errorf("scopes of customer %s: %w", c.ID, err)
	}
	if err := decodeJSON(meta, &c.Metadata); err != nil {
		return nil, fmt.Errorf("metadata of customer %s: %w", c.ID, err)
	}
	if err := decodeJSON(limits, &c.Limits); err != nil {
		return nil, fmt.Errorf("limits of customer %s: %w", c.ID, err)
	}
	if err := decodeJSON(ips, &c.AllowedIPs); err != nil {
		return nil, fmt.Errorf("allowed_ips of customer %s: %w", c.ID, err)
	}
	return c, nil
}
