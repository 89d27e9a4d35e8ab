package packaging

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rackform/terraform-provider-baremetal/internal/testpki"
)

// The release TestRelease cuts: a tag in a clone, never in this checkout.
const (
	releaseTag     = "v9.8.7"
	releaseVersion = "9.8.7"
	releaseProject = "terraform-provider-baremetal"
	releaseRemote  = "https://github.com/rackform/terraform-provider-baremetal.git"
	manifestSource = "terraform-registry-manifest.json"
	// go-plugin's handshake cookie for Terraform providers.
	tfPluginCookie = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
)

// releasePlatforms are the targets of .goreleaser.yml.
var releasePlatforms = []string{
	"darwin_amd64", "darwin_arm64", "freebsd_amd64", "freebsd_arm64",
	"linux_amd64", "linux_arm64", "windows_amd64", "windows_arm64",
}

// TestRelease cuts the registry release as a release job would: it clones
// HEAD, tags the clone v9.8.7, makes a throwaway GPG key in a temporary
// GNUPGHOME and runs `goreleaser release --clean --skip=publish,announce`
// with .goreleaser.yml (the real release path: git validation, the before
// hook, builds, zips, SHA256SUMS, the GPG signature). It then checks the
// files the registry takes: their names, one binary per zip named
// terraform-provider-baremetal_v9.8.7 of the zip's OS and architecture
// (static for Linux), the sums, the signature (gpg), the manifest
// (protocol 6.0), that main.version is set (--version) and that the
// binary answers go-plugin's handshake with protocol 6. Last, real
// terraform installs the provider from a registry on 127.0.0.1 that serves
// these files as registry.terraform.io does (download metadata, SHA256SUMS,
// signature, public key), and refuses it when the sums do not match the
// signature.
//
// Opt-in (minutes of CPU; goreleaser is not part of make tools):
// BAREMETAL_RELEASE=1, as make release-check sets it. It releases HEAD:
// commit what it should build.
func TestRelease(t *testing.T) {
	if os.Getenv("BAREMETAL_RELEASE") == "" {
		t.Skip("set BAREMETAL_RELEASE=1 to build and check the registry release with goreleaser (make release-check does)")
	}
	goreleaser := goreleaserBinary(t)
	for _, tool := range []string{"git", "gpg", "gpgconf"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s: %v", tool, err)
		}
	}
	tf := terraformBinary(t)
	tmp := t.TempDir()
	src, commitTime := releaseClone(t, tmp)
	gnupg, fpr := throwawayKey(t, filepath.Join(tmp, "gnupg"))

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goreleaser, "release", "--clean", "--skip=publish,announce", "--parallelism", "1")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GNUPGHOME="+gnupg, "GPG_FINGERPRINT="+fpr, "GORELEASER_CURRENT_TAG="+releaseTag)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("goreleaser release: %v\n%s", err, out)
	}
	t.Logf("goreleaser release %s (%d platforms, signed): %v", releaseTag, len(releasePlatforms), time.Since(start).Round(time.Second))

	files := releaseUploads(t, src)
	want := []string{releaseFile("SHA256SUMS"), releaseFile("SHA256SUMS.sig")}
	for _, p := range releasePlatforms {
		want = append(want, releaseFile(p+".zip"))
	}
	sort.Strings(want)
	var got []string
	for name := range files {
		got = append(got, name)
	}
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("goreleaser would upload %q, the registry wants %q", got, want)
	}
	for _, name := range got {
		fi, err := os.Stat(files[name])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-58s %10d bytes", name, fi.Size())
	}

	manifest := checkManifest(t, src)
	sums := checkSums(t, src, files)
	checkSignature(t, gnupg, fpr, files[releaseFile("SHA256SUMS.sig")], files[releaseFile("SHA256SUMS")])
	for _, p := range releasePlatforms {
		bin := checkZip(t, files[releaseFile(p+".zip")], p, commitTime)
		if p == runtime.GOOS+"_"+runtime.GOARCH {
			checkHostBinary(t, bin, tmp)
		}
	}
	registryInstall(t, tf, tmp, files, sums, manifest, gnupg, fpr)
}

// releaseFile is the name of a release file: terraform-provider-baremetal_9.8.7_rest.
func releaseFile(rest string) string {
	return releaseProject + "_" + releaseVersion + "_" + rest
}

