package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/rpc/connectapikey"
	"github.com/gokeys/apikey/rpc/grpcapikey"
)

// The demo service is the RPC twin of GET /data.
//
//	package apikey.demo.v1;
//	service Data {
//	  rpc Get(google.protobuf.Empty) returns (google.protobuf.Struct);
//	  rpc Watch(google.protobuf.Empty) returns (stream google.protobuf.Struct);
//	}
//
// It is written by hand, without protoc. Its descriptor is built below, so
// that server reflection describes it to grpcurl. Both methods take and
// return well-known types, which every client already knows.
const (
	dataService = "apikey.demo.v1.Data"
	dataGet     = "/apikey.demo.v1.Data/Get"
	dataWatch   = "/apikey.demo.v1.Data/Watch"
	watchCount  = 3 // messages a Watch stream sends
)

// rpcRules are the keys' rules on both RPC surfaces: the demo service
// needs a key and spends one request of the caller's customer's plan, as GET /data
// does, a stream once when it starts; health and reflection are open;
// any other method is refused.
func rpcRules() (methods map[string]grpcapikey.Rule, def grpcapikey.Rule) {
	return map[string]grpcapikey.Rule{
		dataService:                                {},
		healthpb.Health_ServiceDesc.ServiceName:    {Open: true},
		"grpc.reflection.v1.ServerReflection":      {Open: true},
		"grpc.reflection.v1alpha.ServerReflection": {Open: true},
	}, grpcapikey.Rule{Deny: true}
}

// serveRPC serves the demo service over gRPC on addr (unless empty), with
// the standard health service and server reflection, and its Connect twin
// on srv (which then also speaks HTTP/2 without TLS, h2c, so that gRPC
// clients reach the twin too). Both are guarded by the app's Manager and
// its Middleware's LimitOptions: the same keys, and the same budget as
// GET /data. The
// returned function stops the gRPC server.
func (a *app) serveRPC(srv *http.Server, addr string, log *slog.Logger) (stop func(), err error) {
	methods, def := rpcRules()
	copts := connectapikey.Options{Limits: a.limits, HideCredentials: true, Logger: log, TrustedProxies: a.proxies,
		Default: connectapikey.Rule(def), Methods: map[string]connectapikey.Rule{}}
	for name, r := range methods {
		copts.Methods[name] = connectapikey.Rule(r)
	}
	cic, err := connectapikey.New(a.m, copts)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(dataGet, connect.NewUnaryHandler(dataGet,
		func(ctx context.Context, _ *connect.Request[emptypb.Empty]) (*connect.Response[structpb.Struct], error) {
			res, err := dataReply(ctx, -1)
			if err != nil {
				return nil, err
			}
			return connect.NewResponse(res), nil
		}, connect.WithInterceptors(cic)))
	mux.Handle(dataWatch, connect.NewServerStreamHandler(dataWatch,
		func(ctx context.Context, _ *connect.Request[emptypb.Empty], ss *connect.ServerStream[structpb.Struct]) error {
			for i := range watchCount {
				res, err := dataReply(ctx, i)
				if err == nil {
					err = ss.Send(res)
				}
				if err != nil {
					return err
				}
			}
			return nil
		}, connect.WithInterceptors(cic)))
	mux.Handle("/", srv.Handler)
	srv.Handler = mux
	if srv.Protocols == nil {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetHTTP2(true)
	}
	srv.Protocols.SetUnencryptedHTTP2(true)

	if addr == "" {
		return func() {}, nil
	}
	gs, err := a.grpcServer(log)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("gRPC server stopped", "error", err)
		}
	}()
	log.Info("listening", "grpc", lis.Addr().String())
	return func() {
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second): // streams that will not end
			gs.Stop()
		}
	}, nil
}

// grpcServer returns the gRPC server: the demo service, health and
// reflection, behind the key interceptors.
func (a *app) grpcServer(log *slog.Logger) (*grpc.Server, error) {
	methods, def := rpcRules()
	ic, err := grpcapikey.New(a.m, grpcapikey.Options{Limits: a.limits, HideCredentials: true,
		Methods: methods, Default: def, Logger: log, TrustedProxies: a.proxies})
	if err != nil {
		return nil, err
	}
	files, err := demoFiles()
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(ic.Unary), grpc.ChainStreamInterceptor(ic.Stream))
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: dataService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Get",
			Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
				if err := dec(new(emptypb.Empty)); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, _ any) (any, error) { return dataReply(ctx, -1) }
				return in(ctx, nil, &grpc.UnaryServerInfo{Server: srv, FullMethod: dataGet}, h)
			}}},
		Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				if err := ss.RecvMsg(new(emptypb.Empty)); err != nil {
					return err
				}
				for i := range watchCount {
					res, err := dataReply(ss.Context(), i)
					if err == nil {
						err = ss.SendMsg(res)
					}
					if err != nil {
						return err
					}
				}
				return nil
			}}},
		Metadata: "apikey/demo/v1/data.proto",
	}, struct{}{})
	healthpb.RegisterHealthServer(gs, health.NewServer()) // SERVING
	opts := reflection.ServerOptions{Services: gs, DescriptorResolver: files}
	reflectionv1.RegisterServerReflectionServer(gs, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(gs, reflection.NewServer(opts))
	return gs, nil
}

// dataReply is what GET /data answers, for the key in ctx; i numbers the
// messages of a stream (-1 for a unary call).
func dataReply(ctx context.Context, i int) (*structpb.Struct, error) {
	k := apikey.FromContext(ctx)
	fields := map[string]any{"data": []any{1, 2, 3}, "customer": k.Customer()}
	if i >= 0 {
		fields["seq"] = i
	}
	return structpb.NewStruct(fields)
}

// demoFiles describes the demo service for reflection: its file, and the
// well-known types' files from the program's registry.
func demoFiles() (protodesc.Resolver, error) {
	method := func(name string, stream bool) *descriptorpb.MethodDescriptorProto {
		return &descriptorpb.MethodDescriptorProto{Name: proto.String(name),
			InputType: proto.String(".google.protobuf.Empty"), OutputType: proto.String(".google.protobuf.Struct"),
			ServerStreaming: proto.Bool(stream)}
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:       proto.String("apikey/demo/v1/data.proto"),
		Package:    proto.String("apikey.demo.v1"),
		Dependency: []string{"google/protobuf/empty.proto", "google/protobuf/struct.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Data"),
			Method: []*descriptorpb.MethodDescriptorProto{method("Get", false), method("Watch", true)}}},
		Syntax: proto.String("proto3"),
	}, protoregistry.GlobalFiles)
	if err != nil {
		return nil, err
	}
	local := new(protoregistry.Files)
	if err := local.RegisterFile(fd); err != nil {
		return nil, err
	}
	return files{local}, nil
}

// files resolves descriptors from the demo's own registry, then from the
// program's (the well-known types, health, reflection).
type files struct{ local *protoregistry.Files }

func (f files) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := f.local.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (f files) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := f.local.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}
