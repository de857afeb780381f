package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/selfservice"
)

// session is what a management subcommand works with.
type session struct {
	*cli
	*backend
	cfg  *config
	name string // the subcommand's
}

// runner runs a subcommand on its positional arguments.
type runner func(ctx context.Context, s *session, args []string) error

// command returns the flags and runner of a management subcommand, or
// false for an unknown name.
func command(name string, fs *flag.FlagSet) (runner, bool) {
	switch name {
	case "migrate":
		return runMigrate, true
	case "issue":
		return issueCommand(fs), true
	case "list":
		return listCommand(fs), true
	case "show":
		return eachID(func(ctx context.Context, s *session, id string) (*apikey.Key, error) { return s.m.Get(ctx, id) }), true
	case "update":
		return updateCommand(fs), true
	case "rotate":
		return rotateCommand(fs), true
	case "disable":
		return eachID(func(ctx context.Context, s *session, id string) (*apikey.Key, error) { return s.m.Disable(ctx, id) }), true
	case "enable":
		return eachID(func(ctx context.Context, s *session, id string) (*apikey.Key, error) { return s.m.Enable(ctx, id) }), true
	case "revoke":
		return eachID(func(ctx context.Context, s *session, id string) (*apikey.Key, error) {
			if err := s.m.Revoke(ctx, id); err != nil {
				return nil, err
			}
			return s.m.Get(ctx, id)
		}), true
	case "revoke-owner":
		return runRevokeOwner, true
	}
	return operatorCommand(name, fs)
}

// manage runs a management subcommand: flags, database, Manager.
func (c *cli) manage(ctx context.Context, name string, args []string) int {
	fs := flag.NewFlagSet("apikey "+name, flag.ContinueOnError)
	cfg := c.register(fs)
	run, ok := command(name, fs)
	if !ok {
		fmt.Fprintf(c.stderr, "apikey: unknown subcommand %q; run \"apikey help\"\n", name)
		return exitUsage
	}
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	b, err := c.connect(cfg)
	if err != nil {
		return c.fail(name, err)
	}
	err = run(ctx, &session{cli: c, backend: b, cfg: cfg, name: name}, pos)
	b.close(context.WithoutCancel(ctx))
	c.warnUnannounced(name, b)
	return c.fail(name, err)
}

// parse parses the flags and positional arguments of a subcommand. It
// answers -h with the subcommand's flags on stdout and a bad flag with one
// line on stderr; ok is false when the subcommand must stop with code.
func (c *cli) parse(fs *flag.FlagSet, args []string) (pos []string, code int, ok bool) {
	fs.SetOutput(io.Discard)
	pos, err := parseInterleaved(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(c.stdout)
		fmt.Fprintf(c.stdout, "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		return nil, exitOK, false
	case err != nil:
		fmt.Fprintf(c.stderr, "%s: %v; run \"apikey help\"\n", fs.Name(), err)
		return nil, exitUsage, false
	}
	return pos, exitOK, true
}

// fail reports err in one line, unless it was reported already, and
// returns its exit code.
func (c *cli) fail(name string, err error) int {
	if q := (quiet{}); err != nil && !errors.As(err, &q) {
		fmt.Fprintf(c.stderr, "apikey %s: %s\n", name, message(err))
	}
	return exitCode(err)
}

// parseInterleaved parses flags that may come before, between or after
// positional arguments; everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first positional argument, or consumes "--".
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

func runMigrate(ctx context.Context, s *session, args []string) error {
	if len(args) > 0 {
		return usageError("migrate takes no arguments")
	}
	if err := s.store.Migrate(ctx); err != nil {
		return err
	}
	return s.print(map[string]string{"table": s.store.Table(), "status": "migrated"}, func(t *table) {
		t.row("migrated", s.store.Table())
	})
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// metadataFlag parses repeated key=value flags.
func metadataFlag(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	md := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError(fmt.Sprintf("--metadata %q is not key=value", kv))
		}
		md[k] = v
	}
	return md, nil
}

func parseTime(flagName, v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usageError(fmt.Sprintf("--%s %q is not an RFC 3339 time (e.g. 2030-01-31T00:00:00Z)", flagName, v))
	}
	return t, nil
}

