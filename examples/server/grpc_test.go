package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
)

// rpcServers serves the example over HTTP (with the Connect twin) and
// gRPC, and returns the HTTP server's URL, a gRPC client and a free key.
func rpcServers(t *testing.T) (url string, cc *grpc.ClientConn, token string) {
	t.Helper()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live", Now: clock.Now, Plans: plans(), DefaultPlan: "free"})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	a, err := newApp(context.Background(), appConfig{manager: m, limiter: limiter, users: map[string]string{"demo": "demo"}})
	require.NoError(t, err)
	log := slog.New(slog.DiscardHandler)

	hs := httptest.NewUnstartedServer(a.routes())
	stop, err := a.serveRPC(hs.Config, "", log) // the Connect twin and h2c
	require.NoError(t, err)
	t.Cleanup(stop)
	hs.Start()
	t.Cleanup(hs.Close)

	gs, err := a.grpcServer(log)
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	cc, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })

	token, _, err = m.Issue(context.Background(), apikey.IssueParams{Owner: "demo"})
	require.NoError(t, err)
	return hs.URL, cc, token
}

func withKey(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// TestGRPCHealthAndReflection: health answers without a key, and
// reflection describes the hand-written demo service, as grpcurl needs.
func TestGRPCHealthAndReflection(t *testing.T) {
	_, cc, _ := rpcServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, res.GetStatus())

	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		require.NoError(t, stream.Send(req))
		res, err := stream.Recv()
		require.NoError(t, err)
		require.Nil(t, res.GetErrorResponse())
		return res
	}
	var services []string
	for _, s := range ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}).GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	assert.Subset(t, services, []string{dataService, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"})

	files := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: dataService}}).GetFileDescriptorResponse().GetFileDescriptorProto()
	byName := map[string]*descriptorpb.FileDescriptorProto{}
	for _, raw := range files {
		fd := new(descriptorpb.FileDescriptorProto)
		require.NoError(t, proto.Unmarshal(raw, fd))
		byName[fd.GetName()] = fd
	}
	require.Contains(t, byName, "apikey/demo/v1/data.proto")
	assert.Contains(t, byName, "google/protobuf/struct.proto", "the dependencies come along")
	svc := byName["apikey/demo/v1/data.proto"].GetService()[0]
	assert.Equal(t, "Data", svc.GetName())
	require.Len(t, svc.GetMethod(), 2)
	assert.Equal(t, ".google.protobuf.Struct", svc.GetMethod()[0].GetOutputType())
	assert.True(t, svc.GetMethod()[1].GetServerStreaming())
}

// TestRPCSharesTheBudgetOfData: the free plan's 100 requests a day are
// one budget for GET /data, the gRPC demo service (unary and streams) and
// its Connect twin.
func TestRPCSharesTheBudgetOfData(t *testing.T) {
	url, cc, token := rpcServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	get := func(md ...string) (*structpb.Struct, metadata.MD, error) {
		res, header := new(structpb.Struct), metadata.MD{}
		err := cc.Invoke(metadata.AppendToOutgoingContext(ctx, md...), dataGet, &emptypb.Empty{}, res, grpc.Header(&header))
		return res, header, err
	}
	watch := func() (int, error) {
		s, err := cc.NewStream(withKey(ctx, token), &grpc.StreamDesc{ServerStreams: true}, dataWatch)
		if err == nil {
			err = s.SendMsg(&emptypb.Empty{})
		}
		if err == nil {
			err = s.CloseSend()
		}
		n := 0
		for err == nil {
			if err = s.RecvMsg(new(structpb.Struct)); err == nil {
				n++
			}
		}
		if err == io.EOF {
			err = nil
		}
		return n, err
	}
	httpGet := func(path string) int {
		req, err := http.NewRequestWithContext(ctx, "GET", url+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	connectGet := func() (int, string) {
		req, err := http.NewRequestWithContext(ctx, "POST", url+dataGet, strings.NewReader("{}"))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}

	_, _, err := get()
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "no key")
	res, header, err := get("authorization", "Bearer "+token)
	require.NoError(t, err)
	assert.Equal(t, "demo", res.GetFields()["customer"].GetStringValue())
	assert.Equal(t, []string{`"daily";r=99;t=43200`}, header.Get("ratelimit"))
	n, err := watch()
	require.NoError(t, err)
	assert.Equal(t, watchCount, n, "a stream spends once")
	code, body := connectGet()
	require.Equal(t, http.StatusOK, code, body)
	var reply map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &reply))
	assert.Equal(t, "demo", reply["customer"])
	spent := 3
	for ; spent < 100; spent++ {
		switch spent % 4 {
		case 0:
			_, _, err = get("x-api-key", token)
		case 1:
			_, err = watch()
		case 2:
			if code, body := connectGet(); code != http.StatusOK {
				t.Fatalf("connect: %d %s", code, body)
			}
		default:
			require.Equal(t, http.StatusOK, httpGet("/data"))
		}
		require.NoError(t, err)
	}
	assert.Equal(t, http.StatusTooManyRequests, httpGet("/data"))
	_, _, err = get("authorization", "Bearer "+token)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	_, err = watch()
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	code, body = connectGet()
	assert.Equal(t, http.StatusTooManyRequests, code, "Connect maps resource_exhausted to 429")
	assert.Contains(t, body, "resource_exhausted")
}
