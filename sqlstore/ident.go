package sqlstore

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/gokeys/apikey"
)

// DefaultTable is the table name used when Options.Table is empty.
const DefaultTable = "api_keys"

// maxIdentifier is the longest accepted identifier. It is PostgreSQL's
// limit, while MySQL allows 64 and SQLite has none.
const maxIdentifier = 63

// tableName is a validated, possibly schema-qualified table name.
type tableName struct {
	schema, name string
}

// parseTable validates name: an identifier (ASCII letters, digits and
// underscores, not starting with a digit, at most 63 characters),
// optionally qualified by a schema of the same grammar as "schema.table".
// Validated names need no escaping; they are quoted anyway so that
// reserved words work as table names.
func parseTable(name string) (tableName, error) {
	if name == "" {
		name = DefaultTable
	}
	schema, table, qualified := strings.Cut(name, ".")
	if !qualified {
		schema, table = "", name
	}
	for _, part := range []string{schema, table} {
		if part == "" && !qualified {
			continue
		}
		if !validIdentifier(part) {
			return tableName{}, fmt.Errorf("%w: sqlstore: table name %q is not an identifier or schema.identifier (letters, digits, underscores, not starting with a digit, at most %d characters)",
				apikey.ErrInvalidOptions, name, maxIdentifier)
		}
	}
	return tableName{schema: schema, name: table}, nil
}

func validIdentifier(s string) bool {
	if s == "" || len(s) > maxIdentifier || ('0' <= s[0] && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// String returns the name as given, e.g. "api_keys" or "auth.api_keys".
func (t tableName) String() string {
	if t.schema == "" {
		return t.name
	}
	return t.schema + "." + t.name
}

// quoted returns the table name quoted for d.
func (t tableName) quoted(d Dialect) string {
	if t.schema == "" {
		return d.quote(t.name)
	}
	return d.quote(t.schema) + "." + d.quote(t.name)
}

// index returns the name of the previous release's owner index (owner,
// id) on PostgreSQL and SQLite.
func (t tableName) index() string { return derived(t.name, "_owner_idx") }

// listIndex returns the name of the owner index (owner, created_at, id)
// on PostgreSQL and SQLite.
func (t tableName) listIndex() string { return derived(t.name, "_owner_created_idx") }

// customers returns the default name of the customers table of keys
// table t, in t's schema: its name with a final "keys" replaced by
// "customers" ("api_keys" gives "api_customers"), else with
// "_customers" appended.
func (t tableName) customers() tableName {
	if base, ok := strings.CutSuffix(t.name, "keys"); ok {
		return tableName{schema: t.schema, name: derived(base, "customers")}
	}
	return tableName{schema: t.schema, name: derived(t.name, "_customers")}
}

// usage returns the default name of the usage table of keys table t, in
// t's schema: its name with a final "keys" replaced by "usage"
// ("api_keys" gives "api_usage"), else with "_usage" appended.
func (t tableName) usage() tableName {
	if base, ok := strings.CutSuffix(t.name, "keys"); ok {
		return tableName{schema: t.schema, name: derived(base, "usage")}
	}
	return tableName{schema: t.schema, name: derived(t.name, "_usage")}
}

// customerIndex returns the name of the index (customer, start, key_id)
// of usage table t on PostgreSQL and SQLite.
func (t tableName) customerIndex() string { return derived(t.name, "_customer_idx") }

// derived returns name+suffix kept within maxIdentifier characters: a
// long name is cut and completed with a hash of the full name, so that
// two names never give the same result.
func derived(name, suffix string) string {
	if len(name)+len(suffix) <= maxIdentifier {
		return name + suffix
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%s_%08x%s", name[:maxIdentifier-len(suffix)-9], h.Sum32(), suffix)
}
