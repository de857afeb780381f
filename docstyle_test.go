package apikey_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sentenceEnd ends a sentence of a doc comment.
var sentenceEnd = regexp.MustCompile(`[.!?](\s|$)`)

// Doc comments read one idea per sentence, across every module of the
// repository: at most one colon or semicolon per 100 words, and at most 2%
// of sentences over 35 words. Package docs and the doc comments of exported
// names and fields count; code blocks and tests do not.
func TestDocCommentsReadWell(t *testing.T) {
	var words, marks, sentences, long int
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".") && path != ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		for _, doc := range exportedDocs(f) {
			var prose []string
			for _, line := range strings.Split(doc.Text(), "\n") {
				if !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, "  ") {
					prose = append(prose, line)
				}
			}
			text := strings.Join(prose, " ")
			words += len(strings.Fields(text))
			marks += strings.Count(text, ": ") + strings.Count(text, "; ")
			for _, s := range sentenceEnd.Split(text, -1) {
				if n := len(strings.Fields(s)); n > 0 {
					sentences++
					if n > 35 {
						long++
					}
				}
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Positive(t, words)
	t.Logf("%d words, %.2f colons or semicolons per 100 words, %d sentences, %.1f%% over 35 words",
		words, 100*float64(marks)/float64(words), sentences, 100*float64(long)/float64(sentences))
	assert.LessOrEqual(t, 100*float64(marks)/float64(words), 1.0, "colons and semicolons per 100 words")
	assert.LessOrEqual(t, 100*float64(long)/float64(sentences), 2.0, "percentage of sentences over 35 words")
}

// exportedDocs returns the package doc of f and the doc comments of its
// exported declarations and struct fields.
func exportedDocs(f *ast.File) []*ast.CommentGroup {
	var docs []*ast.CommentGroup
	add := func(c *ast.CommentGroup, exported bool) {
		if c != nil && exported {
			docs = append(docs, c)
		}
	}
	add(f.Doc, true)
	ast.Inspect(f, func(n ast.Node) bool {
		switch d := n.(type) {
		case *ast.FuncDecl:
			add(d.Doc, d.Name.IsExported())
		case *ast.GenDecl:
			add(d.Doc, true)
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					add(s.Doc, s.Name.IsExported())
				case *ast.ValueSpec:
					add(s.Doc, s.Names[0].IsExported())
				}
			}
		case *ast.Field:
			add(d.Doc, len(d.Names) > 0 && d.Names[0].IsExported())
		}
		return true
	})
	return docs
}
