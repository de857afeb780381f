package apikey_test

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// snippetRE matches a README code block quoted from Go sources: the marker
// names a file (from the repository root) and the functions whose text the
// block holds: an Example function's body up to "// Output:", any other
// function whole.
var snippetRE = regexp.MustCompile("(?s)<!-- snippet: (\\S+) ([^>]+?) -->\n```go\n(.*?)```")

var updateREADME = flag.Bool("update-readme", false, "rewrite the README's quoted Go blocks from their sources")

// TestREADMESnippets keeps every Go block of the README equal to compiled
// (and, for Examples, run and checked) source. After changing an example,
// run go test -run TestREADMESnippets -update-readme to copy it.
func TestREADMESnippets(t *testing.T) {
	for _, doc := range []string{"README.md", "docs/guide.md"} {
		t.Run(doc, func(t *testing.T) { checkSnippets(t, doc) })
	}
}

// The README and BENCHMARKS.md stay short: features link to the guide and
// to the package docs instead of growing them.
func TestDocsStayShort(t *testing.T) {
	for doc, max := range map[string]int{"README.md": 150, "BENCHMARKS.md": 100} {
		b, err := os.ReadFile(doc)
		require.NoError(t, err)
		assert.LessOrEqual(t, strings.Count(string(b), "\n"), max, "%s has more than %d lines", doc, max)
	}
}

// checkSnippets checks (or, with -update-readme, rewrites) the quoted Go
// blocks of doc, a Markdown file named from the repository root.
func checkSnippets(t *testing.T, doc string) {
	readme, err := os.ReadFile(doc)
	require.NoError(t, err)
	matches := snippetRE.FindAllStringSubmatchIndex(string(readme), -1)
	require.Equal(t, strings.Count(string(readme), "```go"), len(matches),
		"every ```go block of the README is preceded by <!-- snippet: FILE FUNC... -->")
	var updated strings.Builder
	last := 0
	for _, idx := range matches {
		file, names, block := string(readme[idx[2]:idx[3]]), string(readme[idx[4]:idx[5]]), string(readme[idx[6]:idx[7]])
		src, err := os.ReadFile(file)
		require.NoError(t, err)
		f, err := parser.ParseFile(token.NewFileSet(), file, src, parser.ParseComments)
		require.NoError(t, err)
		var parts []string
		for _, name := range strings.Fields(names) {
			parts = append(parts, funcText(t, f, src, name))
		}
		want := strings.Join(parts, "\n\n") + "\n"
		updated.WriteString(string(readme[last:idx[6]]) + want)
		last = idx[7]
		if !*updateREADME {
			assert.Equal(t, want, block, "the README block must equal %s %s (go test -run TestREADMESnippets -update-readme)", file, names)
		}
	}
	if *updateREADME {
		updated.WriteString(string(readme[last:]))
		require.NoError(t, os.WriteFile(doc, []byte(updated.String()), 0o644))
	}
}

func funcText(t *testing.T, f *ast.File, src []byte, name string) string {
	t.Helper()
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != name {
			continue
		}
		base := f.FileStart
		if !strings.HasPrefix(name, "Example") {
			return string(src[fd.Pos()-base : fd.End()-base])
		}
		body := string(src[fd.Body.Lbrace-base+1 : fd.Body.Rbrace-base])
		body, _, _ = strings.Cut(body, "\t// Output:")
		var lines []string
		for _, l := range strings.Split(strings.Trim(body, "\n"), "\n") {
			lines = append(lines, strings.TrimPrefix(l, "\t"))
		}
		return strings.TrimRight(strings.Join(lines, "\n"), "\n")
	}
	t.Fatalf("no function %s", name)
	return ""
}

// The sample token of the guide is a real token: Format.Compose makes it
// from its id and secret, it parses, the drawing under it marks its parts,
// and the hint the README shows is its hint.
func TestREADMESampleToken(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("docs/guide.md")
	require.NoError(t, err)
	m := regexp.MustCompile("```\n(sk_live_\\S+)\n(.*)\n").FindStringSubmatch(string(readme))
	require.NotNil(t, m, "the README shows a sample sk_live_ token in a code block")
	sample, drawing := m[1], []rune(m[2])

	f, err := apikey.NewFormat("sk_live", 256)
	require.NoError(t, err)
	tok, err := f.Parse(sample)
	require.NoError(t, err)
	composed, err := f.Compose(tok.ID, tok.Secret)
	require.NoError(t, err)
	assert.Equal(t, composed, sample)

	// The drawing spans prefix, id, secret and checksum with └...┘.
	p := len("sk_live")
	parts := [][2]int{{0, p}, {p + 1, p + 1 + apikey.IDLength}, {p + 1 + apikey.IDLength, len(sample) - apikey.ChecksumLength}, {len(sample) - apikey.ChecksumLength, len(sample)}}
	for _, part := range parts {
		require.Greater(t, len(drawing), part[1]-1)
		assert.Equal(t, '└', drawing[part[0]], "a part starts at column %d", part[0])
		assert.Equal(t, '┘', drawing[part[1]-1], "a part ends at column %d", part[1]-1)
	}
	assert.Contains(t, string(readme), "`"+tok.Hint()+"`", "the README's hint example is the sample's hint")
}
