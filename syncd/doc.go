// Package syncd copies persistence templates and connections from the master
// director to the backups in the Linux kernel's ip_vs_sync wire format
// (net/netfilter/ipvs/ip_vs_sync.c), so that lbha and the kernel's own sync
// daemons understand each other in both directions.
//
// It owns:
//
//   - the multicast transport (transport.go): the kernel's socket options,
//     group 224.0.0.81, port 8848, TTL 1, buffer sizes, sync_maxlen;
//   - the Master (master.go): it follows a persist.Table's change feed and
//     sends every created or updated entry within FlushInterval (5 ms) or as
//     soon as a datagram is full, where the kernel batches for up to 2 s.
//     Like the kernel it never sends removals nor entries the sync protocol
//     itself created, clears HASHED, never sends one-packet connections, and
//     in version 0 skips what v0 cannot carry. A periodic sweep re-sends
//     every live entry, since packets restart timers without change events;
//   - the kernel's sync_threshold/period decision (threshold.go) for a
//     dataplane that wants kernel-identical traffic (Master.Note);
//   - the Backup (backup.go): the kernel backup daemon's validation, check
//     by check (syncd/wire), sync id filtering, and ip_vs_proc_conn through
//     Table.ApplySync, all from one goroutine;
//   - the full resync over TCP (resync*.go), which the kernel lacks: a
//     backup that starts, restarts or rejoins receives the whole table with
//     remaining lifetimes and reports itself warm once it has all of it;
//   - optional authentication between lbha nodes (auth.go): an HMAC-SHA256
//     trailer per datagram with replay protection, and tagged resync
//     frames. A kernel backup drops authenticated datagrams at its size
//     check, so the kernel-compatible mode is plain;
//   - counters (stats.go).
//
// The codec lives in syncd/wire.
//
// # Differences from the kernel
//
//   - Changes are sent as they happen, not by packet counts, unless
//     MasterConfig.Threshold asks for the kernel's decision.
//   - The refresh sweep and the full resync exist only here.
//   - Entries are sent without sequence-adjustment flags: the table keeps no
//     sequence data.
//
// # Privileges
//
// Binding a socket to an interface (SO_BINDTODEVICE) and forcing the
// receive buffer size (SO_RCVBUFFORCE) need CAP_NET_RAW and CAP_NET_ADMIN;
// without them the buffer falls back to the capped SO_RCVBUF.
package syncd
