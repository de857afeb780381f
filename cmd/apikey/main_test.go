package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
)

const testPepper = "a test pepper of at least 32 bytes!"

// harness runs the CLI against one SQLite file.
type harness struct {
	t   *testing.T
	db  string
	env map[string]string
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, db: filepath.Join(t.TempDir(), "keys.db"), env: map[string]string{
		"APIKEY_PEPPER": testPepper, "APIKEY_PREFIX": "sk_live,sk_test",
	}}
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the CLI with the harness's database (unless args name one).
func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	env := map[string]string{"APIKEY_SQLITE": h.db}
	for k, v := range h.env {
		env[k] = v
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut, func(k string) string { return env[k] })
	return result{code, out.String(), errOut.String()}
}

// json runs a command with --json and decodes its output.
func (h *harness) json(args ...string) map[string]any {
	h.t.Helper()
	r := h.run("", append(args, "--json")...)
	require.Equal(h.t, exitOK, r.code, "%v: %s", args, r.stderr)
	var v map[string]any
	require.NoError(h.t, json.Unmarshal([]byte(r.stdout), &v), r.stdout)
	return v
}

// manager opens the harness's database as a service would.
func (h *harness) manager() *apikey.Manager {
	h.t.Helper()
	db, err := sql.Open("sqlite", "file:"+h.db+"?_pragma=busy_timeout(5000)")
	require.NoError(h.t, err)
	h.t.Cleanup(func() { db.Close() })
	s, err := sqlstore.New(db, sqlstore.SQLite, sqlstore.Options{})
	require.NoError(h.t, err)
	m, err := apikey.New(s, apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}, CacheTTL: -1, CacheNegativeTTL: -1,
		Peppers: []apikey.Pepper{{Version: "1", Secret: []byte(testPepper)}}})
	require.NoError(h.t, err)
	h.t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// The round trip of the issue: migrate, issue, list, scan finds the token
