package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/client"
	"github.com/rackform/terraform-provider-baremetal/internal/testkit"
	"github.com/rackform/terraform-provider-baremetal/provisiond/daemon"
	"github.com/rackform/terraform-provider-baremetal/provisiond/store"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunRefusesDamagedStore is issue 13: a corrupted page made provisiond
// listen and then panic in the workflow resume; a 0-byte provisiond.db
// started as a new, empty store. run must return an error that names the
// file before anything listens.
func TestRunRefusesDamagedStore(t *testing.T) {
	tests := map[string]func(t *testing.T, path string){
		"0-byte file": func(t *testing.T, path string) {
			must(t, os.WriteFile(path, nil, 0o600))
		},
		"garbage page": func(t *testing.T, path string) {
			s, err := store.Open(path, store.Options{NoSync: true})
			must(t, err)
			must(t, s.Update(context.Background(), func(tx *store.Tx) error {
				return tx.PutWorkflow(store.Workflow{ID: "wf-damaged", HardwareID: "h1", Kind: store.KindProvision, State: store.StateRunning})
			}))
			must(t, s.Close())
			raw, err := os.ReadFile(path)
			must(t, err)
			at := bytes.Index(raw, []byte("wf-damaged"))
			if at < 0 {
				t.Fatal("workflow not found in the file")
			}
			page := at / os.Getpagesize() * os.Getpagesize()
			for i := page; i < page+os.Getpagesize(); i++ {
				raw[i] = byte(i*31 + 7)
			}
			must(t, os.WriteFile(path, raw, 0o600))
		},
	}
	for name, damage := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "provisiond.db")
			damage(t, path)
			tokenFile := filepath.Join(dir, "token")
			must(t, os.WriteFile(tokenFile, []byte(testToken), 0o600))
			grpcAddr, httpAddr := testkit.FreeTCP(t), testkit.FreeTCP(t)
			args := []string{"--data-dir", dir, "--token-file", tokenFile, "--grpc-listen", grpcAddr, "--http-listen", httpAddr,
				"--tftp-listen", "", "--dhcp-mode", "off", "--log-format", "json"}
			log := &syncBuffer{}
			done := make(chan error, 1)
			go func() {
				defer func() {
					if r := recover(); r != nil {
						done <- fmt.Errorf("panic: %v", r)
					}
				}()
				done <- run(context.Background(), args, func(string) string { return "" }, log)
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("provisiond started on a damaged store")
			}
			if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt naming %s", err, path)
			}
			if strings.Contains(log.String(), "provisiond starting") {
				t.Fatalf("it listened before refusing:\n%s", log)
			}
			for _, addr := range []string{grpcAddr, httpAddr} {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("%s is still taken: %v", addr, err)
				}
				_ = l.Close() // only its freedom mattered
			}
		})
	}
}

type fakeHealth struct{ err error }

func (f fakeHealth) Health(context.Context) error { return f.err }

func TestHealthzHandler(t *testing.T) {
	tests := map[string]struct {
		err      error
		wantCode int
		wantBody string
	}{
		"ok":        {nil, 200, "ok"},
		"disk full": {errors.New("write: no space left on device"), 503, "no space left on device"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			daemon.Healthz(fakeHealth{tc.err}).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			if rec.Code != tc.wantCode || !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Fatalf("%d %q, want %d with %q", rec.Code, rec.Body.String(), tc.wantCode, tc.wantBody)
			}
		})
	}
}

