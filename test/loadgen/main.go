// Command loadgen is the load generator and backend of lbha's proxy
// benchmark (test/bench). It has three subcommands:
//
//   - serve --addr A [--sink S] [--size N]: a request/response server (each
//     connection: read an N-byte request, answer N bytes, repeat until the
//     client closes) and, with --sink, a server that discards everything it
//     reads (the stream test);
//   - conns --target A --duration D --concurrency C [--size N] [--warmup W]:
//     C workers each loop connect, send N bytes, read N bytes, close; prints
//     {"conns_per_sec":..., "errors":..., "p50_ms":..., "p99_ms":...};
//   - stream --target A --duration D --streams S [--warmup W]: S connections
//     write as fast as they can to a sink; prints {"gbit_per_sec":...}.
//
// Results go to stdout as one JSON line; diagnostics go to stderr. The
// benchmark runs every subcommand as its own process inside a network
// namespace, so that every socket of the load is created there.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "conns":
		err = conns(os.Args[2:])
	case "stream":
		err = stream(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadgen serve|conns|stream [flags] (loadgen SUBCOMMAND -h for flags)")
	os.Exit(2)
}

// streamBuf is the write and read size of the stream test and the sink.
const streamBuf = 256 << 10

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "", "request/response address (host:port)")
	sink := fs.String("sink", "", "discard address (host:port), optional")
	size := fs.Int("size", 1024, "request and response size in bytes")
	_ = fs.Parse(args)
	if *addr == "" && *sink == "" {
		return errors.New("serve: --addr or --sink is required")
	}
	if *size < 1 {
		return errors.New("serve: --size must be positive")
	}
	errc := make(chan error, 2)
	if *addr != "" {
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return err
		}
		go func() { errc <- acceptLoop(ln, func(c net.Conn) { echoN(c, *size) }) }()
	}
	if *sink != "" {
		ln, err := net.Listen("tcp", *sink)
		if err != nil {
			return err
		}
		go func() { errc <- acceptLoop(ln, discard) }()
	}
	// The benchmark waits for this line before sending load.
	fmt.Fprintf(os.Stderr, "loadgen: listening addr=%q sink=%q\n", *addr, *sink)
	return <-errc
}

func acceptLoop(ln net.Listener, handle func(net.Conn)) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and the like: do not spin.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go handle(c)
	}
}

// echoN answers every size-byte request with size bytes until the client
// closes.
func echoN(c net.Conn, size int) {
	defer c.Close()
	req := make([]byte, size)
	resp := make([]byte, size)
	for {
		if _, err := io.ReadFull(c, req); err != nil {
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

func discard(c net.Conn) {
	defer c.Close()
	buf := make([]byte, streamBuf)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// ConnsResult is the output of conns.
type ConnsResult struct {
	ConnsPerSec float64 `json:"conns_per_sec"`
	Conns       int     `json:"conns"`
	Errors      int64   `json:"errors"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	Seconds     float64 `json:"seconds"`
	Concurrency int     `json:"concurrency"`
}

func conns(args []string) error {
	fs := flag.NewFlagSet("conns", flag.ExitOnError)
	target := fs.String("target", "", "server or VIP address (host:port)")
	duration := fs.Duration("duration", 5*time.Second, "measurement time")
	warmup := fs.Duration("warmup", time.Second, "load before the measurement starts, not counted")
	concurrency := fs.Int("concurrency", 32, "parallel workers")
	size := fs.Int("size", 1024, "request and response size in bytes")
	_ = fs.Parse(args)
	if *target == "" || *concurrency < 1 || *size < 1 || *duration <= 0 {
		return errors.New("conns: need --target, a positive --concurrency, --size and --duration")
	}

	var measuring, stop atomic.Bool
	var errs atomic.Int64
	lat := make([][]time.Duration, *concurrency)
	var wg sync.WaitGroup
	for w := range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := make([]byte, *size)
			resp := make([]byte, *size)
			d := net.Dialer{Timeout: 3 * time.Second}
			var mine []time.Duration
			for !stop.Load() {
				start := time.Now()
				err := oneConn(&d, *target, req, resp)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errs.Add(1)
					time.Sleep(time.Millisecond) // a refusing target must not spin the CPU
					continue
				}
				mine = append(mine, time.Since(start))
			}
			lat[w] = mine
		}()
	}
	time.Sleep(*warmup)
	measuring.Store(true)
	t0 := time.Now()
	time.Sleep(*duration)
	measuring.Store(false)
	elapsed := time.Since(t0)
	stop.Store(true)
	wg.Wait()

	all := slices.Concat(lat...)
	slices.Sort(all)
	res := ConnsResult{
		ConnsPerSec: float64(len(all)) / elapsed.Seconds(),
		Conns:       len(all),
		Errors:      errs.Load(),
		P50ms:       quantileMS(all, 0.50),
		P99ms:       quantileMS(all, 0.99),
		Seconds:     elapsed.Seconds(),
		Concurrency: *concurrency,
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// oneConn connects, sends req, reads len(resp) bytes and closes.
func oneConn(d *net.Dialer, target string, req, resp []byte) error {
	c, err := d.Dial("tcp", target)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	_, err = io.ReadFull(c, resp)
	return err
}

func quantileMS(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(int(q*float64(len(sorted))), len(sorted)-1)
	return float64(sorted[i]) / float64(time.Millisecond)
}

// StreamResult is the output of stream.
type StreamResult struct {
	GbitPerSec float64 `json:"gbit_per_sec"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	Streams    int     `json:"streams"`
}

func stream(args []string) error {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	target := fs.String("target", "", "sink or VIP address (host:port)")
	duration := fs.Duration("duration", 5*time.Second, "measurement time")
	warmup := fs.Duration("warmup", time.Second, "load before the measurement starts, not counted")
	streams := fs.Int("streams", 1, "parallel connections")
	_ = fs.Parse(args)
	if *target == "" || *streams < 1 || *duration <= 0 {
		return errors.New("stream: need --target, a positive --streams and --duration")
	}
	cs := make([]net.Conn, 0, *streams)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range *streams {
		c, err := net.DialTimeout("tcp", *target, 3*time.Second)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	var sent atomic.Int64
	var stop atomic.Bool
	errc := make(chan error, len(cs))
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, streamBuf)
			for !stop.Load() {
				n, err := c.Write(buf)
				sent.Add(int64(n))
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	time.Sleep(*warmup)
	b0, t0 := sent.Load(), time.Now()
	time.Sleep(*duration)
	b1, elapsed := sent.Load(), time.Since(t0)
	stop.Store(true)
	for _, c := range cs {
		_ = c.SetWriteDeadline(time.Now()) // unblock a writer stuck on a full window
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("stream: %w", err)
		}
	}
	res := StreamResult{
		GbitPerSec: float64(b1-b0) * 8 / elapsed.Seconds() / 1e9,
		Bytes:      b1 - b0,
		Seconds:    elapsed.Seconds(),
		Streams:    len(cs),
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