// in a file, scan --revoke revokes it, and the key is refused.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.run("", "migrate")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "migrated")
	require.Equal(t, exitOK, h.run("", "migrate").code, "migrate is idempotent")

	issued := h.json("issue", "--owner", "partner-42", "--name", "import", "--scope", "read", "--scope", "write", "--ttl", "720h")
	token, id := issued["key"].(string), issued["id"].(string)
	require.True(t, strings.HasPrefix(token, "sk_live_"), token)
	assert.Equal(t, "partner-42", issued["owner"])
	assert.Equal(t, []any{"read", "write"}, issued["scopes"])
	k, err := h.manager().Verify(context.Background(), token)
	require.NoError(t, err, "the issued token works for the service")
	assert.Equal(t, id, k.ID)

	list := h.json("list", "--owner", "partner-42")
	keys := list["keys"].([]any)
	require.Len(t, keys, 1)
	assert.Equal(t, id, keys[0].(map[string]any)["id"])
	table := h.run("", "list", "--owner", "partner-42")
	require.Equal(t, exitOK, table.code)
	assert.Contains(t, table.stdout, id)
	assert.Contains(t, table.stdout, "active")
	assert.NotContains(t, table.stdout+list["keys"].([]any)[0].(map[string]any)["hint"].(string), token, "never a token")

	// A repository with the token in a config file, in .git (skipped) and
	// in a binary file (skipped).
	repo := t.TempDir()
	write := func(name, content string) {
		p := filepath.Join(repo, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	write("README.md", "nothing here\n")
	write("config/prod.env", "# settings\nDEBUG=false\nAPI_KEY="+token+"\n")
	write(".git/objects/ab/cdef", "API_KEY="+token+"\n")
	write("image.png", "\x89PNG\x00\x00"+token)
	r = h.run("", "scan", repo)
	assert.Equal(t, exitFound, r.code, r.stderr)
	assert.Equal(t, filepath.Join(repo, "config/prod.env")+":3: "+k.Hint+" (key id "+id+")\n", r.stdout)
	assert.NotContains(t, r.stdout+r.stderr, token, "the secret is never printed")

	r = h.run("", "scan", "--revoke", repo)
	assert.Equal(t, exitFound, r.code, r.stderr)
	assert.Contains(t, r.stdout, id+" "+k.Hint+": revoked (owner partner-42)")
	assert.NotContains(t, r.stdout+r.stderr, token)
	_, err = h.manager().Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrRevoked, "the key is refused")

	r = h.run("", "scan", "--revoke", "--json", repo)
	assert.Equal(t, exitFound, r.code)
	var out struct {
		Found   []finding    `json:"found"`
		Revoked []revocation `json:"revoked"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.Len(t, out.Found, 1)
	assert.Equal(t, 3, out.Found[0].Line)
	assert.Equal(t, []revocation{{ID: id, Hint: k.Hint, Owner: "partner-42", Result: "already revoked"}}, out.Revoked)

	// A test key (the second prefix) in a log is found and revoked too.
	test := h.json("issue", "--owner", "partner-42", "--key-prefix", "sk_test")
	write("logs/app.log", "GET /v1/data key="+test["key"].(string)+" 200\n")
	r = h.run("", "scan", "--revoke", filepath.Join(repo, "logs"))
	assert.Equal(t, exitFound, r.code, r.stderr)
	assert.Contains(t, r.stdout, test["id"].(string)+" "+test["hint"].(string)+": revoked (owner partner-42)")
	_, err = h.manager().Verify(context.Background(), test["key"].(string))
	assert.ErrorIs(t, err, apikey.ErrRevoked)

	require.NoError(t, os.RemoveAll(filepath.Join(repo, "logs")))
	require.NoError(t, os.WriteFile(filepath.Join(repo, "config/prod.env"), []byte("API_KEY=${FROM_VAULT}\n"), 0o644))
	r = h.run("", "scan", repo)
	assert.Equal(t, exitOK, r.code, "clean again")
	assert.Empty(t, r.stdout)
}

// A token forged from a known id with a recomputed checksum is found by
// scan but revokes nothing: only a token that matches the database does.
func TestScanRevokeNeedsTheRealSecret(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	issued := h.json("issue", "--owner", "victim")
	id := issued["id"].(string)
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	forged, err := f.Compose(id, strings.Repeat("A", len(issued["key"].(string))-len("sk_live_")-apikey.IDLength-apikey.ChecksumLength))
	require.NoError(t, err)
	r := h.run("token: "+forged+"\n", "scan", "--revoke")
	assert.Equal(t, exitFound, r.code, r.stderr)
	assert.Contains(t, r.stdout, "-:1: ")
	assert.Contains(t, r.stdout, "not a key of this database")
	_, err = h.manager().Verify(context.Background(), issued["key"].(string))
	assert.NoError(t, err, "the victim's key still works")
}

func TestSubcommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	m := h.manager()

	t.Run("issue", func(t *testing.T) {
		k := h.json("issue", "--owner", "a", "--plan", "pro", "--metadata", "team=infra", "--expires-at", "2099-01-01T00:00:00Z", "--key-prefix", "sk_test")
		assert.Equal(t, "pro", k["plan"])
		assert.Equal(t, map[string]any{"team": "infra"}, k["metadata"])
		assert.Equal(t, "2099-01-01T00:00:00Z", k["expires_at"])
		k = h.json("issue", "--owner", "a", "--credits", "50")
		assert.Equal(t, []any{map[string]any{"name": "credits", "kind": "credits", "count": 50.0}}, k["limits"])
		r := h.run("", "issue", "--owner", "a")
		require.Equal(t, exitOK, r.code)
		assert.Regexp(t, `(?m)^KEY\s+sk_live_\w+$`, r.stdout, "a readable table")
		assert.Contains(t, r.stderr, "shown once")
		for _, c := range []struct {
			args []string
			code int
		}{
			{[]string{"issue"}, exitUsage},
			{[]string{"issue", "--owner", "a", "extra"}, exitUsage},
			{[]string{"issue", "--owner", "a", "--metadata", "novalue"}, exitUsage},
			{[]string{"issue", "--owner", "a", "--expires-at", "tomorrow"}, exitUsage},
			{[]string{"issue", "--owner", "a", "--bogus"}, exitUsage},
			{[]string{"issue", "--owner", "a", "--scope", "a b"}, exitRefused},
			{[]string{"issue", "--owner", "a", "--expires-at", "2001-01-01T00:00:00Z"}, exitRefused},
			{[]string{"issue", "--owner", "a", "--ttl", "-1h"}, exitRefused},
		} {
			r := h.run("", c.args...)
			assert.Equal(t, c.code, r.code, "%v: %s", c.args, r.stderr)
		}
	})

	id := h.json("issue", "--owner", "b", "--name", "first")["id"].(string)

	t.Run("show", func(t *testing.T) {
		k := h.json("show", id)
		assert.Equal(t, "first", k["name"])
		assert.Equal(t, "active", k["status"])
		r := h.run("", "show", id)
		assert.Regexp(t, `(?m)^NAME\s+first$`, r.stdout)
		assert.Equal(t, exitNotFound, h.run("", "show", "AAAAAAAAAAAAAAAA").code)
		assert.Equal(t, exitUsage, h.run("", "show").code)
	})

	t.Run("list", func(t *testing.T) {
		for range 3 {
			h.json("issue", "--owner", "pager")
		}
		page := h.json("list", "--owner", "pager", "--limit", "2")
		assert.Len(t, page["keys"], 2)
		require.NotNil(t, page["next"])
		rest := h.json("list", "--owner", "pager", "--limit", "2", "--after", page["next"].(string))
		assert.Len(t, rest["keys"], 1)
		assert.Nil(t, rest["next"])
		assert.Len(t, h.json("list", "--owner", "pager", "--limit", "1", "--all")["keys"], 3)
		assert.Equal(t, exitUsage, h.run("", "list").code, "needs --owner")
		assert.Equal(t, exitUsage, h.run("", "list", "--owner", "x", "--limit", "0").code)
	})

	t.Run("update", func(t *testing.T) {
		k := h.json("update", id, "--name", "renamed", "--scope", "read", "--plan", "pro", "--no-expiry")
		assert.Equal(t, "renamed", k["name"])
		assert.Equal(t, []any{"read"}, k["scopes"])
		assert.Equal(t, "pro", k["plan"])
		assert.Nil(t, k["expires_at"])
		assert.Equal(t, exitRefused, h.run("", "update", id, "--scope", "a b").code)
		assert.Equal(t, exitNotFound, h.run("", "update", "AAAAAAAAAAAAAAAA", "--name", "x").code)
		assert.Equal(t, exitUsage, h.run("", "update", id, "--expires-at", "2099-01-01T00:00:00Z", "--no-expiry").code)
		assert.Equal(t, exitUsage, h.run("", "update", id).code, "nothing to change")
		k = h.json("update", id, "--credits", "7", "--metadata", "a=b")
		assert.Equal(t, []any{map[string]any{"name": "credits", "kind": "credits", "count": 7.0}}, k["limits"])
		assert.Equal(t, map[string]any{"a": "b"}, k["metadata"])
		k = h.json("update", id, "--no-credits", "--no-metadata", "--no-scopes")
		assert.Equal(t, []any{}, k["limits"])
		assert.Equal(t, map[string]any{}, k["metadata"])
		assert.Equal(t, []any{}, k["scopes"])
	})

	t.Run("disable and enable", func(t *testing.T) {
		issued := h.json("issue", "--owner", "c")
		kid, token := issued["id"].(string), issued["key"].(string)
		assert.Equal(t, "disabled", h.json("disable", kid)["status"])
		_, err := m.Verify(context.Background(), token)
		assert.ErrorIs(t, err, apikey.ErrDisabled)
		assert.Equal(t, "active", h.json("enable", kid)["status"])
		_, err = m.Verify(context.Background(), token)
		assert.NoError(t, err)
		assert.Equal(t, exitNotFound, h.run("", "disable", "AAAAAAAAAAAAAAAA").code)
	})

	t.Run("rotate", func(t *testing.T) {
		issued := h.json("issue", "--owner", "d")
		kid, oldToken := issued["id"].(string), issued["key"].(string)
		rot := h.json("rotate", kid, "--grace", "1h")
		newToken := rot["key"].(string)
		assert.NotEqual(t, kid, rot["id"])
		prev := rot["previous"].(map[string]any)
		assert.Equal(t, rot["id"], prev["rotated_to"])
		assert.NotNil(t, prev["expires_at"], "the old key's new expiry")
		_, err := m.Verify(context.Background(), oldToken)
		assert.NoError(t, err, "in grace")
		_, err = m.Verify(context.Background(), newToken)
		assert.NoError(t, err)
		assert.Equal(t, exitRefused, h.run("", "rotate", kid).code, "rotated twice")
		assert.Equal(t, exitNotFound, h.run("", "rotate", "AAAAAAAAAAAAAAAA").code)
		assert.Equal(t, exitUsage, h.run("", "rotate", kid, "--grace", "-1s").code)
	})

	t.Run("revoke", func(t *testing.T) {
		a := h.json("issue", "--owner", "e")
		r := h.run("", "revoke", a["id"].(string), "AAAAAAAAAAAAAAAA")
		assert.Equal(t, exitNotFound, r.code, "one of two ids is unknown")
		assert.Contains(t, r.stdout, a["id"].(string), "the other is revoked")
		_, err := m.Verify(context.Background(), a["key"].(string))
		assert.ErrorIs(t, err, apikey.ErrRevoked)
		assert.Equal(t, "revoked", h.json("revoke", a["id"].(string))["status"], "revoking twice is fine")
	})

	t.Run("revoke-owner", func(t *testing.T) {
		var tokens []string
		for range 3 {
			tokens = append(tokens, h.json("issue", "--owner", "leaky")["key"].(string))
		}
		out := h.json("revoke-owner", "leaky")
		assert.Len(t, out["revoked"], 3)
		for _, tok := range tokens {
			_, err := m.Verify(context.Background(), tok)
			assert.ErrorIs(t, err, apikey.ErrRevoked)
		}
		assert.Equal(t, []any{}, h.json("revoke-owner", "leaky")["revoked"])
		r := h.run("", "revoke-owner", "leaky")
		assert.Contains(t, r.stdout, "0 keys of leaky revoked")
	})

	t.Run("usage and failures", func(t *testing.T) {
		var out, errOut bytes.Buffer
		noEnv := func(string) string { return "" }
		assert.Equal(t, exitUsage, run(context.Background(), nil, nil, &out, &errOut, noEnv))
		assert.Equal(t, exitUsage, run(context.Background(), []string{"frobnicate"}, nil, &out, &errOut, noEnv))
		assert.Equal(t, exitOK, run(context.Background(), []string{"help"}, nil, &out, &errOut, noEnv))
		assert.Contains(t, out.String(), "Exit codes")
		assert.Equal(t, exitUsage, run(context.Background(), []string{"list", "--owner", "a"}, nil, &out, &errOut, noEnv), "no database")
		assert.Equal(t, exitUsage, h.run("", "list", "--owner", "a", "--postgres", "postgres://x").code, "two databases")
		missing := filepath.Join(t.TempDir(), "no", "such", "dir", "keys.db")
		assert.Equal(t, exitFailure, h.run("", "list", "--owner", "a", "--sqlite", missing).code, "an unusable database")
		assert.Equal(t, exitRefused, h.run("", "list", "--owner", "a", "--table", "bad name").code)
	})
}

// randomText returns n bytes of text that looks like tokens as much as
// possible without being one: base62 runs, underscores, the prefixes, and
// well-formed candidates whose checksums are random.
func randomText(rng *rand.Rand, n int, f apikey.Format) []byte {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_ =:\n"
	body := f.Len() - len(f.Prefix()) - 1
	b := make([]byte, 0, n+f.Len())
	for len(b) < n {
		switch rng.IntN(64) {
		case 0: // a look-alike: prefix and the exact length, random checksum
			b = append(b, ' ')
			b = append(b, f.Prefix()+"_"...)
			for range body {
				b = append(b, alphabet[rng.IntN(62)])
			}
			b = append(b, '\n')
		default:
			for range 32 {
				b = append(b, alphabet[rng.IntN(len(alphabet))])
			}
		}
	}
	return b[:n]
}

func TestScanReportsNothingInRandomText(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	text := randomText(rng, 8<<20, f)
	require.Greater(t, bytes.Count(text, []byte(" sk_live_")), 2_000, "thousands of well-formed look-alikes")
	s := newScanner([]apikey.Format{f})
	n := 0
	require.NoError(t, s.scan(bytes.NewReader(text), true, func(int, match, string) { n++ }))
	assert.Zero(t, n)
}

// Tokens at every offset around a chunk boundary are found once, with the
// right line, and a token glued to other token characters is not.
func TestScanAcrossChunkBoundaries(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	token, _ := f.New()
	s := newScanner([]apikey.Format{f})
	s.chunk = 4 * f.Len()
	for offset := s.chunk - 2*f.Len(); offset < s.chunk+2*f.Len(); offset++ {
		pad := strings.Repeat("x\n", offset/2) + strings.Repeat(" ", offset%2)
		lines := strings.Count(pad, "\n") + 1
		text := pad + token + "\nmore\n" + token + "x\n" + "x" + token + "\n" + token
		var got []int
		require.NoError(t, s.scan(strings.NewReader(text), false, func(line int, m match, tok string) {
			assert.Equal(t, token, tok)
			got = append(got, line)
		}))
		assert.Equal(t, []int{lines, lines + 4}, got, "offset %d", offset)
	}
}

// Tokens right after an escape (%3D, \u0022, \n) are found wherever the
// chunk boundary falls, the escape included, and a token glued to hex
// digits without the % is not.
func TestScanEscapesAcrossChunkBoundaries(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	token, _ := f.New()
	s := newScanner([]apikey.Format{f})
	s.chunk = 4 * f.Len()
	for offset := s.chunk - 2*f.Len(); offset < s.chunk+2*f.Len(); offset++ {
		pad := strings.Repeat("x\n", offset/2) + strings.Repeat(" ", offset%2)
		lines := strings.Count(pad, "\n") + 1
		text := pad + "GET /?next=%2F%3Fkey%3D" + token + "\n" +
			`{"msg":"{\u0022key\u0022:\u0022` + token + `\u0022}\nx\n` + token + "\"}\n" +
			"3D" + token + "\n"
		var got []int
		require.NoError(t, s.scan(strings.NewReader(text), false, func(line int, m match, tok string) {
			assert.Equal(t, token, tok)
			got = append(got, line)
		}))
		assert.Equal(t, []int{lines, lines + 1, lines + 1}, got, "offset %d", offset)
	}
}

func TestScanStdinAndPaths(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	f, err := apikey.NewFormat("sk_test", 0)
	require.NoError(t, err)
	token, parsed := f.New()
	r := h.run("line one\nAuthorization: Bearer "+token+"\n", "scan")
	assert.Equal(t, exitFound, r.code)
	assert.Equal(t, "-:2: "+parsed.Hint()+" (key id "+parsed.ID+")\n", r.stdout, "second prefix of APIKEY_PREFIX")
	r = h.run("nothing\n", "scan")
	assert.Equal(t, exitOK, r.code)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "leak.txt"), []byte(token), 0o644))
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(dir, link))
	r = h.run("", "scan", link)
	assert.Equal(t, exitFound, r.code, "a symlink given by name is followed")
	r = h.run("", "scan", filepath.Join(t.TempDir(), "missing"))
	assert.Equal(t, exitFailure, r.code, "an unreadable path is a failure")
	r = h.run(token, "scan", "--prefix", "other")
	assert.Equal(t, exitOK, r.code, "only the configured prefixes")
	r = h.run(token, "scan", "--revoke", "--sqlite", "")
	assert.Equal(t, exitUsage, r.code, "--revoke needs a database")
	h.env = map[string]string{"APIKEY_PREFIX": "sk_test"}
	assert.Equal(t, exitFound, h.run(token, "scan").code)
}

