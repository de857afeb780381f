// Package rpctest is the test bench both RPC adapters pass. It has one
// service served over gRPC and Connect, and keys in every state. It also
// has one table of cases with the outcome each must have on either
// protocol.
package rpctest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gokeys/apikey"
)

// The test services. Every method takes and returns google.protobuf.Struct.
const (
	EchoService   = "apikey.test.v1.Echo"
	AdminService  = "apikey.test.v1.Admin"
	PublicService = "apikey.test.v1.Public"
)

// The methods, by full name.
const (
	Echo        = "/apikey.test.v1.Echo/Echo"        // unary, the default rule
	Write       = "/apikey.test.v1.Echo/Write"       // unary, scope "write"
	Either      = "/apikey.test.v1.Echo/Either"      // unary, scope "a" or "b"
	Free        = "/apikey.test.v1.Echo/Free"        // unary, unmetered
	Costly      = "/apikey.test.v1.Echo/Costly"      // unary, cost 5
	Watch       = "/apikey.test.v1.Echo/Watch"       // server stream: {"n": N} gives N replies
	Chat        = "/apikey.test.v1.Echo/Chat"        // bidi: one reply per message
	ChatMetered = "/apikey.test.v1.Echo/ChatMetered" // bidi, spends per message
	AdminEcho   = "/apikey.test.v1.Admin/Echo"       // unary, the service's scope "admin"
	AdminStatus = "/apikey.test.v1.Admin/Status"     // unary, its own rule: no scope
	PublicEcho  = "/apikey.test.v1.Public/Echo"      // unary, open
	PublicWatch = "/apikey.test.v1.Public/Watch"     // server stream, open
)

var unaryMethods = map[string][]string{
	EchoService:   {"Echo", "Write", "Either", "Free", "Costly"},
	AdminService:  {"Echo", "Status"},
	PublicService: {"Echo"},
}

var streamMethods = map[string][]string{
	EchoService:   {"Watch", "Chat", "ChatMetered"},
	PublicService: {"Watch"},
}

// IsServerStream reports whether method takes one request and streams.
func IsServerStream(method string) bool { return strings.HasSuffix(method, "/Watch") }

// reply is what a handler answers: the key it saw and the credentials
// metadata it was handed.
func reply(ctx context.Context, seen func(string) []string, seq int) *structpb.Struct {
	fields := map[string]any{
		"authorization": strings.Join(seen("authorization"), ","),
		"x-api-key":     strings.Join(seen("x-api-key"), ","),
		"x-trace":       strings.Join(seen("x-trace"), ","),
		"seq":           float64(seq),
		"key":           "",
	}
	if k := apikey.FromContext(ctx); k != nil {
		fields["key"] = k.ID
		fields["owner"] = k.Owner
	}
	s, err := structpb.NewStruct(fields)
	if err != nil {
		panic(err)
	}
	return s
}

func grpcSeen(ctx context.Context) func(string) []string {
	return func(name string) []string { return metadata.ValueFromIncomingContext(ctx, name) }
}

func httpSeen(h http.Header) func(string) []string {
	return func(name string) []string { return h.Values(name) }
}

// RegisterGRPC registers the test services on s.
func RegisterGRPC(s *grpc.Server) {
	for _, svc := range []string{EchoService, AdminService, PublicService} {
		desc := &grpc.ServiceDesc{ServiceName: svc, HandlerType: (*any)(nil), Metadata: "rpctest"}
		for _, name := range unaryMethods[svc] {
			full := "/" + svc + "/" + name
			desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: name,
				Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
					in := new(structpb.Struct)
					if err := dec(in); err != nil {
						return nil, err
					}
					h := func(ctx context.Context, _ any) (any, error) { return reply(ctx, grpcSeen(ctx), 0), nil }
					if ic == nil {
						return h(ctx, in)
					}
					return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, h)
				}})
		}
		for _, name := range streamMethods[svc] {
			sd := grpc.StreamDesc{StreamName: name, ServerStreams: true, ClientStreams: name != "Watch"}
			if name == "Watch" {
				sd.Handler = func(_ any, ss grpc.ServerStream) error {
					in := new(structpb.Struct)
					if err := ss.RecvMsg(in); err != nil {
						return err
					}
					n := int(in.GetFields()["n"].GetNumberValue())
					for i := range n {
						if err := ss.SendMsg(reply(ss.Context(), grpcSeen(ss.Context()), i)); err != nil {
							return err
						}
					}
					return nil
				}
			} else {
				sd.Handler = func(_ any, ss grpc.ServerStream) error {
					for i := 0; ; i++ {
						in := new(structpb.Struct)
						if err := ss.RecvMsg(in); errors.Is(err, io.EOF) {
							return nil
						} else if err != nil {
							return err
						}
						if err := ss.SendMsg(reply(ss.Context(), grpcSeen(ss.Context()), i)); err != nil {
							return err
						}
					}
				}
			}
			desc.Streams = append(desc.Streams, sd)
		}
		s.RegisterService(desc, struct{}{})
	}
}

// ConnectMux returns the test services as Connect handlers.
func ConnectMux(opts ...connect.HandlerOption) *http.ServeMux {
	mux := http.NewServeMux()
	for _, svc := range []string{EchoService, AdminService, PublicService} {
		for _, name := range unaryMethods[svc] {
			full := "/" + svc + "/" + name
			mux.Handle(full, connect.NewUnaryHandler(full,
				func(ctx context.Context, req *connect.Request[structpb.Struct]) (*connect.Response[structpb.Struct], error) {
					return connect.NewResponse(reply(ctx, httpSeen(req.Header()), 0)), nil
				}, opts...))
		}
		for _, name := range streamMethods[svc] {
			full := "/" + svc + "/" + name
			if name == "Watch" {
				mux.Handle(full, connect.NewServerStreamHandler(full,
					func(ctx context.Context, req *connect.Request[structpb.Struct], ss *connect.ServerStream[structpb.Struct]) error {
						n := int(req.Msg.GetFields()["n"].GetNumberValue())
						for i := range n {
							if err := ss.Send(reply(ctx, httpSeen(req.Header()), i)); err != nil {
								return err
							}
						}
						return nil
					}, opts...))
				continue
			}
			mux.Handle(full, connect.NewBidiStreamHandler(full,
				func(ctx context.Context, bs *connect.BidiStream[structpb.Struct, structpb.Struct]) error {
					for i := 0; ; i++ {
						if _, err := bs.Receive(); errors.Is(err, io.EOF) {
							return nil
						} else if err != nil {
							return err
						}
						if err := bs.Send(reply(ctx, httpSeen(bs.RequestHeader()), i)); err != nil {
							return err
						}
					}
				}, opts...))
		}
	}
	return mux
}
