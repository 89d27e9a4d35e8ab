package actions

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/rackform/terraform-provider-baremetal/internal/actionspec"
)

// testImage is compressible but not trivial: random runs and zero runs,
// like a disk image.
func testImage(size int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, size)
	for i := 0; i < size; i += 64 << 10 {
		if r.IntN(3) == 0 {
			continue // zeros
		}
		end := min(i+32<<10, size)
		for j := i; j < end; j++ {
			b[j] = byte(r.IntN(16))
		}
	}
	return b
}

func compress(t testing.TB, kind string, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch kind {
	case "raw":
		return raw
	case "gz":
		w = gzip.NewWriter(&buf)
	case "zst":
		w, err = zstd.NewWriter(&buf)
	case "xz":
		w, err = xz.NewWriter(&buf)
	case "bz2":
		if _, lerr := exec.LookPath("bzip2"); lerr != nil {
			t.Skip("bzip2 binary not installed; no Go bzip2 writer to make test data")
		}
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin = bytes.NewReader(raw)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// serveFile serves body at /image with range support (http.ServeContent).
func serveFile(t testing.TB, body []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "image", time.Unix(1700000000, 0), bytes.NewReader(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestImage2Disk(t *testing.T) {
	raw := testImage(3<<19 + 12345)
	tests := map[string]struct {
		kind, compressed string
		sha              func(served []byte) string
		wantErr          string
	}{
		"raw":                {kind: "raw", compressed: "false"},
		"raw sha256":         {kind: "raw", compressed: "false", sha: sum},
		"gz explicit":        {kind: "gz", compressed: "gz"},
		"gz sniffed sha256":  {kind: "gz", compressed: "true", sha: sum},
		"zst explicit":       {kind: "zst", compressed: "zst"},
		"zst sniffed sha256": {kind: "zst", compressed: "true", sha: sum},
		"xz explicit":        {kind: "xz", compressed: "xz"},
		"xz sniffed":         {kind: "xz", compressed: "true", sha: sum},
		"bz2 sniffed":        {kind: "bz2", compressed: "true"},
		"wrong sha256": {kind: "zst", compressed: "true", wantErr: "sha256 mismatch",
			sha: func([]byte) string { return strings.Repeat("ab", 32) }},
		"sha256 of raw is not the served file": {kind: "gz", compressed: "gz", wantErr: "sha256 mismatch",
			sha: func([]byte) string { return sum(raw) }},
		"true on raw data": {kind: "raw", compressed: "true", wantErr: "none of gzip"},
		"bad mode":         {kind: "raw", compressed: "lz4", wantErr: "COMPRESSED"},
		"wrong codec":      {kind: "gz", compressed: "zst", wantErr: "zstd"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			served := compress(t, tc.kind, raw)
			srv := serveFile(t, served)
			disk := filepath.Join(t.TempDir(), "disk")
			// A "disk" larger than the image: what lies beyond stays.
			if err := os.WriteFile(disk, bytes.Repeat([]byte{0xee}, len(raw)+4096), 0o644); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{"IMG_URL": srv.URL + "/image", "DEST_DISK": disk, "COMPRESSED": tc.compressed}
			if tc.sha != nil {
				env["SHA256"] = tc.sha(served)
			}
			var out bytes.Buffer
			err := New(Deps{ProgressEvery: time.Millisecond}).Image2Disk(context.Background(), Spec{Name: "img", Env: env}, &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if tc.wantErr == "sha256 mismatch" {
					// The image (under 2 MiB) was written and did not
					// verify: zeroed whole; what lies beyond, untouched.
					got, _ := os.ReadFile(disk)
					if !bytes.Equal(got[:len(raw)], make([]byte, len(raw))) {
						t.Error("the image that did not verify is still on the disk")
					}
					if !bytes.Equal(got[len(raw):], bytes.Repeat([]byte{0xee}, 4096)) {
						t.Error("bytes beyond the image were changed")
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Image2Disk: %v\noutput:\n%s", err, out.String())
			}
			got, _ := os.ReadFile(disk)
			if !bytes.Equal(got[:len(raw)], raw) {
				t.Fatal("disk content differs from the image")
			}
			if !bytes.Equal(got[len(raw):], bytes.Repeat([]byte{0xee}, 4096)) {
				t.Fatal("bytes beyond the image were changed")
			}
			if !strings.Contains(out.String(), "image2disk: wrote") {
				t.Errorf("no progress line in output:\n%s", out.String())
			}
			if tc.sha != nil && !strings.Contains(out.String(), "sha256") {
				t.Errorf("no sha256 confirmation in output:\n%s", out.String())
			}
		})
	}
}

// truncatingServer announces the full length but closes the connection
// after cut bytes, for the first `times` requests (all when times < 0).
func truncatingServer(t *testing.T, body []byte, cut int, times int32) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := n.Add(1); times >= 0 && c > times {
			http.ServeContent(w, r, "image", time.Unix(1700000000, 0), bytes.NewReader(body))
			return
		}
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		// The client's side is what the tests check: a failed write or
		// close here shows up there as a download that broke anyway.
		_, _ = w.Write(body[:cut])
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestImage2DiskTruncated(t *testing.T) {
	raw := testImage(1 << 20)
	for _, kind := range []string{"raw", "zst"} {
		t.Run(kind+" always truncated fails", func(t *testing.T) {
			served := compress(t, kind, raw)
			srv, _ := truncatingServer(t, served, len(served)/2, -1)
			disk := filepath.Join(t.TempDir(), "disk")
			var out bytes.Buffer
			err := New(Deps{}).Image2Disk(context.Background(), Spec{Env: map[string]string{
				"IMG_URL": srv.URL, "DEST_DISK": disk, "COMPRESSED": "true"[:map[bool]int{true: 4, false: 0}[kind != "raw"]], "RETRIES": "0",
			}}, &out)
			if err == nil {
				t.Fatalf("truncated download succeeded\n%s", out.String())
			}
			t.Logf("error as reported: %v", err)
		})
	}
	t.Run("resumes with a range request", func(t *testing.T) {
		served := compress(t, "zst", raw)
		srv, n := truncatingServer(t, served, len(served)/3, 1)
		disk := filepath.Join(t.TempDir(), "disk")
		var out bytes.Buffer
		err := New(Deps{}).Image2Disk(context.Background(), Spec{Env: map[string]string{
			"IMG_URL": srv.URL, "DEST_DISK": disk, "COMPRESSED": "true", "SHA256": sum(served),
		}}, &out)
		if err != nil {
			t.Fatalf("Image2Disk: %v\n%s", err, out.String())
		}
		if n.Load() != 2 {
			t.Errorf("%d requests, want 2 (one broken, one resumed)", n.Load())
		}
		got, _ := os.ReadFile(disk)
		if !bytes.Equal(got, raw) {
			t.Fatal("resumed image differs")
		}
		if !strings.Contains(out.String(), "resuming") {
			t.Errorf("output does not say it resumed:\n%s", out.String())
		}
	})
}

func TestImage2DiskErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	disk := filepath.Join(t.TempDir(), "disk")
	tests := map[string]struct {
		env  map[string]string
		want string
	}{
		"404":          {map[string]string{"IMG_URL": srv.URL + "/nope", "DEST_DISK": disk}, "404"},
		"no url":       {map[string]string{"DEST_DISK": disk}, "IMG_URL and DEST_DISK are required"},
		"ftp":          {map[string]string{"IMG_URL": "ftp://x/y", "DEST_DISK": disk}, "not an http(s) URL"},
		"bad sha":      {map[string]string{"IMG_URL": srv.URL, "DEST_DISK": disk, "SHA256": "xyz"}, "not a hex sha256"},
		"unreachable":  {map[string]string{"IMG_URL": "http://127.0.0.1:1/x", "DEST_DISK": disk}, "connection refused"},
		"bad dest dir": {map[string]string{"IMG_URL": serveFile(t, []byte("x")).URL, "DEST_DISK": "/nonexistent/dir/disk"}, "open /nonexistent"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := New(Deps{}).Image2Disk(context.Background(), Spec{Env: tc.env}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestImage2DiskHonoursContext(t *testing.T) {
	// A server that trickles forever.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := w.Write(make([]byte, 1024)); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := New(Deps{}).Image2Disk(ctx, Spec{Env: map[string]string{"IMG_URL": srv.URL, "DEST_DISK": filepath.Join(t.TempDir(), "d")}}, io.Discard)
	if err == nil {
		t.Fatal("endless download succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to notice the deadline", d)
	}
}

// TestLookup: the agent finds an action by the image references the
// template parser accepts (actionspec's table tests cover the rules).
func TestLookup(t *testing.T) {
	reg := New(Deps{}).Registry()
	for in, want := range map[string]string{
		"image2disk": "image2disk",
		"quay.io/tinkerbell/actions/image2disk:v1.0.0":     "image2disk",
		"quay.io/tinkerbell/actions/writefile@sha256:abcd": "writefile",
		"localhost:5000/cexec:latest":                      "cexec",
		" WIPE ":                                           "wipe",
		"quay.io/tinkerbell/actions/kexec:v1.0.0":          "kexec",
	} {
		if got := actionspec.Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
		if _, err := reg.Lookup(in); err != nil {
			t.Errorf("Lookup(%q): %v", in, err)
		}
	}
	if _, err := reg.Lookup("docker.io/library/ubuntu:22.04"); err == nil || !strings.Contains(err.Error(), "not a built-in action") {
		t.Errorf("Lookup(ubuntu) err = %v", err)
	}
}

// TestRegistry: the agent implements exactly the contract's actions, and
// only kexec acts after its report (reboot and poweroff are provisiond's
// answer to the agent's next call).
func TestRegistry(t *testing.T) {
	reg := New(Deps{}).Registry()
	if diff := cmp.Diff(actionspec.Names(), reg.Names()); diff != "" {
		t.Errorf("registry differs from actionspec (-contract +agent):\n%s", diff)
	}
	for name, a := range reg {
		want := ""
		if name == actionspec.Kexec {
			want = "kexec"
		}
		if a.Then != want {
			t.Errorf("%s.Then = %q, want %q", name, a.Then, want)
		}
		if a.Run == nil {
			t.Errorf("%s has no function", name)
		}
	}
}