func TestGitleaksRule(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.run("", "scan", "--gitleaks-rule")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, 2, strings.Count(r.stdout, "[[rules]]"), "one rule per prefix")
	re := regexp.MustCompile(`regex = '''(.*)'''`)
	rules := re.FindAllStringSubmatch(r.stdout, -1)
	require.Len(t, rules, 2)
	for i, prefix := range []string{"sk_live", "sk_test"} {
		f, err := apikey.NewFormat(prefix, 0)
		require.NoError(t, err)
		token, _ := f.New()
		rule := regexp.MustCompile(rules[i][1]) // gitleaks uses Go's regexp
		secret := func(s string) string {       // what gitleaks reports: secretGroup 1
			if m := rule.FindStringSubmatch(s); m != nil {
				return m[1]
			}
			return ""
		}
		for _, before := range []string{"key=", "", "%3D", "%3d", "%253D", "=3D", `\n`, `\"`, `\x22`, `\u0022`, `\\u0022`} {
			assert.Equal(t, token, secret(before+token+"\n"), "%s: after %q", prefix, before)
			assert.Len(t, f.Scan(before+token), 1, "Scan agrees: %s: after %q", prefix, before)
		}
		for _, before := range []string{"x", "3D", "%3", `\q`, `\u002`} {
			assert.Empty(t, secret(before+token), "glued to a word: %q", before)
			assert.Empty(t, f.Scan(before+token), "glued to a word: %q", before)
		}
		assert.Empty(t, secret("key="+token+"x"), "a longer run is not a token")
	}
	assert.Contains(t, r.stdout, `keywords = ["sk_live_"]`)
	assert.Equal(t, 2, strings.Count(r.stdout, "\nsecretGroup = 1\n"))
	assert.Equal(t, exitUsage, h.run("", "scan", "--gitleaks-rule", "dir").code)
}

