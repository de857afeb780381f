package apikey

import (
	"slices"
	"strings"
)

// Scan finds the tokens of this format in arbitrary text (logs, files,
// pastes), for a leak response, and returns where they are, in order:
// text[loc[0]:loc[1]] is a token, which Parse takes apart (its ID, its
// Hint). A candidate must carry the prefix, have the exact length, be
// bounded by non-token characters and pass the checksum, so random strings
// are not reported (a random candidate passes the CRC-32 once in four
// billion).
func (f Format) Scan(text string) [][2]int {
	if f.more != nil {
		var found [][2]int
		for _, p := range f.Prefixes() {
			found = append(found, f.single(p).Scan(text)...)
		}
		slices.SortFunc(found, func(a, b [2]int) int { return a[0] - b[0] })
		return found
	}
	var found [][2]int
	lead := f.prefix + "_"
	n := f.Len()
	for from := 0; ; {
		i := strings.Index(text[from:], lead)
		if i < 0 {
			return found
		}
		i += from
		from = i + 1
		if i+n > len(text) || (i > 0 && isTokenByte(text[i-1])) || (i+n < len(text) && isTokenByte(text[i+n])) {
			continue
		}
		if _, err := f.Parse(text[i : i+n]); err != nil {
			continue
		}
		found = append(found, [2]int{i, i + n})
		from = i + n
	}
}

// Redact returns text with every token of this format (as found by Scan)
// replaced by its hint.
func (f Format) Redact(text string) string {
	found := f.Scan(text)
	if len(found) == 0 {
		return text
	}
	var b strings.Builder
	b.Grow(len(text))
	last := 0
	for _, loc := range found {
		b.WriteString(text[last:loc[0]])
		t, _ := f.Parse(text[loc[0]:loc[1]]) // Scan parsed it
		b.WriteString(t.Hint())
		last = loc[1]
	}
	b.WriteString(text[last:])
	return b.String()
}

func isTokenByte(c byte) bool { return c == '_' || value62(c) >= 0 }
