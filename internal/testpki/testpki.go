// Package testpki makes a throw-away certificate authority with a server
// certificate for 127.0.0.1/localhost and a client certificate, for tests
// of TLS and mutual TLS.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI holds PEM-encoded material and, after WriteFiles, their paths.
type PKI struct {
	CACert, ServerCert, ServerKey, ClientCert, ClientKey string
	// OtherCACert signs nothing here: a CA a client must not trust.
	OtherCACert string

	CACertFile, ServerCertFile, ServerKeyFile string
}

// New creates a CA, a server certificate and a client certificate.
func New(t testing.TB) *PKI {
	t.Helper()
	caKey, caDER := mk(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	sKey, sDER := mk(t, caCert, caKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "provisiond"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	cKey, cDER := mk(t, caCert, caKey, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "terraform"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	_, otherDER := mk(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "other CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	})
	return &PKI{
		CACert: certPEM(caDER), ServerCert: certPEM(sDER), ServerKey: keyPEM(t, sKey),
		ClientCert: certPEM(cDER), ClientKey: keyPEM(t, cKey), OtherCACert: certPEM(otherDER),
	}
}

// WriteFiles writes the CA and server material into dir and records the paths.
func (p *PKI) WriteFiles(t testing.TB, dir string) {
	t.Helper()
	p.CACertFile = filepath.Join(dir, "ca.pem")
	p.ServerCertFile = filepath.Join(dir, "server.pem")
	p.ServerKeyFile = filepath.Join(dir, "server-key.pem")
	for path, content := range map[string]string{p.CACertFile: p.CACert, p.ServerCertFile: p.ServerCert, p.ServerKeyFile: p.ServerKey} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

var serial int64

func mk(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func keyPEM(t testing.TB, k *ecdsa.PrivateKey) string {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}
