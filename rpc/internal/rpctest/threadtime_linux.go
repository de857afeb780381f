package rpctest

import (
	"time"

	"golang.org/x/sys/unix"
)

// threadTime is the CPU time of the calling OS thread, to the nanosecond
// (the scheduler's count, where getrusage rounds to clock ticks).
func threadTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}