func issueCommand(fs *flag.FlagSet) runner {
	var owner, name, plan, expiresAt, keyPrefix, allowedIPs string
	var scopes, metadata multi
	var ttl time.Duration
	var credits int64
	fs.StringVar(&owner, "owner", "", "the key's owner (required)")
	fs.StringVar(&name, "name", "", "a label for people")
	fs.Var(&scopes, "scope", "a scope to grant (repeatable)")
	fs.StringVar(&plan, "plan", "", "the key's plan")
	fs.Var(&metadata, "metadata", "key=value metadata (repeatable)")
	fs.DurationVar(&ttl, "ttl", 0, "lifetime, e.g. 720h")
	fs.StringVar(&expiresAt, "expires-at", "", "expiry time (RFC 3339); wins over --ttl")
	fs.Int64Var(&credits, "credits", 0, "lifetime uses (0: unlimited)")
	fs.StringVar(&keyPrefix, "key-prefix", "", "the prefix to issue under (one of --prefix; default the first)")
	fs.StringVar(&allowedIPs, "allowed-ips", "", "the IP ranges the key may be used from, comma-separated CIDR (within the customer's)")
	return func(ctx context.Context, s *session, args []string) error {
		if len(args) > 0 {
			return usageError("issue takes no arguments; use flags")
		}
		ips, err := ipsFlag("allowed-ips", allowedIPs)
		if err != nil {
			return err
		}
		if owner == "" {
			return usageError("issue needs --owner")
		}
		md, err := metadataFlag(metadata)
		if err != nil {
			return err
		}
		if err := s.checkPlan(s.cfg, plan); err != nil {
			return err
		}
		p := apikey.IssueParams{Owner: owner, Name: name, Scopes: scopes, Plan: plan, Metadata: md, TTL: ttl, Prefix: keyPrefix,
			AllowedIPs: ips}
		if expiresAt != "" {
			if p.ExpiresAt, err = parseTime("expires-at", expiresAt); err != nil {
				return err
			}
		}
		if credits < 0 {
			return usageError("--credits must not be negative")
		}
		if credits > 0 {
			p.Limits = withCredits(nil, credits)
		}
		token, k, err := s.m.Issue(ctx, p)
		if err != nil {
			return err
		}
		fmt.Fprintln(s.stderr, "apikey: the token is shown once; store it now.")
		return s.print(withToken(k, token), func(t *table) {
			t.row("KEY", token)
			keyRows(t, k, s.m.Now())
		})
	}
}

func listCommand(fs *flag.FlagSet) runner {
	var owner, after string
	var limit int
	var all bool
	fs.StringVar(&owner, "owner", "", "whose keys (required)")
	fs.StringVar(&after, "after", "", "start after this cursor (the next of a previous page)")
	fs.IntVar(&limit, "limit", apikey.ListOptions{}.PageSize(), "page size")
	fs.BoolVar(&all, "all", false, "every page")
	return func(ctx context.Context, s *session, args []string) error {
		if len(args) > 0 || owner == "" {
			return usageError("list needs --owner and takes no arguments")
		}
		if limit < 1 || limit > apikey.MaxPageSize {
			return usageError(fmt.Sprintf("--limit must be between 1 and %d", apikey.MaxPageSize))
		}
		cursor, err := selfservice.ParseCursor(after)
		if err != nil {
			return usageError("--after is not a cursor of apikey list")
		}
		var keys []*apikey.Key
		next := ""
		for opts := (apikey.ListOptions{After: cursor, Size: limit}); ; {
			page, err := s.m.List(ctx, owner, opts)
			if err != nil {
				return err
			}
			keys = append(keys, page...)
			if len(page) < opts.PageSize() {
				next = ""
				break
			}
			opts.After = page[len(page)-1].Cursor()
			next = selfservice.FormatCursor(opts.After)
			if !all {
				break
			}
		}
		now := s.m.Now()
		views := make([]keyJSON, 0, len(keys))
		for _, k := range keys {
			views = append(views, view(k, now))
		}
		var nextp *string
		if next != "" {
			nextp = &next
		}
		return s.print(struct {
			Keys []keyJSON `json:"keys"`
			Next *string   `json:"next"`
		}{views, nextp}, func(t *table) {
			t.row("ID", "HINT", "NAME", "PLAN", "SCOPES", "STATUS", "CREATED", "EXPIRES", "LAST USED")
			for _, k := range keys {
				t.row(k.ID, k.Hint, k.Name, k.Plan, strings.Join(k.Scopes, " "), status(k, now),
					when(k.CreatedAt), when(k.ExpiresAt), when(k.LastUsedAt))
			}
			if next != "" {
				t.note("more: --after " + next)
			}
		})
	}
}