// goreleaserBinary is GORELEASER, else make's bin/goreleaser.
func goreleaserBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GORELEASER"); p != "" {
		return p
	}
	p, err := filepath.Abs("../bin/goreleaser")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no goreleaser: set GORELEASER or run `make bin/goreleaser` (%v)", err)
	}
	return p
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// releaseClone clones HEAD of this checkout into dir/src with the
// project's GitHub remote (goreleaser reads owner and name from it; nothing
// is fetched or pushed) and tags it. It returns the clone and the commit
// time, which .goreleaser.yml stamps on the binaries.
func releaseClone(t *testing.T, dir string) (string, time.Time) {
	t.Helper()
	root := git(t, "..", "rev-parse", "--show-toplevel")
	if st := git(t, root, "status", "--porcelain", "--", ".goreleaser.yml", manifestSource, "main.go", "go.mod", "go.sum"); st != "" {
		t.Logf("uncommitted changes are not in the release (it builds HEAD):\n%s", st)
	}
	src := filepath.Join(dir, "src")
	git(t, dir, "clone", "--quiet", "--no-tags", root, src)
	git(t, src, "remote", "set-url", "origin", releaseRemote)
	git(t, src, "tag", releaseTag)
	sec, err := strconv.ParseInt(git(t, src, "log", "-1", "--format=%ct"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("releasing %s as %s", git(t, src, "log", "-1", "--format=%h %s"), releaseTag)
	return src, time.Unix(sec, 0)
}

// throwawayKey makes an RSA signing key without a passphrase in a new
// GNUPGHOME and returns the directory and the key's fingerprint. The
// gpg-agent that gpg starts there is stopped when the test ends.
func throwawayKey(t *testing.T, home string) (string, string) {
	t.Helper()
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kill := exec.Command("gpgconf", "--kill", "all")
		kill.Env = append(os.Environ(), "GNUPGHOME="+home)
		if out, err := kill.CombinedOutput(); err != nil {
			t.Logf("gpgconf --kill all: %v\n%s", err, out)
		}
	})
	params := "%no-protection\nKey-Type: RSA\nKey-Length: 3072\nKey-Usage: sign\n" +
		"Name-Real: baremetal release test\nName-Email: release-test@example.invalid\nExpire-Date: 1d\n%commit\n"
	gpgRun(t, home, params, "--gen-key")
	for _, line := range strings.Split(gpgRun(t, home, "", "--with-colons", "--list-secret-keys"), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && len(f) > 9 {
			return home, f[9]
		}
	}
	t.Fatal("gpg lists no fingerprint for the key it made")
	return "", ""
}

