package crosstest

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/rpc/connectapikey"
	"github.com/gokeys/apikey/rpc/grpcapikey"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
	"github.com/gokeys/apikey/rpc/internal/rpctest"
)

// TestOneBudgetAcrossSurfaces spends one customer's daily quota from 16
// concurrent callers on each of gRPC, Connect, Connect's gRPC protocol and
// plain HTTP, each alternating streams and unary calls, all with the same
// LimitOptions over one memlimit.Limiter: exactly the quota is admitted, and
// every other call is refused as rate limited, on every surface.
func TestOneBudgetAcrossSurfaces(t *testing.T) {
	const (
		budget  = 300
		callers = 16
		calls   = 6 // per caller
	)
	env := rpctest.NewEnv(t, rpctest.Default)
	owner := env.NewCustomer(&apikey.Customer{Limits: []limits.Limit{limits.Quota("daily", budget, limits.Day)}})
	grpcToken, _ := env.IssueTo(t, owner)
	connectToken, _ := env.IssueTo(t, owner)
	httpToken, _ := env.IssueTo(t, owner)

	gic, err := grpcapikey.New(env.M, grpcapikey.Options{Limits: env.Config.Limits})
	require.NoError(t, err)
	grpcDriver := rpctest.GRPC(t, rpctest.TCP, gic.Unary, gic.Stream)

	cic, err := connectapikey.New(env.M, connectapikey.Options{Limits: env.Config.Limits})
	require.NoError(t, err)
	mux := rpctest.ConnectMux(connect.WithInterceptors(cic))
	mux.Handle("GET /data", env.MW.Handler(env.MW.Limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))))
	url, client := rpctest.Serve(t, mux)
	drivers := map[string]rpctest.Driver{
		"grpc":         grpcDriver,
		"connect":      rpctest.Connect(url, client, false),
		"connect+grpc": rpctest.Connect(url, client, true),
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		admitted, limited atomic.Int64
		start             = make(chan struct{})
		wg                sync.WaitGroup
	)
	count := func(t *testing.T, surface string, code rpcauth.Code, msg string) {
		switch code {
		case 0:
			admitted.Add(1)
		case rpcauth.ResourceExhausted:
			limited.Add(1)
		default:
			t.Errorf("%s: code %d, %q", surface, code, msg)
		}
	}
	for name, d := range drivers {
		token := grpcToken
		if name != "grpc" {
			token = connectToken
		}
		for c := range callers {
			wg.Go(func() {
				<-start
				for i := range calls {
					var o rpctest.Outcome
					switch (c + i) % 3 {
					case 0:
						o = d.Stream(ctx, rpctest.Chat, rpctest.Bearer(token), 2)
					case 1:
						o = d.Stream(ctx, rpctest.Watch, rpctest.Bearer(token), 2)
					default:
						o = d.Unary(ctx, rpctest.Echo, rpctest.Bearer(token), rpctest.Request(nil))
					}
					count(t, name, o.Code, o.Message)
				}
			})
		}
	}
	for range callers {
		wg.Go(func() {
			<-start
			for range calls {
				req, _ := http.NewRequestWithContext(ctx, "GET", url+"/data", nil)
				req.Header.Set("Authorization", "Bearer "+httpToken)
				res, err := client.Do(req)
				if !assert.NoError(t, err) {
					return
				}
				res.Body.Close()
				switch res.StatusCode {
				case http.StatusOK:
					admitted.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
				default:
					t.Errorf("http: %d", res.StatusCode)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	total := int64((len(drivers) + 1) * callers * calls)
	assert.Equal(t, int64(budget), admitted.Load(), "admitted across all surfaces")
	assert.Equal(t, total-budget, limited.Load(), "refused as rate limited")
	o := grpcDriver.Unary(ctx, rpctest.Echo, rpctest.Bearer(grpcToken), rpctest.Request(nil))
	assert.Equal(t, rpcauth.ResourceExhausted, o.Code)
	assert.Equal(t, `"daily";r=0;t=43200`, o.Header.Get("Ratelimit"))
}
