package main

import (
	"os"
	"strings"
	"testing"
)

// TestGoModHasNoReplace keeps `go install github.com/gokeys/apikey/cmd/apikey@version`
// possible: the go command refuses to install a module whose go.mod has
// replace or exclude directives. Development inside the repository goes
// through go.work instead.
func TestGoModHasNoReplace(t *testing.T) {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "replace" || f[0] == "exclude") {
			t.Errorf("go.mod:%d: %q: go install …@version refuses modules with replace or exclude directives; use go.work", i+1, line)
		}
	}
}
