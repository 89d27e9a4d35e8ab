package cmdline

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testCA(t testing.TB) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestParse(t *testing.T) {
	ca := testCA(t)
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	base := "console=ttyS0,115200 bm.grpc=10.0.0.1:50051 bm.hw=hw-1 bm.token=tok"
	tests := map[string]struct {
		in      string
		want    Config
		wantErr string
	}{
		"full": {
			in: `initrd=initramfs console=ttyS0,115200 bm.grpc=10.0.0.1:50051 bm.http=http://10.0.0.1:8080/ bm.hw=hw-1 bm.workflow=wf-9 bm.token=abc.DEF-123 bm.tls=1 bm.ca=` +
				base64.StdEncoding.EncodeToString(ca) + ` BOOTIF=01-52-54-00-12-34-56` + "\n",
			want: Config{GRPC: "10.0.0.1:50051", HTTP: "http://10.0.0.1:8080", HardwareID: "hw-1", WorkflowID: "wf-9",
				Token: "abc.DEF-123", TLS: true, CAPEM: ca, BootMAC: mac},
		},
		"minimal":             {in: base, want: Config{GRPC: "10.0.0.1:50051", HardwareID: "hw-1", Token: "tok"}},
		"quoted and repeated": {in: base + ` bm.hw="hw 2" bm.tls=0`, want: Config{GRPC: "10.0.0.1:50051", HardwareID: "hw 2", Token: "tok"}},
		"bm.mac beats BOOTIF": {in: "BOOTIF=01-aa-aa-aa-aa-aa-aa bm.mac=52:54:00:12:34:56 " + base, want: Config{GRPC: "10.0.0.1:50051", HardwareID: "hw-1", Token: "tok", BootMAC: mac}},
		"ipv6 grpc":           {in: "bm.grpc=[fd00::1]:50051 bm.hw=h bm.token=t", want: Config{GRPC: "[fd00::1]:50051", HardwareID: "h", Token: "t"}},
		"missing all":         {in: "console=ttyS0", wantErr: "bm.grpc is missing"},
		"missing token":       {in: "bm.grpc=a:1 bm.hw=x", wantErr: "bm.token is missing"},
		"bad grpc":            {in: "bm.grpc=nohostport bm.hw=x bm.token=t", wantErr: "want HOST:PORT"},
		"bad tls":             {in: base + " bm.tls=maybe", wantErr: "bm.tls"},
		"bad http":            {in: base + " bm.http=ftp://x", wantErr: "bm.http"},
		"ca not base64":       {in: base + " bm.ca=@@@", wantErr: "not base64"},
		"ca not pem":          {in: base + " bm.ca=" + base64.StdEncoding.EncodeToString([]byte("hello")), wantErr: "no PEM"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestStringHidesToken(t *testing.T) {
	c, err := Parse("bm.grpc=a:1 bm.hw=x bm.token=very-secret")
	if err != nil {
		t.Fatal(err)
	}
	if s := c.String(); strings.Contains(s, "very-secret") || !strings.Contains(s, "token=true") {
		t.Errorf("String() = %q", s)
	}
}

func TestFields(t *testing.T) {
	got := Fields(` a  b="x y" "c d"  e=` + "\t\n")
	if diff := cmp.Diff([]string{"a", "b=x y", "c d", "e="}, got); diff != "" {
		t.Error(diff)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("console=ttyS0,115200 bm.grpc=10.0.0.1:50051 bm.http=http://10.0.0.1:8080 bm.hw=hw-1 bm.workflow=w bm.token=t bm.tls=1")
	f.Add(`bm.hw="a b" BOOTIF=01-52-54-00-12-34-56 bm.ca=AAAA bm.mac=zz`)
	f.Add(`"unterminated bm.grpc=[::1]:1`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			return
		}
		if c.GRPC == "" || c.HardwareID == "" || c.Token == "" {
			t.Fatalf("Parse(%q) succeeded without required fields: %+v", s, c)
		}
		if _, _, err := net.SplitHostPort(c.GRPC); err != nil {
			t.Fatalf("accepted bm.grpc %q: %v", c.GRPC, err)
		}
		// Parsing is a function of the fields: re-joining them parses the same.
		c2, err := Parse(strings.Join(quoteAll(Fields(s)), " "))
		if err != nil {
			t.Fatalf("re-parse of %q failed: %v", s, err)
		}
		if diff := cmp.Diff(c, c2); diff != "" {
			t.Fatalf("re-parse differs: %s", diff)
		}
	})
}

func quoteAll(fs []string) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = `"` + f + `"`
	}
	return out
}
