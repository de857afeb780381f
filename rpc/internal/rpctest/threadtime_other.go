//go:build !linux

package rpctest

import "time"

var origin = time.Now()

// threadTime is wall time where the thread's CPU time is not at hand.
func threadTime() time.Duration { return time.Since(origin) }
