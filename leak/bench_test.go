package leak_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/leak"
	"github.com/gokeys/apikey/memstore"
)

// BenchmarkGitHubAlert is the cost of one signed alert of n checksum-valid
// tokens of no key (the signature check, n store reads and constant-time
// comparisons), and of one of a key already revoked (a repeated alert).
func BenchmarkGitHubAlert(b *testing.B) {
	gh := newSigner(b)
	keys := newKeysServer(b, gh)
	m := newManager(b, memstore.New(), apikey.Options{})
	h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL, MaxTokens: 1000})
	if err != nil {
		b.Fatal(err)
	}
	revoked, _ := issue(b, m, "ann")
	for _, n := range []int{1, 100, 1000} {
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = unknownToken(b, m)
		}
		tokens[0] = revoked
		body := alertBody(b, tokens...)
		sig := gh.sign(b, body)
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if rec := postAlert(h, body, gh.id, sig); rec.Code != http.StatusOK {
					b.Fatal(rec.Code, rec.Body.String())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/token")
		})
	}
}

// BenchmarkReportAnswer is the cost of answering one report of a token
// (rate limit, parse, enqueue), which is all the client waits for.
func BenchmarkReportAnswer(b *testing.B) {
	m := newManager(b, memstore.New(), apikey.Options{})
	r, err := leak.NewReports(m, leak.ReportsOptions{Requests: 1 << 30, Queue: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close(b.Context()) })
	token := unknownToken(b, m)
	b.ReportAllocs()
	for b.Loop() {
		if rec := report(r, "192.0.2.1:1", token); rec.Code != http.StatusAccepted {
			b.Fatal(rec.Code)
		}
	}
}
