package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/gokeys/apikey"
)

// finding is a token found by scan, redacted. It holds its hint, never its
// secret.
type finding struct {
	Path  string `json:"path"`
	Line  int    `json:"line"`
	ID    string `json:"id"`
	Hint  string `json:"hint"`
	token string // for --revoke, never printed
}

// match is a token found by a scanner, text[start:end] of its chunk.
type match struct {
	start, end int
	id, hint   string
}

// scanner finds the tokens of a set of formats in streams of any size.
type scanner struct {
	formats []apikey.Format
	maxLen  int
	chunk   int
}

// lookbehind is how many bytes before a token the scanner keeps across
// chunks. It is at least the longest escape apikey's Scan takes for a
// token's left boundary ("\u0022", 6 bytes).
const lookbehind = 16

// errBinary skips a file that looks binary.
var errBinary = errors.New("binary file")

func newScanner(formats []apikey.Format) *scanner {
	s := &scanner{formats: formats, chunk: 4 << 20}
	for _, f := range formats {
		s.maxLen = max(s.maxLen, f.Len())
	}
	return s
}

// scan reads r to the end and calls found for every token in it, in
// order. With skipBinary, a stream whose first 8000 bytes hold a NUL byte
// is not scanned and errBinary is returned. The stream is read a chunk at
// a time; a token cut by a chunk boundary is found in the next chunk.
func (s *scanner) scan(r io.Reader, skipBinary bool, found func(line int, m match, token string)) error {
	buf := make([]byte, 0, s.chunk+s.maxLen+1)
	line, counted, start := 1, 0, 0
	for first := true; ; first = false {
		n, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		eof := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !eof {
			return err
		}
		if first && skipBinary && bytes.IndexByte(buf[:min(len(buf), 8000)], 0) >= 0 {
			return errBinary
		}
		// A token starting before limit is whole in buf, and so is the byte
		// after it that says whether it ends there.
		limit := len(buf)
		if !eof {
			limit = len(buf) - s.maxLen
		}
		text := string(buf)
		var ms []match
		for _, f := range s.formats {
			for _, loc := range f.Scan(text) {
				if loc[0] >= start && loc[0] < limit {
					t, _ := f.Parse(text[loc[0]:loc[1]]) // Scan parsed it
					ms = append(ms, match{start: loc[0], end: loc[1], id: t.ID, hint: t.Hint()})
				}
			}
		}
		slices.SortFunc(ms, func(a, b match) int { return a.start - b.start })
		for _, m := range ms {
			line += bytes.Count(buf[counted:m.start], []byte{'\n'})
			counted = m.start
			found(line, m, text[m.start:m.end])
		}
		if eof {
			return nil
		}
		// Keep the unscanned tail and the bytes before it that tell whether
		// a token starts there (a boundary or an escape such as %3D).
		// Lines are counted up to counted, which a token found among those
		// bytes may have moved past keep.
		keep := max(0, limit-lookbehind)
		if counted <= keep {
			line += bytes.Count(buf[counted:keep], []byte{'\n'})
			counted = keep
		}
		buf = buf[:copy(buf, buf[keep:])]
		counted, start = counted-keep, limit-keep
	}
}

