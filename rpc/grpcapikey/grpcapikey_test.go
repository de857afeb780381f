package grpcapikey_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/rpc/grpcapikey"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
	"github.com/gokeys/apikey/rpc/internal/rpctest"
)

// options are the Options of a bench configuration.
func options(c rpcauth.Config) grpcapikey.Options {
	o := grpcapikey.Options{Limits: c.Limits, Metadata: c.Metadata, HideCredentials: c.HideCredentials,
		Default: grpcapikey.Rule(c.Default), Cost: c.Cost, ErrorDomain: c.ErrorDomain, Logger: c.Logger,
		Methods: map[string]grpcapikey.Rule{}, TrustedProxies: c.TrustedProxies}
	for name, r := range c.Methods {
		o.Methods[name] = grpcapikey.Rule(r)
	}
	return o
}

func server(t *testing.T, via rpctest.Conn, env *rpctest.Env) rpctest.Driver {
	ic, err := grpcapikey.New(env.M, options(env.Config))
	require.NoError(t, err)
	return rpctest.GRPC(t, via, ic.Unary, ic.Stream)
}

// TestCases runs the table both adapters pass, over bufconn and over TCP.
func TestCases(t *testing.T) {
	t.Run("bufconn", func(t *testing.T) {
		rpctest.Run(t, func(t *testing.T, env *rpctest.Env) rpctest.Driver { return server(t, rpctest.Bufconn, env) })
	})
	t.Run("tcp", func(t *testing.T) {
		rpctest.Run(t, func(t *testing.T, env *rpctest.Env) rpctest.Driver { return server(t, rpctest.TCP, env) })
	})
}

func TestRevokedDuringStream(t *testing.T) {
	rpctest.RunRevokedDuringStream(t, func(t *testing.T, env *rpctest.Env) rpctest.Driver { return server(t, rpctest.TCP, env) })
}

// TestIPRestrictions checks keys restricted to IP ranges over TCP.
func TestIPRestrictions(t *testing.T) {
	rpctest.RunIPRestrictions(t, func(t *testing.T, env *rpctest.Env) rpctest.Driver { return server(t, rpctest.TCP, env) })
}
