// Package testserver starts private Redis and PostgreSQL servers on spare
// ports for tests that must stop and restart them, which the shared
// servers of a test machine must never be. A test is skipped when the
// server's binaries are missing, and fails instead when CI=true. Each
// start and stop is logged (t.Logf) with the binary, the port and the time
// it took, so that a slow or failing test shows what it ran.
package testserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unavailable skips t, or fails it under CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// SparePort returns a TCP port of 127.0.0.1 that nothing listened on a
// moment ago.
func SparePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitPort waits until something accepts connections on addr.
func waitPort(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Redis is a private redis-server, without persistence.
type Redis struct {
	t    testing.TB
	Addr string // host:port
	bin  string // the redis-server binary
	cmd  *exec.Cmd
}

// StartRedis starts a redis-server on a spare port, stopped when the test
// ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, "redis-server is not installed")
	}
	r := &Redis{t: t, Addr: "127.0.0.1:" + strconv.Itoa(SparePort(t)), bin: bin}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts the server (again) on its port and waits until it accepts
// connections.
func (r *Redis) Start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.Addr)
	start := time.Now()
	r.cmd = exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("testserver: %s on %s: %v", r.bin, r.Addr, err)
	}
	if err := waitPort(r.Addr, 10*time.Second); err != nil {
		r.t.Fatalf("testserver: %s on %s did not start in %v: %v", r.bin, r.Addr, since(start), err)
	}
	r.t.Logf("testserver: started %s on %s (pid %d) in %v", r.bin, r.Addr, r.cmd.Process.Pid, since(start))
}

// Stop kills the server, as a crash would, and waits for it to exit.
func (r *Redis) Stop() {
	if r.cmd == nil {
		return
	}
	r.t.Helper()
	start := time.Now()
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
	r.t.Logf("testserver: killed %s on %s in %v", r.bin, r.Addr, since(start))
}

// since is the time elapsed since start, rounded for a log line.
func since(start time.Time) time.Duration { return time.Since(start).Round(time.Millisecond) }

// Postgres is a private PostgreSQL cluster in a temporary directory, with
// trust authentication for the user postgres.
type Postgres struct {
	t    testing.TB
	dir  string
	bin  string
	Port int
	// DSN reaches the cluster's postgres database as user postgres.
	DSN     string
	asUser  []string // runuser prefix when running as root
	running bool
}

// pgBin finds the directory of initdb and pg_ctl. It looks on PATH, else
// in the newest /usr/lib/postgresql/*/bin.
func pgBin() string {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

// StartPostgres creates a cluster with initdb and starts it on a spare
// port. It is stopped and removed when the test ends. PostgreSQL refuses
// to run as root, so as root the server runs as the user postgres.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin := pgBin()
	if bin == "" {
		unavailable(t, "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
	}
	dir, err := os.MkdirTemp("", "apikey-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &Postgres{t: t, dir: dir, bin: bin, Port: SparePort(t)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			unavailable(t, "running as root and there is no user postgres to run PostgreSQL as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	p.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
	start := time.Now()
	p.run("initdb", "-D", p.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
	t.Logf("testserver: %s created a cluster in %s in %v", filepath.Join(bin, "initdb"), p.data(), since(start))
	p.Start()
	t.Cleanup(p.stop)
	return p
}

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

// run runs one of the cluster's programs as the cluster's user.
func (p *Postgres) run(prog string, args ...string) {
	p.t.Helper()
	argv := append(append(slices.Clone(p.asUser), filepath.Join(p.bin, prog)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// Start starts the cluster (again) on its port and waits until it accepts
// connections.
func (p *Postgres) Start() {
	p.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50", p.Port, p.dir)
	start := time.Now()
	p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "log"), "-o", opts, "-w", "-t", "60", "start")
	p.running = true
	if err := waitPort(fmt.Sprintf("127.0.0.1:%d", p.Port), 10*time.Second); err != nil {
		p.t.Fatalf("testserver: PostgreSQL (%s) on port %d did not start in %v: %v", filepath.Join(p.bin, "postgres"), p.Port, since(start), err)
	}
	p.t.Logf("testserver: started PostgreSQL (%s, pg_ctl start) on 127.0.0.1:%d in %v", filepath.Join(p.bin, "postgres"), p.Port, since(start))
}

// Stop stops the cluster at once and waits for it to exit. It uses the
// immediate mode, which cuts every connection as a crash would.
func (p *Postgres) Stop() {
	p.t.Helper()
	start := time.Now()
	p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
	p.running = false
	p.t.Logf("testserver: stopped PostgreSQL on 127.0.0.1:%d (immediate) in %v", p.Port, since(start))
}

func (p *Postgres) stop() {
	if p.running {
		p.Stop()
	}
}
