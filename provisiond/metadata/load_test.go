package metadata

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
)

const loadMachines = 1000

// loadAddr is machine i's address: machine 0 is 127.0.0.1 (where wrk
// connects from), the others 127.10.x.y, all on the loopback interface.
func loadAddr(i int) string {
	if i == 0 {
		return "127.0.0.1"
	}
	return fmt.Sprintf("127.10.%d.%d", i/250, i%250+1)
}

// loadServer starts a metadata server over real loopback HTTP backed by a
// real bbolt store holding loadMachines hardware records, each with a
// machine, user-data, an SSH key and labels. It returns the base URL.
func loadServer(tb testing.TB) string {
	tb.Helper()
	st, err := store.Open(filepath.Join(tb.TempDir(), "db"), store.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := st.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	err = st.Update(context.Background(), func(tx *store.Tx) error {
		if err := tx.CreateTemplate(store.Template{ID: "tpl", Name: "t", Content: "version: \"0.1\"\n"}); err != nil {
			return err
		}
		for i := range loadMachines {
			id := fmt.Sprintf("hw-%04d", i)
			h := store.Hardware{
				ID: id, Hostname: fmt.Sprintf("node%04d.rack%d.example", i, i/40), Arch: "x86_64", Disks: []string{"/dev/sda"},
				Interfaces: []store.Interface{{MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256), IP: loadAddr(i) + "/8", Gateway: "127.0.0.254"}},
				Labels:     map[string]string{"availability-zone": fmt.Sprintf("rack%d", i/40), "role": "worker"},
				Metadata:   []byte(`{"site":"lab"}`),
			}
			if err := tx.CreateHardware(h); err != nil {
				return err
			}
			if err := tx.PutMachine(store.Machine{
				HardwareID: id, TemplateID: "tpl", UserData: "#cloud-config\nhostname: " + h.Hostname + "\n" + strings.Repeat("# padding\n", 50),
				SSHKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + id + " ops@example"}, Parameters: map[string]string{"image_url": "http://img/x.raw"},
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	New(st, nil, prometheus.NewRegistry(), Options{TokenOptional: true}).Register(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// BenchmarkLoad: b.N requests from 64 concurrent workers over real loopback
// HTTP, each of the 1,000 machines from its own source address (the client
// socket is bound to it), so every request is identified by a real lookup
// of its source address. The paths rotate through the meta-data listing,
// instance-id (checked against the source's own id), user-data and the
// /metadata JSON. Reports requests/s and latency percentiles.
//
//	go test -run '^$' -bench BenchmarkLoad -benchtime 20000x ./provisiond/metadata
func BenchmarkLoad(b *testing.B) {
	base := loadServer(b)
	const workers = 64
	clients := make([]*http.Client, loadMachines)
	for i := range clients {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(loadAddr(i))}, Timeout: 5 * time.Second}
		tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 2, DisableCompression: true}
		b.Cleanup(tr.CloseIdleConnections)
		clients[i] = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	paths := []string{"/latest/meta-data/instance-id", "/latest/meta-data/", "/latest/user-data", "/metadata"}

	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1) - 1)
				if n >= b.N {
					return
				}
				// Worker w serves machines w, w+64, ...: connections stay warm.
				m := (w + workers*(n/workers)) % loadMachines
				p := paths[(n/workers)%len(paths)]
				t0 := time.Now()
				resp, err := clients[m].Get(base + p)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					_ = resp.Body.Close() // read-only; ReadAll's error is checked
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("%s from %s: status %d", p, loadAddr(m), resp.StatusCode)
					}
					if want := fmt.Sprintf("hw-%04d", m); err == nil && p == paths[0] && string(body) != want {
						err = fmt.Errorf("%s from %s: got %q, want %q", p, loadAddr(m), body, want)
					}
				}
				lat[w] = append(lat[w], time.Since(t0))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed; first: %v", n, b.N, firstErr.Load())
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(q float64) time.Duration { return all[min(len(all)-1, int(q*float64(len(all))))] }
	rps := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rps, "req/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op") // per-op time is meaningless for a concurrent load
	b.Logf("metadata load: %d machines, %d workers, %d requests in %s: %.0f req/s, p50 %s, p99 %s, max %s",
		loadMachines, workers, b.N, elapsed.Round(time.Millisecond), rps, pct(0.50), pct(0.99), all[len(all)-1])
}

// TestLoadWRK runs wrk (Debian package wrk) against the same 1,000-machine
// server. wrk cannot choose its source address, so it is machine 0
// (127.0.0.1). Opt-in (it takes ~20 s of CPU): BENCH_WRK=1.
func TestLoadWRK(t *testing.T) {
	if os.Getenv("BENCH_WRK") == "" {
		t.Skip("set BENCH_WRK=1 to run wrk against the metadata server (make bench-metadata does)")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed (Debian package wrk)")
	}
	base := loadServer(t)
	re := regexp.MustCompile(`(?m)^\s*99%\s+(\S+)|^Requests/sec:\s+(\S+)`)
	for _, p := range []string{"/latest/meta-data/instance-id", "/latest/user-data", "/metadata"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, wrk, "-t2", "-c64", "-d8s", "--latency", base+p).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("wrk %s: %v\n%s", p, err, out)
		}
		if strings.Contains(string(out), "Non-2xx") {
			t.Fatalf("wrk %s: non-2xx answers:\n%s", p, out)
		}
		var p99, rps string
		for _, m := range re.FindAllStringSubmatch(string(out), -1) {
			if m[1] != "" {
				p99 = m[1]
			}
			if m[2] != "" {
				rps = m[2]
			}
		}
		if rps == "" || p99 == "" {
			t.Fatalf("wrk %s: no figures in output:\n%s", p, out)
		}
		t.Logf("wrk -t2 -c64 -d8s %s: %s req/s, p99 %s", p, rps, p99)
	}
}
