// Command realserver is the real server of lbha's namespace tests and demo:
// it answers with its name so that a client can tell which server the load
// balancer chose.
//
//   - TCP (--tcp, repeatable): writes "NAME\n" on every connection, then
//     echoes what it reads until the client closes;
//   - UDP (--udp, repeatable): answers each datagram with "NAME " and the
//     datagram;
//   - HTTP (--http): GET / answers "NAME\n"; GET /health answers 200, or 503
//     while the file named by --down-file exists (how tests fail a health
//     check without stopping the server).
//
// It runs until killed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var tcp, udp listFlag
	name := flag.String("name", "", "name to answer with (required)")
	httpAddr := flag.String("http", "", "HTTP address (host:port)")
	downFile := flag.String("down-file", "", "while this file exists, GET /health answers 503")
	flag.Var(&tcp, "tcp", "TCP greeting+echo address (host:port), repeatable")
	flag.Var(&udp, "udp", "UDP echo address (host:port), repeatable")
	flag.Parse()
	if *name == "" {
		log.Fatal("realserver: --name is required")
	}
	for _, a := range tcp {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			log.Fatalf("realserver: %v", err)
		}
		go serveTCP(ln, *name)
	}
	for _, a := range udp {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			log.Fatalf("realserver: %v", err)
		}
		go serveUDP(pc, *name)
	}
	if *httpAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, *name) })
		mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
			if *downFile != "" {
				if _, err := os.Stat(*downFile); err == nil {
					http.Error(w, "down", http.StatusServiceUnavailable)
					return
				}
			}
			fmt.Fprintln(w, "ok")
		})
		go func() { log.Fatal(http.ListenAndServe(*httpAddr, mux)) }()
	}
	log.Printf("realserver %s: tcp %v udp %v http %q", *name, tcp, udp, *httpAddr)
	select {}
}

func serveTCP(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer c.Close()
			if _, err := fmt.Fprintf(c, "%s\n", name); err != nil {
				return
			}
			_, _ = io.Copy(c, c)
		}()
	}
}

func serveUDP(pc net.PacketConn, name string) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo(append([]byte(name+" "), buf[:n]...), from)
	}
}
