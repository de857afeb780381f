package connectapikey_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/rpc/connectapikey"
	"github.com/gokeys/apikey/rpc/internal/rpctest"
)

// floor is the least any key interceptor does: read both headers, hash
// the token with SHA-256, look the digest up in a map, read the clock for
// expiry and put the key in the context.
type floor struct {
	keys map[[32]byte]*apikey.Key
}

type floorKey struct{}

func (f *floor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		h := req.Header()
		token := ""
		if vs := h["Authorization"]; len(vs) == 1 {
			token = strings.TrimPrefix(vs[0], "Bearer ")
		}
		if vs := h["X-Api-Key"]; len(vs) == 1 {
			token = vs[0]
		}
		var buf [256]byte // no allocation for the hash's input
		k := f.keys[sha256.Sum256(append(buf[:0], token...))]
		if k == nil || k.Expired(time.Now()) {
			return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("invalid key"))
		}
		return next(context.WithValue(ctx, floorKey{}, k), req)
	}
}

// BenchmarkUnaryVsFloor alternates the floor and Interceptor.WrapUnary in
// chunks on one thread and reports both CPU times per call and their
// ratio (see rpctest.Compare); BENCHMARKS.md quotes it.
func BenchmarkUnaryVsFloor(b *testing.B) {
	m := rpctest.PlainManager(b)
	token, key, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ic, err := connectapikey.New(m, connectapikey.Options{})
	if err != nil {
		b.Fatal(err)
	}
	fl := &floor{keys: map[[32]byte]*apikey.Key{sha256.Sum256([]byte(token)): key}}
	req := connect.NewRequest(&structpb.Struct{})
	req.Header().Set("Authorization", "Bearer "+token)
	req.Header().Set("Content-Type", "application/proto")
	req.Header().Set("User-Agent", "connect-go/1.21.1")
	res := connect.NewResponse(&structpb.Struct{})
	next := func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return res, nil }
	call := func(f connect.UnaryFunc) func() {
		return func() {
			if _, err := f(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	}
	call(ic.WrapUnary(next))()
	b.ReportAllocs()
	rpctest.Compare(b, 2_000, call(fl.WrapUnary(next)), call(ic.WrapUnary(next)))
}
