package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/internal/testserver"
)

// github plays GitHub's side of secret scanning: a signing key, published
// by a local metadata endpoint.
type github struct {
	id   string
	priv *ecdsa.PrivateKey
	meta *httptest.Server
}

func newGitHub(t *testing.T) *github {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	require.NoError(t, err)
	sum := sha256.Sum256(der)
	g := &github{id: hex.EncodeToString(sum[:]), priv: priv}
	doc, err := json.Marshal(map[string]any{"public_keys": []map[string]any{{"key_identifier": g.id,
		"key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "is_current": true}}})
	require.NoError(t, err)
	g.meta = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(doc) }))
	t.Cleanup(g.meta.Close)
	return g
}

// alert POSTs a signed alert for token to url and returns the status and
// body of the answer.
func (g *github) alert(t *testing.T, url, token string) (int, string) {
	t.Helper()
	body, err := json.Marshal([]map[string]string{{"token": token, "type": "example_api_key",
		"url": "https://github.com/octo/app/blob/5c1e/.env", "source": "content"}})
	require.NoError(t, err)
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, g.priv, sum[:])
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, url+"/github/secret-scanning", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Github-Public-Key-Identifier", g.id)
	req.Header.Set("Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(sig))
	resp, err := fleetClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(raw)
}

// The example's routes: a signed alert revokes the key and is labelled
// true_positive; a report is answered 202, the same whatever matched, and
// revokes the key.
func TestServerLeakRoutes(t *testing.T) {
	t.Parallel()
	gh := newGitHub(t)
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	m := newManager(t, newSQLiteStore(t), clock)
	a, err := newApp(t.Context(), appConfig{manager: m, limiter: allowAll{}, keysURL: gh.meta.URL,
		users: map[string]string{"demo": "demo"}})
	require.NoError(t, err)
	srv := httptest.NewServer(a.routes())
	t.Cleanup(srv.Close)
	c := client{t, srv}

	leaked := c.do("POST", "/api-keys", "demo:demo", `{"name":"pushed"}`).body["key"].(string)
	require.Equal(t, 200, c.do("GET", "/protected", "key:"+leaked, "").status)
	status, answer := gh.alert(t, srv.URL, leaked)
	require.Equal(t, http.StatusOK, status, answer)
	sum := sha256.Sum256([]byte(leaked))
	assert.JSONEq(t, `[{"token_hash":"`+hex.EncodeToString(sum[:])+`","token_type":"example_api_key","label":"true_positive"}]`, answer)
	assert.Equal(t, 401, c.do("GET", "/protected", "key:"+leaked, "").status)
	assert.Equal(t, 403, c.do("POST", "/github/secret-scanning", "", `[{"token":"`+leaked+`"}]`).status, "unsigned")

	reported := c.do("POST", "/api-keys", "demo:demo", `{"name":"pasted"}`).body["key"].(string)
	first := c.do("POST", "/credentials/revoke", "", `{"credentials": ["`+reported+`"]}`)
	other := c.do("POST", "/credentials/revoke", "", `{"credentials": ["sk_live_nothing"]}`)
	assert.Equal(t, http.StatusAccepted, first.status)
	assert.Equal(t, first.raw, other.raw)
	require.NoError(t, a.leaks.close(t.Context()))
	assert.Equal(t, 401, c.do("GET", "/protected", "key:"+reported, "").status)
}

// Two processes over one database and Redis, as deployed: GitHub's alert
// posted to A, the key refused by B within a second.
func TestTwoProcessesGitHubAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	gh := newGitHub(t)
	redis := testserver.StartRedis(t)
	db := filepath.Join(t.TempDir(), "keys.db")
	a := start(t, "A", "-db", db, "-redis", redis.Addr, "-github-keys-url", gh.meta.URL)
	b := start(t, "B", "-db", db, "-redis", redis.Addr)
	for range 10 {
		_, token := a.create(t)
		code, err := b.protected(token)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code, "B accepts (and caches for an hour) a fresh key")
		sent := time.Now()
		status, answer := gh.alert(t, a.url, token)
		require.Equal(t, http.StatusOK, status, answer)
		assert.Contains(t, answer, `"label":"true_positive"`)
		d, ok := b.refusedWithin(token, sent, time.Second)
		require.True(t, ok, "B refuses the leaked key within a second")
		t.Logf("refused by B %v after the alert was sent to A", d.Round(time.Microsecond))
	}
}
