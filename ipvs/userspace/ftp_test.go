package userspace

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lbha/lbha/ipvs"
	"github.com/lbha/lbha/ipvs/userspace/ftp"
	"github.com/lbha/lbha/persist"
)

// ftpServer is a scripted FTP server: PASV opens a data listener and
// announces it; PORT remembers the client's address; RETR sends the
// server's name over the data connection.
func ftpServer(t *testing.T, name, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ip := netip.MustParseAddrPort(addr).Addr()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				fmt.Fprintf(c, "220 %s ready\r\n", name)
				var dataLn net.Listener
				var active netip.AddrPort
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.TrimSpace(line)
					switch {
					case cmd == "PASV":
						dataLn, _ = net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
						port := dataLn.Addr().(*net.TCPAddr).Port
						b := ip.As4()
						fmt.Fprintf(c, "227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).\r\n", b[0], b[1], b[2], b[3], port>>8, port&255)
					case strings.HasPrefix(cmd, "PORT "):
						active, _ = ftp.ParsePORT(cmd)
						fmt.Fprintf(c, "200 PORT ok\r\n")
					case strings.HasPrefix(cmd, "RETR"):
						var d net.Conn
						if dataLn != nil {
							d, err = dataLn.Accept()
							dataLn.Close()
							dataLn = nil
						} else {
							// From the server's own address, as a real host would.
							dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip.AsSlice()}}
							d, err = dl.Dial("tcp", active.String())
						}
						if err != nil {
							fmt.Fprintf(c, "425 %v\r\n", err)
							continue
						}
						fmt.Fprintf(c, "150 sending\r\n")
						fmt.Fprintf(d, "file from %s", name)
						d.Close()
						fmt.Fprintf(c, "226 done\r\n")
					case cmd == "QUIT":
						fmt.Fprintf(c, "221 bye\r\n")
						return
					}
				}
			}()
		}
	}()
}

func TestFTPThroughTheProxy(t *testing.T) {
	ftpServer(t, "ftp1", "127.0.0.11:18221")
	ftpServer(t, "ftp2", "127.0.0.12:18221")
	h := newHarness(t, persist.Config{}, Config{})
	vip := "127.0.0.100:21"
	svc := tcpService(vip, "rr", 300, ipvs.HostMask4, rs("127.0.0.11:18221", 1), rs("127.0.0.12:18221", 1))
	h.apply(svc)
	if err := h.p.SetActive(true); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"passive", "active"} {
		t.Run(mode, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", vip, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			greet, _ := r.ReadString('\n')
			server := strings.Fields(greet)[1]
			var data net.Conn
			if mode == "passive" {
				fmt.Fprintf(c, "PASV\r\n")
				reply, _ := r.ReadString('\n')
				ap, ok := ftp.ParsePASV(strings.TrimSpace(reply))
				if !ok || ap.Addr() != netip.MustParseAddr("127.0.0.100") {
					t.Fatalf("PASV reply %q does not point at the VIP", reply)
				}
				fmt.Fprintf(c, "RETR f\r\n")
				if data, err = net.DialTimeout("tcp", ap.String(), 2*time.Second); err != nil {
					t.Fatal(err)
				}
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				ap := netip.MustParseAddrPort(ln.Addr().String())
				b := ap.Addr().As4()
				fmt.Fprintf(c, "PORT %d,%d,%d,%d,%d,%d\r\n", b[0], b[1], b[2], b[3], ap.Port()>>8, ap.Port()&255)
				if reply, _ := r.ReadString('\n'); !strings.HasPrefix(reply, "200") {
					t.Fatalf("PORT reply %q", reply)
				}
				fmt.Fprintf(c, "RETR f\r\n")
				_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
				if data, err = ln.Accept(); err != nil {
					t.Fatal(err)
				}
				if from := netip.MustParseAddrPort(data.RemoteAddr().String()).Addr(); from != netip.MustParseAddr("127.0.0.100") {
					t.Errorf("active data connection came from %s, not the VIP", from)
				}
			}
			body, _ := io.ReadAll(data)
			data.Close()
			if string(body) != "file from "+server {
				t.Fatalf("data %q through the proxy, control connection on %s", body, server)
			}
			fmt.Fprintf(c, "QUIT\r\n")
		})
	}
}
