package sqlstore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gokeys/apikey"
)

// keyArgs returns the arguments of the insert query for k, in the order
// of columns.
func (s *Store) keyArgs(k *apikey.Key) ([]any, error) {
	scopes, meta, err := encodeJSON(k)
	if err != nil {
		return nil, err
	}
	return []any{
		k.ID, k.Prefix, k.Hint, hashArg(k.Hash), k.HashVersion, k.Name, k.Owner, scopes, k.Plan, meta,
		s.d.timeArg(k.CreatedAt), s.d.timeArg(k.ExpiresAt), s.d.timeArg(k.LastUsedAt), s.d.timeArg(k.RevokedAt),
		k.RotatedFrom, k.RotatedTo,
	}, nil
}

// updateArgs returns the arguments of the update query for k.
func (s *Store) updateArgs(k *apikey.Key) ([]any, error) {
	scopes, meta, err := encodeJSON(k)
	if err != nil {
		return nil, err
	}
	used := s.d.timeArg(k.LastUsedAt)
	return []any{
		k.Prefix, k.Hint, hashArg(k.Hash), k.HashVersion, k.Name, k.Owner, scopes, k.Plan, meta,
		s.d.timeArg(k.CreatedAt), s.d.timeArg(k.ExpiresAt), s.d.timeArg(k.RevokedAt),
		k.RotatedFrom, k.RotatedTo, used, used, k.ID,
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
	scopes, err := json.Marshal(k.Scopes)
	if err != nil {
		return "", "", fmt.Errorf("sqlstore: encode scopes: %w", err)
	}
	meta, err := json.Marshal(k.Metadata)
	if err != nil {
		return "", "", fmt.Errorf("sqlstore: encode metadata: %w", err)
	}
	return string(scopes), string(meta), nil
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
	scopes, meta sql.RawBytes
	times        [4]timeCol
	dest         [numColumns]any
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
	ks.dest = [numColumns]any{
		&k.ID, &k.Prefix, &k.Hint, &k.Hash, &k.HashVersion, &k.Name, &k.Owner, &ks.scopes, &k.Plan, &ks.meta,
		&ks.times[0], &ks.times[1], &ks.times[2], &ks.times[3], &k.RotatedFrom, &k.RotatedTo,
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
	return k, nil
}

func decodeJSON(b []byte, v any) error {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, v)
}
