// Package persist owns the table of IPVS connections and persistence
// templates: their keys, flags, protocol states, timers, the links between a
// connection and the template that controls it, and the destination
// counters those entries hold.
//
// It reproduces the Linux kernel's behaviour (net/netfilter/ipvs):
//
//   - ip_vs_sched_persist and ip_vs_schedule: [Table.Schedule] builds the
//     template key (netmask or prefix granularity, FTP and port-zero
//     services, fwmark services keyed by the mark, persistence-engine data),
//     checks a found template as ip_vs_check_template does (invalidating it
//     in place), creates template and connection, links them and restarts
//     the template timer;
//   - the TCP, UDP and SCTP state tables' timeouts and the active/inactive
//     accounting of set_tcp_state/set_sctp_state, and the template's
//     ASSURED state ([Table.SetState], [Table.Touch]);
//   - ip_vs_conn_expire: a template that still controls connections is kept
//     for another 60 s, anything else is unlinked and unbound
//     ([Table.Expire], [Table.Remove]; [Table.Drop] is ip_vs_conn_del);
//   - ip_vs_proc_conn and ip_vs_try_bind_dest, the backup side of the sync
//     protocol ([Table.ApplySync], [Table.Rebind]).
//
// # Layout
//
// The table is split into a power-of-two number of shards chosen by a keyed
// hash of the entry key. A shard stores entries in a slab of fixed-size
// (108-byte), pointer-free records addressed by 32-bit indexes, finds them
// through an open-addressing index of 32-bit slots (24 bits of slab index,
// 8 bits of hash tag), and expires them with a hierarchical timer wheel
// whose lists are linked by index. Destinations are referred to through a
// small per-table registry and persistence-engine data lives in a side map,
// so the garbage collector never scans the slab. A template costs 116 to 126
// heap bytes all told (measured: 122 at 1M, 116 at 10M).
//
// Timer restarts that only push a deadline later (a template's on every new
// connection, a connection's on every packet) just store the deadline; the
// wheel files the entry again when its old slot comes up. Expiry is still
// exact to the tick.
//
// # Concurrency
//
// All methods are safe for concurrent use. No operation holds two shard
// locks at once: work on a connection's template (raising or lowering its
// connection count, marking it ASSURED) happens after the connection's
// shard lock is released, and a template cannot go away while connections
// count on it. Callbacks supplied by the caller (the scheduler passed to
// Schedule, the resolver passed to ApplySync and Rebind, the observer) run
// with a shard lock held: they must be quick and must not call back into the
// Table.
//
// # Differences from the kernel
//
//   - An invalidated template is taken out of the lookup index instead of
//     being rehashed under ports 0xFFFF; it shows those ports in views and
//     never matches a lookup again, as in the kernel.
//   - A connection whose key is already in the table is not duplicated:
//     Schedule reports [ErrExists] and the caller decides.
//   - NO_CPORT connections (FTP data in NAT mode) are stored with the flag but
//     are looked up by their exact client port only.
package persist
