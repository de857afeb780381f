package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/limits"
)

// keyJSON is a key as the CLI prints it, never with its digest.
type keyJSON struct {
	ID          string            `json:"id"`
	Prefix      string            `json:"prefix"`
	Hint        string            `json:"hint"`
	Owner       string            `json:"owner"`
	Name        string            `json:"name"`
	Scopes      []string          `json:"scopes"`
	Plan        string            `json:"plan"`
	Metadata    map[string]string `json:"metadata"`
	Limits      []limitJSON       `json:"limits"`
	Status      string            `json:"status"`
	CreatedAt   time.Time         `json:"created_at"`
	ExpiresAt   *time.Time        `json:"expires_at"`
	LastUsedAt  *time.Time        `json:"last_used_at"`
	RevokedAt   *time.Time        `json:"revoked_at"`
	Disabled    bool              `json:"disabled"`
	RotatedAt   *time.Time        `json:"rotated_at"`
	RotatedFrom string            `json:"rotated_from,omitempty"`
	RotatedTo   string            `json:"rotated_to,omitempty"`
	AllowedIPs  []string          `json:"allowed_ips"`
}

// limitJSON is one of a key's own limits.
type limitJSON struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Count int64  `json:"count"`
}

func view(k *apikey.Key, now time.Time) keyJSON {
	v := keyJSON{
		ID: k.ID, Prefix: k.Prefix, Hint: k.Hint, Owner: k.Owner, Name: k.Name, Scopes: k.Scopes, Plan: k.Plan,
		Metadata: k.Metadata, Limits: []limitJSON{}, Status: status(k, now), CreatedAt: k.CreatedAt,
		ExpiresAt: optTime(k.ExpiresAt), LastUsedAt: optTime(k.LastUsedAt), RevokedAt: optTime(k.RevokedAt),
		Disabled: k.Disabled, RotatedAt: optTime(k.RotatedAt), RotatedFrom: k.RotatedFrom, RotatedTo: k.RotatedTo,
	}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if v.Metadata == nil {
		v.Metadata = map[string]string{}
	}
	for _, l := range k.Limits {
		v.Limits = append(v.Limits, limitJSON{Name: l.Name, Kind: l.Kind.String(), Count: l.Count})
	}
	v.AllowedIPs = ipStrings(k.AllowedIPs)
	return v
}

// ipStrings writes IP ranges in CIDR notation; never nil.
func ipStrings(ips []netip.Prefix) []string {
	out := make([]string, len(ips))
	for i, p := range ips {
		out[i] = p.String()
	}
	return out
}

// ipsFlag parses the comma-separated ranges of flag name.
func ipsFlag(name, v string) ([]netip.Prefix, error) {
	var list []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, s)
		}
	}
	ips, err := ipallow.Parse(list...)
	if err != nil {
		return nil, usageError(fmt.Sprintf("--%s: %s", name, strings.TrimPrefix(err.Error(), "ipallow: ")))
	}
	return ips, nil
}

// withToken is the JSON of a freshly issued key: its view and its token.
func withToken(k *apikey.Key, token string) any {
	return struct {
		keyJSON
		Key string `json:"key"`
	}{view(k, k.CreatedAt), token}
}

// status says in one word whether the key works at now.
func status(k *apikey.Key, now time.Time) string {
	switch {
	case k.Revoked():
		return "revoked"
	case k.Expired(now):
		return "expired"
	case k.Disabled:
		return "disabled"
	case k.InGrace(now):
		return "rotated"
	}
	return "active"
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// when formats a time for a table; "-" when unset.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// table is tab-aligned text output.
type table struct {
	w     *tabwriter.Writer
	notes []string
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
	}
	fmt.Fprintln(t.w, strings.Join(cells, "\t"))
}

func (t *table) note(s string) { t.notes = append(t.notes, s) }

// print writes v as JSON with --json, otherwise the table fill makes.
func (s *session) print(v any, fill func(*table)) error {
	return s.cli.print(s.cfg.json, v, fill)
}

func (c *cli) print(asJSON bool, v any, fill func(*table)) error {
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	t := &table{w: tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)}
	fill(t)
	if err := t.w.Flush(); err != nil {
		return err
	}
	for _, n := range t.notes {
		fmt.Fprintln(c.stdout, n)
	}
	return nil
}

// printKeys prints keys, one block each (table) or a JSON array.
func (s *session) printKeys(keys []*apikey.Key) error {
	now := s.m.Now()
	if s.cfg.json {
		views := make([]keyJSON, 0, len(keys))
		for _, k := range keys {
			views = append(views, view(k, now))
		}
		if len(views) == 1 {
			return s.print(views[0], nil)
		}
		return s.print(views, nil)
	}
	return s.print(nil, func(t *table) {
		for i, k := range keys {
			if i > 0 {
				fmt.Fprintln(t.w)
			}
			keyRows(t, k, now)
		}
	})
}

// keyRows fills a table with one key, a field a row.
func keyRows(t *table, k *apikey.Key, now time.Time) {
	t.row("ID", k.ID)
	t.row("HINT", k.Hint)
	t.row("OWNER", k.Owner)
	t.row("NAME", k.Name)
	t.row("SCOPES", strings.Join(k.Scopes, " "))
	t.row("PLAN", k.Plan)
	if len(k.AllowedIPs) > 0 {
		t.row("ALLOWED IPS", strings.Join(ipStrings(k.AllowedIPs), " "))
	}
	if len(k.Metadata) > 0 {
		names := make([]string, 0, len(k.Metadata))
		for n := range k.Metadata {
			names = append(names, n)
		}
		sort.Strings(names)
		var kv []string
		for _, n := range names {
			kv = append(kv, n+"="+k.Metadata[n])
		}
		t.row("METADATA", strings.Join(kv, " "))
	}
	for _, l := range k.Limits {
		t.row("LIMIT", fmt.Sprintf("%s %s %d", l.Name, l.Kind, l.Count))
	}
	t.row("STATUS", status(k, now))
	t.row("CREATED", when(k.CreatedAt))
	t.row("EXPIRES", when(k.ExpiresAt))
	t.row("LAST USED", when(k.LastUsedAt))
	if !k.RevokedAt.IsZero() {
		t.row("REVOKED", when(k.RevokedAt))
	}
	if k.RotatedTo != "" {
		t.row("ROTATED TO", k.RotatedTo)
	}
	if k.RotatedFrom != "" {
		t.row("ROTATED FROM", k.RotatedFrom)
	}
}

// withCredits returns ls with its credits limit set to n lifetime uses,
// or removed when n is negative.
func withCredits(ls []limits.Limit, n int64) []limits.Limit {
	out := make([]limits.Limit, 0, len(ls)+1)
	for _, l := range ls {
		if l.Name != "credits" {
			out = append(out, l)
		}
	}
	if n >= 0 {
		out = append(out, limits.Credits("credits", n, limits.Never))
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
