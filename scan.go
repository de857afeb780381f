package apikey

import (
	"slices"
	"strings"
)

// Match is a token found in text by Format.Scan.
type Match struct {
	// Start and End delimit the token in the scanned text: text[Start:End].
	Start, End int
	// ID is the token's key id.
	ID string
	// Hint is the token's display hint, safe to log.
	Hint string
}

// Scan finds the tokens of this format in arbitrary text (logs, files,
// pastes), for a leak response. A candidate must carry the prefix, have
// the exact length, be bounded by non-token characters and pass the
// checksum, so random strings are not reported (a random candidate passes
// the CRC-32 once in four billion).
func (f Format) Scan(text string) []Match {
	if f.more != nil {
		var found []Match
		for _, p := range f.Prefixes() {
			found = append(found, f.single(p).Scan(text)...)
		}
		slices.SortFunc(found, func(a, b Match) int { return a.Start - b.Start })
		return found
	}
	var found []Match
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
		t, err := f.Parse(text[i : i+n])
		if err != nil {
			continue
		}
		found = append(found, Match{Start: i, End: i + n, ID: t.ID, Hint: t.Hint()})
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
	for _, m := range found {
		b.WriteString(text[last:m.Start])
		b.WriteString(m.Hint)
		last = m.End
	}
	b.WriteString(text[last:])
	return b.String()
}

func isTokenByte(c byte) bool { return c == '_' || value62(c) >= 0 }
