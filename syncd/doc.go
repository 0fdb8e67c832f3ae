// Package syncd copies persistence templates and connections from the master
// director to the backups in the Linux kernel's ip_vs_sync wire format
// (net/netfilter/ipvs/ip_vs_sync.c), so that lbha and the kernel's own sync
// daemons understand each other in both directions.
//
// This package owns the multicast transport (the kernel's socket options,
// group, port, TTL, buffer sizes); the codec lives in syncd/wire.
//
// # Privileges
//
// Binding a socket to an interface (SO_BINDTODEVICE) and forcing the
// receive buffer size (SO_RCVBUFFORCE) need CAP_NET_RAW and CAP_NET_ADMIN;
// without them the buffer falls back to the capped SO_RCVBUF.
package syncd