// TestScan100MB scans 100 MB of random text through the CLI and reports
// the throughput; it runs when APIKEY_SCAN_100MB is set.
func TestScan100MB(t *testing.T) {
	if os.Getenv("APIKEY_SCAN_100MB") == "" {
		t.Skip("set APIKEY_SCAN_100MB=1 to scan 100 MB of random text")
	}
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "random.txt")
	rng := rand.New(rand.NewChaCha8([32]byte{7}))
	const size = 100 << 20
	require.NoError(t, os.WriteFile(path, randomText(rng, size, f), 0o644))
	h := newHarness(t)
	start := time.Now()
	r := h.run("", "scan", path)
	elapsed := time.Since(start)
	assert.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	assert.Empty(t, r.stdout, "nothing reported")
	t.Logf("scanned %d MB in %v: %.0f MB/s", size>>20, elapsed.Round(time.Millisecond), float64(size)/(1<<20)/elapsed.Seconds())
}

func BenchmarkScan(b *testing.B) {
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(b, err)
	text := randomText(rand.New(rand.NewChaCha8([32]byte{3})), 16<<20, f)
	s := newScanner([]apikey.Format{f})
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.scan(bytes.NewReader(text), true, func(int, match, string) { b.Fatal("found a token in random text") }); err != nil {
			b.Fatal(err)
		}
	}
}