// scanPaths scans paths (stdin for none) and returns the findings and the
// files it could not read.
func (s *scanner) scanPaths(ctx context.Context, paths []string, stdin io.Reader, stderr io.Writer) ([]finding, int) {
	var found []finding
	failed := 0
	add := func(path string) func(int, match, string) {
		return func(line int, m match, token string) {
			found = append(found, finding{Path: path, Line: line, ID: m.id, Hint: m.hint, token: token})
		}
	}
	if len(paths) == 0 {
		if err := s.scan(stdin, false, add("-")); err != nil {
			fmt.Fprintf(stderr, "apikey scan: stdin: %v\n", err)
			failed++
		}
		return found, failed
	}
	for _, root := range paths {
		if root == "-" {
			if err := s.scan(stdin, false, add("-")); err != nil {
				fmt.Fprintf(stderr, "apikey scan: stdin: %v\n", err)
				failed++
			}
			continue
		}
		if resolved, err := filepath.EvalSymlinks(root); err == nil {
			root = resolved // a path given by name is followed; links inside it are not
		}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				fmt.Fprintf(stderr, "apikey scan: %v\n", err)
				failed++
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if d.IsDir() {
				if d.Name() == ".git" && path != root {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil // symlinks, devices, sockets
			}
			f, err := os.Open(path)
			if err != nil {
				fmt.Fprintf(stderr, "apikey scan: %v\n", err)
				failed++
				return nil
			}
			defer f.Close()
			if err := s.scan(f, true, add(path)); err != nil && !errors.Is(err, errBinary) {
				fmt.Fprintf(stderr, "apikey scan: %s: %v\n", path, err)
				failed++
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(stderr, "apikey scan: %v\n", err)
			failed++
		}
	}
	return found, failed
}

// scan runs "apikey scan".
func (c *cli) scan(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("apikey scan", flag.ContinueOnError)
	cfg := c.register(fs)
	revoke := fs.Bool("revoke", false, "revoke the keys found (needs a database) and report their owners")
	rule := fs.Bool("gitleaks-rule", false, "print gitleaks rules for the token format and exit")
	paths, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	formats, err := cfg.formats()
	if err != nil {
		return c.fail("scan", err)
	}
	if *rule {
		if len(paths) > 0 || *revoke {
			return c.fail("scan", usageError("--gitleaks-rule takes no paths and no --revoke"))
		}
		fmt.Fprint(c.stdout, gitleaksRules(formats))
		return exitOK
	}
	if *revoke && !cfg.hasDB() {
		return c.fail("scan", usageError("--revoke needs a database: --sqlite, --postgres or --mysql"))
	}
	s := newScanner(formats)
	found, failed := s.scanPaths(ctx, paths, c.stdin, c.stderr)

	var revoked, decoys []revocation
	if *revoke && len(found) > 0 {
		var err error
		if revoked, decoys, err = c.revokeFound(ctx, cfg, found); err != nil {
			c.fail("scan", err)
			failed++
		}
	}
	c.report(cfg.json, found, revoked, decoys)
	switch {
	case failed > 0:
		return exitFailure
	case len(found) > 0:
		return exitFound
	}
	return exitOK
}

// revocation is what --revoke did with one key found, or, for a decoy,
// where the token that is no key of the database was found.
type revocation struct {
	ID     string `json:"id"`
	Hint   string `json:"hint"`
	Owner  string `json:"owner,omitempty"`
	Result string `json:"result"` // revoked, already revoked, not a key of this database
	Path   string `json:"path,omitempty"`
	Line   int    `json:"line,omitempty"`
}

// notAKey is the result for a decoy.
const notAKey = "not a key of this database"

// revokeFound verifies each distinct token found, once, and revokes the
// key of each that verifies (or is refused only for its state: expired,
// disabled). A token that does not verify, e.g. one forged from a known id
// with a valid checksum, revokes nothing and is returned among the decoys:
// tokens are told apart whole, so a decoy with the id of a real leaked key
// does not hide that key, wherever it appears. The backend is closed
// before revokeFound returns, so every revocation has been announced to
// running services.
func (c *cli) revokeFound(ctx context.Context, cfg *config, found []finding) (revoked, decoys []revocation, err error) {
	b, err := c.connect(cfg)
	if err != nil {
		return nil, nil, err
	}
	defer c.warnUnannounced("scan", b)
	defer b.close(context.WithoutCancel(ctx))
	m := b.m // each token verifies under its own prefix
	seen := map[string]bool{}
	for _, f := range found {
		if seen[f.token] {
			continue
		}
		seen[f.token] = true
		r := revocation{ID: f.ID, Hint: f.Hint}
		k, err := m.Verify(ctx, f.token)
		switch {
		case err == nil, errors.Is(err, apikey.ErrExpired), errors.Is(err, apikey.ErrDisabled),
			errors.Is(err, apikey.ErrPaused), errors.Is(err, apikey.ErrSuspended),
			errors.Is(err, apikey.ErrIPNotAllowed): // the secret verified (scan knows no client address)
			if k == nil {
				if k, err = m.Get(ctx, f.ID); err != nil {
					return revoked, decoys, err
				}
			}
			if err := m.Revoke(ctx, f.ID); err != nil {
				return revoked, decoys, err
			}
			r.Owner, r.Result = k.Owner, "revoked"
		case errors.Is(err, apikey.ErrRevoked):
			if k, err := m.Get(ctx, f.ID); err == nil {
				r.Owner = k.Owner
			}
			r.Result = "already revoked"
		case errors.Is(err, apikey.ErrInvalid), errors.Is(err, apikey.ErrMalformed):
			r.Result, r.Path, r.Line = notAKey, f.Path, f.Line
			decoys = append(decoys, r)
			continue
		default:
			return revoked, decoys, err
		}
		revoked = append(revoked, r)
	}
	return revoked, decoys, nil
}

// report prints the findings, the revocations and the decoys.
func (c *cli) report(asJSON bool, found []finding, revoked, decoys []revocation) {
	if asJSON {
		if found == nil {
			found = []finding{}
		}
		out := map[string]any{"found": found}
		if revoked != nil || decoys != nil {
			out["revoked"], out["decoys"] = revoked, decoys
			if revoked == nil {
				out["revoked"] = []revocation{}
			}
			if decoys == nil {
				out["decoys"] = []revocation{}
			}
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return
	}
	for _, f := range found {
		fmt.Fprintf(c.stdout, "%s:%d: %s (key id %s)\n", f.Path, f.Line, f.Hint, f.ID)
	}
	for _, r := range revoked {
		owner := r.Owner
		if owner == "" {
			owner = "-"
		}
		fmt.Fprintf(c.stdout, "%s %s: %s (owner %s)\n", r.ID, r.Hint, r.Result, owner)
	}
	for _, r := range decoys {
		fmt.Fprintf(c.stdout, "%s %s: %s (%s:%d)\n", r.ID, r.Hint, r.Result, r.Path, r.Line)
	}
	if len(found) > 0 {
		fmt.Fprintf(c.stderr, "apikey scan: %d key(s) found\n", len(found))
	}
}

// gitleaksStart is where a token starts in a gitleaks rule, as for
// apikey's Scan. It starts at a word boundary or right after a percent,
// quoted-printable or backslash escape (%3D, %253D, =3D, \n, \x22, \u0022).
const gitleaksStart = `(?:\b|%[0-9A-Fa-f]{2}|%25[0-9A-Fa-f]{2}|=[0-9A-F]{2}|\\[abfnrtv]|\\x[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4})`

// gitleaksRules returns a gitleaks configuration with one rule per format.
// gitleaks cannot check the checksum, so its rule may report a look-alike
// that "apikey scan" would not.
func gitleaksRules(formats []apikey.Format) string {
	var b strings.Builder
	b.WriteString("# gitleaks rules for github.com/gokeys/apikey tokens (apikey scan --gitleaks-rule).\n")
	b.WriteString("# Add to .gitleaks.toml; \"apikey scan\" also checks the checksum.\n")
	for _, f := range formats {
		p := f.Prefix()
		body := f.Len() - len(p) - 1
		fmt.Fprintf(&b, "\n[[rules]]\nid = %q\ndescription = %q\nregex = '''%s'''\nsecretGroup = 1\nkeywords = [%q]\nentropy = 3.0\n",
			"gokeys-apikey-"+strings.ReplaceAll(p, "_", "-"),
			"gokeys/apikey API key with prefix "+p,
			gitleaksStart+`(`+regexp.QuoteMeta(p)+`_[0-9A-Za-z]{`+fmt.Sprint(body)+`})\b`,
			p+"_")
	}
	return b.String()
}
