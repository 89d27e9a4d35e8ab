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
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// PKI holds PEM-encoded material and, after WriteFiles, their paths.
type PKI struct {
	CACert, ServerCert, ServerKey, ClientCert, ClientKey string
	// OtherCACert signs nothing here: a CA a client must not trust.
	OtherCACert string

	CACertFile, ServerCertFile, ServerKeyFile string
}

// TB is the part of testing.TB that New and WriteFiles use, so that the
// package links no testing code into what imports it.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// New creates a CA, a server certificate for 127.0.0.1 and localhost, and a
// client certificate.
func New(t TB) *PKI {
	t.Helper()
	p, err := Generate(net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Generate creates a CA, a server certificate for localhost and the given
// addresses, and a client certificate. The lab and `make demo` use it for
// provisiond's address inside their network namespace.
func Generate(serverIPs ...net.IP) (*PKI, error) {
	caKey, caDER, err := mk(nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	sKey, sDER, err := mk(caCert, caKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "provisiond"}, DNSNames: []string{"localhost"},
		IPAddresses: serverIPs,
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	cKey, cDER, err := mk(caCert, caKey, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "terraform"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	_, otherDER, err := mk(nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "other CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	})
	if err != nil {
		return nil, err
	}
	sPEM, err := keyPEM(sKey)
	if err != nil {
		return nil, err
	}
	cPEM, err := keyPEM(cKey)
	if err != nil {
		return nil, err
	}
	return &PKI{
		CACert: certPEM(caDER), ServerCert: certPEM(sDER), ServerKey: sPEM,
		ClientCert: certPEM(cDER), ClientKey: cPEM, OtherCACert: certPEM(otherDER),
	}, nil
}

// WriteFiles writes the CA and server material into dir and records the paths.
func (p *PKI) WriteFiles(t TB, dir string) {
	t.Helper()
	if err := p.Write(dir); err != nil {
		t.Fatal(err)
	}
}

// Write writes ca.pem, server.pem and server-key.pem into dir (mode 0600)
// and records their paths.
func (p *PKI) Write(dir string) error {
	p.CACertFile = filepath.Join(dir, "ca.pem")
	p.ServerCertFile = filepath.Join(dir, "server.pem")
	p.ServerKeyFile = filepath.Join(dir, "server-key.pem")
	for path, content := range map[string]string{p.CACertFile: p.CACert, p.ServerCertFile: p.ServerCert, p.ServerKeyFile: p.ServerKey} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

var serial atomic.Int64

func mk(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return key, der, nil
}

func certPEM(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func keyPEM(k *ecdsa.PrivateKey) (string, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), nil
}
