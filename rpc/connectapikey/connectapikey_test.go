package connectapikey_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/rpc/connectapikey"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
	"github.com/gokeys/apikey/rpc/internal/rpctest"
)

// options are the Options of a bench configuration.
func options(c rpcauth.Config) connectapikey.Options {
	o := connectapikey.Options{Limits: c.Limits, Metadata: c.Metadata, HideCredentials: c.HideCredentials,
		Default: connectapikey.Rule(c.Default), Cost: c.Cost, ErrorDomain: c.ErrorDomain, Logger: c.Logger,
		Methods: map[string]connectapikey.Rule{}, TrustedProxies: c.TrustedProxies}
	for name, r := range c.Methods {
		o.Methods[name] = connectapikey.Rule(r)
	}
	return o
}

func server(t *testing.T, env *rpctest.Env, grpcProtocol bool) rpctest.Driver {
	ic, err := connectapikey.New(env.M, options(env.Config))
	require.NoError(t, err)
	url, client := rpctest.ConnectServer(t, ic)
	return rpctest.Connect(url, client, grpcProtocol)
}

// TestCases runs the table both adapters pass, over the Connect protocol
// and over gRPC, each on TCP with HTTP/2 (h2c).
func TestCases(t *testing.T) {
	for _, p := range []struct {
		name string
		grpc bool
	}{{"connect", false}, {"grpc", true}} {
		t.Run(p.name, func(t *testing.T) {
			rpctest.Run(t, func(t *testing.T, env *rpctest.Env) rpctest.Driver { return server(t, env, p.grpc) })
		})
	}
}

func TestRevokedDuringStream(t *testing.T) {
	rpctest.RunRevokedDuringStream(t, func(t *testing.T, env *rpctest.Env) rpctest.Driver { return server(t, env, false) })
}

// TestIPRestrictions checks keys restricted to IP ranges over TCP.
func TestIPRestrictions(t *testing.T) {
	rpctest.RunIPRestrictions(t, func(t *testing.T, env *rpctest.Env) rpctest.Driver { return server(t, env, false) })
}