func gpgRun(t *testing.T, home, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch"}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gpg %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// releaseUploads maps the name of each file goreleaser would upload to the
// release (archives, checksums, signatures in dist/artifacts.json) to its
// path.
func releaseUploads(t *testing.T, src string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(src, "dist", "artifacts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var artifacts []struct{ Name, Path, Type string }
	if err := json.Unmarshal(raw, &artifacts); err != nil {
		t.Fatalf("dist/artifacts.json: %v", err)
	}
	files := map[string]string{}
	for _, a := range artifacts {
		switch a.Type {
		case "Archive", "Checksum", "Signature":
			files[a.Name] = filepath.Join(src, a.Path)
		}
	}
	return files
}

// checkManifest checks the registry manifest and that the release uploads
// it under the name SHA256SUMS sums it as (the same template in both
// places of goreleaser's effective config). It returns its protocols.
func checkManifest(t *testing.T, src string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(src, manifestSource))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Version  int `json:"version"`
		Metadata struct {
			ProtocolVersions []string `json:"protocol_versions"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", manifestSource, err)
	}
	// main.go serves protocol 6 (providerserver.ServeOpts.ProtocolVersion).
	if m.Version != 1 || !reflect.DeepEqual(m.Metadata.ProtocolVersions, []string{"6.0"}) {
		t.Errorf("%s = %s, want version 1 with protocol_versions [\"6.0\"]", manifestSource, raw)
	}
	raw, err = os.ReadFile(filepath.Join(src, "dist", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type extra struct {
		Glob         string `yaml:"glob"`
		NameTemplate string `yaml:"name_template"`
	}
	var conf struct {
		Checksum struct {
			ExtraFiles []extra `yaml:"extra_files"`
		} `yaml:"checksum"`
		Release struct {
			ExtraFiles []extra `yaml:"extra_files"`
		} `yaml:"release"`
	}
	if err := yaml.Unmarshal(raw, &conf); err != nil {
		t.Fatalf("dist/config.yaml: %v", err)
	}
	want := []extra{{manifestSource, "{{ .ProjectName }}_{{ .Version }}_manifest.json"}}
	if !reflect.DeepEqual(conf.Checksum.ExtraFiles, want) || !reflect.DeepEqual(conf.Release.ExtraFiles, want) {
		t.Errorf("the manifest is summed as %+v and uploaded as %+v, want both %+v", conf.Checksum.ExtraFiles, conf.Release.ExtraFiles, want)
	}
	return m.Metadata.ProtocolVersions
}

// checkSums checks that SHA256SUMS lists exactly the zips and the manifest
// (under its release name), each with its SHA-256, and returns the sums by
// name.
func checkSums(t *testing.T, src string, files map[string]string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(files[releaseFile("SHA256SUMS")])
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || len(f[0]) != 64 {
			t.Fatalf("SHA256SUMS line %q is not `sha256  name`", line)
		}
		sums[f[1]] = f[0]
	}
	paths := map[string]string{releaseFile("manifest.json"): filepath.Join(src, manifestSource)}
	for _, p := range releasePlatforms {
		paths[releaseFile(p+".zip")] = files[releaseFile(p+".zip")]
	}
	if len(sums) != len(paths) {
		t.Errorf("SHA256SUMS lists %d files, want %d (the zips and the manifest):\n%s", len(sums), len(paths), raw)
	}
	for name, path := range paths {
		if got, want := sums[name], fileSHA256(t, path); got != want {
			t.Errorf("SHA256SUMS has %q for %s, the file's SHA-256 is %s", got, name, want)
		}
	}
	return sums
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkSignature verifies the detached signature of SHA256SUMS with gpg
// and that the key it names is the one goreleaser was given.
func checkSignature(t *testing.T, gnupg, fpr, sig, sums string) {
	t.Helper()
	raw, err := os.ReadFile(sig)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(raw, []byte("-----BEGIN")) {
		t.Errorf("%s is ASCII-armored; the registry takes a binary detached signature", filepath.Base(sig))
	}
	status := gpgRun(t, gnupg, "", "--status-fd", "1", "--verify", sig, sums)
	if !strings.Contains(status, "[GNUPG:] VALIDSIG "+fpr+" ") {
		t.Errorf("gpg --verify of SHA256SUMS shows no valid signature by %s:\n%s", fpr, status)
	}
}

// checkZip checks that the zip of platform (os_arch) holds one file, the
// binary terraform-provider-baremetal_v9.8.7 (.exe on Windows), executable,
// stamped with the commit time, built for that OS and architecture with
// main.version set; Linux binaries must be static. It returns the binary.
func checkZip(t *testing.T, path, platform string, commitTime time.Time) []byte {
	t.Helper()
	goos, goarch, _ := strings.Cut(platform, "_")
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	defer func() { _ = zr.Close() }()
	want := releaseProject + "_v" + releaseVersion
	if goos == "windows" {
		want += ".exe"
	}
	if len(zr.File) != 1 || zr.File[0].Name != want {
		var names []string
		for _, f := range zr.File {
			names = append(names, f.Name)
		}
		t.Fatalf("%s holds %q, want only %s", filepath.Base(path), names, want)
	}
	f := zr.File[0]
	if goos != "windows" && f.Mode().Perm()&0o111 == 0 {
		t.Errorf("%s: %s has mode %v, not executable", filepath.Base(path), f.Name, f.Mode())
	}
	if d := f.Modified.Sub(commitTime); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("%s: %s is dated %v, want the commit time %v (mod_timestamp)", filepath.Base(path), f.Name, f.Modified.UTC(), commitTime.UTC())
	}
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	if err := binaryFormat(bin, goos, goarch); err != nil {
		t.Errorf("%s: %s: %v", filepath.Base(path), f.Name, err)
	}
	// -X main.version=9.8.7 puts the string in the binary; "dev" otherwise.
	if !bytes.Contains(bin, []byte(releaseVersion)) {
		t.Errorf("%s: %s does not contain its version %s: main.version not set by the ldflags", filepath.Base(path), f.Name, releaseVersion)
	}
	return bin
}

// binaryFormat checks that bin is an executable for goos/goarch.
func binaryFormat(bin []byte, goos, goarch string) error {
	r := bytes.NewReader(bin)
	switch goos {
	case "linux", "freebsd":
		f, err := elf.NewFile(r)
		if err != nil {
			return fmt.Errorf("not ELF: %w", err)
		}
		machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[goarch]
		osabi := map[string]elf.OSABI{"linux": elf.ELFOSABI_NONE, "freebsd": elf.ELFOSABI_FREEBSD}[goos]
		if f.Type != elf.ET_EXEC || f.Machine != machine || f.OSABI != osabi {
			return fmt.Errorf("ELF %v %v %v, want ET_EXEC %v %v", f.Type, f.Machine, f.OSABI, machine, osabi)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				return fmt.Errorf("has an ELF interpreter: dynamically linked, want static (CGO_ENABLED=0)")
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			return fmt.Errorf("links shared libraries %q, want static", libs)
		}
	case "darwin":
		f, err := macho.NewFile(r)
		if err != nil {
			return fmt.Errorf("not Mach-O: %w", err)
		}
		cpu := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[goarch]
		if f.Type != macho.TypeExec || f.Cpu != cpu {
			return fmt.Errorf("Mach-O type %v cpu %v, want an executable for %v", f.Type, f.Cpu, cpu)
		}
	case "windows":
		f, err := pe.NewFile(r)
		if err != nil {
			return fmt.Errorf("not PE: %w", err)
		}
		machine := map[string]uint16{"amd64": pe.IMAGE_FILE_MACHINE_AMD64, "arm64": pe.IMAGE_FILE_MACHINE_ARM64}[goarch]
		if f.Machine != machine || f.Characteristics&pe.IMAGE_FILE_EXECUTABLE_IMAGE == 0 {
			return fmt.Errorf("PE machine %#x characteristics %#x, want an executable for %#x", f.Machine, f.Characteristics, machine)
		}
	default:
		return fmt.Errorf("no check for %s", goos)
	}
	return nil
}

// checkHostBinary runs the binary of this host's platform: --version must
// print the release version (main.version from the ldflags), and started
// as Terraform starts a plugin it must answer go-plugin's handshake with
// protocol 6, the manifest's.
func checkHostBinary(t *testing.T, bin []byte, tmp string) {
	t.Helper()
	path := filepath.Join(tmp, "host", releaseProject+"_v"+releaseVersion)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if want := releaseProject + " " + releaseVersion + "\n"; err != nil || string(out) != want {
		t.Errorf("%s --version = %q (%v), want %q", filepath.Base(path), out, err, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPDIR=" + tmp,
		"TF_PLUGIN_MAGIC_COOKIE=" + tfPluginCookie, "PLUGIN_PROTOCOL_VERSIONS=6"}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, readErr := bufio.NewReader(stdout).ReadString('\n')
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	// CORE-PROTOCOL|APP-PROTOCOL|NETWORK|ADDRESS|PROTOCOL|SERVER-CERT
	f := strings.Split(strings.TrimSpace(line), "|")
	if readErr != nil || len(f) < 5 || f[0] != "1" || f[1] != "6" || f[4] != "grpc" {
		t.Errorf("plugin handshake = %q (%v), want 1|6|...|grpc: \n%s", line, readErr, stderr.String())
	} else {
		t.Logf("plugin handshake: protocol %s over %s %s", f[1], f[4], f[2])
	}
}

// registryInstall serves the release on 127.0.0.1 over TLS as the
// registry's provider protocol does (versions, download metadata with the
// manifest's protocols, the zip, SHA256SUMS, its signature and the
// ASCII-armored public key), points terraform's registry.terraform.io at
// it (a host block of the CLI config) and runs terraform init and
// terraform providers schema. terraform checks the zip against the
// signed sums as it does for the real registry; the lock file must hold
// the zh: sum of every file in SHA256SUMS. A second init, served sums
// that differ from what was signed, must fail.
func registryInstall(t *testing.T, tf, tmp string, files, sums map[string]string, protocols []string, gnupg, fpr string) {
	t.Helper()
	platform := runtime.GOOS + "_" + runtime.GOARCH
	zipName := releaseFile(platform + ".zip")
	armor := gpgRun(t, gnupg, "", "--armor", "--export", fpr)
	sumsRaw, err := os.ReadFile(files[releaseFile("SHA256SUMS")])
	if err != nil {
		t.Fatal(err)
	}
	var tampered atomic.Bool // serve SHA256SUMS with one sum changed

	pki := testpki.New(t)
	pki.WriteFiles(t, tmp)
	cert, err := tls.X509KeyPair([]byte(pki.ServerCert), []byte(pki.ServerKey))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/providers/rackform/baremetal/versions", func(w http.ResponseWriter, _ *http.Request) {
		var platforms []map[string]string
		for _, p := range releasePlatforms {
			goos, goarch, _ := strings.Cut(p, "_")
			platforms = append(platforms, map[string]string{"os": goos, "arch": goarch})
		}
		writeJSON(w, map[string]any{"versions": []map[string]any{{"version": releaseVersion, "protocols": protocols, "platforms": platforms}}})
	})
	mux.HandleFunc("GET /v1/providers/rackform/baremetal/"+releaseVersion+"/download/{os}/{arch}", func(w http.ResponseWriter, r *http.Request) {
		name := releaseFile(r.PathValue("os") + "_" + r.PathValue("arch") + ".zip")
		if _, ok := files[name]; !ok {
			http.NotFound(w, r)
			return
		}
		writeJSON(w, map[string]any{
			"protocols": protocols, "os": r.PathValue("os"), "arch": r.PathValue("arch"),
			"filename": name, "download_url": srv.URL + "/files/" + name, "shasum": sums[name],
			"shasums_url":           srv.URL + "/files/" + releaseFile("SHA256SUMS"),
			"shasums_signature_url": srv.URL + "/files/" + releaseFile("SHA256SUMS.sig"),
			"signing_keys":          map[string]any{"gpg_public_keys": []map[string]string{{"key_id": fpr[len(fpr)-16:], "ascii_armor": armor}}},
		})
	})
	mux.HandleFunc("GET /files/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if name == releaseFile("SHA256SUMS") && tampered.Load() {
			manifestSum := sums[releaseFile("manifest.json")]
			_, _ = w.Write(bytes.Replace(sumsRaw, []byte(manifestSum), []byte(strings.Repeat("0", 64)), 1))
			return
		}
		path, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, path)
	})

	rc := filepath.Join(tmp, "terraformrc")
	conf := fmt.Sprintf("host \"registry.terraform.io\" {\n  services = {\n    \"providers.v1\" = %q\n  }\n}\nprovider_installation {\n  direct {}\n}\n", srv.URL+"/v1/providers/")
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + tmp, "TF_CLI_CONFIG_FILE=" + rc,
		"SSL_CERT_FILE=" + pki.CACertFile, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1"}
	config := "terraform {\n  required_providers {\n    baremetal = {\n      source  = \"rackform/baremetal\"\n      version = \"" + releaseVersion + "\"\n    }\n  }\n}\n"
	workdir := func(name string) string {
		dir := filepath.Join(tmp, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir := workdir("tf")
	start := time.Now()
	out := terraform(ctx, t, tf, dir, env, "init", "-input=false", "-no-color")
	t.Logf("terraform init from the local registry (%s): %v", zipName, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(out, "Installed rackform/baremetal v"+releaseVersion) {
		t.Errorf("terraform init did not install rackform/baremetal v%s:\n%s", releaseVersion, out)
	}
	lock, err := os.ReadFile(filepath.Join(dir, ".terraform.lock.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	for name, sum := range sums {
		if !bytes.Contains(lock, []byte(`"zh:`+sum+`"`)) {
			t.Errorf(".terraform.lock.hcl lacks zh:%s (%s) from the signed SHA256SUMS:\n%s", sum, name, lock)
		}
	}
	var schema struct {
		ProviderSchemas map[string]struct {
			ResourceSchemas map[string]json.RawMessage `json:"resource_schemas"`
		} `json:"provider_schemas"`
	}
	raw := terraform(ctx, t, tf, dir, env, "providers", "schema", "-json")
	if err := json.Unmarshal([]byte(raw), &schema); err != nil {
		t.Fatalf("terraform providers schema -json: %v\n%s", err, raw)
	}
	if _, ok := schema.ProviderSchemas["registry.terraform.io/rackform/baremetal"].ResourceSchemas["baremetal_hardware"]; !ok {
		t.Errorf("the installed provider serves no baremetal_hardware schema:\n%.2000s", raw)
	}

	tampered.Store(true)
	bad := workdir("tf-tampered")
	cmd := exec.CommandContext(ctx, tf, "-chdir="+bad, "init", "-input=false", "-no-color")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("terraform init accepted SHA256SUMS that differ from what was signed:\n%s", out)
	} else if !strings.Contains(strings.ToLower(string(out)), "signature") {
		t.Errorf("terraform init with altered SHA256SUMS failed, but not on the signature:\n%s", out)
	} else {
		t.Logf("terraform init with altered SHA256SUMS refused: %s", firstLineWith(string(out), "signature"))
	}
}

// firstLineWith is the first line of s that contains sub, trimmed.
func firstLineWith(s, sub string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(line), sub) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}