// TestHealthzOnFullDisk is issue 13: /healthz said ok while every write
// failed. The data directory is a 1 MiB tmpfs, filled up; writes through
// the API fail, /healthz must answer 503 with the reason and the log must
// carry the failure once, not once per write.
func TestHealthzOnFullDisk(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting a 1 MiB tmpfs needs root; TestHealthzHandler and the store's injected-failure test cover the rest")
	}
	mnt := filepath.Join(t.TempDir(), "data")
	must(t, os.MkdirAll(mnt, 0o700))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	// Cleanups run last first: this one, registered before the daemon
	// starts, unmounts after the daemon has stopped, even when it never came up.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	d := startDaemon(t, testToken, "--data-dir", mnt)
	// Stop the daemon before the unmount, and hand its result on to
	// startDaemon's cleanup.
	t.Cleanup(func() {
		d.cancel()
		select {
		case err := <-d.done:
			d.done <- err
		case <-time.After(15 * time.Second):
		}
	})
	get := func() (int, string) {
		resp, err := http.Get("http://" + d.httpAddr + "/healthz")
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close() // read
		return resp.StatusCode, string(body)
	}
	if code, body := get(); code != 200 {
		t.Fatalf("healthz before the disk filled: %d %s", code, body)
	}

	// Fill the file system, leaving nothing for the store to grow into.
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	must(t, err)
	chunk := make([]byte, 4096)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	must(t, filler.Close())

	c, err := d.client(t, client.Config{Token: testToken})
	must(t, err)
	meta := make([]byte, 48<<10)
	_, _ = rand.Read(meta)
	var writeErr error
	for i := 0; i < 100 && writeErr == nil; i++ {
		_, writeErr = c.CreateHardware(context.Background(), &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
			Id: fmt.Sprintf("node-%d", i), Interfaces: []*pb.Interface{{Mac: fmt.Sprintf("aa:bb:cc:00:01:%02x", i)}},
			Metadata: fmt.Sprintf(`{"blob": %q}`, fmt.Sprintf("%x", meta)),
		}})
	}
	if writeErr == nil {
		t.Fatal("100 writes of 96 KiB succeeded on a full 1 MiB file system")
	}
	for range 5 { // more failures: still one log line
		_, _ = c.CreateHardware(context.Background(), &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
			Id: "node-x", Interfaces: []*pb.Interface{{Mac: "aa:bb:cc:00:02:01"}}, Metadata: fmt.Sprintf(`{"blob": %q}`, fmt.Sprintf("%x", meta)),
		}})
	}
	code, body := get()
	if code != 503 || !strings.Contains(body, "no space left on device") {
		t.Fatalf("healthz on a full disk: %d %q, want 503 naming ENOSPC (the write failed with %v)", code, body, writeErr)
	}
	if n := strings.Count(d.log.String(), "store write failed"); n != 1 {
		t.Fatalf("%d log lines about failed writes, want 1:\n%s", n, d.log)
	}
}

// TestSecretsKeyFlag: with --secrets-key-file the BMC password written
// through the API is not in the db file, and the store then refuses to
// start without the key.
func TestSecretsKeyFlag(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secrets.key")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	must(t, os.WriteFile(keyFile, key, 0o600))
	data := filepath.Join(dir, "data")
	d := startDaemon(t, testToken, "--data-dir", data, "--secrets-key-file", keyFile)
	c, err := d.client(t, client.Config{Token: testToken})
	must(t, err)
	const pw = "api-bmc-pass-0xdeadbeef"
	_, err = c.CreateHardware(context.Background(), &pb.CreateHardwareRequest{Hardware: &pb.Hardware{
		Id: "n1", Interfaces: []*pb.Interface{{Mac: "aa:bb:cc:00:03:01"}},
		Bmc: &pb.BMC{Driver: "ipmi", Address: "127.0.0.1", Username: "admin", Password: pw},
	}})
	must(t, err)
	d.cancel()
	must(t, <-d.done)
	d.done <- nil // for startDaemon's cleanup
	raw, err := os.ReadFile(filepath.Join(data, "provisiond.db"))
	must(t, err)
	if bytes.Contains(raw, []byte(pw)) {
		t.Fatal("the BMC password is in the db file in plain text")
	}

	tokenFile := filepath.Join(dir, "token")
	must(t, os.WriteFile(tokenFile, []byte(testToken), 0o600))
	err = run(context.Background(), []string{"--data-dir", data, "--token-file", tokenFile, "--grpc-listen", testkit.FreeTCP(t),
		"--http-listen", testkit.FreeTCP(t), "--tftp-listen", "", "--dhcp-mode", "off"}, func(string) string { return "" }, io.Discard)
	if !errors.Is(err, store.ErrSecretsKey) || !strings.Contains(err.Error(), "--secrets-key-file") {
		t.Fatalf("start without the key: %v, want ErrSecretsKey naming --secrets-key-file", err)
	}
}
