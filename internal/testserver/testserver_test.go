package testserver

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder is a testing.TB that keeps what is logged through it.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	logs []string
}

func (r *recorder) Logf(format string, args ...any) {
	r.TB.Helper()
	r.mu.Lock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	r.TB.Logf(format, args...)
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.logs...)
}

// elapsed matches the time a log line reports.
var elapsed = regexp.MustCompile(` in \d+(\.\d+)?(ns|µs|ms|s|m\d+(\.\d+)?s)\b`)

// Starting, restarting and stopping a private Redis logs the binary, the
// address and the time each took.
func TestRedisLogsWhatItStarts(t *testing.T) {
	rec := &recorder{TB: t}
	r := StartRedis(rec)
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err)
	logs := rec.lines()
	require.Len(t, logs, 1, "one line for the start")
	assert.Contains(t, logs[0], bin)
	assert.Contains(t, logs[0], r.Addr)
	assert.Regexp(t, elapsed, logs[0])

	r.Stop()
	r.Start()
	logs = rec.lines()
	require.Len(t, logs, 3)
	assert.Contains(t, logs[1], "killed "+bin+" on "+r.Addr)
	assert.Regexp(t, elapsed, logs[1])
	assert.Contains(t, logs[2], "started "+bin+" on "+r.Addr)
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	require.NoError(t, err)
	c.Close()
}

// Creating, starting and stopping a private PostgreSQL cluster logs the
// binaries, the port and the time each took.
func TestPostgresLogsWhatItStarts(t *testing.T) {
	rec := &recorder{TB: t}
	p := StartPostgres(rec)
	bin := pgBin()
	logs := rec.lines()
	require.Len(t, logs, 2, "initdb, then the start")
	assert.Contains(t, logs[0], filepath.Join(bin, "initdb"))
	assert.Regexp(t, elapsed, logs[0])
	assert.Contains(t, logs[1], filepath.Join(bin, "postgres"))
	assert.Contains(t, logs[1], "127.0.0.1:"+strconv.Itoa(p.Port))
	assert.Regexp(t, elapsed, logs[1])

	p.Stop()
	logs = rec.lines()
	require.Len(t, logs, 3)
	assert.Contains(t, logs[2], "stopped PostgreSQL on 127.0.0.1:"+strconv.Itoa(p.Port))
	assert.Regexp(t, elapsed, logs[2])
}
