package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testPKI is a throwaway CA that issues node certificates for IP addresses.
type testPKI struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lbha test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, caKey: key, pool: pool}
}

// config returns a mutual-TLS configuration for a node at ip.
func (p *testPKI) config(t *testing.T, ip string, serial int64) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: ip},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP(ip)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      p.pool, ClientCAs: p.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13,
	}
}

func TestClusterRaftOverMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	tc := newTestClusterWith(t, func(i int, c *Config) {
		c.TLS = pki.config(t, c.Bind.String(), int64(i+2))
	}, RoleDirector, RoleDirector, RoleWitness)
	m := tc.waitMaster(10*time.Second, -1)
	v, err := tc.nodes[m].ApplyConfig([]byte("tls: yes\n"), "test")
	for try := 0; err == ErrNotLeader && try < 50; try++ {
		m = tc.waitMaster(5*time.Second, -1)
		v, err = tc.nodes[m].ApplyConfig([]byte("tls: yes\n"), "test")
	}
	if err != nil || v != 1 {
		t.Fatalf("apply over TLS: %d %v", v, err)
	}

	// A client that trusts the cluster but presents a certificate of
	// another CA is refused by the server.
	stranger := newTestPKI(t).config(t, "127.0.0.9", 99)
	stranger.RootCAs = pki.pool
	conn, err := tls.Dial("tcp", string(tc.nodes[m].transport.LocalAddr()), stranger)
	if err == nil {
		// TLS 1.3 reports a refused client certificate on first read.
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("raft accepted a TLS client from another CA")
	}
}
