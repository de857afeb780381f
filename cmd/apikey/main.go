// Command apikey manages the API keys of a gokeys/apikey database and
// finds leaked keys in files.
//
//	go install github.com/gokeys/apikey/cmd/apikey@latest
//
//	export APIKEY_SQLITE=keys.db          # or APIKEY_POSTGRES_DSN, APIKEY_MYSQL_DSN
//	export APIKEY_PEPPER=...              # the pepper your service hashes with
//	apikey migrate
//	apikey issue --owner partner-42 --name "Partner import" --scope read --ttl 720h
//	apikey list --owner partner-42
//	apikey revoke-owner partner-42        # the answer to a leak
//	apikey usage --customer partner-42 --step month --from 2026-11-01T00:00:00Z \
//	    --to 2026-12-01T00:00:00Z --format csv > usage.csv   # for billing
//	apikey scan --prefix sk_live .        # exit 1 when a key is found
//	git diff --cached | apikey scan --prefix sk_live   # as a pre-commit hook
//
// Every change is announced to the running services, as their Managers
// announce changes to each other (apikey.Notifier). So they drop their
// cached copy of the key at once. The announcement goes through Redis
// pub/sub with --redis (APIKEY_REDIS). Else it goes through PostgreSQL
// LISTEN/NOTIFY when the database is PostgreSQL, the choice
// examples/server makes. Without either, a service honours a change when
// its cache entry expires. With --plans (APIKEY_PLANS), the services'
// plans file, issue and update refuse other plans.
//
// Run "apikey help" for every subcommand and flag. The exit codes are
// these.
//
//	0  success; for scan: no key found
//	1  scan found at least one key
//	2  usage: unknown subcommand, bad flag or argument
//	3  no such key
//	4  refused: invalid input (for usage: a range of more than 1,000
//	   periods, or a --to not after --from), or the key's state forbids
//	   it (revoked, rotated, expired, disabled)
//	5  failure: the database or a file could not be used
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Exit codes.
const (
	exitOK       = 0
	exitFound    = 1
	exitUsage    = 2
	exitNotFound = 3
	exitRefused  = 4
	exitFailure  = 5
)

func main() {
	// The Redis client logs failed dials itself; the CLI says once, in
	// its own words, when running services were not told of a change.
	redis.SetLogger(silent{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// silent is a logger that drops everything.
type silent struct{}

func (silent) Printf(context.Context, string, ...any) {}

// cli is one invocation, with its streams and environment.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// run executes one command line and returns its exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		c.usage(stderr)
		return exitUsage
	}
	name, args := args[0], args[1:]
	switch name {
	case "help", "-h", "--help", "-help":
		c.usage(stdout)
		return exitOK
	case "scan":
		return c.scan(ctx, args)
	}
	return c.manage(ctx, name, args)
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `Usage: apikey <subcommand> [flags] [arguments]

Key management (needs a database):
  migrate                              create or upgrade the keys table
  issue --owner O [--name N] [--scope S]... [--plan P] [--metadata k=v]...
        [--ttl D | --expires-at T] [--credits N] [--key-prefix P] [--allowed-ips CIDR,CIDR]
                                       issue a key; prints its token once
  list --owner O [--limit N] [--after ID] [--all]
                                       an owner's keys, never a token
  show ID                              one key
  update ID [--name N] [--scope S]... [--no-scopes] [--plan P] [--metadata k=v]...
        [--no-metadata] [--expires-at T | --no-expiry] [--credits N | --no-credits]
        [--allowed-ips CIDR,CIDR | --no-allowed-ips]
                                       change a key
  rotate ID [--grace D]                replace a key; prints the new token once
  disable ID... / enable ID...         suspend / resume keys
  revoke ID...                         revoke keys (final)
  revoke-owner OWNER                   revoke every key of an owner
  revoke-chain ID                      revoke a key and its whole rotation chain (after a leak)
  purge --older-than D                 delete keys revoked or expired more than D (720h, 30d) ago

Customers (the operator's records: plan, scope ceiling, key cap, grants, IP ranges, suspension):
  customer set ID [--plan P] [--scopes S,S | --unrestricted] [--max-keys N] [--credits N]
        [--grant NAME=KIND:N/PER]... [--no-grants] [--metadata k=v]... [--no-metadata]
        [--allowed-ips CIDR,CIDR | --no-allowed-ips]
                                       change a customer (--plan needs --plans)
  customer show ID... / customer list [--limit N] [--after ID] [--all]
  customer suspend ID... / customer resume ID...

Usage (what services recorded; see apikey.Options.UsageInterval):
  usage --customer ID | --key ID [--from T] [--to T] [--step hour|day|month]
        [--format table|csv|jsonl] [--total]
                                       one row per key and period (UTC): customer, key_id,
                                       period_start, period_end, allowed, limited, refused,
                                       cost; --total: the customer's keys together, key_id
                                       empty. from is rounded down and to (exclusive) up to
                                       whole periods; defaults: --step day, --to now, --from
                                       24h, 30 days or 12 months before --to. At most 1,000
                                       periods. A customer's key is listed in every period
                                       once it has any usage in the range.

Leak search:
  scan [--revoke] [--json] [paths...]  find tokens of the prefixes in files, directories
                                       (recursively; .git and binary files skipped) or stdin;
                                       checksums are checked, output is redacted; exit 1 if found.
                                       --revoke (with a database) revokes the keys whose tokens
                                       verify and lists the others as decoys.
  scan --gitleaks-rule                 print gitleaks rules for the token format

Database (one of; flag or environment):
  --sqlite FILE       APIKEY_SQLITE
  --postgres DSN      APIKEY_POSTGRES_DSN
  --mysql DSN         APIKEY_MYSQL_DSN
  --table NAME        APIKEY_TABLE (default api_keys)

Running services (each change is announced, so they drop their cached copy at once):
  --redis ADDR        APIKEY_REDIS: announce through Redis pub/sub; without it, through
                      PostgreSQL LISTEN/NOTIFY when the database is PostgreSQL
  --notify-channel C  APIKEY_NOTIFY_CHANNEL (default that of redisnotify / pgnotify)
  --plans FILE        APIKEY_PLANS: the services' plans, JSON {"plan": [limit...]};
                      issue and update refuse other plans

Format and hashing:
  --prefix P[,P...]   APIKEY_PREFIX: token prefixes, the first issues (default sk)
  --secret-bits N     APIKEY_SECRET_BITS (default 256)
  APIKEY_PEPPER       the HMAC pepper of the service (32+ bytes); SHA-256 without it
  APIKEY_PEPPER_VERSION  its version label (default 1)

Output:
  --json              JSON instead of a table (usage: --format jsonl)

Exit codes: 0 ok (scan: nothing found), 1 scan found keys, 2 usage, 3 no such key,
4 refused (invalid input or key state), 5 failure (database or file).
`)
}
