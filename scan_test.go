package apikey_test

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// Tokens in real log lines are found and redacted whatever encoding the
// line wraps them in: URLs with percent escapes, JSON with escaped quotes
// and newlines, headers, mail. {T} stands for the token in each line.
func TestScanLogLines(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	token, parsed := f.New()
	htmlEscaped, err := json.Marshal("<b>" + token + "</b>") // encoding/json writes \u003cb\u003e
	require.NoError(t, err)
	for _, c := range []struct{ name, line string }{
		{"nginx query", `127.0.0.1 - - [12/Mar/2025:10:01:02 +0000] "GET /v1/data?api_key={T}&page=2 HTTP/1.1" 200 512 "-" "curl/8.5.0"`},
		{"nginx url-encoded =", `10.0.0.7 - - [12/Mar/2025:10:01:02 +0000] "GET /login?next=%2Fcb%3Fkey%3D{T}%26x%3D1 HTTP/1.1" 302 0`},
		{"nginx url-encoded quotes", `"GET /search?q=%22{T}%22 HTTP/1.1" 200`},
		{"url-encoded twice", `redirect=https%3A%2F%2Fapi.example.com%2Fv1%3Fkey%253D{T}%2526a%253D1`},
		{"lowercase percent escape", `GET /cb?token%3d{T} HTTP/1.1`},
		{"nginx escaped quote", `"GET / HTTP/1.1" 200 "-" "{\x22key\x22:\x22{T}\x22}"`},
		{"json escaped quotes", `{"level":"info","msg":"request","body":"{\"api_key\":\"{T}\"}"}`},
		{"json unicode quotes", `{"msg":"body: {\u0022key\u0022: \u0022{T}\u0022}"}`},
		{"json newline escape", `{"msg":"config loaded:\nAPI_KEY=x\n{T}\nDEBUG=1"}`},
		{"json tab escape", `{"msg":"key:\t{T}"}`},
		{"json html-escaped", `{"msg":` + string(htmlEscaped) + `}`},
		{"json unicode quotes encoded twice", `{"msg":"{\\u0022key\\u0022:\\u0022{T}\\u0022}"}`},
		{"json newline encoded twice", `{"log":"{\"msg\":\"key:\\n{T}\"}"}`},
		{"authorization header", `Authorization: Bearer {T}`},
		{"authorization header logged as json", `{"headers":{"Authorization":["Bearer {T}"]}}`},
		{"key value", `time=2025-03-12T10:01:02Z level=WARN msg="auth failed" key={T} ip=10.0.0.7`},
		{"after base64 padding", `sig=YWJjZA=={T}`},
		{"before base64 padding", `payload={T}==`},
		{"quoted-printable mail", `Content-Transfer-Encoding: quoted-printable  your key=3D{T}=20expires`},
		{"start of text", `{T} is the key`},
		{"end of text", `the key is {T}`},
		{"shell export", `export APIKEY='{T}'`},
		{"yaml", "api:\n  key: {T}\n"},
		{"html attribute", `<input value="{T}">`},
		{"html entity", `data-config="{&quot;key&quot;:&quot;{T}&quot;}"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			line := strings.ReplaceAll(c.line, "{T}", token)
			found := f.Scan(line)
			require.Len(t, found, 1, line)
			assert.Equal(t, token, line[found[0][0]:found[0][1]])
			red := f.Redact(line)
			assert.NotContains(t, red, parsed.Secret, "redacted")
			assert.Contains(t, red, parsed.Hint())
			assert.Empty(t, f.Scan(red))
		})
	}
}

// A valid token glued to the end of a longer run of letters, digits or
// underscores is part of that run and is not reported; only the escapes
// Scan knows make such a run a boundary.
func TestScanIgnoresTokensInsideWords(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	token, _ := f.New()
	for _, line := range []string{
		"x" + token,
		"3D" + token,     // hex digits without the %
		"%3" + token,     // half an escape
		"%G1" + token,    // not hex
		"=3d" + token,    // quoted-printable is upper case
		"\\q" + token,    // no such escape
		"\\x2" + token,   // short \x escape
		"\\u002" + token, // short \u escape
		"\\u00G2" + token,
		"abc_" + token,
		"QUJDREVGR0g" + token, // glued to base64
		base64.RawStdEncoding.EncodeToString([]byte("prefix")) + token,
		token + "x",
		token + "_",
		"%3D" + token + "A",
	} {
		assert.Empty(t, f.Scan(line), "%q", line)
		assert.Equal(t, line, f.Redact(line))
	}
}

// Percent escapes of every byte before a token, as url.QueryEscape writes
// them, and a token whose own characters never need escaping.
func TestScanAfterEveryPercentEscape(t *testing.T) {
	t.Parallel()
	f, err := apikey.NewFormat("sk", 0)
	require.NoError(t, err)
	token, _ := f.New()
	assert.Equal(t, token, url.QueryEscape(token), "tokens survive URL encoding unchanged")
	for c := range 256 {
		esc := "%" + strings.ToUpper(strconv.FormatInt(int64(c)|0x100, 16)[1:])
		line := "q=" + esc + token
		assert.Len(t, f.Scan(line), 1, line)
	}
}
