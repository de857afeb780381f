package apikey

import (
	"slices"
	"strings"
)

// Scan finds the tokens of this format in arbitrary text (logs, files,
// pastes), for a leak response, and returns where they are, in order.
// Each text[loc[0]:loc[1]] is a token, which Parse takes apart (its ID,
// its Hint). A candidate must carry the prefix, have the exact length, be
// bounded by non-token characters and pass the checksum, so random strings
// are not reported (a random candidate passes the CRC-32 once in four
// billion).
//
// A token also counts as bounded on the left when it follows an escape that
// ends in letters or digits, as logs write URLs, JSON and strings. Such an
// escape is a percent escape ("%3D", "%22", or "%253D" encoded twice), a
// quoted-printable one ("=3D") or a backslash escape ("\n", "\t", "\x22",
// "\u0022"). A token glued to the end of any other run of letters, digits
// and underscores is part of a longer word and is not reported.
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
		if i+n > len(text) || !tokenStarts(text, i) || (i+n < len(text) && isTokenByte(text[i+n])) {
			continue
		}
		if _, err := f.Parse(text[i : i+n]); err != nil {
			continue
		}
		found = append(found, [2]int{i, i + n})
		from = i + n
	}
}

// scanLookbehind is the most bytes before a token that Scan reads to
// decide that the token starts there. It is the length of the longest
// escape it recognises, "\u0022". (cmd/apikey, which scans streams in
// pieces, keeps more.)
const scanLookbehind = 6

// tokenStarts reports whether a token may start at text[i]. It may start
// at the start of text, after a byte that is no token byte, or right after
// an escape whose last bytes are letters or digits (see Scan). The
// escape's backslashes are not counted. In text encoded twice ("\\u0022",
// "%253D") the escape is one of the inner text.
func tokenStarts(text string, i int) bool {
	if i == 0 || !isTokenByte(text[i-1]) {
		return true
	}
	before := text[max(0, i-scanLookbehind):i]
	n := len(before)
	switch {
	case n >= 3 && (before[n-3] == '%' || before[n-3] == '=') && isHex(before[n-2]) && isHex(before[n-1]):
		// %3D, %22 (URLs); =3D, =22 (quoted-printable mail). %253D is
		// %3D encoded twice: its last three bytes are "53D", caught below.
		return before[n-3] == '%' || isUpperHex(before[n-2]) && isUpperHex(before[n-1])
	case n >= 5 && before[n-5:n-2] == "%25" && isHex(before[n-2]) && isHex(before[n-1]):
		return true
	case n >= 2 && before[n-2] == '\\' && strings.IndexByte("abfnrtv", before[n-1]) >= 0:
		return true // \n, \t, \r, ...
	case n >= 4 && before[n-4] == '\\' && before[n-3] == 'x' && isHex(before[n-2]) && isHex(before[n-1]):
		return true // \x22 (nginx, C, Python)
	case n >= 6 && before[n-6] == '\\' && before[n-5] == 'u' &&
		isHex(before[n-4]) && isHex(before[n-3]) && isHex(before[n-2]) && isHex(before[n-1]):
		return true // \u0022 (JSON)
	}
	return false
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

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }
