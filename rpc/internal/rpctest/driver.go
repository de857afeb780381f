package rpctest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gokeys/apikey/rpc/internal/rpcauth"
)

// Outcome is what a client saw of a call.
type Outcome struct {
	Code    rpcauth.Code // 0: OK
	Message string
	Details []proto.Message
	// Header is the response header metadata, keys canonical.
	Header http.Header
	// Replies are the messages received.
	Replies []*structpb.Struct
}

// Driver calls the test services over one protocol.
type Driver interface {
	// Unary calls a unary method with request metadata md.
	Unary(ctx context.Context, method string, md map[string][]string, req *structpb.Struct) Outcome
	// Stream calls a streaming method. A server stream (Watch) is asked for
	// n replies. A bidi stream is sent n messages, each awaiting its reply.
	Stream(ctx context.Context, method string, md map[string][]string, n int) Outcome
	// Open starts a bidi stream of method (Chat), for Round trips.
	Open(ctx context.Context, method string, md map[string][]string) Conversation
}

// Conversation is an open bidi stream.
type Conversation interface {
	// Round sends a message and receives its reply. It returns the
	// stream's status code and message when the stream failed.
	Round() (rpcauth.Code, string)
	// Close ends the stream.
	Close()
}

// Conn is how a gRPC client reaches the server.
type Conn int

// The transports of gRPC drivers.
const (
	TCP Conn = iota
	Bufconn
)

// GRPC serves the test services with the interceptors on a gRPC server and
// returns a client of it.
func GRPC(t testing.TB, via Conn, unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) Driver {
	t.Helper()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	RegisterGRPC(srv)
	var (
		lis    net.Listener
		target = "passthrough:///bufnet"
		opts   = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	)
	if via == Bufconn {
		bl := bufconn.Listen(1 << 20)
		lis = bl
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }))
	} else {
		var err error
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		target = lis.Addr().String()
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &grpcDriver{cc: cc}
}

type grpcDriver struct{ cc *grpc.ClientConn }

func (d *grpcDriver) Unary(ctx context.Context, method string, md map[string][]string, req *structpb.Struct) Outcome {
	var header metadata.MD
	res := new(structpb.Struct)
	err := d.cc.Invoke(metadata.NewOutgoingContext(ctx, metadata.MD(md).Copy()), method, req, res, grpc.Header(&header))
	o := grpcOutcome(err, header)
	if err == nil {
		o.Replies = append(o.Replies, res)
	}
	return o
}

func (d *grpcDriver) Stream(ctx context.Context, method string, md map[string][]string, n int) Outcome {
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, metadata.MD(md).Copy()))
	defer cancel()
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: !IsServerStream(method)}
	cs, err := d.cc.NewStream(ctx, desc, method)
	if err != nil {
		return grpcOutcome(err, nil)
	}
	var replies []*structpb.Struct
	recv := func() error {
		m := new(structpb.Struct)
		if err := cs.RecvMsg(m); err != nil {
			return err
		}
		replies = append(replies, m)
		return nil
	}
	if IsServerStream(method) {
		err = cs.SendMsg(mustStruct(map[string]any{"n": n}))
		if err == nil {
			err = cs.CloseSend()
		}
		for err == nil {
			err = recv()
		}
	} else {
		for i := 0; i < n && err == nil; i++ {
			if err = cs.SendMsg(mustStruct(map[string]any{"i": i})); errors.Is(err, io.EOF) {
				break // the server ended the stream: its status is in RecvMsg
			}
			if err == nil {
				err = recv()
			}
		}
		if err == nil || errors.Is(err, io.EOF) {
			cs.CloseSend()
			err = recv()
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	header, _ := cs.Header()
	o := grpcOutcome(err, header)
	o.Replies = replies
	return o
}

func (d *grpcDriver) Open(ctx context.Context, method string, md map[string][]string) Conversation {
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, metadata.MD(md).Copy()))
	cs, err := d.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	return &grpcConversation{cs: cs, err: err, cancel: cancel}
}

type grpcConversation struct {
	cs     grpc.ClientStream
	err    error
	cancel context.CancelFunc
}

func (c *grpcConversation) Round() (rpcauth.Code, string) {
	if c.err == nil {
		if c.err = c.cs.SendMsg(mustStruct(map[string]any{"i": 1})); c.err == nil || errors.Is(c.err, io.EOF) {
			c.err = c.cs.RecvMsg(new(structpb.Struct))
		}
	}
	o := grpcOutcome(c.err, nil)
	return o.Code, o.Message
}

func (c *grpcConversation) Close() {
	if c.cs != nil {
		c.cs.CloseSend()
	}
	c.cancel()
}

func grpcOutcome(err error, md metadata.MD) Outcome {
	o := Outcome{Header: http.Header{}}
	for k, vs := range md {
		o.Header[textproto.CanonicalMIMEHeaderKey(k)] = vs
	}
	if err != nil {
		st := status.Convert(err)
		o.Code, o.Message = rpcauth.Code(st.Code()), st.Message()
		for _, d := range st.Proto().GetDetails() {
			if m, err := d.UnmarshalNew(); err == nil {
				o.Details = append(o.Details, m)
			}
		}
	}
	return o
}

// ConnectServer serves the test services with the interceptor on an
// HTTP server over TCP speaking HTTP/1.1 and h2c, and returns its URL and
// an HTTP/2 (h2c) client of it.
func ConnectServer(t testing.TB, ic connect.Interceptor) (string, *http.Client) {
	t.Helper()
	return Serve(t, ConnectMux(connect.WithInterceptors(ic)))
}

// Serve serves h over TCP, speaking HTTP/1.1 and h2c, and returns its URL
// and an HTTP/2 (h2c) client of it.
func Serve(t testing.TB, h http.Handler) (string, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return srv.URL, &http.Client{Transport: tr}
}

// Connect returns a Connect client of the test services at url. With
// grpcProtocol it speaks gRPC instead of the Connect protocol.
func Connect(url string, client *http.Client, grpcProtocol bool) Driver {
	d := &connectDriver{url: url, client: client}
	if grpcProtocol {
		d.opts = append(d.opts, connect.WithGRPC())
	}
	return d
}

type connectDriver struct {
	url    string
	client *http.Client
	opts   []connect.ClientOption
}

func (d *connectDriver) newClient(method string) *connect.Client[structpb.Struct, structpb.Struct] {
	return connect.NewClient[structpb.Struct, structpb.Struct](d.client, d.url+method, d.opts...)
}

func setHeader(h http.Header, md map[string][]string) {
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
}

func (d *connectDriver) Unary(ctx context.Context, method string, md map[string][]string, req *structpb.Struct) Outcome {
	r := connect.NewRequest(req)
	setHeader(r.Header(), md)
	res, err := d.newClient(method).CallUnary(ctx, r)
	if err != nil {
		return connectOutcome(err, nil)
	}
	o := connectOutcome(nil, res.Header())
	o.Replies = append(o.Replies, res.Msg)
	return o
}

func (d *connectDriver) Stream(ctx context.Context, method string, md map[string][]string, n int) Outcome {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := d.newClient(method)
	var replies []*structpb.Struct
	if IsServerStream(method) {
		r := connect.NewRequest(mustStruct(map[string]any{"n": n}))
		setHeader(r.Header(), md)
		ss, err := c.CallServerStream(ctx, r)
		if err != nil {
			return connectOutcome(err, nil)
		}
		defer ss.Close()
		for ss.Receive() {
			replies = append(replies, ss.Msg())
		}
		o := connectOutcome(ss.Err(), ss.ResponseHeader())
		o.Replies = replies
		return o
	}
	bs := c.CallBidiStream(ctx)
	setHeader(bs.RequestHeader(), md)
	var err error
	for i := 0; i < n && err == nil; i++ {
		if err = bs.Send(mustStruct(map[string]any{"i": i})); errors.Is(err, io.EOF) {
			break // the server ended the stream: its status is in Receive
		}
		if err == nil {
			var m *structpb.Struct
			if m, err = bs.Receive(); err == nil {
				replies = append(replies, m)
			}
		}
	}
	if err == nil || errors.Is(err, io.EOF) {
		bs.CloseRequest()
		_, err = bs.Receive()
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	bs.CloseRequest()
	bs.CloseResponse()
	o := connectOutcome(err, bs.ResponseHeader())
	o.Replies = replies
	return o
}

func (d *connectDriver) Open(ctx context.Context, method string, md map[string][]string) Conversation {
	bs := d.newClient(method).CallBidiStream(ctx)
	setHeader(bs.RequestHeader(), md)
	return &connectConversation{bs: bs}
}

type connectConversation struct {
	bs  *connect.BidiStreamForClient[structpb.Struct, structpb.Struct]
	err error
}

func (c *connectConversation) Round() (rpcauth.Code, string) {
	if c.err == nil {
		if c.err = c.bs.Send(mustStruct(map[string]any{"i": 1})); c.err == nil || errors.Is(c.err, io.EOF) {
			_, c.err = c.bs.Receive()
		}
	}
	o := connectOutcome(c.err, nil)
	return o.Code, o.Message
}

func (c *connectConversation) Close() {
	c.bs.CloseRequest()
	c.bs.CloseResponse()
}

func connectOutcome(err error, h http.Header) Outcome {
	o := Outcome{Header: http.Header{}}
	for k, vs := range h {
		o.Header[k] = vs
	}
	if err == nil {
		return o
	}
	o.Code = rpcauth.Code(connect.CodeOf(err))
	var ce *connect.Error
	if errors.As(err, &ce) {
		o.Message = ce.Message()
		for k, vs := range ce.Meta() {
			o.Header[k] = vs
		}
		for _, d := range ce.Details() {
			if m, err := d.Value(); err == nil {
				o.Details = append(o.Details, m)
			}
		}
	}
	return o
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// Request returns a Struct of m, for Driver.Unary.
func Request(m map[string]any) *structpb.Struct { return mustStruct(m) }
