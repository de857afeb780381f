package leak_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/leak"
	"github.com/gokeys/apikey/memstore"
)

// GitHub signs an alert with a key it publishes; here a local key pair
// and metadata endpoint stand in for GitHub's.
func ExampleNewGitHub() {
	ctx := context.Background()
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)
	token, key, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	if err != nil {
		log.Fatal(err)
	}

	// GitHub's side: a signing key, and the document that publishes it.
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	doc, _ := json.Marshal(map[string]any{"public_keys": []map[string]any{{
		"key_identifier": "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a",
		"key":            string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		"is_current":     true,
	}}})
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(doc) }))
	defer meta.Close()

	// Your side: the partner endpoint, with the keys' URL (GitHub's by default).
	gh, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: meta.URL})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /github/secret-scanning", gh)

	// GitHub found the token in a public repository.
	body := []byte(`[{"token":"` + token + `","type":"sk_live_api_key","url":"https://github.com/octo/app/blob/5c1e/.env","source":"content"}]`)
	sum := sha256.Sum256(body)
	sig, _ := ecdsa.SignASN1(rand.Reader, priv, sum[:])
	req := httptest.NewRequest("POST", "/github/secret-scanning", bytes.NewReader(body))
	req.Header.Set("Github-Public-Key-Identifier", "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a")
	req.Header.Set("Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(sig))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)

	var answer []leak.Feedback
	json.Unmarshal(rec.Body.Bytes(), &answer)
	fmt.Println(rec.Code, answer[0].Label, answer[0].TokenType)
	_, err = m.Verify(ctx, token)
	fmt.Println(err)
	k, _ := m.Get(ctx, key.ID)
	fmt.Println(!k.RevokedAt.IsZero())
	// Output:
	// 200 true_positive sk_live_api_key
	// apikey: key revoked
	// true
}

// Anyone may report tokens; the answer is the same whatever they are.
func ExampleNewReports() {
	ctx := context.Background()
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)
	token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	if err != nil {
		log.Fatal(err)
	}

	var owners []string // to notify: OnLeak runs on the handler's worker
	reports, err := leak.NewReports(m, leak.ReportsOptions{
		OnLeak: func(ctx context.Context, l leak.Leak) { owners = append(owners, l.Key.Owner) },
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /credentials/revoke", reports)

	for _, tok := range []string{token, "sk_live_not_a_key"} {
		req := httptest.NewRequest("POST", "/credentials/revoke", strings.NewReader(`{"credentials": ["`+tok+`"]}`))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Body.String())
	}
	reports.Close(ctx) // handles what was accepted
	_, err = m.Verify(ctx, token)
	fmt.Println(err, owners)
	// Output:
	// 202 {"message":"Accepted. Every credential of this service among them will be revoked."}
	// 202 {"message":"Accepted. Every credential of this service among them will be revoked."}
	// apikey: key revoked [ann]
}
