package apikey_test

import (
	"context"
	"testing"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// BenchmarkVerify measures one verification of a valid key over memstore.
// "HMAC" is the default configuration (HMAC-SHA-256, cache on); "NoCache"
// reaches the store every time; the bcrypt variants show a cache hit and a
// miss (a miss pays one bcrypt comparison, cost 10).
func BenchmarkVerify(b *testing.B) {
	bc, err := apikey.NewBcryptHasher(10)
	if err != nil {
		b.Fatal(err)
	}
	for _, bm := range []struct {
		name string
		opts apikey.Options
	}{
		{"HMAC", apikey.Options{Peppers: testPepper}},
		{"HMAC/NoCache", apikey.Options{Peppers: testPepper, CacheTTL: -1}},
		{"SHA256/NoCache", apikey.Options{CacheTTL: -1}},
		{"Bcrypt/CacheHit", apikey.Options{Hasher: bc}},
		{"Bcrypt/CacheMiss", apikey.Options{Hasher: bc, CacheTTL: -1}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			m := newManager(b, memstore.New(), bm.opts)
			token, _ := issue(b, m, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}, Plan: "free"})
			ctx := context.Background()
			if _, err := m.Verify(ctx, token); err != nil { // warm the cache outside the timing
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Verify(ctx, token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("HMAC/Parallel", func(b *testing.B) {
		m := newManager(b, memstore.New(), apikey.Options{Peppers: testPepper})
		token, _ := issue(b, m, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Verify(context.Background(), token); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkVerifyMalformed measures the rejection of a token with a bad
// checksum: no hashing, no store access.
func BenchmarkVerifyMalformed(b *testing.B) {
	m := newManager(b, memstore.New(), apikey.Options{})
	token, _ := issue(b, m, apikey.IssueParams{})
	bad := token[:len(token)-1] + string(rune('A'+(token[len(token)-1]+1)%26))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Verify(ctx, bad); err == nil {
			b.Fatal("accepted")
		}
	}
}
