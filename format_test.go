package apikey_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func TestFormatRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		prefix string
		bits   int
		length int
	}{
		{"default", "", 0, 2 + 1 + 16 + 43 + 6},
		{"live 128 bits", "sk_live", 128, 7 + 1 + 16 + 22 + 6},
		{"max", strings.Repeat("a", apikey.MaxPrefixLength), apikey.MaxSecretBits, apikey.MaxTokenLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := apikey.NewFormat(tc.prefix, tc.bits)
			require.NoError(t, err)
			token, parsed := f.New()
			assert.Len(t, token, tc.length)
			assert.Equal(t, f.Len(), len(token))
			got, err := f.Parse(token)
			require.NoError(t, err)
			assert.Equal(t, parsed.ID, got.ID)
			assert.Equal(t, parsed.Secret, got.Secret)
			assert.Len(t, got.ID, apikey.IDLength)
			assert.True(t, strings.HasPrefix(token, f.Prefix()+"_"+got.ID+got.Secret))
			assert.Equal(t, f.Prefix()+"_..."+token[len(token)-4:], got.Hint())
			assert.Equal(t, "[REDACTED]", got.String(), "a Token never prints its secret")
		})
	}
}

func TestFormatRejects(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk_test", 0)
	require.NoError(t, err)
	token, _ := f.New()
	other, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	otherToken, _ := other.New()
	flip := func(i int) string {
		b := []byte(token)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	for _, tc := range []struct{ name, token string }{
		{"empty", ""},
		{"wrong prefix", otherToken},
		{"prefix only", "sk_test_"},
		{"truncated", token[:len(token)-1]},
		{"one too long", token + "a"},
		{"flipped id char", flip(9)},
		{"flipped secret char", flip(30)},
		{"flipped checksum char", flip(len(token) - 1)},
		{"bad character", token[:20] + "-" + token[21:]},
		{"NUL", token[:20] + "\x00" + token[21:]},
		{"non-ASCII", token[:20] + "é" + token[22:]},
		{"checksum overflow", token[:len(token)-6] + "zzzzzz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.Parse(tc.token)
			assert.ErrorIs(t, err, apikey.ErrMalformed)
		})
	}
}

func TestNewFormatValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		prefix string
		bits   int
	}{
		{"uppercase", "SK", 0}, {"dash", "sk-live", 0}, {"leading digit", "1sk", 0},
		{"trailing underscore", "sk_", 0}, {"double underscore", "sk__live", 0},
		{"too long", strings.Repeat("a", apikey.MaxPrefixLength+1), 0},
		{"secret too short", "sk", 127}, {"secret too long", "sk", apikey.MaxSecretBits + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apikey.NewFormat(tc.prefix, tc.bits)
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
}

func TestScanAndRedact(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	a, ta := f.New()
	b, tb := f.New()
	last := "X" // a corrupted checksum, always different from a's
	if strings.HasSuffix(a, last) {
		last = "Y"
	}
	log := "GET /v1?x=1 Authorization: Bearer " + a + "\nretry with key=" + b + ", done\n" +
		"not a token: " + a[:len(a)-1] + last + "\n" + "embedded: x" + a + "\n"
	found := f.Scan(log)
	require.Len(t, found, 2)
	assert.Equal(t, a, log[found[0][0]:found[0][1]])
	assert.Equal(t, b, log[found[1][0]:found[1][1]])

	red := f.Redact(log)
	assert.Equal(t, strings.Count(log, ta.Secret)-1, strings.Count(red, ta.Secret))
	assert.NotContains(t, red, tb.Secret)
	assert.Contains(t, red, "Bearer "+ta.Hint()+"\n")
	assert.Contains(t, red, "key="+tb.Hint()+", done")
	assert.Contains(t, red, "embedded: x"+a, "a token glued to other characters is not a match")
}

func TestScanNoFalsePositives(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	// A megabyte of random base62, cut into candidates that carry the
	// prefix and the exact length: only the checksum can reject them.
	var b strings.Builder
	for b.Len() < 1<<20 {
		fake, _ := f.New()
		b.WriteString(fake[:len(fake)-6])
		b.WriteString(apikey.NewID()[:6])
		b.WriteString(" ")
	}
	assert.Empty(t, f.Scan(b.String()))
}

func FuzzParse(f *testing.F) {
	format, err := apikey.NewFormat("sk_test", 0)
	require.NoError(f, err)
	valid, _ := format.New()
	f.Add(valid)
	f.Add("")
	f.Add("sk_test_")
	f.Add(valid[:len(valid)-1] + "0")
	f.Add(strings.Repeat("z", apikey.MaxTokenLength+1))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := format.Parse(s)
		if err != nil {
			require.ErrorIs(t, err, apikey.ErrMalformed)
			return
		}
		// Whatever parses is a token of the format, and re-scans as itself.
		require.Equal(t, format.Len(), len(s))
		require.Equal(t, "sk_test_"+tok.ID+tok.Secret, s[:len(s)-apikey.ChecksumLength])
		found := format.Scan(s)
		require.Equal(t, [][2]int{{0, len(s)}}, found)
	})
}

func FuzzScan(f *testing.F) {
	format, err := apikey.NewFormat("sk", 0)
	require.NoError(f, err)
	valid, _ := format.New()
	f.Add("key " + valid + " end")
	f.Add("sk_sk_sk_")
	f.Fuzz(func(t *testing.T, s string) {
		for _, loc := range format.Scan(s) {
			_, err := format.Parse(s[loc[0]:loc[1]])
			require.NoError(t, err)
		}
		red := format.Redact(s)
		require.Empty(t, format.Scan(red), "redacted text still holds a token")
	})
}

func TestPrefixesValidate(t *testing.T) {
	t.Parallel()
	for name, prefixes := range map[string][]string{
		"Duplicate":      {"sk_live"},
		"BadCharacter":   {"sk-test"},
		"TwiceInTheList": {"sk_test", "sk_test"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live", Prefixes: prefixes})
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
}

func TestFormatWithPrefixes(t *testing.T) {
	t.Parallel()
	live, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	both, err := live.WithPrefixes("sk_test", "pk")
	require.NoError(t, err)
	assert.Equal(t, "sk_live", both.Prefix(), "New and Compose keep the first prefix")
	assert.Equal(t, []string{"sk_live", "sk_test", "pk"}, both.Prefixes())
	text := ""
	for _, p := range both.Prefixes() {
		f, err := apikey.NewFormat(p, 0)
		require.NoError(t, err)
		token, _ := f.New()
		parsed, err := both.Parse(token)
		require.NoError(t, err, p)
		assert.Equal(t, p, parsed.Prefix)
		_, err = live.Parse(token)
		if p != "sk_live" {
			assert.ErrorIs(t, err, apikey.ErrMalformed, "a single-prefix Format refuses the others")
		}
		text += " token " + token + ","
	}
	found := both.Scan(text)
	require.Len(t, found, 3, "Scan finds every accepted prefix")
	assert.Less(t, found[0][0], found[1][0])
	second, err := both.Parse(text[found[1][0]:found[1][1]])
	require.NoError(t, err)
	assert.NotContains(t, both.Redact(text), "sk_test_"+second.ID)
	_, err = live.WithPrefixes("sk_live")
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
}
