package grpcapikey_test

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/rpc/grpcapikey"
	"github.com/gokeys/apikey/rpc/internal/rpctest"
)

// floor is the least any key interceptor does: read both metadata keys,
// hash the token with SHA-256, look the digest up in a map, read the clock
// for expiry and put the key in the context.
type floor struct {
	keys map[[32]byte]*apikey.Key
}

type floorKey struct{}

func (f *floor) Unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	token := ""
	if vs := metadata.ValueFromIncomingContext(ctx, "authorization"); len(vs) == 1 {
		token = strings.TrimPrefix(vs[0], "Bearer ")
	}
	if vs := metadata.ValueFromIncomingContext(ctx, "x-api-key"); len(vs) == 1 {
		token = vs[0]
	}
	var buf [256]byte // no allocation for the hash's input
	k := f.keys[sha256.Sum256(append(buf[:0], token...))]
	if k == nil || k.Expired(time.Now()) {
		return nil, status.Error(codes.Unauthenticated, "invalid key")
	}
	return handler(context.WithValue(ctx, floorKey{}, k), req)
}

// incomingContext is a call's context as the gRPC server makes it: the
// metadata of a grpc-go client, with the key in authorization.
func incomingContext(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.MD{
		":authority":    {"127.0.0.1:50051"},
		"content-type":  {"application/grpc"},
		"user-agent":    {"grpc-go/1.85.0"},
		"authorization": {"Bearer " + token},
	})
}

// BenchmarkUnary compares Interceptor.Unary (no limits: the Manager's
// cache answers) with the floor, serially and in parallel.
func BenchmarkUnary(b *testing.B) {
	env := rpctest.NewEnv(b, rpctest.NoLimit)
	token, key := env.Issue(b, rpctest.Key{})
	ic, err := grpcapikey.New(env.M, grpcapikey.Options{})
	if err != nil {
		b.Fatal(err)
	}
	fl := &floor{keys: map[[32]byte]*apikey.Key{sha256.Sum256([]byte(token)): key}}
	info := &grpc.UnaryServerInfo{FullMethod: rpctest.Echo}
	ctx := incomingContext(token)
	handler := func(ctx context.Context, req any) (any, error) { return req, nil }
	if _, err := ic.Unary(ctx, nil, info, handler); err != nil { // fills the cache
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ic   grpc.UnaryServerInterceptor
	}{{"floor", fl.Unary}, {"apikey", ic.Unary}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.ic(ctx, nil, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.ic(ctx, nil, info, handler); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("apikey+limit", func(b *testing.B) { // Middleware.Spend over a memlimit.Limiter
		env := rpctest.NewEnv(b, rpctest.Default)
		owner := env.NewCustomer(&apikey.Customer{Limits: []limits.Limit{limits.Quota("daily", 1<<40, limits.Day)}})
		token, _ := env.IssueTo(b, owner)
		ic, err := grpcapikey.New(env.M, grpcapikey.Options{Limits: env.Config.Limits})
		if err != nil {
			b.Fatal(err)
		}
		ctx := incomingContext(token)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ic.Unary(ctx, nil, info, handler); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUnaryVsFloor alternates the floor and Interceptor.Unary in
// chunks on one thread and reports both CPU times per call and their
// ratio (see rpctest.Compare); BENCHMARKS.md quotes it.
func BenchmarkUnaryVsFloor(b *testing.B) {
	b.Run("manager", func(b *testing.B) { unaryVsFloor(b, rpctest.PlainManager(b)) })
	b.Run("manager+customers", func(b *testing.B) { unaryVsFloor(b, rpctest.NewEnv(b, rpctest.NoLimit).M) })
}

func unaryVsFloor(b *testing.B, m *apikey.Manager) {
	token, key, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ic, err := grpcapikey.New(m, grpcapikey.Options{})
	if err != nil {
		b.Fatal(err)
	}
	fl := &floor{keys: map[[32]byte]*apikey.Key{sha256.Sum256([]byte(token)): key}}
	info := &grpc.UnaryServerInfo{FullMethod: rpctest.Echo}
	ctx := incomingContext(token)
	handler := func(ctx context.Context, req any) (any, error) { return req, nil }
	call := func(ic grpc.UnaryServerInterceptor) func() {
		return func() {
			if _, err := ic(ctx, nil, info, handler); err != nil {
				b.Fatal(err)
			}
		}
	}
	call(ic.Unary)()
	b.ReportAllocs()
	rpctest.Compare(b, 2_000, call(fl.Unary), call(ic.Unary))
}