// The round trip on the servers whose DSN is set (the sqlstore test
// variables), each in a table of its own.
func TestRoundTripServers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, env, flag, driver string }{
		{"PostgreSQL", "APIKEY_TEST_POSTGRES_DSN", "--postgres", "pgx"},
		{"MySQL", "APIKEY_TEST_MYSQL_DSN", "--mysql", "mysql"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dsn := os.Getenv(c.env)
			if dsn == "" {
				t.Skipf("%s is not set", c.env)
			}
			table := fmt.Sprintf("cli_keys_%d", rand.Uint64()%1_000_000_000)
			db, err := sql.Open(c.driver, dsn)
			require.NoError(t, err)
			t.Cleanup(func() {
				db.Exec("DROP TABLE " + table)
				db.Close()
			})
			h := newHarness(t)
			h.env["APIKEY_SQLITE"] = ""
			args := func(a ...string) []string { return append(a, c.flag, dsn, "--table", table) }
			r := h.run("", args("migrate")...)
			require.Equal(t, exitOK, r.code, r.stderr)
			issued := h.json(args("issue", "--owner", "srv", "--scope", "read")...)
			token, id := issued["key"].(string), issued["id"].(string)
			assert.Len(t, h.json(args("list", "--owner", "srv")...)["keys"], 1)
			r = h.run("leaked: "+token+"\n", args("scan", "--revoke")...)
			assert.Equal(t, exitFound, r.code, r.stderr)
			assert.Contains(t, r.stdout, id)
			assert.Contains(t, r.stdout, "revoked (owner srv)")
			assert.Equal(t, "revoked", h.json(args("show", id)...)["status"])
		})
	}
}