// eachID runs fn on every id argument and prints the keys it returns.
func eachID(fn func(ctx context.Context, s *session, id string) (*apikey.Key, error)) runner {
	return func(ctx context.Context, s *session, args []string) error {
		if len(args) == 0 {
			return usageError("give at least one key id")
		}
		var keys []*apikey.Key
		var firstErr error
		for _, id := range args {
			k, err := fn(ctx, s, id)
			if err != nil {
				fmt.Fprintf(s.stderr, "apikey %s: %s: %s\n", s.name, id, message(err))
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			keys = append(keys, k)
		}
		if err := s.printKeys(keys); err != nil {
			return err
		}
		if firstErr != nil {
			return quiet{firstErr}
		}
		return nil
	}
}

// quiet is an error already reported. It only sets the exit code.
type quiet struct{ error }

func (q quiet) Unwrap() error { return q.error }

func updateCommand(fs *flag.FlagSet) runner {
	var name, plan, expiresAt, allowedIPs string
	var scopes, metadata multi
	var noScopes, noMetadata, noExpiry, noCredits, noIPs bool
	var credits int64
	fs.StringVar(&name, "name", "", "new label")
	fs.Var(&scopes, "scope", "the scopes (repeatable; replaces them all)")
	fs.BoolVar(&noScopes, "no-scopes", false, "remove every scope")
	fs.StringVar(&plan, "plan", "", "new plan")
	fs.Var(&metadata, "metadata", "key=value metadata (repeatable; replaces it all)")
	fs.BoolVar(&noMetadata, "no-metadata", false, "remove all metadata")
	fs.StringVar(&expiresAt, "expires-at", "", "new expiry (RFC 3339)")
	fs.BoolVar(&noExpiry, "no-expiry", false, "never expire")
	fs.Int64Var(&credits, "credits", 0, "lifetime uses")
	fs.BoolVar(&noCredits, "no-credits", false, "remove the credits limit")
	fs.StringVar(&allowedIPs, "allowed-ips", "", "the IP ranges, comma-separated CIDR (replaces them all; within the customer's)")
	fs.BoolVar(&noIPs, "no-allowed-ips", false, "lift the key's own IP restriction (the customer's ranges still hold)")
	return func(ctx context.Context, s *session, args []string) error {
		if len(args) != 1 {
			return usageError("update takes one key id")
		}
		ips, err := ipsFlag("allowed-ips", allowedIPs)
		if err != nil {
			return err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["name"] && !set["scope"] && !noScopes && !set["plan"] && !set["metadata"] && !noMetadata &&
			!set["expires-at"] && !noExpiry && !set["credits"] && !noCredits && !set["allowed-ips"] && !noIPs {
			return usageError("update: nothing to change; see apikey help")
		}
		md, err := metadataFlag(metadata)
		if err != nil {
			return err
		}
		if set["plan"] {
			if err := s.checkPlan(s.cfg, plan); err != nil {
				return err
			}
		}
		var exp time.Time
		if expiresAt != "" {
			if exp, err = parseTime("expires-at", expiresAt); err != nil {
				return err
			}
			if !exp.After(s.m.Now()) {
				return fmt.Errorf("%w: --expires-at is not in the future", apikey.ErrInvalidOptions)
			}
		}
		if set["expires-at"] && noExpiry || set["credits"] && noCredits || set["scope"] && noScopes || set["metadata"] && noMetadata ||
			set["allowed-ips"] && noIPs {
			return usageError("a value and its --no- flag together")
		}
		if credits < 0 {
			return usageError("--credits must not be negative")
		}
		k, err := s.m.Update(ctx, args[0], func(k *apikey.Key) error {
			if set["name"] {
				k.Name = name
			}
			if set["scope"] || noScopes {
				k.Scopes = append([]string(nil), scopes...)
			}
			if set["plan"] {
				k.Plan = plan
			}
			if set["metadata"] || noMetadata {
				k.Metadata = md
			}
			if set["expires-at"] {
				k.ExpiresAt = exp.UTC().Truncate(time.Microsecond)
			}
			if noExpiry {
				k.ExpiresAt = time.Time{}
			}
			if set["credits"] {
				k.Limits = withCredits(k.Limits, credits)
			}
			if noCredits {
				k.Limits = withCredits(k.Limits, -1)
			}
			if set["allowed-ips"] || noIPs {
				k.AllowedIPs = ips
			}
			return nil
		})
		if err != nil {
			return err
		}
		return s.printKeys([]*apikey.Key{k})
	}
}

func rotateCommand(fs *flag.FlagSet) runner {
	var grace time.Duration
	fs.DurationVar(&grace, "grace", 0, "how long the old key keeps working, e.g. 24h (0: stops at once)")
	return func(ctx context.Context, s *session, args []string) error {
		if len(args) != 1 {
			return usageError("rotate takes one key id")
		}
		if grace < 0 {
			return usageError("--grace must not be negative")
		}
		rot, err := s.m.Rotate(ctx, args[0], grace)
		if err != nil {
			return err
		}
		token, succ, old := rot.Token, rot.Key, rot.Previous
		fmt.Fprintln(s.stderr, "apikey: the token is shown once; store it now.")
		now := s.m.Now()
		out := struct {
			keyJSON
			Key      string   `json:"key"`
			Previous *keyJSON `json:"previous"`
		}{keyJSON: view(succ, now), Key: token}
		if old != nil {
			pv := view(old, now)
			out.Previous = &pv
		}
		return s.print(out, func(t *table) {
			t.row("KEY", token)
			keyRows(t, succ, now)
			if old != nil {
				t.row("OLD KEY", old.ID)
				t.row("OLD KEY EXPIRES", when(old.ExpiresAt))
			}
		})
	}
}

func runRevokeOwner(ctx context.Context, s *session, args []string) error {
	if len(args) != 1 || args[0] == "" {
		return usageError("revoke-owner takes one owner")
	}
	ids, err := s.m.RevokeOwner(ctx, args[0])
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	return s.print(map[string]any{"owner": args[0], "revoked": ids}, func(t *table) {
		t.row("REVOKED", "OWNER")
		for _, id := range ids {
			t.row(id, args[0])
		}
		t.note(fmt.Sprintf("%d keys of %s revoked", len(ids), args[0]))
	})
}