// A decoy, a token with the id of a leaked key, a valid checksum and the
// wrong secret, does not shield the leaked key from scan --revoke,
// wherever it appears: every distinct token is verified, and decoys are
// reported apart from the revocations.
func TestScanRevokeSeesThroughDecoys(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	decoy := func(id, fill string) string {
		n := f.Len() - len("sk_live_") - apikey.IDLength - apikey.ChecksumLength
		tok, err := f.Compose(id, strings.Repeat(fill, n))
		require.NoError(t, err)
		return tok
	}
	for _, c := range []struct {
		name   string
		input  func(token, d1, d2 string) string
		decoys int // distinct
	}{
		{"decoy first", func(token, d1, d2 string) string { return d1 + "\n" + token + "\n" }, 1},
		{"two decoys first and last, repeated", func(token, d1, d2 string) string {
			return d1 + "\n" + d1 + "\n" + d2 + "\n" + token + "\n" + d1 + "\n" + token + "\n"
		}, 2},
		{"decoy last", func(token, d1, d2 string) string { return token + "\n" + d1 + "\n" }, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			issued := h.json("issue", "--owner", "victim")
			token, id, hint := issued["key"].(string), issued["id"].(string), issued["hint"].(string)
			d1, d2 := decoy(id, "A"), decoy(id, "B")
			in := c.input(token, d1, d2)
			r := h.run(in, "scan", "--revoke", "--json")
			assert.Equal(t, exitFound, r.code, r.stderr)
			var out struct {
				Found   []finding    `json:"found"`
				Revoked []revocation `json:"revoked"`
				Decoys  []revocation `json:"decoys"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
			assert.Len(t, out.Found, strings.Count(in, "\n"), "every occurrence is reported")
			assert.Equal(t, []revocation{{ID: id, Hint: hint, Owner: "victim", Result: "revoked"}}, out.Revoked)
			decoys := map[string]bool{}
			for _, d := range out.Decoys {
				assert.Equal(t, id, d.ID)
				assert.Equal(t, "not a key of this database", d.Result)
				assert.Empty(t, d.Owner)
				assert.Equal(t, "-", d.Path)
				assert.Positive(t, d.Line)
				assert.NotEqual(t, hint, d.Hint)
				decoys[d.Hint] = true
			}
			assert.Len(t, out.Decoys, c.decoys, "each distinct decoy once")
			assert.Len(t, decoys, c.decoys)
			_, err := h.manager().Verify(context.Background(), token)
			assert.ErrorIs(t, err, apikey.ErrRevoked, "the leaked key is revoked")
			assert.NotContains(t, r.stdout+r.stderr, token)
			assert.NotContains(t, r.stdout+r.stderr, d1)

			// In text, the decoy's line says where it is.
			r = h.run(d1+"\n", "scan", "--revoke")
			assert.Equal(t, exitFound, r.code)
			assert.Contains(t, r.stdout, id+" "+f.Redact(d1)+": not a key of this database (-:1)\n")
		})
	}
}

// Every failure is one line on stderr, "apikey <subcommand>: ...", once,
// without the library's "apikey: " prefixes repeated inside it.
func TestErrorsAreOneCleanLine(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	id := h.json("issue", "--owner", "o")["id"].(string)
	plans := filepath.Join(t.TempDir(), "plans.json")
	require.NoError(t, os.WriteFile(plans, []byte(`{"free": []}`), 0o644))
	for _, c := range []struct {
		args  []string
		code  int
		lines []string // the lines of stderr, in order
	}{
		{[]string{"show", "nosuchid"}, exitNotFound, []string{"apikey show: nosuchid: key not found"}},
		{[]string{"show", "nosuch", id, "AAAAAAAAAAAAAAAA"}, exitNotFound,
			[]string{"apikey show: nosuch: key not found", "apikey show: AAAAAAAAAAAAAAAA: key not found"}},
		{[]string{"disable", "nosuch"}, exitNotFound, []string{"apikey disable: nosuch: key not found"}},
		{[]string{"enable", "nosuch"}, exitNotFound, []string{"apikey enable: nosuch: key not found"}},
		{[]string{"revoke", "nosuch"}, exitNotFound, []string{"apikey revoke: nosuch: key not found"}},
		{[]string{"rotate", "nosuch"}, exitNotFound, []string{"apikey rotate: key not found"}},
		{[]string{"update", "nosuch", "--name", "x"}, exitNotFound, []string{"apikey update: key not found"}},
		{[]string{"issue", "--owner", "o", "--ttl", "-1h"}, exitRefused, []string{"apikey issue: invalid ttl: negative"}},
		{[]string{"issue"}, exitUsage, []string{"apikey issue: issue needs --owner"}},
		{[]string{"list", "--owner", "o", "--bogus"}, exitUsage,
			[]string{`apikey list: flag provided but not defined: -bogus; run "apikey help"`}},
		{[]string{"scan", "--bogus"}, exitUsage, []string{`apikey scan: flag provided but not defined: -bogus; run "apikey help"`}},
		{[]string{"frobnicate"}, exitUsage, []string{`apikey: unknown subcommand "frobnicate"; run "apikey help"`}},
		{[]string{"issue", "--owner", "o", "--plan", "gold", "--plans", plans}, exitUsage,
			[]string{`apikey issue: unknown plan "gold": the plans of ` + plans + ` are free`}},
	} {
		r := h.run("", c.args...)
		assert.Equal(t, c.code, r.code, "%v", c.args)
		assert.Equal(t, strings.Join(c.lines, "\n")+"\n", r.stderr, "%v", c.args)
	}
	// Failures whose text comes from elsewhere: still one line, one prefix.
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "keys.db")
	for _, args := range [][]string{
		{"list", "--owner", "o", "--sqlite", missing},
		{"list", "--owner", "o", "--table", "bad name"},
		{"issue", "--owner", "o", "--scope", "a b"},
		{"list", "--owner", "o", "--plans", filepath.Join(t.TempDir(), "missing.json")},
		{"scan", "--revoke", "--sqlite", missing},
	} {
		r := h.run(h.json("issue", "--owner", "leak")["key"].(string), args...)
		assert.NotEqual(t, exitOK, r.code, "%v", args)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if args[0] == "scan" {
			require.Len(t, lines, 2, r.stderr)
			assert.Equal(t, "apikey scan: 1 key(s) found", lines[1])
			lines = lines[:1]
		}
		require.Len(t, lines, 1, "%v: %s", args, r.stderr)
		assert.True(t, strings.HasPrefix(lines[0], "apikey "+args[0]+": "), lines[0])
		assert.Equal(t, 1, strings.Count(lines[0], "apikey"), "one prefix: %s", lines[0])
	}
	// -h prints the flags on stdout, no error.
	r := h.run("", "list", "-h")
	assert.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "-owner")
	assert.Empty(t, r.stderr)
}

// With --plans, issue and update refuse plans the services do not have
// (exit 2, one line) and accept theirs; the file is the JSON of
// limits.Plans, periods also as durations.
func TestPlans(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	plans := write("plans.json", `{
		"free": [{"name": "daily", "kind": "quota", "count": 100, "window": "day"}],
		"pro":  [{"name": "daily", "kind": "quota", "count": 10000, "window": "day"},
		         {"name": "per-second", "kind": "rate", "count": 100, "period": "1s"}],
		"batch": [{"name": "per-minute", "kind": "rate", "count": 10, "period": 60000000000}]
	}`)
	k := h.json("issue", "--owner", "p", "--plan", "pro", "--plans", plans)
	assert.Equal(t, "pro", k["plan"])
	id := k["id"].(string)
	r := h.run("", "issue", "--owner", "p", "--plan", "gold", "--plans", plans)
	assert.Equal(t, exitUsage, r.code)
	assert.Equal(t, `apikey issue: unknown plan "gold": the plans of `+plans+" are batch, free, pro\n", r.stderr)
	assert.Empty(t, r.stdout, "nothing issued")
	assert.Len(t, h.json("list", "--owner", "p")["keys"], 1)

	h.env["APIKEY_PLANS"] = plans
	r = h.run("", "update", id, "--plan", "gold")
	assert.Equal(t, exitUsage, r.code)
	assert.Equal(t, `apikey update: unknown plan "gold": the plans of `+plans+" are batch, free, pro\n", r.stderr)
	r = h.run("", "update", id, "--plan", "batch")
	assert.Equal(t, exitRefused, r.code, "a key's plan is its customer's: apikey customer set changes it")
	assert.Equal(t, "apikey update: invalid plan: the plan is the customer's: change it on the customer\n", r.stderr)
	assert.Equal(t, "renamed", h.json("update", id, "--name", "renamed")["name"], "the plan is not checked when unchanged")
	assert.Equal(t, "", h.json("issue", "--owner", "p")["plan"], "no plan is fine")

	for name, content := range map[string]string{
		"not json":       `free: []`,
		"unknown field":  `{"free": [{"name": "daily", "kind": "quota", "count": 1, "window": "day", "per": 1}]}`,
		"bad kind":       `{"free": [{"name": "daily", "kind": "bucket", "count": 1}]}`,
		"bad limit":      `{"free": [{"name": "daily", "kind": "quota", "count": 0, "window": "day"}]}`,
		"bad duration":   `{"free": [{"name": "s", "kind": "rate", "count": 1, "period": "soon"}]}`,
		"no plans":       `{}`,
		"two values":     `{"free": []} {}`,
		"a list":         `[]`,
		"duplicate name": `{"free": [{"name": "d", "kind": "quota", "count": 1, "window": "day"}, {"name": "d", "kind": "quota", "count": 2, "window": "hour"}]}`,
	} {
		file := write(strings.ReplaceAll(name, " ", "-")+".json", content)
		r := h.run("", "issue", "--owner", "p", "--plan", "free", "--plans", file)
		assert.Equal(t, exitUsage, r.code, name)
		assert.True(t, strings.HasPrefix(r.stderr, "apikey issue: --plans "+file+": "), "%s: %s", name, r.stderr)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%s: %s", name, r.stderr)
	}
	r = h.run("", "issue", "--owner", "p", "--plans", filepath.Join(dir, "missing.json"))
	assert.Equal(t, exitFailure, r.code, "an unreadable file")

	// Without --plans any plan name is taken, as before.
	h.env["APIKEY_PLANS"] = ""
	assert.Equal(t, "gold", h.json("issue", "--owner", "q", "--plan", "gold")["plan"], "the first key of a customer without a record sets his plan")
}
